"""PP-TinyPose 256x192 (PaddleDetection, Apache-2.0): per-joint heatmaps on a 3:4 person crop.

    pp_tinypose_256x192_ov_fp32.onnx  float32[B, 3, 256, 192] RGB, x / 255 then ImageNet mean/std
                                       -> heatmaps float32[B, 17, 64, 48] (stride 4)

Facts from shared/weights/MANIFEST.toml. Unlike MoveNet, whose decoding is inside its graph, the
heatmaps are decoded here (`heatmap_decode`: argmax, parabola, soft-argmax or DARK), so the
sub-pixel step is the product's own and measurable. Heatmap px map to crop px as x_crop = 4 x_hm,
with no half-pixel shift: PaddleDetection's training targets and its test-time transform both
treat pixel indices as coordinates (get_affine_transform / transform_preds), so the network learned
that convention. The file's batch is fixed at 1 by constants; `graph_rewrite.free_batch_dim`
frees it (batched heatmaps equal one-crop calls to 2e-7), so a frame batch's crops share calls.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stages.pose.graph_rewrite import free_batch_dim
from stages.pose.heatmap_decode import decode_heatmaps
from stages.pose.onnx_session import IMAGENET_MEAN, IMAGENET_STD, normalized_nchw, onnx_session
from stages.scores import HOUSE_THRESHOLD

TINYPOSE_FILE = "pp_tinypose_256x192_ov_fp32.onnx"
STRIDE = 4  # crop px per heatmap px


class TinyPose:
    """onnxruntime on the batch-freed PP-TinyPose: crops uint8[B, 256, 192, 3] RGB ->
    float32[B, 17, 3] = (x, y) in crop pixels and the heatmap peak as score (raw: a peak is not a
    probability; `TopDownKeypoints` maps it onto the house scale with `raw_threshold`)."""

    input_size = (192, 256)  # (width, height): the 3:4 crop PP-TinyPose was trained on

    def __init__(self, path_or_bytes: str | Path | bytes, num_threads: int = 1,
                 providers: Sequence[str] | None = None, max_batch: int = 64, decoder: str = "dark",
                 raw_threshold: float = HOUSE_THRESHOLD):
        data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
        self.session = onnx_session(free_batch_dim(data), num_threads, providers)
        self.input_name = self.session.get_inputs()[0].name
        self.max_batch = max_batch
        self.decoder = decoder
        self.raw_threshold = raw_threshold  # this file's confident-joint peak (zoo.py; topdown.py maps it to 0.3)
        decode_heatmaps(np.zeros((1, 1, 3, 3), np.float32), decoder)  # an unknown decoder fails here, once

    def heatmaps(self, crops: np.ndarray, max_batch: int | None = None) -> np.ndarray:
        """uint8[B, 256, 192, 3] RGB -> float32[B, 17, 64, 48]."""
        width, height = self.input_size
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (height, width, 3):
            raise ValueError(f"expected uint8 [B, {height}, {width}, 3], got {crops.dtype} {crops.shape}")
        step = max(1, max_batch or self.max_batch)  # bounds activation memory
        out = []
        for s in range(0, len(crops), step):
            x = normalized_nchw(crops[s:s + step], IMAGENET_MEAN, IMAGENET_STD)
            out.append(self.session.run(None, {self.input_name: x})[0])
        return np.concatenate(out) if out else np.zeros((0, 17, height // STRIDE, width // STRIDE), np.float32)

    def __call__(self, crops: np.ndarray, max_batch: int | None = None) -> np.ndarray:
        kp = decode_heatmaps(self.heatmaps(crops, max_batch), self.decoder)
        kp[:, :, :2] *= STRIDE
        return kp
