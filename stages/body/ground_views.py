"""Which people rows show someone standing on the floor, and a first guess of the horizon from them (for
ground.py): pure numpy."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.scores import HOUSE_THRESHOLD

NOSE, SHOULDERS, HIPS, ANKLES = 0, [5, 6], [11, 12], [15, 16]  # COCO-17


@dataclass
class UprightViews:
    """Upright views: track int64[N] (0..K-1), ankle, shoulder, nose float64[N, 2], nose_ok bool[N]."""

    track: np.ndarray
    ankle: np.ndarray
    shoulder: np.ndarray
    nose: np.ndarray
    nose_ok: np.ndarray
    ids: np.ndarray  # int64[K] the callers' track ids


def upright_views(keypoints: np.ndarray, track_id: np.ndarray, frame_index: np.ndarray,
                  threshold: float = HOUSE_THRESHOLD, per_track: int = 60) -> UprightViews:
    """Rows of keypoints float[P, 17, 3] (track_id, frame_index int[P]) where the person plausibly stands:
    ankles, hips and shoulders confident, in that order from the bottom, a torso within 30 degrees of the
    image vertical and legs 1.1-2.8 x the torso's height in the image (an upright adult is 1.7x; seated
    people are under 1, unless a steep camera sees their legs stretched toward it: the fit's trimming is
    left to drop those). At most per_track rows a track, evenly spread over its frames, so a long track does
    not outweigh the rest."""
    kp = np.asarray(keypoints, np.float64).reshape(-1, 17, 3)
    tid, frame = np.asarray(track_id).reshape(-1), np.asarray(frame_index).reshape(-1)
    conf = kp[..., 2] >= threshold
    ank, hip, sho = (kp[:, j, :2].mean(1) for j in (ANKLES, HIPS, SHOULDERS))
    torso, legs = hip - sho, ank - hip
    with np.errstate(all="ignore"):
        ratio = legs[:, 1] / torso[:, 1]
        good = (conf[:, ANKLES + HIPS + SHOULDERS].all(1) & np.isfinite(kp[..., :2]).all((1, 2))
                & (torso[:, 1] > 0) & (legs[:, 1] > 0) & (np.abs(torso[:, 0]) < np.tan(np.radians(30)) * torso[:, 1])
                & (ratio > 1.1) & (ratio < 2.8))
    if len(tid) != len(kp) or len(frame) != len(kp):
        raise ValueError(f"{len(kp)} keypoint rows, {len(tid)} track ids, {len(frame)} frame indices")
    keep = [np.zeros(0, int)]
    for t in np.unique(tid[good]):
        rows = np.flatnonzero(good & (tid == t))
        rows = rows[np.argsort(frame[rows], kind="stable")]
        keep.append(rows[np.unique(np.round(np.linspace(0, len(rows) - 1, min(per_track, len(rows)))).astype(int))])
    rows = np.concatenate(keep)
    ids, track = np.unique(tid[rows], return_inverse=True)
    nose_ok = conf[rows, NOSE] & np.isfinite(kp[rows, NOSE, :2]).all(1)
    nose = np.where(nose_ok[:, None], kp[rows, NOSE, :2], 0.0)
    return UprightViews(track.reshape(-1), ank[rows], sho[rows], nose, nose_ok, ids.astype(np.int64))


def initial_horizon(obs: UprightViews, cy: float, focal: float) -> tuple[float, np.ndarray]:
    """Starting horizon row and per-track ratio float64[K] (ankle-to-shoulder pixels / ankle-to-horizon
    pixels): a level camera makes that ratio constant along a track, and similar across people; the row that
    makes it most so wins (a 1-D search, so no start is needed)."""
    v, ext = obs.ankle[:, 1], obs.ankle[:, 1] - obs.shoulder[:, 1]
    rows = np.linspace(cy - 3.7 * focal, np.percentile(v, 5) - 2.0, 240)  # pitches up to ~75 degrees down
    d = v[None] - rows[:, None]
    q = np.log(np.maximum(ext, 1.0)[None] / np.maximum(d, 1e-3))
    per = np.stack([np.median(q[:, obs.track == k], 1) for k in range(len(obs.ids))], 1)  # [R, K]
    # truncated: a view or track off by more than 15% counts as lost, however far off (mis-detections, garbage)
    within = np.minimum(np.abs(q - per[:, obs.track]), 0.15).mean(1)
    across = np.minimum(np.abs(per - np.median(per, 1, keepdims=True)), 0.15).mean(1)
    cost = within + 0.3 * across + 0.15 * (d <= 1.0).mean(1)
    best = int(np.argmin(cost))
    return float(rows[best]), np.exp(per[best])
