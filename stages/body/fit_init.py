"""Starting points and bookkeeping for the body fit (fit.py): what a cold track starts from, the
person's size in the image, which rows are consecutive frames of a track, and what a track carries
from one chunk to the next."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stages.body.ground import ANKLE_AT, NOSE_AT
from stages.body.rig import BodyModel, Rig
from stages.body.skeleton import rotmat_to_rotvec, skinned_keypoints

# COCO-17 indices of the shoulders and hips.
SHOULDERS, HIPS = [5, 6], [11, 12]


def _rest_keypoints(rig: Rig) -> torch.Tensor:
    """float[T, 17, 3] each rest shape's COCO-17 keypoints, metres."""
    t, f = rig.rest.shape[:2]
    eye = torch.eye(4, dtype=rig.rest.dtype, device=rig.rest.device).expand(t, f, 4, 4)
    return skinned_keypoints(eye, rig.kp_coeffs)


def _torso(kp: torch.Tensor) -> torch.Tensor:
    """float[T]: shoulder-centre to hip-centre distance of rest keypoints kp float[T, 17, 3]."""
    return ((kp[:, 5] + kp[:, 6]) / 2 - (kp[:, 11] + kp[:, 12]) / 2).norm(dim=-1)


def rest_statures(rig: Rig) -> tuple[torch.Tensor, torch.Tensor]:
    """(torso float[T], stature float[T]) of each rest shape, metres: shoulder-centre to hip-centre, and
    nose to ankle-centre over the share of stature between them (ground.NOSE_AT - ground.ANKLE_AT)."""
    kp = _rest_keypoints(rig)
    return _torso(kp), (kp[:, 0] - (kp[:, 15] + kp[:, 16]) / 2).norm(dim=-1) / (NOSE_AT - ANKLE_AT)


# COCO-17 keypoint pairs a rigid part joins (shoulders, hips, upper arms, forearms, thighs, shins): in any pose
# each is as long as at rest, so its length in pixels bounds a cold start's depth (cold_start)
SEGMENTS = ((5, 6), (11, 12), (5, 7), (6, 8), (7, 9), (8, 10), (11, 13), (12, 14), (13, 15), (14, 16))


def start_lengths(model: BodyModel) -> tuple[float, np.ndarray]:
    """(torso, float64[len(SEGMENTS)] segments) of the model's default shape at rest, metres: cold_start's
    yardsticks, from one skinning of its keypoints."""
    kp = _rest_keypoints(model.rig(model.shape_default[None]))
    a, b = (torch.as_tensor([s[k] for s in SEGMENTS]) for k in (0, 1))
    return float(_torso(kp)[0]), (kp[0, a] - kp[0, b]).norm(dim=-1).cpu().double().numpy()


def person_scale(keypoints: np.ndarray, good: np.ndarray) -> np.ndarray:
    """float32[B]: diagonal of the box around each person's confident keypoints, pixels (>= 8)."""
    xy = np.where(good[..., None], keypoints[..., :2], np.nan)
    with np.errstate(all="ignore"):
        span = np.nanmax(xy, 1) - np.nanmin(xy, 1)
    return np.maximum(np.nan_to_num(np.hypot(span[:, 0], span[:, 1])), 8.0).astype(np.float32)


