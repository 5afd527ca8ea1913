"""onnxruntime on the tf2onnx conversion of the tf-pose-estimation network (tfpose_mobilenet_v2_small.onnx).

Its own module, without torch: a CPU pose actor runs this backend, and importing torch (the native
port in tfpose_net.py) would add seconds to every actor start for nothing.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stages.pose.onnx_session import onnx_session

ONNX_INPUT = "image:0"
ONNX_OUTPUT = "Openpose/concat_stage7:0"


class TfPoseOnnx:
    """onnxruntime on tfpose_mobilenet_v2_small.onnx: float32 [N, H, W, 3] BGR 0..255 -> float32
    [N, 57, ceil(H/8), ceil(W/8)] (NCHW, like `TfPoseNet`). The ONNX graph keeps the backbone's
    batch-statistics normalisation, so a batched run would mix frames: it runs one frame per call."""

    def __init__(self, path: str | Path, num_threads: int = 2, providers: Sequence[str] | None = None):
        self.session = onnx_session(path, num_threads, providers)

    def __call__(self, images_bgr: np.ndarray) -> np.ndarray:
        if images_bgr.dtype != np.float32 or images_bgr.ndim != 4 or images_bgr.shape[3] != 3:
            raise ValueError(f"expected float32 [N, H, W, 3], got {images_bgr.dtype} {images_bgr.shape}")
        maps = [
            self.session.run([ONNX_OUTPUT], {ONNX_INPUT: np.ascontiguousarray(frame[None])})[0][0]
            for frame in images_bgr
        ]
        return np.ascontiguousarray(np.stack(maps).transpose(0, 3, 1, 2))
