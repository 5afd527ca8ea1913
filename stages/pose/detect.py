"""Person detectors for top-down mode: frames -> person boxes and scores, one entry per frame.

Both files take a letterboxed BGR frame (keep-ratio resize, image top-left, 114 padding right and
bottom); facts below come from shared/weights/MANIFEST.toml:

    rtmdet_nano_320_person_end2end.onnx  [N, 3, 320, 320] (x - mean) / std  -> dets [N, 100, 5], labels
                                          (mmdeploy export, NMS inside: IoU 0.6, score > 0.05)
    yolox_nano_416x416.onnx              [1, 3, 416, 416] raw 0..255       -> [1, 3549, 85] head output,
                                          decoded and NMS'd here

Every detector returns, per frame, boxes float32[n, 4] = (x1, y1, x2, y2) in image pixels clipped
to the image and scores float32[n], sorted by score, highest first; n may be 0.

RTMDet's input is dynamic, so on frames larger than its 320 px it runs a second, finer pass (the
frame's longer side at `fine_side` px) and adds the boxes of people the 320 px pass did not find.
The 320 px pass alone shrinks a 960x540 crowd frame 3x and finds 0.46 of the people at 44 per
frame; the two passes find 0.67 (benchmarks/detector_layouts.py). The first pass's boxes win where
both passes see a person: preferring the fine boxes finds more people in crowds (a 640 px pass
alone: 0.73) but lowered top-down AP on the COCO, OCHuman and CrowdPose photos (0.608 -> 0.548,
0.195 -> 0.181, 0.777 -> 0.740), whose people are large. SAHI-style tiles of the same pixel count
found fewer people than the whole-frame pass (0.68 for 2x1 tiles at the same cost): people cut at
the seams.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stages.track.boxes import box_iou
from stages.pose.onnx_session import onnx_session

RTMDET_FILE = "rtmdet_nano_320_person_end2end.onnx"
YOLOX_FILE = "yolox_nano_416x416.onnx"
_RTMDET_MEAN = np.array([103.53, 116.28, 123.675], np.float32)  # BGR order, like the input
_RTMDET_STD = np.array([57.375, 57.12, 58.395], np.float32)

Detections = tuple[np.ndarray, np.ndarray]  # boxes float32[n, 4] (x1, y1, x2, y2), scores float32[n]
NET_MULTIPLE = 32  # RTMDet's coarsest stride: its input sides must divide by it
# A frame whose longer side is at most this many times the first pass's input loses little there
# (a 480x360 frame is shrunk by 1.5); only larger frames get the fine pass.
FINE_PASS_FROM = 1.5


@dataclass(frozen=True)
class DetectorParams:
    score_threshold: float = 0.3  # MANIFEST: 12/12 COCO test people for RTMDet at 0.3; its graph drops < 0.05
    nms_iou: float = 0.45  # YOLOX only; RTMDet's NMS (IoU 0.6) is inside its graph
    max_people: int = 100  # RTMDet's graph returns at most 100 boxes anyway
    min_box_size: float = 4.0  # px in the image; smaller boxes (after clipping) are slivers, no pose fits
    # RTMDet only (YOLOX's input is static): the frame's longer side in px in a second pass, run on
    # frames longer than FINE_PASS_FROM x the 320 px input; 0 = one pass.
    fine_side: int = 640
    fine_overlap_iou: float = 0.5  # a fine-pass box overlapping a first-pass box this much is that person
    # The fine pass runs on the frames where the first may have missed someone: it found nobody, two
    # people whose boxes touch (a group hides its members), or a person under this many px tall in
    # its 320 px input (a quarter of it: a 960x540 frame's 240 px).
    fine_below: float = 80.0


def empty_detections() -> Detections:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)


def letterbox(images_rgb: np.ndarray, size: int | tuple[int, int], pad_value: int = 114
              ) -> tuple[np.ndarray, float]:
    """uint8[N, H, W, 3] RGB -> (uint8[N, size_h, size_w, 3] BGR, r); size = side or (width, height).

    Keep-ratio resize by r = min(size_w / W, size_h / H) (cv2 INTER_LINEAR, as both detectors were
    trained), image at the top-left, `pad_value` right and bottom: network px = image px * r.
    """
    n, h, w = _frames_shape(images_rgb)
    if h == 0 or w == 0:
        raise ValueError(f"cannot letterbox empty frames of size {w}x{h}")
    size_w, size_h = (size, size) if isinstance(size, int) else size
    r = min(size_w / w, size_h / h)
    # Half-up rounding like mmcv's rescale (Python's round() would send 212.5 to 212).
    new_w, new_h = min(size_w, max(1, int(w * r + 0.5))), min(size_h, max(1, int(h * r + 0.5)))
    out = np.full((n, size_h, size_w, 3), pad_value, np.uint8)
    for i in range(n):
        resized = cv2.resize(images_rgb[i], (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        out[i, :new_h, :new_w] = resized[:, :, ::-1]  # RGB -> BGR in the same copy
    return out, r


def fine_input(height: int, width: int, base: int, fine_side: int) -> tuple[int, int] | None:
    """(width, height) of the fine pass's input for a frame, or None where it is not run.

    The frame's longer side becomes fine_side (never more than the frame's own, rounded up to
    NET_MULTIPLE), the other side follows the aspect ratio, padded up to NET_MULTIPLE: a 960x540
    frame runs at 640x384, not on a 640x640 square of which 40% would be padding.
    """
    long_side = max(height, width)
    if fine_side <= 0 or long_side <= FINE_PASS_FROM * base:
        return None
    r = min(fine_side, -(-long_side // NET_MULTIPLE) * NET_MULTIPLE) / long_side
    up = lambda v: max(NET_MULTIPLE, -(-int(v * r + 0.5) // NET_MULTIPLE) * NET_MULTIPLE)
    return up(width), up(height)


def needs_fine_pass(first: Detections, r: float, below: float) -> bool:
    """Whether a frame's first-pass detections (image px, r = network px per image px) leave room
    for people the pass could not resolve: none found, boxes that touch, or a person under `below`
    network px tall."""
    boxes = first[0]
    if not len(boxes) or ((boxes[:, 3] - boxes[:, 1]) * r < below).any():
        return True
    iou = box_iou(boxes, boxes)
    np.fill_diagonal(iou, 0.0)
    return bool((iou > 0).any())


def add_missed(first: Detections, fine: Detections, overlap_iou: float, max_people: int) -> Detections:
    """The first pass's boxes plus the fine pass's boxes that overlap none of them by overlap_iou.

    Every first-pass box is kept as it is: where both passes see a person, the coarse view is the
    one the detector was trained at (320 px), and large people come out better there.
    """
    boxes, scores = fine
    if len(first[0]) and len(boxes):
        new = box_iou(boxes, first[0]).max(axis=1) < overlap_iou
        boxes, scores = boxes[new], scores[new]
    boxes, scores = np.concatenate([first[0], boxes]), np.concatenate([first[1], scores])
    order = np.argsort(-scores, kind="stable")[:max_people]
    return np.ascontiguousarray(boxes[order]), np.ascontiguousarray(scores[order])


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: boxes [n, 4] (x1, y1, x2, y2), scores [n] -> int64[k] kept indices, score desc.

    A box is dropped when its IoU with a higher-scoring kept box is > iou_threshold. One
    vectorised IoU row per kept box: callers pass candidates above the score threshold (tens).
    """
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, order = order[0], order[1:]
        keep.append(best)
        order = order[box_iou(boxes[best], boxes[order])[0] <= iou_threshold]
    return np.array(keep, np.int64)