def cold_start(model: BodyModel, kp: np.ndarray, good: np.ndarray, focal: float, size: tuple[int, int],
               torso_m: float, segments_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Root axis-angle float32[B, 3] and translation parameters float32[B, 3] = (x/z, y/z, log z) of people
    seen for the first time: facing the camera when the left shoulder (or hip) is right of the right
    one in the image, else turned away; depth from the torso's length in pixels against torso_m. Where no
    shoulder or no hip is seen, no farther than any SEGMENTS pair seen allows (segments_m float[len(SEGMENTS)],
    start_lengths): a part turned toward the camera only looks shorter, so f x length / pixels is the
    farthest it can be. Without that bound a person seen from the waist up started where 0.35 x its
    keypoints' box made it a torso, 1.3-2.1 x too far (tests/test_body_fit.py), and the saturating
    reprojection could not pull it back: crowd_synth bodies 38 m out for a person 8 m away, their depth
    ramping over the chunk. Where the torso is seen its length still decides: bounding every start moved
    fits that were right (mmhuman3d's two people) and did worse on a held-out crowd (benchmarks/dense_accuracy.py)."""
    b = len(kp)
    w, h = size
    facing = model.facing.cpu().double().numpy()
    turned = np.diag([-1.0, 1, -1]) @ facing  # 180 degrees about the camera's vertical
    rot_face, rot_away = (rotmat_to_rotvec(torch.as_tensor(r)).numpy() for r in (facing, turned))
    scale = person_scale(kp, good)
    root = np.zeros((b, 3), np.float32)
    trans = np.zeros((b, 3), np.float32)
    for r in range(b):
        g = good[r]
        hips = kp[r, HIPS][g[HIPS]].mean(0) if g[HIPS].any() else None
        shoulders = kp[r, SHOULDERS][g[SHOULDERS]].mean(0) if g[SHOULDERS].any() else hips
        hips = shoulders if hips is None else hips
        if hips is None:  # no torso joint (a tracked row, fit_rows.py): where its keypoints are, sized by their box
            hips = shoulders = kp[r][g].mean(0) if g.any() else np.array([w / 2, h / 2])
        torso_px = max(float(np.linalg.norm(shoulders - hips)), 0.35 * float(scale[r]), 1.0)
        pair = SHOULDERS if g[SHOULDERS].all() else HIPS if g[HIPS].all() else None
        faces = pair is None or kp[r, pair[0], 0] >= kp[r, pair[1], 0]
        root[r] = rot_face if faces else rot_away
        depth = focal * torso_m / torso_px
        if not (g[SHOULDERS].any() and g[HIPS].any()):  # no torso: bounded by the parts seen
            for (i, j), length in zip(SEGMENTS, segments_m):
                if g[i] and g[j]:
                    depth = min(depth, focal * float(length) / max(float(np.linalg.norm(kp[r, i] - kp[r, j])), 1.0))
        trans[r] = [(hips[0] - w / 2) / focal, (hips[1] - h / 2) / focal, np.log(depth)]
    return root, trans


def rows_before(track: np.ndarray, frames: np.ndarray, gap: int) -> np.ndarray:
    """int64[B]: for each row (track, frames int[B]) the row of the same track `gap` frames earlier, -1 if none."""
    order = {(int(t), int(f)): i for i, (t, f) in enumerate(zip(track, frames))}
    return np.array([order.get((int(t), int(f) - gap), -1) for t, f in zip(track, frames)], np.int64)


@dataclass(frozen=True)
class Settled:
    """Fitted rows a solve holds fixed that its temporal terms still reach (losses.Motion)."""

    track_id: np.ndarray  # int64[Q]
    frames: np.ndarray  # int64[Q]
    kp3: np.ndarray  # float32[Q, 17, 3] 3D keypoints, camera frame, metres
    t3: np.ndarray  # float32[Q, 3] root translation

    @staticmethod
    def joined(*parts: Settled) -> Settled:
        return Settled(*(np.concatenate([getattr(p, n) for p in parts]) for n in Settled.__dataclass_fields__))

    def beside(self, track_id: np.ndarray, frames: np.ndarray) -> Settled:
        """The settled rows of these rows' tracks (int[B] each) at frames none of them holds."""
        tracks, held = set(track_id.tolist()), set(zip(track_id.tolist(), frames.tolist()))
        keep = np.array([t in tracks and (t, f) not in held
                         for t, f in zip(self.track_id.tolist(), self.frames.tolist())], bool).reshape(-1)
        return Settled(*(getattr(self, n)[keep] for n in Settled.__dataclass_fields__))


NOTHING_SETTLED = Settled(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 17, 3), np.float32),
                          np.zeros((0, 3), np.float32))


def consecutive(track: np.ndarray, frames: np.ndarray, settled_track: np.ndarray,
                settled_frames: np.ndarray) -> torch.Tensor:
    """int64[M, 3] consecutive-frame triples (row, the row one frame before, two frames before or -1) over the
    B rows (track, frames: int[B]) followed by Q settled rows (int[Q]), each with one of the B rows in it: a
    row next to a settled one (the frame before the chunk, a neighbour fitted in the first solve) is held to
    it as to a row of its own solve."""
    track, frames = np.concatenate([track, settled_track]), np.concatenate([frames, settled_frames])
    one, two = rows_before(track, frames, 1), rows_before(track, frames, 2)
    row, b = np.arange(len(track)), len(track) - len(settled_track)
    keep = (one >= 0) & ((row < b) | (one < b) | ((two >= 0) & (two < b)))
    return torch.as_tensor(np.stack([row, one, two], 1)[keep].astype(np.int64).reshape(-1, 3))


@dataclass
class TrackFit:
    """What a track carries from one chunk to the next (warm start, frozen shape)."""

    shape: torch.Tensor  # float[S]
    bones: torch.Tensor  # float[F, 3] last frame's fitted-bone axis-angle
    root: torch.Tensor  # float[3]
    trans: torch.Tensor  # float[3] (x/z, y/z, log of depth per body size)
    joints: torch.Tensor  # float[17, 3] last frame's keypoints (the temporal anchor)
    t3: torch.Tensor  # float[3] last frame's root translation, metres
    frame: int


def anchors(state: dict[tuple[str, int], TrackFit], video_id: str) -> Settled:
    """Every track's last fitted frame so far (state: (video, track) -> TrackFit): where the next chunk's
    temporal terms start."""
    fits = [(t, s) for (v, t), s in state.items() if v == video_id]
    if not fits:
        return NOTHING_SETTLED
    stack = lambda name: torch.stack([getattr(s, name) for _, s in fits]).cpu().numpy()  # noqa: E731
    return Settled(np.array([t for t, _ in fits], np.int64), np.array([s.frame for _, s in fits], np.int64),
                   stack("joints"), stack("t3"))
