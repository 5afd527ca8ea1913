"""Fitting bodies to tracked 2D keypoints: HMR's reprojection loss, optimised per track (no open
image-to-body regressor weights exist), batched over every person-frame of a chunk.

    rows (track, frame, COCO-17 x/y/score) -> [new tracks: shape probe, a few frames from each start]
                                           -> stage 1: root orientation + translation from the torso
                                           -> stage 2: fitted bones, root, translation, shape (new tracks)
                                           -> FitResult (bone rotations, root, translation, 3D joints, error)

Loss (stage 2), each term a mean over what it covers:
- Geman-McClure reprojection of the 17 keypoints in units of the person's size in the image, each
  weighted by its score; low-confidence keypoints weigh `low_conf_weight` x their score, missing
  ones (score 0) nothing;
- pose prior: squared axis-angle of the fitted bones (pull to rest), elbows and knees held to their
  hinge (off-axis rotation and hyper-extension cost `w_limits`); no learned prior: no motion-capture
  data with a permissive licence is at hand to learn one honestly;
- shape prior: squared distance of the shape parameters from the model's default;
- temporal: 3D keypoint acceleration (and root velocity) across consecutive frames of a track, the
  previous chunk's last frame a fixed anchor, against jitter.
Shape is one per track: fitted with the track's first chunk and frozen after, so every row of a
track is written with the shape stored once for it. Later chunks start from the track's last frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from stages.body.fit_init import cold_start, person_scale, predecessors, torso_length
from stages.body.params import FitParams
from stages.body.rig import BodyModel, fitted_parents, flexion_axes
from stages.scores import HOUSE_THRESHOLD
from stages.body.skeleton import placement, pose_relations, project, rest_relations, rotvec_to_rotmat, \
    skinned_keypoints

TORSO = (5, 6, 11, 12)  # COCO-17 shoulders and hips: what stage 1 fits the root to


@dataclass
class TrackFit:
    """What a track carries from one chunk to the next (warm start, frozen shape)."""

    shape: torch.Tensor  # float[S]
    bones: torch.Tensor  # float[F, 3] last frame's fitted-bone axis-angle
    root: torch.Tensor  # float[3]
    trans: torch.Tensor  # float[3] (x/z, y/z, log of depth per body size)
    joints: torch.Tensor  # float[17, 3] last frame's keypoints (the temporal anchor)
    frame: int


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
    focal: float
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> person-frames not fitted


@dataclass(frozen=True)
class _Rows:
    """A chunk's fitted rows as the optimiser sees them."""

    kp: np.ndarray  # float32[B, 17, 3]
    track_id: np.ndarray  # int64[B]
    frames: np.ndarray  # int64[B]
    good: np.ndarray  # bool[B, 17] confident keypoints
    weight: np.ndarray  # float32[B, 17] reprojection weights

    def take(self, index: np.ndarray, track_id: np.ndarray | None = None) -> "_Rows":
        return _Rows(self.kp[index], self.track_id[index] if track_id is None else track_id, self.frames[index],
                     self.good[index], self.weight[index])


