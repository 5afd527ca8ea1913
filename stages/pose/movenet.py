"""MoveNet SinglePose (Google, Apache-2.0): one person per square crop, decoding inside the graph.

    movenet_singlepose_lightning_4_dequant_fp32.onnx  uint8[1, 192, 192, 3] RGB -> [1, 1, 17, 3]
    movenet_singlepose_thunder_4_tfjs_fp32.onnx       int32[1, 256, 256, 3] RGB -> [1, 1, 17, 3]
    (y, x normalised to the crop, score); Thunder is the larger, slower and more accurate sibling

The shipped ONNX is a tf2onnx conversion with batch 1 baked into its decoding tail;
`graph_rewrite.make_batch_dynamic` replaces that tail with a batch-aware one, so every crop of a
frame batch goes through one onnxruntime call. The model picks the person nearest the crop centre,
so a crowded crop can return the neighbour (`topdown.TopDownKeypoints` checks for that).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stages.coco17 import NUM_KEYPOINTS
from stages.pose.graph_rewrite import make_batch_dynamic
from stages.pose.onnx_session import onnx_session
from stages.scores import HOUSE_THRESHOLD

LIGHTNING_FILE = "movenet_singlepose_lightning_4_dequant_fp32.onnx"
THUNDER_FILE = "movenet_singlepose_thunder_4_tfjs_fp32.onnx"


class MoveNet:
    """onnxruntime on the batch-dynamic MoveNet: crops uint8[B, S, S, 3] RGB ->
    float32[B, 17, 3] = (x, y) in crop pixels (pixel centres) and score in [0, 1]."""

    aspect = 1.0  # square crops (width / height)

    def __init__(self, path_or_bytes: str | Path | bytes, num_threads: int = 1,
                 providers: Sequence[str] | None = None, max_batch: int = 64, raw_threshold: float = HOUSE_THRESHOLD):
        data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
        self.session = onnx_session(make_batch_dynamic(data), num_threads, providers)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        # 0..255 either way; Thunder's TFJS graph declares int32 where Lightning's takes uint8
        self.input_dtype = np.int32 if inp.type == "tensor(int32)" else np.uint8
        side = int(inp.shape[1])
        self.input_size = (side, side)  # (width, height)
        self.max_batch = max_batch
        self.raw_threshold = raw_threshold  # this file's confident-joint score (zoo.py; topdown.py maps it to 0.3)

    def __call__(self, crops: np.ndarray, max_batch: int | None = None) -> np.ndarray:
        side = self.input_size[0]
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (side, side, 3):
            raise ValueError(f"expected uint8 [B, {side}, {side}, 3], got {crops.dtype} {crops.shape}")
        step = max(1, max_batch or self.max_batch)  # bounds activation memory (~1 MB per crop)
        out = np.zeros((len(crops), NUM_KEYPOINTS, 3), np.float32)
        for s in range(0, len(crops), step):
            batch = np.ascontiguousarray(crops[s:s + step], self.input_dtype)
            yxs = self.session.run(None, {self.input_name: batch})[0][:, 0]
            # normalised [0, 1] over the crop's extent -> pixel centres
            out[s:s + step, :, 0] = yxs[:, :, 1] * side - 0.5
            out[s:s + step, :, 1] = yxs[:, :, 0] * side - 0.5
            out[s:s + step, :, 2] = yxs[:, :, 2]
        return out
