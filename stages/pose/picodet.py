"""PP-PicoDet-S LCNet pedestrian detector (PaddleDetection, Apache-2.0), exported without NMS.

    picodet_s_320_lcnet_pedestrian_ov_fp32.onnx  float32[1, 3, 320, 320] RGB, x / 255 then ImageNet
        mean/std, the whole frame resized to 320x320 (no letterbox: PaddleDetection's Resize with
        keep_ratio False, cubic) -> boxes [1, 2125, 4] (x1, y1, x2, y2 in input px, decoded inside
        the graph), scores [1, 1, 2125]

Facts from shared/weights/MANIFEST.toml. NMS (IoU 0.6, as its PaddleDetection config) runs here
through OpenCV's `cv2.dnn.NMSBoxes` (`detect.nms`). The file's shapes are static and its head folds the batch
into a [6400, 8] reshape, so frames run one per call, and there is no finer second pass.
A uniform frame (a fade to black or white, never a real scene) comes back as one whole-frame box
at ~0.6; the keypoint model finds no body in it, so top-down drops it (`min_keypoints`).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from stages.pose.detect import Detections, empty_detections, frames_shape, nms, to_image
from stages.pose.onnx_session import IMAGENET_MEAN, IMAGENET_STD, normalized_nchw, onnx_session
from stages.pose.params import DetectorParams

PICODET_FILE = "picodet_s_320_lcnet_pedestrian_ov_fp32.onnx"
NMS_IOU = 0.6  # PaddleDetection's picodet_s_320_lcnet_pedestrian config (MANIFEST)


class PicoDetPedestrian:
    """uint8[N, H, W, 3] RGB frames -> N x (boxes, scores), as every detector (`detect.py`)."""

    size = 320

    def __init__(self, path: str | Path, params: DetectorParams = DetectorParams(), num_threads: int = 1,
                 providers: Sequence[str] | None = None):
        self.params = params
        self.session = onnx_session(path, num_threads, providers)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images_rgb: np.ndarray) -> list[Detections]:
        n, h, w = frames_shape(images_rgb)
        if n == 0 or h == 0 or w == 0:
            return [empty_detections() for _ in range(n)]
        return [self._frame(image, h, w) for image in images_rgb]

    def _frame(self, image_rgb: np.ndarray, height: int, width: int) -> Detections:
        resized = cv2.resize(image_rgb, (self.size, self.size), interpolation=cv2.INTER_CUBIC)
        x = normalized_nchw(resized[None], IMAGENET_MEAN, IMAGENET_STD)
        boxes, scores = self.session.run(None, {self.input_name: x})
        boxes, scores = boxes[0], scores[0, 0]
        cand = np.flatnonzero(scores > self.params.score_threshold)
        if cand.size == 0:
            return empty_detections()
        # The input is the frame stretched to a square: scale x and y back separately, then NMS
        # in image px, where IoU means what it means for the people.
        boxes = boxes[cand] * np.array([width, height, width, height], np.float32) / self.size
        keep = nms(boxes, scores[cand], NMS_IOU)
        return to_image(boxes[keep], scores[cand][keep], 1.0, height, width, self.params)