class BodyFitter:
    """Fits chunks of tracked people with one body model, on the model's device."""

    def __init__(self, model: BodyModel, params: FitParams = FitParams()):
        self.model = model
        self.p = params
        self.parents = fitted_parents(model.parents, model.fitted)
        self.hinges = flexion_axes(model, model.full_rest(model.shape_default[None])[0], model.front)
        self.state: dict[tuple[str, int], TrackFit] = {}  # (video, track) -> warm start
        # Shape parameters the model says 17 keypoints cannot tell apart stay at their default.
        fixed = getattr(model, "fixed_shape", ())
        self._shape_fixed = torch.tensor([n in fixed for n in model.shape_names], device=model.shape_default.device)
        self._torso0 = float(torso_length(model.rig(model.shape_default[None]))[0])
        self._starts = list(getattr(model, "shape_starts", [model.shape_default]))

    # -- public ----------------------------------------------------------------------------------
    def fit(self, video_id: str, keypoints: np.ndarray, track_id: np.ndarray, frame_index: np.ndarray,
            image_size: tuple[int, int]) -> FitResult:
        """keypoints: float32[N, 17, 3] (x, y, score; video pixels, NaN/0 where missing); track_id, frame_index:
        int64[N], each track's rows in frame order. Rows with too few confident keypoints are skipped and
        counted. Tracks seen before (same video_id) continue from their last fit with their shape frozen."""
        p = self.p
        conf = np.nan_to_num(keypoints[..., 2]) * np.isfinite(keypoints[..., :2]).all(-1)
        good = conf >= HOUSE_THRESHOLD  # the unsure weigh low_conf_weight x their score; flagged in 3D
        ok = (good.sum(1) >= p.min_joints) & (good[:, TORSO].sum(1) >= 2)
        rows = np.flatnonzero(ok)
        skipped = {"few_confident_joints": int((~ok).sum())} if (~ok).any() else {}
        focal = float(p.focal_factor * np.hypot(*image_size))
        if not len(rows):
            return _empty(len(self.model.parents), focal, skipped)
        weight = np.where(good, conf, p.low_conf_weight * conf).astype(np.float32)
        data = _Rows(keypoints, track_id, frame_index, good, weight).take(rows)
        start = self._probe(video_id, data, image_size, focal)
        iters = p.iters_full if any((video_id, int(t)) not in self.state for t in data.track_id) else p.iters_warm
        out = self._solve(video_id, data, image_size, focal, start, iters, remember=True)
        full = np.zeros((len(rows), len(self.model.parents), 3), np.float32)
        full[:, self.model.fitted[1:]] = out["bones"][:, 1:]
        return FitResult(rows=rows, bone_rotvec=full, root_rotvec=out["root"], translation=out["translation"],
                         joints=out["joints"], low_conf=~data.good, reproj_px=out["err"], focal=focal,
                         skipped=skipped)

    def shapes(self, video_id: str) -> dict[int, np.ndarray]:
        """track id -> float32[S] shape of every track of the video fitted so far."""
        return {t: s.shape.cpu().numpy() for (v, t), s in self.state.items() if v == video_id}

    def close(self, video_id: str) -> None:
        for key in [k for k in self.state if k[0] == video_id]:
            del self.state[key]

    # -- the shape probe -------------------------------------------------------------------------
    def _probe(self, video_id: str, data: _Rows, size, focal) -> dict[int, torch.Tensor]:
        """Starting shape of each new track: the model's `shape_starts` (anny: the default, a child's and an
        old person's age) each fitted to a few of its frames; the lowest loss wins. From one start the
        age barely moves: a pose change explains most of what a proportion change would."""
        cold = np.array([(video_id, int(t)) not in self.state for t in data.track_id])
        if len(self._starts) < 2 or not cold.any():
            return {}
        picks = []
        for t in np.unique(data.track_id[cold]):  # a few frames spread over the chunk
            rows = np.flatnonzero(cold & (data.track_id == t))
            picks.append(rows[np.linspace(0, len(rows) - 1, min(len(rows), self.p.probe_frames)).astype(int)])
        pick = np.concatenate(picks)
        span = int(data.track_id.max()) + 1  # hypothesis k of track t is track k * span + t
        probe = [data.take(pick, k * span + data.track_id[pick]) for k in range(len(self._starts))]
        rows = _Rows(*(np.concatenate([getattr(r, n) for r in probe]) for n in _Rows.__dataclass_fields__))
        start = {k * span + int(t): s for k, s in enumerate(self._starts) for t in data.track_id[pick]}
        # Shapes held at the starts: a free shape blurs the comparison (gender and weight drift to make up
        # for a wrong age), and which start fits best is what the probe asks.
        out = self._solve(video_id, rows, size, focal, start, self.p.iters_full, remember=False, shape_free=False)
        best = {}
        for t in np.unique(data.track_id[pick]):
            scores = [out["loss"][rows.track_id == k * span + t].mean() for k in range(len(self._starts))]
            best[int(t)] = self._starts[int(np.argmin(scores))]
        return best

    # -- one optimisation ------------------------------------------------------------------------
    def _solve(self, video_id, data: _Rows, size, focal, start, iters, remember, shape_free=True) -> dict:
        """Stages 1 and 2 on rows that all get fitted; start: track id -> initial shape of a new track."""
        p, m = self.p, self.model
        dev, dtype = m.shape_default.device, m.shape_default.dtype
        t_ = lambda x: torch.as_tensor(x, dtype=dtype, device=dev)  # noqa: E731
        tracks, track = np.unique(data.track_id, return_inverse=True)
        b = len(track)
        track_t = torch.as_tensor(track, device=dev)
        kp, weight, scale = t_(np.nan_to_num(data.kp[..., :2])), t_(data.weight), t_(person_scale(data.kp, data.good))
        focal_t = torch.full((b,), focal, dtype=dtype, device=dev)
        center = t_([[size[0] / 2, size[1] / 2]]).expand(b, 2)

        prev = [self.state.get((video_id, int(t))) for t in tracks]
        shape0 = torch.stack([s.shape if s is not None else start.get(int(t), m.shape_default)
                              for t, s in zip(tracks, prev)])
        fixed = torch.as_tensor([s is not None or not shape_free for s in prev], device=dev)[:, None] \
            | self._shape_fixed[None]
        root0, trans0 = (t_(a) for a in cold_start(m, data.kp, data.good, focal, size, self._torso0))
        bones = torch.zeros(b, len(m.fitted), 3, dtype=dtype, device=dev)
        for ti, s in enumerate(prev):  # warm start: every row of a known track from its last frame
            if s is not None:
                sel = torch.as_tensor(track == ti, device=dev)
                bones[sel], root0[sel], trans0[sel] = s.bones, s.root, s.trans
        span = m.shape_high - m.shape_low
        shape_free = torch.logit(((shape0 - m.shape_low) / span).clamp(1e-3, 1 - 1e-3)).requires_grad_()
        bones.requires_grad_()
        root = root0.requires_grad_()
        txy, tz = trans0[:, :2].clone().requires_grad_(), trans0[:, 2:].clone().requires_grad_()
        pred, anchor = predecessors(track, data.frames, {i: s.frame for i, s in enumerate(prev) if s is not None})
        anchors = torch.stack([s.joints if s is not None else kp.new_zeros(17, 3) for s in prev])
        torso_w = torch.zeros(17, dtype=dtype, device=dev)
        torso_w[list(TORSO)] = 1.0
        torso_w[0] = 0.5  # the nose tells facing and head-down from head-up

        def shape_of():
            return torch.where(fixed, shape0, m.shape_low + span * torch.sigmoid(shape_free))

        def residual(proj, sigma, w=weight):
            e2 = ((proj - kp) ** 2).sum(-1) / scale[:, None] ** 2
            return (w * e2 / (e2 + sigma ** 2)).sum(1) / w.sum(1).clamp(min=1e-6)

        rig_now: list = [None]  # the rig while the shape is held: a constant (no gradient), computed once

        def hold_shape():
            with torch.no_grad():
                rig_now[0] = self._rig_rows(shape_of(), track_t)

        if not bool((~fixed).any()):
            hold_shape()

        def evaluate():
            rig = rig_now[0] if rig_now[0] is not None else self._rig_rows(shape_of(), track_t)
            return self._keypoints(rig, bones, root, txy, tz, focal_t, center)

        # Per-parameter steps: x/z, y/z move the body by focal x step pixels, so their step is small.
        lr = p.lr
        if any(s is None for s in prev) and p.iters_root:
            opt = torch.optim.Adam([{"params": [root], "lr": lr}, {"params": [txy], "lr": lr * p.lr_xy},
                                    {"params": [tz], "lr": lr * p.lr_depth}])
            for _ in range(p.iters_root):
                opt.zero_grad()
                residual(evaluate()[1], p.root_sigma, weight * torso_w).mean().backward()
                opt.step()
        opt = torch.optim.Adam([{"params": [bones, shape_free], "lr": lr}, {"params": [root], "lr": lr},
                                {"params": [txy], "lr": lr * p.lr_xy}, {"params": [tz], "lr": lr * p.lr_depth}])
        for it in range(iters):
            if it == p.shape_iters and rig_now[0] is None:
                hold_shape()  # the shape has settled; the rest only refines the pose (and costs a third less)
            opt.zero_grad()
            kp3, proj, t3 = evaluate()
            shape_t = shape_of()
            loss = residual(proj, p.robust_sigma).mean() + self._prior(bones)
            loss = loss + p.w_shape * ((shape_t - m.shape_default) ** 2).sum(1).mean()
            loss = loss + self._temporal(kp3, t3, pred, anchor, anchors)
            loss.backward()
            opt.step()
        with torch.no_grad():
            kp3, proj, t3 = evaluate()
            good = torch.as_tensor(data.good, device=dev)
            err = ((proj - kp).norm(dim=-1) * good).sum(1) / good.sum(1)
            final = residual(proj, p.robust_sigma)
            shape_t = shape_of()
        trans = torch.cat([txy, tz], 1).detach()
        if remember:
            for ti, t in enumerate(tracks):
                last = int(np.flatnonzero(track == ti)[-1])
                self.state[(video_id, int(t))] = TrackFit(shape_t[ti], bones[last].detach(), root[last].detach(),
                                                          trans[last], kp3[last], int(data.frames[last]))
        cpu = lambda x: x.detach().cpu().numpy().astype(np.float32)  # noqa: E731
        return {"bones": cpu(bones), "root": cpu(root), "translation": cpu(t3), "joints": cpu(kp3),
                "err": cpu(err), "loss": cpu(final)}

    # -- the model evaluated on parameters ------------------------------------------------------
    def _rig_rows(self, shape_t: torch.Tensor, track: torch.Tensor) -> tuple:
        """Per-track rig work (shape-dependent: rest relations, keypoint coefficients, body size) done
        once per track, then gathered per row: (kp_coeffs, rest_inv, rel, size), each indexed by row."""
        rig = self.model.rig(shape_t)
        rest_inv, rel = rest_relations(self.parents, rig.rest)
        size = torso_length(rig) / self._torso0
        return rig.kp_coeffs[track], rest_inv[track], rel[track], size[track]

    def _keypoints(self, rig_rows, bones, root, txy, tz, focal, center):
        """3D keypoints (camera frame), their projections and the translation, for B rows.

        Depth is exp(tz) in units of the shape's torso length, so a change of shape (a child's smaller
        body) keeps the body's size in the image and only changes its proportions; otherwise age and
        depth trade against each other along a narrow valley the optimiser crawls through."""
        kp_coeffs, rest_inv, rel, size = rig_rows
        z = tz.exp() * size[:, None]
        t3 = torch.cat([txy * z, z], 1)
        _, a = pose_relations(self.parents, rest_inv, rel, rotvec_to_rotmat(bones), placement(root, t3))
        kp3 = skinned_keypoints(a, kp_coeffs)
        return kp3, project(kp3, focal, center), t3

    def _prior(self, bones: torch.Tensor) -> torch.Tensor:
        loss = self.p.w_pose * (bones[:, 1:] ** 2).sum((1, 2)).mean()
        for fi, axis in self.hinges.items():
            r = bones[:, fi]
            angle = r @ axis
            off = r - angle[:, None] * axis
            loss = loss + self.p.w_limits * ((off ** 2).sum(1) + torch.relu(-angle) ** 2
                                             + torch.relu(angle - 2.6) ** 2).mean()
        return loss

    def _temporal(self, kp3, t3, pred, anchor, anchors):
        """Acceleration of the 3D keypoints and velocity of the root over consecutive frames; anchors:
        float[T, 17, 3] each track's last keypoints of the previous chunk (used where anchor >= 0)."""
        p = self.p
        if not (p.w_accel or p.w_velocity) or not len(pred):
            return kp3.new_zeros(())
        i, j, k = pred[:, 0], pred[:, 1], pred[:, 2]
        third = torch.where((k >= 0)[:, None, None], kp3[k.clamp(min=0)], anchors[anchor.clamp(min=0)])
        valid = ((k >= 0) | (anchor >= 0)).to(kp3.dtype)
        accel = kp3[i] - 2 * kp3[j] + third
        loss = p.w_accel * ((accel ** 2).sum((1, 2)) * valid).sum() / valid.sum().clamp(min=1)
        return loss + p.w_velocity * ((t3[i] - t3[j]) ** 2).sum(1).mean()


def _empty(num_bones: int, focal: float, skipped: dict) -> FitResult:
    return FitResult(rows=np.zeros(0, np.int64), bone_rotvec=np.zeros((0, num_bones, 3), np.float32),
                     root_rotvec=np.zeros((0, 3), np.float32), translation=np.zeros((0, 3), np.float32),
                     joints=np.zeros((0, 17, 3), np.float32), low_conf=np.zeros((0, 17), bool),
                     reproj_px=np.zeros(0, np.float32), focal=focal, skipped=skipped)
