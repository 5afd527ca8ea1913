"""Which person-frames of a chunk get a body, and the fit's answer for them (FitResult).

A person-frame is fitted when its 2D pose says enough on its own: `min_joints` confident keypoints,
two of them on the torso (stage 1 turns the root to the shoulders and hips). A tracked person who is
half hidden for a few frames (behind someone, at the frame's edge, turned away) shows fewer; skipping
those frames left the person without a body, so without a dense mask, exactly where people overlap
(crowd_synth p10: 29 of 435 tracked person-frames, 25 of them matched people of the ground truth).
Such a frame is still fitted when its track has a body, fitted in this chunk or an earlier one, and it
shows `min_joints_tracked` confident keypoints: it starts from the track's body moved to where its
keypoints are, with the track's frozen shape, and the keypoints it shows refine the pose
(fit.BodyFitter.fit). Its bodies row flags the keypoints that were not measured (joint_low_conf).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stages.body.params import FitParams
from stages.scores import confident

TORSO = (5, 6, 11, 12)  # COCO-17 shoulders and hips: what stage 1 fits the root to


@dataclass
class FitResult:
    """Per fitted row (B rows of the chunk's input)."""

    rows: np.ndarray  # int64[B] indices into the chunk's input rows that were fitted
    bone_rotvec: np.ndarray  # float32[B, J, 3] local axis-angle of every bone of the full rig (rest = 0)
    root_rotvec: np.ndarray  # float32[B, 3]
    translation: np.ndarray  # float32[B, 3] camera frame, metres
    joints: np.ndarray  # float32[B, 17, 3] COCO-17 keypoints of the fitted body, camera frame, metres
    low_conf: np.ndarray  # bool[B, 17] the 2D keypoint was low-confidence or missing: not measured
    reproj_px: np.ndarray  # float32[B] mean reprojection error over the confident keypoints, pixels
    contact: np.ndarray  # bool[B] a foot on the floor (contact.foot_contact), held there where the floor is known
    focal: float
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> person-frames not fitted


@dataclass(frozen=True)
class RowChoice:
    """A chunk's N input rows sorted by what the fit does with them."""

    good: np.ndarray  # bool[N, 17] confident keypoints (score >= the house threshold, finite x/y)
    conf: np.ndarray  # float[N, 17] scores, 0 where missing
    alone: np.ndarray  # int64[A] rows whose own keypoints pose a body
    tracked: np.ndarray  # int64[K] rows with fewer, fitted from their track's body
    skipped: dict[str, int]  # reason -> rows without a body


def choose_rows(keypoints: np.ndarray, track_id: np.ndarray, bodied: set[int], p: FitParams) -> RowChoice:
    """keypoints float[N, 17, 3] (x, y, score; NaN/0 where missing); track_id int64[N]; bodied: tracks fitted
    in an earlier chunk. A track whose rows pose a body in this chunk counts as bodied too."""
    conf = np.nan_to_num(keypoints[..., 2]) * np.isfinite(keypoints[..., :2]).all(-1)
    good = confident(keypoints)  # the unsure weigh low_conf_weight x their score; flagged in 3D
    count = good.sum(1)
    alone = (count >= p.min_joints) & (good[:, TORSO].sum(1) >= 2)
    has_body = np.isin(track_id, np.array(sorted(bodied | set(track_id[alone].tolist())), np.int64))
    tracked = ~alone & has_body & (count >= p.min_joints_tracked)
    missed = int((~alone & ~tracked).sum())
    return RowChoice(good, conf, np.flatnonzero(alone), np.flatnonzero(tracked),
                     {"few_confident_joints": missed} if missed else {})


def empty_result(num_bones: int, focal: float, skipped: dict) -> FitResult:
    return FitResult(rows=np.zeros(0, np.int64), bone_rotvec=np.zeros((0, num_bones, 3), np.float32),
                     root_rotvec=np.zeros((0, 3), np.float32), translation=np.zeros((0, 3), np.float32),
                     joints=np.zeros((0, 17, 3), np.float32), low_conf=np.zeros((0, 17), bool),
                     reproj_px=np.zeros(0, np.float32), contact=np.zeros(0, bool), focal=focal, skipped=skipped)


def joined(parts: list[FitResult], focal: float, skipped: dict) -> FitResult:
    """The parts' rows as one result in input-row order (each track's rows stay in frame order)."""
    order = np.argsort(np.concatenate([r.rows for r in parts]), kind="stable")
    cat = lambda name: np.concatenate([getattr(r, name) for r in parts])[order]  # noqa: E731
    return FitResult(rows=cat("rows"), bone_rotvec=cat("bone_rotvec"), root_rotvec=cat("root_rotvec"),
                     translation=cat("translation"), joints=cat("joints"), low_conf=cat("low_conf"),
                     reproj_px=cat("reproj_px"), contact=cat("contact"), focal=focal, skipped=skipped)


def nearest_rows(track_id: np.ndarray, frame_index: np.ndarray, alone: np.ndarray, tracked: np.ndarray) -> np.ndarray:
    """int64[K]: for each tracked row, the position in `alone` of its track's row nearest in frames (the
    body it starts from; the earlier one on a tie), -1 where its track has none in this chunk."""
    out = np.full(len(tracked), -1, np.int64)
    for k, r in enumerate(tracked):
        same = np.flatnonzero(track_id[alone] == track_id[r])
        if len(same):
            out[k] = same[np.argmin(np.abs(frame_index[alone[same]] - frame_index[r]))]
    return out
