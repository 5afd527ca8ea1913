"""Dense renders scored against ground-truth person masks (benchmarks/dense_accuracy.py, issue 22).

- IoU of full-frame person masks (pycocotools RLE), and the two masks that need no body: the person's box
  filled, and the convex hull of its confident keypoints;
- occlusion: where two ground-truth people's whole (amodal) extents overlap, the ground truth's visible masks
  say who is in front; `front_wins` counts which rendered person holds those pixels;
- UV drift: a surface point that stays visible should keep its (U, V) from frame to frame; `surface_points`
  turns rendered pixels into anny texture coordinates and positions on the rest mesh, so a drift can be told
  in UV units and in centimetres on the body.
crowd_synth's people are rigid cut-outs that only move and scale (../shared/eval/crowd_synth/README.md), so a
person's whole extent and the pixel a point of it moves to follow from its whole-body boxes (`moved_mask`,
`moved_pixels`).
"""
from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from stages.dense.render import DenseCrop, ray_triangle


def box_mask(box_xyxy, size: tuple[int, int]) -> np.ndarray:
    """bool[H, W]: the box x0, y0, x1, y1 (pixel edges) filled, clipped to the image; size = (W, H)."""
    w, h = size
    x0, y0, x1, y1 = np.clip(np.rint(np.asarray(box_xyxy, np.float64)), 0, [w, h, w, h]).astype(int)
    out = np.zeros((h, w), bool)
    out[y0:y1, x0:x1] = True
    return out


def hull_mask(xy: np.ndarray, ok: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool[H, W]: the convex hull of the keypoints xy float[K, 2] where ok bool[K], filled (empty with
    fewer than 3 points: a hull needs an area)."""
    w, h = size
    out = np.zeros((h, w), np.uint8)
    pts = np.asarray(xy, np.float64)[np.asarray(ok, bool) & np.isfinite(xy).all(1)]
    if len(pts) >= 3:
        cv2.fillConvexPoly(out, cv2.convexHull(np.rint(pts).astype(np.int32)), 1)
    return out.astype(bool)


def encode(masks: list[np.ndarray]) -> list[dict]:
    """pycocotools RLEs of bool[H, W] masks."""
    return [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]


def iou_matrix(pred: list[dict], gt: list[dict]) -> np.ndarray:
    """float64[P, G] mask IoU of predicted against ground-truth RLEs."""
    if not pred or not gt:
        return np.zeros((len(pred), len(gt)))
    return np.asarray(mask_utils.iou(pred, gt, [0] * len(gt)), np.float64).reshape(len(pred), len(gt))


def best_pairs(score: np.ndarray) -> list[tuple[int, int]]:
    """(prediction, ground truth) pairs of the one-to-one assignment maximising the total score (Hungarian),
    pairs scoring 0 left out."""
    if score.size == 0:
        return []
    rows, cols = linear_sum_assignment(score, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if score[r, c] > 0]


def moved_pixels(xy: np.ndarray, box_from, box_to) -> np.ndarray:
    """float[N, 2] pixel centres (col, row) of a rigid cut-out moved from its whole-body box box_from to box_to
    (x, y, w, h, pixel edges): each axis scaled and shifted so that the box goes onto the box."""
    b0, b1 = np.asarray(box_from, np.float64), np.asarray(box_to, np.float64)
    scale = b1[2:] / np.maximum(b0[2:], 1)
    return (np.asarray(xy, np.float64) + 0.5 - b0[:2]) * scale + b1[:2] - 0.5


def moved_mask(mask: np.ndarray, box_from, box_to, size: tuple[int, int]) -> np.ndarray:
    """bool[H, W]: a rigid cut-out's mask bool[H, W] moved from box_from to box_to (moved_pixels), resampled
    bilinearly and cut at one half, as the cut-outs were pasted."""
    b0, b1 = np.asarray(box_from, np.float64), np.asarray(box_to, np.float64)
    s = b1[2:] / np.maximum(b0[2:], 1)
    t = b1[:2] - 0.5 - (b0[:2] - 0.5) * s  # moved_pixels as x' = s x + t on pixel centres
    a = np.array([[s[0], 0, t[0]], [0, s[1], t[1]]])
    out = cv2.warpAffine(mask.astype(np.float32), a, size, flags=cv2.INTER_LINEAR)
    return out > 0.5


def overlaps(visible: list[np.ndarray], whole: list[np.ndarray | None], min_pixels: int
             ) -> list[tuple[int, int, np.ndarray, float]]:
    """Ground-truth pairs whose whole extents overlap in >= min_pixels pixels, as (front, back, pixels,
    agreement): visible, whole bool[H, W] per person (whole None: not known, the person is left out). The
    front person is the one whose visible mask holds more of the overlap; `pixels` bool[H, W] is the overlap
    where it is seen (the pixels it must win), `agreement` the share of the overlap it is seen on (near 1
    unless a third person or an occluder covers part of it)."""
    out = []
    for i in range(len(visible)):
        for j in range(i + 1, len(visible)):
            if whole[i] is None or whole[j] is None:
                continue
            both = whole[i] & whole[j]
            n = int(both.sum())
            if n < min_pixels:
                continue
            seen_i, seen_j = int((visible[i] & both).sum()), int((visible[j] & both).sum())
            front, back = (i, j) if seen_i >= seen_j else (j, i)
            out.append((front, back, both & visible[front], max(seen_i, seen_j) / n))
    return out


def front_wins(owner: np.ndarray, pixels: np.ndarray, front: int, back: int) -> tuple[int, int]:
    """(pixels the rendered front person holds, pixels the rendered back person holds) among `pixels`
    bool[H, W]; owner int[H, W] from owner_map, front/back its person indices (-1: no body, holds nothing)."""
    seen = owner[pixels]
    return (int((seen == front).sum()) if front >= 0 else 0, int((seen == back).sum()) if back >= 0 else 0)


def surface_points(crop: DenseCrop, posed: np.ndarray, rest: np.ndarray, faces: np.ndarray, focal: float,
                   size: tuple[int, int], xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the render says lies under pixels xy int[N, 2] (col, row) of one person's crop, all on its mask:
    (uv float[N, 2] texture coordinates, float[N, 3] the same surface points on the rest mesh, metres).

    posed float[V, 3]: the person's vertices as rendered (camera frame); rest float[V, 3]: its shaped rest
    mesh (bodies.Rest.vertices), so a point's place on the body does not depend on the pose; faces int[F, 3].
    The triangle comes from the crop, the barycentrics from the pixel's ray (render.ray_triangle).
    """
    x0, y0 = crop.box[:2]
    c, r = xy[:, 0] - x0, xy[:, 1] - y0
    tri = faces[crop.face[r, c]]  # [N, 3] corner vertex ids
    w, h = size
    d = np.stack([(xy[:, 0] + 0.5 - w / 2) / focal, (xy[:, 1] + 0.5 - h / 2) / focal, np.ones(len(xy))])
    bary, _ = ray_triangle(d, np.asarray(posed, np.float64)[tri].transpose(2, 1, 0))  # corners [3 xyz, 3, N]
    on_rest = (np.asarray(rest, np.float64)[tri] * bary.T[:, :, None]).sum(1)
    return np.stack([crop.u[r, c], crop.v[r, c]], 1).astype(np.float64), on_rest
