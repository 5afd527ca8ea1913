"""Which person-frames have a foot on the floor, from the 2D keypoints alone (pure numpy).

A person stands on a foot when it is the lower of the two in the image, the body is upright (ankles
below hips below shoulders) and that ankle is still: it moved less than `still` x the person's size
since the track's previous frame (a swinging foot moves ~0.1 of a body height per frame at 25 fps; a
planted one does not, and a walker's slow drift stays under it). The fit holds that
ankle on the ground plane (losses.ground_contact); the bodies table reports it per frame.
"""
from __future__ import annotations

import numpy as np

from stages.body.fit_init import person_scale, rows_before
from stages.scores import HOUSE_THRESHOLD, confident

ANKLES, HIPS, SHOULDERS = (15, 16), (11, 12), (5, 6)  # COCO-17


def foot_contact(keypoints: np.ndarray, track_id: np.ndarray, frame_index: np.ndarray, still: float = 0.06,
                 threshold: float = HOUSE_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """keypoints float[B, 17, 3] (x, y, score), track_id, frame_index int[B] -> (contact bool[B], ankle
    int64[B]: the COCO-17 index of the foot on the floor, 15 or 16, where contact). A row whose track has
    no row at the previous frame counts as still: a track's first frame is usually a standing one."""
    kp = np.asarray(keypoints, np.float64)
    ok = confident(kp, threshold)
    ank_y = np.where(ok[:, ANKLES], kp[:, ANKLES, 1], -np.inf)
    lower = np.where(ank_y[:, 1] > ank_y[:, 0], ANKLES[1], ANKLES[0])
    rows = np.arange(len(kp))
    has_foot = ok[rows, lower]
    with np.errstate(invalid="ignore", divide="ignore"):
        hip_y = np.where(ok[:, HIPS], kp[:, HIPS, 1], 0).sum(1) / ok[:, HIPS].sum(1)  # NaN: no hip seen
        sho_y = np.where(ok[:, SHOULDERS], kp[:, SHOULDERS, 1], 0).sum(1) / ok[:, SHOULDERS].sum(1)
        upright = (sho_y < hip_y) & (hip_y < kp[rows, lower, 1])
    size = person_scale(kp, ok)
    prev = rows_before(track_id, frame_index, 1)
    moved = np.zeros(len(kp))
    i = np.flatnonzero(prev >= 0)
    i = i[ok[prev[i], lower[i]]]  # the track's previous frame saw that foot
    step = kp[i, lower[i], :2] - kp[prev[i], lower[i], :2]
    moved[i] = np.hypot(step[:, 0], step[:, 1]) / size[i]
    return has_foot & upright & (moved < still), lower.astype(np.int64)
