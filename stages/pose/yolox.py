"""YOLOX-nano (COCO 80 classes, person = class 0) as a person detector.

    yolox_nano_416x416.onnx  [1, 3, 416, 416] letterboxed BGR, raw 0..255 -> [1, 3549, 85] head output
                              (tx, ty, tw, th, objectness, 80 class probs), decoded and NMS'd here

Facts from shared/weights/MANIFEST.toml.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stages.pose.detect import Detections, empty_detections, frames_shape, letterbox, nms, to_image
from stages.pose.onnx_session import onnx_session
from stages.pose.params import DetectorParams

YOLOX_FILE = "yolox_nano_416x416.onnx"


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
        n, h, w = frames_shape(images_rgb)
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
        return to_image(boxes[keep], scores[cand][keep], r, height, width, self.params)