def _frames_shape(images_rgb: np.ndarray) -> tuple[int, int, int]:
    if not isinstance(images_rgb, np.ndarray) or images_rgb.dtype != np.uint8 or images_rgb.ndim != 4 \
            or images_rgb.shape[3] != 3:
        got = f"{images_rgb.dtype} {images_rgb.shape}" if isinstance(images_rgb, np.ndarray) else type(images_rgb)
        raise ValueError(f"expected uint8 [N, H, W, 3] RGB frames, got {got}")
    n, h, w, _ = images_rgb.shape
    return n, h, w


def _to_image(boxes: np.ndarray, scores: np.ndarray, r: float, height: int, width: int,
              params: DetectorParams) -> Detections:
    """Network-input boxes [n, 4] -> image px, clipped; slivers dropped, score desc, at most max_people."""
    boxes = boxes.astype(np.float32) / np.float32(r)
    np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
    # Sizes after clipping: a person mostly outside the frame leaves a sliver that no pose fits.
    big = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= params.min_box_size
    boxes, scores = boxes[big], scores[big].astype(np.float32)
    order = np.argsort(-scores, kind="stable")[: params.max_people]
    return np.ascontiguousarray(boxes[order]), np.ascontiguousarray(scores[order])




def batchable_rtmdet_graph(path: str | Path) -> bytes | None:
    """The RTMDet end2end graph with its pre-NMS score gate made per frame; None if not possible.

    mmdeploy exported the gate as Where(Not(Less(ReduceMax(scores, axes=[1], keepdims=0), 0.05)),
    scores, 0) with scores [N, 2100, 1]: the condition is [N, 1], which broadcasts against
    [N, 2100, 1] only when N == 1. onnxruntime 1.32 fails any batch N > 1 there ("Attempting to
    broadcast an axis by a dimension other than 1. 8 by 2100"). With keepdims=1 the condition is
    [N, 1, 1]: per frame the same test as at N == 1, and the rest of the graph (TopK, NMS, gather)
    already carries the batch index. Measured on 8 crowd_synth p20 frames: batched dets equal
    per-frame dets bit for bit; with 2 threads a batch of 8 takes ~0.7x the time per frame of
    one call per frame, with 1 thread about the same (benchmarks/detector.py).
    Needs the `onnx` package to edit the graph; without it (or for a graph without this pattern)
    the caller runs one frame per call, which gives the same output.
    """
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(path))
    producer = {out: node for node in model.graph.node for out in node.output}
    fixed = 0
    for where in (node for node in model.graph.node if node.op_type == "Where"):
        gate = producer.get(where.input[0])
        while gate is not None and gate.op_type in ("Not", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"):
            gate = producer.get(gate.input[0])
        if gate is None or gate.op_type != "ReduceMax" or gate.input[0] != where.input[1]:
            continue
        for attr in gate.attribute:
            if attr.name == "keepdims" and attr.i == 0:
                attr.i = 1
                fixed += 1
    return model.SerializeToString() if fixed == 1 else None


class RTMDetPerson:
    """rtmdet_nano_320_person_end2end.onnx: uint8[N, H, W, 3] RGB frames -> N x (boxes, scores).

    All N frames go through one onnxruntime call per pass (the graph's batch dim is dynamic once its
    score gate is fixed, see `batchable_rtmdet_graph`); `batched` is False when that fix was not
    possible and frames then run one per call. Large frames get a second, finer pass (`fine_input`),
    whose new boxes are added (`add_missed`).
    """

    size = 320

    def __init__(self, path: str | Path, params: DetectorParams = DetectorParams(), num_threads: int = 1,
                 providers: Sequence[str] | None = None):
        self.params = params
        graph = batchable_rtmdet_graph(path)
        self.batched = graph is not None
        self.session = onnx_session(graph if graph is not None else path, num_threads, providers)

    def __call__(self, images_rgb: np.ndarray) -> list[Detections]:
        n, h, w = _frames_shape(images_rgb)
        if n == 0 or h == 0 or w == 0:
            return [empty_detections() for _ in range(n)]
        p = self.params
        first = self.detect_pass(images_rgb, (self.size, self.size))
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
        n, h, w = _frames_shape(images_rgb)
        boxed, r = letterbox(images_rgb, size)
        # NCHW float32 in one converting copy, then scalar ops on each contiguous channel plane:
        # bit-identical to broadcasting the 3-vectors over NHWC, ~8x faster (that took ~2.5 ms a frame).
        x = boxed.transpose(0, 3, 1, 2).astype(np.float32, order="C")
        for c in range(3):
            plane = x[:, c]
            plane -= _RTMDET_MEAN[c]
            plane /= _RTMDET_STD[c]
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
            results.append(_to_image(frame_dets[keep, :4], frame_dets[keep, 4], r, h, w, self.params))
        return results


class YoloxNano:
    """yolox_nano_416x416.onnx (COCO 80 classes, person = 0): same call as `RTMDetPerson`.

    The file's input is static [1, 3, 416, 416] (batch 1 is fixed in the graph), so frames run
    one per call.
    """

    size = 416
    strides = (8, 16, 32)

    def __init__(self, path: str | Path, params: DetectorParams = DetectorParams(), num_threads: int = 1,
                 providers: Sequence[str] | None = None):
        self.params = params
        self.session = onnx_session(path, num_threads, providers)
        # Cell (x, y) and stride of every output row: levels s8, s16, s32, each row-major.
        grids, strides = [], []
        for stride in self.strides:
            cells = self.size // stride
            ys, xs = np.mgrid[:cells, :cells]
            grids.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
            strides.append(np.full(cells * cells, stride))
        self.grid = np.concatenate(grids).astype(np.float32)  # [3549, 2]
        self.stride = np.concatenate(strides).astype(np.float32)[:, None]  # [3549, 1]

    def __call__(self, images_rgb: np.ndarray) -> list[Detections]:
        n, h, w = _frames_shape(images_rgb)
        if n == 0 or h == 0 or w == 0:
            return [empty_detections() for _ in range(n)]
        boxed, r = letterbox(images_rgb, self.size)
        x = boxed.transpose(0, 3, 1, 2).astype(np.float32, order="C")  # raw 0..255, no mean/std
        return [self._decode(self.session.run(["output"], {"images": x[i : i + 1]})[0][0], r, h, w)
                for i in range(n)]

    def _decode(self, rows: np.ndarray, r: float, height: int, width: int) -> Detections:
        """rows [3549, 85] = (tx, ty, tw, th, objectness, 80 class probs), sigmoids already applied."""
        scores = rows[:, 4] * rows[:, 5]
        # Decode only candidates: the other ~3500 rows are background.
        cand = np.flatnonzero(scores > self.params.score_threshold)
        if cand.size == 0:
            return empty_detections()
        centre = (rows[cand, :2] + self.grid[cand]) * self.stride[cand]
        half = np.exp(rows[cand, 2:4]) * self.stride[cand] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        # NMS in network px before clipping, like upstream YOLOX (clipping would change overlaps).
        keep = nms(boxes, scores[cand], self.params.nms_iou)
        return _to_image(boxes[keep], scores[cand][keep], r, height, width, self.params)


def build_detector(name: str, path: str | Path, params: DetectorParams = DetectorParams(), num_threads: int = 1,
                   providers: Sequence[str] | None = None) -> RTMDetPerson | YoloxNano:
    """The detector for a model file name (the config's value), loaded from `path`."""
    if name == RTMDET_FILE:
        return RTMDetPerson(path, params, num_threads, providers)
    if name == YOLOX_FILE:
        return YoloxNano(path, params, num_threads, providers)
    raise ValueError(f"unknown person detector {name!r}; known: {RTMDET_FILE}, {YOLOX_FILE}")
