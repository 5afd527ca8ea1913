"""What the video's scene tells the body fit (fit.py): the floor and who stands on it, each track's
expected stature, and where a standing person's depth starts. Pure functions of arrays and a Ground.

Without a floor (ground.estimate_ground not ok) the fit keeps the camera's own -y as up (a level camera,
what most video is shot with) for the upright term only, and the adult population's stature for everyone.
"""
from __future__ import annotations

import numpy as np
import torch

from stages.body import losses
from stages.body.contact import foot_contact
from stages.body.ground import ANKLE_AT, HEIGHT_SD, STATURE_M, STATURE_SD_M, Ground
from stages.body.params import FitParams

LEGS = (13, 14, 15, 16)  # COCO-17 knees and ankles


def scene(keypoints: np.ndarray, good: np.ndarray, track_id: np.ndarray, frames: np.ndarray,
          ground: Ground | None, like: torch.Tensor) -> losses.Scene:
    """keypoints float[B, 17, 3], good bool[B, 17] (the fit's confident keypoints, fit_rows.choose_rows),
    track_id, frames int[B] -> the floor (or the level camera's up), the rows
    standing on a foot (contact.foot_contact) and the rows held upright, as tensors of like's dtype and
    device. Upright: the standing rows, and the rows with no knee or ankle seen (behind someone, below the
    frame's edge): nothing measures their lean, and the body at rest leaned as the shoulders pulled it
    (track_a: a person seen from the waist up fitted 36-40 degrees off the floor's normal)."""
    contact, ankle = foot_contact(keypoints, track_id, frames)
    up = ground.normal if ground is not None else [0.0, -1.0, 0.0]
    as_t = lambda a: torch.as_tensor(a, device=like.device)  # noqa: E731
    return losses.Scene(torch.as_tensor(up, dtype=like.dtype, device=like.device),
                        ground.camera_height if ground is not None else None,
                        as_t(contact), as_t(ankle), as_t(contact | ~good[:, LEGS].any(1)))


def expected_statures(tracks: np.ndarray, ground: Ground | None, p: FitParams, like: torch.Tensor
                      ) -> dict[str, torch.Tensor]:
    """The stature prior per track id of tracks int[T]: {stature_mean, stature_sd, stature_w} float[T]: the
    floor's measure of the person (ground.heights, as sure as ground.height_sd) where it has one, else the
    adult population's, weighed more (then nothing else tells size from depth)."""
    known = ground.heights if ground is not None else {}
    mean = [known.get(int(t), STATURE_M) for t in tracks]
    sd = [ground.height_sd.get(int(t), HEIGHT_SD) * known[int(t)] if int(t) in known else STATURE_SD_M for t in tracks]
    w = [p.w_stature if int(t) in known else p.w_stature_unmeasured for t in tracks]
    return {name: torch.as_tensor(v, dtype=like.dtype, device=like.device)
            for name, v in (("stature_mean", mean), ("stature_sd", sd), ("stature_w", w))}


def floor_depths(keypoints: np.ndarray, sc: losses.Scene, ground: Ground) -> tuple[np.ndarray, np.ndarray]:
    """(rows int[R], depth float[R] metres) for the standing rows whose foot's ray meets the floor: where an
    adult's ankle on the floor would be, a cold start's depth (fit_init.cold_start guesses from the torso)."""
    on = sc.contact.cpu().numpy()
    rows = np.flatnonzero(on)
    feet = keypoints[rows, sc.ankle.cpu().numpy()[on], :2]
    z = ground.backproject(feet, ANKLE_AT * STATURE_M)[:, 2]
    return rows[np.isfinite(z)], z[np.isfinite(z)]
