"""Top-down crop geometry: detector boxes -> affine maps into a keypoint model's input and back.

Coordinates use the pixel-centre convention of the bottom-up stage (pixel i spans [i - 0.5, i + 0.5]);
detector boxes are continuous (x2 = x1 + w), so a box's centre is the same in either convention.
A crop keeps the body's proportions: the box is widened or heightened to the model input's aspect
ratio (square for MoveNet, 3:4 for PP-TinyPose), then grown by a margin for context.
"""
from __future__ import annotations

import cv2
import numpy as np

Size = tuple[int, int]  # (width, height) of a model input in px


def _size(size: int | Size) -> Size:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def crop_transforms(boxes: np.ndarray, margin: float, size: int | Size) -> tuple[np.ndarray, np.ndarray]:
    """boxes float[n, 4] xyxy -> (A float32[n, 2, 3] image px -> crop px, A_inv float32[n, 2, 3]).

    size: the model input, a side or (width, height). The crop is the box widened or heightened to
    the input's aspect ratio a = width / height, then scaled by margin: its width is
    s = margin * max(w, a * h), centred on the box (a non-matching crop would squash the body).
    With k = width / s and crop corner (x0, y0) = centre - (s, s / a) / 2, pixel centres map as
    x_crop = k * (x_img + 0.5 - x0) - 0.5 (and y alike).
    """
    width, height = _size(size)
    aspect = width / height
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    centre = (b[:, :2] + b[:, 2:]) / 2
    wh = b[:, 2:] - b[:, :2]
    side = np.maximum(margin * np.maximum(wh[:, 0], aspect * wh[:, 1]), 1e-3)  # a degenerate box still inverts
    k = width / side
    origin = centre - np.stack([side, side / aspect], 1) / 2  # [n, 2] top-left corner (continuous coordinates)
    a = np.zeros((len(b), 2, 3))
    a[:, 0, 0] = a[:, 1, 1] = k
    a[:, :, 2] = k[:, None] * (0.5 - origin) - 0.5
    a_inv = np.zeros_like(a)
    a_inv[:, 0, 0] = a_inv[:, 1, 1] = 1 / k
    a_inv[:, :, 2] = (0.5 / k)[:, None] + origin - 0.5
    return a.astype(np.float32), a_inv.astype(np.float32)


def warp_crops(image_rgb: np.ndarray, A: np.ndarray, size: int | Size) -> np.ndarray:
    """uint8[H, W, 3], A float[n, 2, 3] -> uint8[n, height, width, 3]; outside the frame is black,
    as MoveNet's and PaddleDetection's pipelines pad (a replicated edge would paint phantom limbs)."""
    width, height = _size(size)
    out = np.empty((len(A), height, width, 3), np.uint8)
    for i, a in enumerate(A):
        cv2.warpAffine(image_rgb, a.astype(np.float64), (width, height), dst=out[i], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return out


def apply_affine(points: np.ndarray, A: np.ndarray) -> np.ndarray:
    """points float[n, K, 2], A float[n, 2, 3] -> float32[n, K, 2] (A @ [x, y, 1] per point)."""
    return (np.einsum("nkj,nij->nki", points, A[:, :, :2]) + A[:, None, :, 2]).astype(np.float32)
