"""Person silhouettes: MediaPipe BlazePose's segmentation of the person a square crop is centred on.

    pose_landmark_lite.tflite  float32[N, 256, 256, 3] RGB in [0, 1] -> [N, 256, 256, 1] in [0, 1]
    (Apache-2.0, from Google's npm package @mediapipe/pose; stages/weights.py fetches it. Its segmentation
    output is converted to ONNX at load, tflite_onnx.py, and run by onnxruntime like the pose models: checked
    against Google's LiteRT on real crops, docs/bodies.md "The silhouettes' model file")

A body model is a naked body: its render misses the clothes and hair around it and spills where the fit is
off (crowd_synth p10: visible-mask IoU 0.68 per person). The segmentation sees the person's own pixels
(0.82 on the same people), but not who is in front where two people overlap, nor where on the body a pixel
lies; silhouette.py joins the two. The crop is the one MediaPipe's landmark model is trained on, less its
rotation: a square 1.25 x the person's longer side, centred on the person (standing people are upright).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stages.dense.raster import Box
from stages.dense.tflite_onnx import tflite_to_onnx
from stages.pose.crops import crop_transforms, warp_crops
from stages.pose.onnx_session import onnx_session

SEGMENT_FILE = "pose_landmark_lite.tflite"
TFLITE_OUTPUT = "Identity_2"  # the segmentation logits; the file's other outputs (landmarks) are left out
MARGIN = 1.25  # crop side / the person's longer side, as MediaPipe's pose ROI
SIDE = 256
OUTPUT = "segmentation"  # the ONNX graph's output: probabilities


@dataclass(frozen=True)
class Silhouette:
    """One person's segmentation inside `box` (x0, y0, x1, y1 video pixels, x1 and y1 exclusive): mask
    bool[y1-y0, x1-x0], True where the crop's person is (probability > 0.5)."""

    box: Box
    mask: np.ndarray


class PersonSegmenter:
    """onnxruntime on BlazePose (module docstring): a frame and its people's boxes -> one Silhouette each."""

    def __init__(self, path_or_bytes: str | Path | bytes, num_threads: int = 1,
                 providers: Sequence[str] | None = None, max_batch: int | None = None):
        data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
        if data[4:8] == b"TFL3":  # the published file (~1 s); an ONNX graph with OUTPUT is taken as it is
            data = tflite_to_onnx(data, TFLITE_OUTPUT, OUTPUT, sigmoid=True)
        self.session = onnx_session(data, num_threads, providers)
        self.input_name = self.session.get_inputs()[0].name
        if OUTPUT not in [o.name for o in self.session.get_outputs()]:
            raise ValueError(f"not the silhouettes' segmentation model: no output {OUTPUT}")
        # Crops per call: on a CPU one at a time (2-core CPU, 1 thread: 12.9 ms a crop alone, 13.5 / 14.5 / 15.3
        # in calls of 2 / 5 / 10: a bigger call's activations spill the caches); on a GPU 16, which also bounds
        # activation memory (~3 MB per crop).
        gpu = self.session.get_providers()[0] != "CPUExecutionProvider"
        self.max_batch = max_batch if max_batch is not None else (16 if gpu else 1)

    def __call__(self, image_rgb: np.ndarray, boxes: np.ndarray, scale: float = 1.0) -> list[Silhouette]:
        """image_rgb uint8[h, w, 3] (a FrameBatch image); boxes float[P, 4] x0, y0, x1, y1 in video pixels;
        scale: video pixels per image pixel (FrameBatch.scale: decode may have shrunk the frame). Each
        silhouette covers its crop's square, clipped to the video frame (video pixels)."""
        if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 [H, W, 3] image, got {image_rgb.dtype} {image_rgb.shape}")
        b = np.asarray(boxes, np.float64).reshape(-1, 4)
        if not len(b):
            return []
        a, _ = crop_transforms(b / scale, MARGIN, SIDE)  # image px -> crop px
        prob = np.empty((len(b), SIDE, SIDE), np.float32)
        for s in range(0, len(b), self.max_batch):
            x = warp_crops(image_rgb, a[s:s + self.max_batch], SIDE).astype(np.float32) / 255
            prob[s:s + self.max_batch] = self.session.run([OUTPUT], {self.input_name: x})[0][..., 0]
        h, w = (round(n * scale) for n in image_rgb.shape[:2])
        return [self._back(p, aa, bb, scale, (w, h)) for p, aa, bb in zip(prob, a.astype(np.float64), b)]

    @staticmethod
    def _back(prob: np.ndarray, a: np.ndarray, box: np.ndarray, scale: float, size: tuple[int, int]) -> Silhouette:
        """The crop's probabilities resampled into video pixels over the crop's square, cut at 0.5."""
        cx, cy = (box[:2] + box[2:]) / 2
        half = MARGIN * max(box[2] - box[0], box[3] - box[1]) / 2
        x0, y0 = max(int(np.floor(cx - half)), 0), max(int(np.floor(cy - half)), 0)
        x1, y1 = min(int(np.ceil(cx + half)), size[0]), min(int(np.ceil(cy + half)), size[1])
        if x1 <= x0 or y1 <= y0:
            return Silhouette((x0, y0, max(x0, x1), max(y0, y1)), np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), bool))
        # window pixel (c, r) -> video pixel (c + x0, r + y0) -> image pixel ((v + 0.5) / scale - 0.5) -> crop (a)
        to_image = np.array([[1 / scale, 0, (x0 + 0.5) / scale - 0.5], [0, 1 / scale, (y0 + 0.5) / scale - 0.5],
                             [0, 0, 1]])
        m = a @ to_image
        back = cv2.warpAffine(prob, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return Silhouette((x0, y0, x1, y1), back > 0.5)
