"""RTMDet-nano person detector (mmpose's RTMPose project, mmdeploy end2end export, NMS inside).

    rtmdet_nano_320_person_end2end.onnx  [N, 3, H, W] letterboxed BGR, (x - mean) / std
                                          -> dets [N, 100, 5] (x1, y1, x2, y2, score), labels [N, 100]
                                          (NMS inside the graph: IoU 0.6, score > 0.05)

Facts from shared/weights/MANIFEST.toml. The input is dynamic: large frames get a second, finer
pass (`detect.fine_input`), whose new boxes are added (`detect.add_missed`).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stages.pose.detect import (
    Detections,
    add_missed,
    empty_detections,
    fine_input,
    frames_shape,
    letterbox,
    needs_fine_pass,
    to_image,
)
from stages.pose.graph_rewrite import batchable_rtmdet_graph
from stages.pose.onnx_session import normalized_nchw, onnx_session
from stages.pose.params import DetectorParams

RTMDET_FILE = "rtmdet_nano_320_person_end2end.onnx"
_RTMDET_MEAN = np.array([103.53, 116.28, 123.675], np.float32)  # BGR order, like the input
_RTMDET_STD = np.array([57.375, 57.12, 58.395], np.float32)


class RTMDetPerson:
    """rtmdet_nano_320_person_end2end.onnx: uint8[N, H, W, 3] RGB frames -> N x (boxes, scores).

    All N frames go through one onnxruntime call per pass (the graph's batch dim is dynamic once its
    score gate is fixed, see `batchable_rtmdet_graph`); `batched` is False when that fix was not
    possible and frames then run one per call. Large frames get a second, finer pass (`fine_input`),
    whose new boxes are added (`add_missed`); `add_fine_pass` gives that pass to another detector's
    boxes too (`FinePass`).
    """

    size = 320

    def __init__(self, path: str | Path, params: DetectorParams = DetectorParams(), num_threads: int = 1,
                 providers: Sequence[str] | None = None):
        self.params = params
        graph = batchable_rtmdet_graph(path)
        self.batched = graph is not None
        self.session = onnx_session(graph if graph is not None else path, num_threads, providers)

    def __call__(self, images_rgb: np.ndarray) -> list[Detections]:
        n, h, w = frames_shape(images_rgb)
        if n == 0 or h == 0 or w == 0:
            return [empty_detections() for _ in range(n)]
        return self.add_fine_pass(images_rgb, self.detect_pass(images_rgb, (self.size, self.size)))

    def add_fine_pass(self, images_rgb: np.ndarray, first: list[Detections]) -> list[Detections]:
        """A first pass's detections of the frames (image px, this or another detector's) plus the
        people a finer pass finds, on the frames where the first may have missed someone. The
        criterion is in image px, as this detector's 320 px letterbox sees them."""
        n, h, w = frames_shape(images_rgb)
        p = self.params
        fine = fine_input(h, w, self.size, p.fine_side)
        r = min(self.size / h, self.size / w)
        again = [] if fine is None else [i for i, d in enumerate(first) if needs_fine_pass(d, r, p.fine_below)]
        if not again:
            return first
        # The frames that need it, in one call: an isolated large person costs no fine pass.
        for i, dets in zip(again, self.detect_pass(images_rgb[again], fine)):
            first[i] = add_missed(first[i], dets, p.fine_overlap_iou, p.max_people)
        return first

    def detect_pass(self, images_rgb: np.ndarray, size: tuple[int, int]) -> list[Detections]:
        """One pass over every frame at network input size (width, height)."""
        n, h, w = frames_shape(images_rgb)
        boxed, r = letterbox(images_rgb, size)
        x = normalized_nchw(boxed, _RTMDET_MEAN, _RTMDET_STD)
        if self.batched:
            dets, labels = self.session.run(["dets", "labels"], {"input": x})
        else:
            outs = [self.session.run(["dets", "labels"], {"input": x[i : i + 1]}) for i in range(n)]
            dets, labels = [d[0] for d, _ in outs], [lab[0] for _, lab in outs]
        results = []
        for frame_dets, frame_labels in zip(dets, labels):
            # The graph pads each frame's rows with a zero row (label 0, score 0) and, batched,
            # with other frames' slots (label -1, score 0): the label and score test drops both.
            keep = (frame_labels == 0) & (frame_dets[:, 4] > self.params.score_threshold)
            results.append(to_image(frame_dets[keep, :4], frame_dets[keep, 4], r, h, w, self.params))
        return results


class FinePass:
    """Another detector's boxes plus RTMDet's finer pass: `first` (PicoDet, YOLOX: static inputs,
    no larger pass of their own) then `fine.add_fine_pass`. Same call as every detector."""

    def __init__(self, first, fine: RTMDetPerson):
        self.first = first
        self.fine = fine
        self.params = first.params

    def __call__(self, images_rgb: np.ndarray) -> list[Detections]:
        n, h, w = frames_shape(images_rgb)
        if n == 0 or h == 0 or w == 0:
            return [empty_detections() for _ in range(n)]
        return self.fine.add_fine_pass(images_rgb, self.first(images_rgb))
