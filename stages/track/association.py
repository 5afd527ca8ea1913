"""The tracker's association cost: how well each detection of a frame fits each track's prediction
(the cost of track.py's module docstring: 1 - OKS and 1 - IoU weighted by w_oks and w_iou, or 1 - IoU
alone where a pair shares fewer than min_joints confident joints). Pure functions of arrays;
`track.py` gathers the predictions, runs the Hungarian method on the cost and keeps the state.
"""
from __future__ import annotations

import numpy as np

from stages.coco17 import FLIP_PAIRS, box_iou, oks
from stages.scores import confident


def detections(kp: np.ndarray, bbox: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame's rows, kp float32[D, 17, 3] and bbox float32[D, 4] -> what the tracker goes by:
    (box float64[D, 4] xyxy, xy float64[D, 17, 2], ok bool[D, 17] = finite and confident joints).
    A row without a usable box gets its confident joints' extent instead (inf if it has none)."""
    box = bbox.astype(np.float64)
    xy = kp[:, :, :2].astype(np.float64)
    ok = confident(kp)  # the unsure steer nothing
    bad = ~np.isfinite(box).all(1) | (box[:, 2] < box[:, 0]) | (box[:, 3] < box[:, 1])
    if bad.any():
        m = ok[bad][..., None]
        box[bad] = np.concatenate([np.where(m, xy[bad], np.inf).min(1), np.where(m, xy[bad], -np.inf).max(1)], 1)
    return box, xy, ok


def pair_oks(pred: np.ndarray, known: np.ndarray, det: np.ndarray, ok: np.ndarray, area: np.ndarray,
             min_joints: int) -> tuple[np.ndarray, np.ndarray]:
    """COCO OKS over the joints both sides have: pred float[T, 17, 2] with known bool[T, 17] (track
    predictions), det float[D, 17, 2] with ok bool[D, 17] (confident detection joints), area float[T].
    Returns (oks float64[T, D], valid bool[T, D] = at least min_joints shared).

    Unlike metrics.oks_matrix (which scores every labelled GT joint), a joint missing on either side
    is left out: a half-occluded person must still score high against its own track."""
    sim, shared = oks(pred, det, known, ok, area[:, None])
    return sim, shared >= max(min_joints, 1)


def association_cost(pred_box: np.ndarray, pxy: np.ndarray, known: np.ndarray, box: np.ndarray, xy: np.ndarray,
                     ok: np.ndarray, w_oks: float, w_iou: float, min_joints: int, flip_margin: float | None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Tracks' predictions (pred_box float[T, 4] xyxy, pxy float[T, 17, 2] with known bool[T, 17]) vs
    detections (box float[D, 4] xyxy, xy float[D, 17, 2] with ok bool[D, 17]) -> (cost float64[T, D]
    in [0, 1], side int64[T, D]: +1 the detection's left/right agrees with the track's pose, -1 it is
    mirrored and its cost is the mirror's, 0 undecided or flip_margin None, i.e. no flip correction)."""
    iou = box_iou(pred_box, box)
    area = np.prod(pred_box[:, 2:] - pred_box[:, :2], axis=1)
    sim, has = pair_oks(pxy, known, xy, ok, area, min_joints)
    side = np.zeros(has.shape, np.int64)
    if flip_margin is not None:
        # Association sees the better of the pose and its mirror, so a flipped detection still
        # finds its own track; the margin keeps side views (left ~ right) undecided (0).
        sim_f, has_f = pair_oks(pxy, known, xy[:, FLIP_PAIRS], ok[:, FLIP_PAIRS], area, min_joints)
        side = np.where(has & has_f, (sim > sim_f + flip_margin).astype(np.int64) - (sim_f > sim + flip_margin), 0)
        sim = np.where(side < 0, sim_f, sim)
    return np.where(has, (w_oks * (1 - sim) + w_iou * (1 - iou)) / (w_oks + w_iou), 1 - iou), side
