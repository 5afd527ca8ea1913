"""COCO-17 geometry: the joint layout of every keypoint array, its mirror pairs and OKS falloffs,
the one OKS kernel, box IoU and keypoint boxes.

The ground floor under pose, tracking, evaluation and output (numpy only): each of them asks this
module, and none imports another stage for a joint name, a flip or a similarity. Shapes: P people,
K = 17 joints; coordinates (x, y) in pixels, NaN where a joint was not found.
"""
from __future__ import annotations

import warnings

import numpy as np

NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_KEYPOINTS = len(NAMES)
# Index of each joint's mirror image (left_x <-> right_x; the nose is its own), from the names.
FLIP_PAIRS = np.array([NAMES.index(n.replace("left_", "@").replace("right_", "left_").replace("@", "right_"))
                       for n in NAMES])
# Per-joint OKS falloff (pycocotools' Params.kpt_oks_sigmas).
SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10.0


def oks(a_xy: np.ndarray, b_xy: np.ndarray, a_counts: np.ndarray, b_counts: np.ndarray, scale: np.ndarray,
        sigmas: np.ndarray = SIGMAS) -> tuple[np.ndarray, np.ndarray]:
    """Object keypoint similarity of every pair: a_xy float[A, K, 2], b_xy float[B, K, 2];
    a_counts bool[A, K], b_counts bool[B, K]: the joints each side lets count; scale: the object area
    s^2, broadcastable to [A, B] (the GT's area, a track's, or two poses' geometric mean).
    Returns (oks float[A, B], counted int[A, B] = joints counted in both).

    COCO's definition (pycocotools computeOks, same operation order, so the same inputs give the
    same bits): per joint exp(-d^2 / (2 sigma)^2 / (s^2 + eps) / 2), averaged over the counted
    joints. A counted joint whose distance is NaN (not found on one side) scores 0 but still counts:
    a prediction that misses a labelled joint loses it. Pairs counting nothing score 0.
    The variants are the callers' masks and scale: `eval.metrics.oks_matrix` counts the GT's labelled
    joints, `eval.metrics.shared_oks` the joints two poses are both sure of, the tracker the joints
    a track and a detection both have.
    """
    variances = (np.asarray(sigmas, np.float64) * 2) ** 2
    d2 = ((a_xy[:, None] - b_xy[None]) ** 2).sum(-1)  # [A, B, K]
    sim = np.exp(-d2 / variances / (np.asarray(scale)[..., None] + np.spacing(1)) / 2)
    counts = a_counts[:, None] & b_counts[None]
    counted = counts.sum(-1)
    return np.where(counts & ~np.isnan(sim), sim, 0.0).sum(-1) / np.maximum(counted, 1), counted


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every pair: a [n, 4], b [m, 4] (x1, y1, x2, y2) -> float64 [n, m]; 0 for empty boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    wh = np.clip(np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def keypoint_boxes(xy: np.ndarray) -> np.ndarray:
    """float[P, K, 2] -> float32[P, 4] (x1, y1, x2, y2) around the joints that are not NaN (NaN for a
    person with none: the caller decides what stands in)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmin/nanmax on an all-NaN person
        return np.concatenate([np.nanmin(xy, axis=1), np.nanmax(xy, axis=1)], axis=1).astype(np.float32)
