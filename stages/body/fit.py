"""Fitting bodies to tracked 2D keypoints: HMR's reprojection loss, optimised per track (no open
image-to-body regressor weights exist), batched over every person-frame of a chunk.

    rows (track, frame, COCO-17 x/y/score)  ->  stage 1: root orientation + translation from the torso
                                             ->  stage 2: fitted bones, root, translation and (per track) shape
                                             ->  FitResult (bone rotations, root, translation, 3D joints, error)

Loss (stage 2), all terms means over what they cover:
- Geman-McClure reprojection of the 17 keypoints in units of the person's size in the image, each
  weighted by its score; low-confidence keypoints weigh `low_conf_weight` x their score, missing
  ones (score 0) nothing;
- pose prior: squared axis-angle of the fitted bones (pull to rest), elbows and knees held to their
  hinge (off-axis rotation and hyper-extension cost `w_limits`); no learned prior: no motion-capture
  data with a permissive licence is at hand to learn one honestly;
- shape prior: squared distance of the shape parameters from the model's default;
- temporal: 3D joint acceleration and root-translation velocity across consecutive frames of a
  track (the last frame of the previous chunk included as a fixed anchor), against jitter.
Shape is one per track: it is fitted with the track's first chunk and frozen after (FitState), so
every row of a track is written with the shape stored once for it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from stages.body.params import FitParams
from stages.body.rig import BodyModel, fitted_parents, flexion_axes
from stages.body.skeleton import forward_kinematics, placement, project, rotmat_to_rotvec, skinned_keypoints

# COCO-17 indices of the torso (shoulders, hips): what stage 1 fits the root to.
TORSO = (5, 6, 11, 12)


@dataclass
class TrackFit:
    """What a track carries from one chunk to the next (warm start, frozen shape)."""

    shape: torch.Tensor  # float[S]
    bones: torch.Tensor  # float[F, 3] last frame's fitted-bone axis-angle
    root: torch.Tensor  # float[3]
    trans: torch.Tensor  # float[3] (ox, oy, log z)
    joints: torch.Tensor  # float[17, 3] last frame's keypoints (the temporal anchor)
    frame: int


@dataclass
class FitResult:
    """Per fitted row (B rows) and per track (T tracks) of one chunk."""

    rows: np.ndarray  # int64[B] indices into the chunk's input rows that were fitted
    bone_rotvec: np.ndarray  # float32[B, J, 3] local axis-angle of every bone of the full rig (rest = 0)
    root_rotvec: np.ndarray  # float32[B, 3]
    translation: np.ndarray  # float32[B, 3] camera frame, metres
    joints: np.ndarray  # float32[B, 17, 3] COCO-17 keypoints of the fitted body, camera frame, metres
    low_conf: np.ndarray  # bool[B, 17] the 2D keypoint was low-confidence or missing: not measured
    reproj_px: np.ndarray  # float32[B] mean reprojection error over the confident keypoints, pixels
    focal: float
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> person-frames not fitted


class BodyFitter:
    """Fits chunks of tracked people with one body model, on the model's device."""

    def __init__(self, model: BodyModel, params: FitParams = FitParams()):
        self.model = model
        self.p = params
        self.parents = fitted_parents(model.parents, model.fitted)
        rest = model.full_rest(model.shape_default[None])[0]
        self.hinges = flexion_axes(model, rest, model.front)
        self.state: dict[tuple[str, int], TrackFit] = {}  # (video, track) -> warm start
        # Shape parameters the model says 17 keypoints cannot tell apart stay at their default.
        fixed = getattr(model, "fixed_shape", ())
        self._shape_fixed = torch.tensor([n in fixed for n in model.shape_names],
                                         device=model.shape_default.device)
        self._torso0 = float(_torso_length(model.rig(model.shape_default[None]))[0])

    # -- the model evaluated on parameters ------------------------------------------------------
    def _keypoints(self, shape_t, track, bones, root, trans, focal, center):
        """3D keypoints (camera frame), their projections and the translation, for B rows.

        shape_t: float[T, S]; trans: float[B, 3] = (x/z, y/z, log of depth / body size): depth is
        measured in units of the shape's torso length, so a change of shape (a child's smaller body)
        keeps the body's size in the image and only changes its proportions; otherwise age and
        depth would trade against each other along a narrow valley the optimiser crawls through."""
        rig = self.model.rig(shape_t)
        size = _torso_length(rig) / self._torso0
        rig = rig.take(track)
        z = trans[:, 2:].exp() * size[track, None]
        t3 = torch.cat([trans[:, :2] * z, z], 1)
        _, a = forward_kinematics(self.parents, rig.rest, _rotmats(bones), placement(root, t3))
        kp3 = skinned_keypoints(a, rig.kp_coeffs)
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

    # -- one chunk -------------------------------------------------------------------------------
    def fit(self, video_id: str, keypoints: np.ndarray, track_id: np.ndarray, frame_index: np.ndarray,
            image_size: tuple[int, int]) -> FitResult:
        """keypoints: float32[N, 17, 3] (x, y, score; video pixels, NaN/0 where missing); track_id, frame_index:
        int64[N], rows of each track in frame order. Rows with too few confident keypoints are skipped
        and counted. Tracks seen before (same video_id) start from their last fit, with their shape frozen;
        a new track is fitted from each of the model's `shape_starts` and keeps the best (anny: a child's,
        an adult's and an old person's age), since from one start the age barely moves: a pose change
        explains most of what a proportion change would."""
        p = self.p
        conf = np.nan_to_num(keypoints[..., 2]) * np.isfinite(keypoints[..., :2]).all(-1)
        good = conf >= p.low_confidence
        ok = (good.sum(1) >= p.min_joints) & (good[:, TORSO].sum(1) >= 2)
        rows = np.flatnonzero(ok)
        skipped = {"few_confident_joints": int((~ok).sum())} if (~ok).any() else {}
        w, h = image_size
        focal = float(p.focal_factor * np.hypot(w, h))
        if not len(rows):
            return _empty(len(self.model.parents), focal, skipped)
        starts = list(getattr(self.model, "shape_starts", [self.model.shape_default]))
        tid = track_id[rows]
        cold = np.array([(video_id, int(t)) not in self.state for t in tid])
        if len(starts) == 1 or not cold.any():
            out = self._solve(video_id, keypoints[rows], tid, frame_index[rows], good[rows], conf[rows], (w, h),
                              focal, {})
            return self._result(rows, out, good[rows], focal, skipped)
        # Hypotheses as extra tracks: ids past every real one, one copy of a cold track's rows per start.
        base = int(tid.max()) + 1
        sel = [np.arange(len(rows))] + [np.flatnonzero(cold)] * (len(starts) - 1)
        ids = [tid] + [base * k + tid[cold] for k in range(1, len(starts))]
        pick = np.concatenate(sel)
        hyp_tid = np.concatenate(ids)
        start = {int(t): starts[k] for k, group in enumerate(ids) for t in np.unique(group[cold[sel[k]]])}
        out = self._solve(video_id, keypoints[rows][pick], hyp_tid, frame_index[rows][pick], good[rows][pick],
                          conf[rows][pick], (w, h), focal, start)
        best = {}
        for t in np.unique(tid[cold]):
            scores = [out["loss"][hyp_tid == base * k + t if k else (hyp_tid == t)].mean() for k in range(len(starts))]
            best[int(t)] = int(np.argmin(scores))
        keep = np.array([not cold[i] or best[int(tid[i])] == 0 for i in range(len(rows))] +
                        [best[int(t)] == k for k in range(1, len(starts)) for t in tid[cold]])
        for t, k in best.items():  # the chosen hypothesis becomes the track's state; the others go
            for kk in range(1, len(starts)):
                state = self.state.pop((video_id, base * kk + t))
                if kk == k:
                    self.state[(video_id, t)] = state
        order = np.argsort(pick[keep], kind="stable")
        chosen = {key: value[keep][order] for key, value in out.items()}
        return self._result(rows, chosen, good[rows], focal, skipped)

    def _solve(self, video_id, keypoints, track_id, frames, good, conf, image_size, focal, start) -> dict:
        """Stages 1 and 2 on rows that all get fitted; start: track id -> initial shape of a cold track."""
        p, dev, dtype = self.p, self.model.shape_default.device, self.model.shape_default.dtype
        w, h = image_size
        kp = torch.as_tensor(np.nan_to_num(keypoints[:, :, :2]), dtype=dtype, device=dev)
        weight = torch.as_tensor(np.where(good, conf, p.low_conf_weight * conf), dtype=dtype,
                                 device=dev)
        scale = _person_scale(keypoints, good)
        scale_t = torch.as_tensor(scale, dtype=dtype, device=dev)
        tracks, track = np.unique(track_id, return_inverse=True)
        track_t = torch.as_tensor(track, device=dev)
        b = len(track_id)
        focal_t = torch.full((b,), focal, dtype=dtype, device=dev)
        center = torch.tensor([[w / 2, h / 2]], dtype=dtype, device=dev).expand(b, 2)

        shape0, frozen, bones0, root0, trans0, prev = self._init(video_id, tracks, track, kp, good, focal, (w, h),
                                                                 start)
        shape_free = torch.logit(((shape0 - self.model.shape_low) / (self.model.shape_high - self.model.shape_low))
                                 .clamp(1e-3, 1 - 1e-3)).requires_grad_()
        bones = bones0.clone().requires_grad_()
        root = root0.clone().requires_grad_()
        trans = trans0.clone().requires_grad_()
        frozen_t = torch.as_tensor(frozen, device=dev)[:, None]
        pred, anchor = _predecessors(track, frames, prev, tracks)

        fixed = frozen_t | self._shape_fixed[None]

        def shape_of(free):
            s = self.model.shape_low + (self.model.shape_high - self.model.shape_low) * torch.sigmoid(free)
            return torch.where(fixed, shape0, s)

        def reprojection(proj, which=None, sigma=p.robust_sigma):
            e2 = ((proj - kp) ** 2).sum(-1) / scale_t[:, None] ** 2
            rho = e2 / (e2 + sigma ** 2)
            wgt = weight if which is None else weight * which
            return (wgt * rho).sum() / wgt.sum().clamp(min=1e-6)

        torso = torch.zeros(17, dtype=dtype, device=dev)
        torso[list(TORSO)] = 1.0
        torso[0] = 0.5  # the nose tells facing and head-down from head-up
        cold = [bool(s is None) for s in prev]
        if any(cold) and p.iters_root:
            opt = torch.optim.Adam([root, trans], lr=p.lr)
            for _ in range(p.iters_root):
                opt.zero_grad()
                _, proj, _ = self._keypoints(shape_of(shape_free), track_t, bones, root, trans, focal_t, center)
                reprojection(proj, torso, p.root_sigma).backward()
                opt.step()
        prev_joints = torch.stack([a.joints if a is not None else torch.zeros(17, 3, dtype=dtype, device=dev)
                                   for a in prev]) if prev else None

        def closure():
            opt.zero_grad()
            shape_t = shape_of(shape_free)
            kp3, proj, t3 = self._keypoints(shape_t, track_t, bones, root, trans, focal_t, center)
            loss = reprojection(proj) + self._prior(bones)
            loss = loss + p.w_shape * ((shape_t - self.model.shape_default) ** 2).sum(1).mean()
            loss = loss + self._temporal(kp3, t3, pred, anchor, prev_joints, track_t, scale_t)
            loss.backward()
            return loss

        opt = torch.optim.Adam([bones, root, trans, shape_free], lr=p.lr)
        for _ in range(p.iters_full):
            closure()
            opt.step()
        with torch.no_grad():
            shape_t = shape_of(shape_free)
            kp3, proj, t3 = self._keypoints(shape_t, track_t, bones, root, trans, focal_t, center)
            err = ((proj - kp).norm(dim=-1) * torch.as_tensor(good, device=dev)).sum(1) / \
                torch.as_tensor(good.sum(1), dtype=dtype, device=dev)
            e2 = ((proj - kp) ** 2).sum(-1) / scale_t[:, None] ** 2
            loss = (weight * e2 / (e2 + p.robust_sigma ** 2)).sum(1) / weight.sum(1).clamp(min=1e-6)
        self._remember(video_id, tracks, track, frames, shape_t.detach(), bones.detach(), root.detach(),
                       trans.detach(), kp3.detach())
        return {"bones": bones.detach().cpu().numpy(), "root": root.detach().cpu().numpy(),
                "translation": t3.cpu().numpy(), "joints": kp3.cpu().numpy(), "err": err.cpu().numpy(),
                "loss": loss.cpu().numpy()}

    def _result(self, rows, out, good, focal, skipped) -> FitResult:
        b = len(rows)
        full = np.zeros((b, len(self.model.parents), 3), np.float32)
        full[:, self.model.fitted[1:]] = out["bones"][:, 1:]
        return FitResult(rows=rows, bone_rotvec=full, root_rotvec=out["root"], translation=out["translation"],
                         joints=out["joints"], low_conf=~good, reproj_px=out["err"].astype(np.float32), focal=focal,
                         skipped=skipped)

    def shapes(self, video_id: str) -> dict[int, np.ndarray]:
        """track id -> float32[S] shape of every track of the video fitted so far."""
        return {t: s.shape.cpu().numpy() for (v, t), s in self.state.items() if v == video_id}

    def close(self, video_id: str) -> None:
        for key in [k for k in self.state if k[0] == video_id]:
            del self.state[key]

    # -- helpers ---------------------------------------------------------------------------------
    def _temporal(self, kp3, t3, pred, anchor, prev_joints, track_t, scale_t):
        """Acceleration of the 3D keypoints and velocity of the root over consecutive frames."""
        p = self.p
        if not (p.w_accel or p.w_velocity) or not len(pred):
            return kp3.new_zeros(())
        seq = kp3 if prev_joints is None else torch.cat([prev_joints, kp3])
        off = 0 if prev_joints is None else len(prev_joints)
        i, j, k = pred[:, 0] + off, pred[:, 1] + off, pred[:, 2]
        # anchor rows (k < 0 -> the previous chunk's last frame of that track)
        kk = torch.where(k >= 0, k + off, anchor)
        valid = kk >= 0
        accel = seq[i] - 2 * seq[j] + seq[kk.clamp(min=0)]
        loss = p.w_accel * ((accel ** 2).sum((1, 2)) * valid).sum() / valid.sum().clamp(min=1)
        loss = loss + p.w_velocity * ((t3[pred[:, 0]] - t3[pred[:, 1]]) ** 2).sum(1).mean()
        return loss

    def _init(self, video_id, tracks, track, kp, good, focal, size, start):
        """Initial parameters: warm from a track's last fit, else facing from the shoulders' left/right
        order and depth from the torso's length in pixels against the model's."""
        m, dev, dtype = self.model, self.model.shape_default.device, self.model.shape_default.dtype
        prev = [self.state.get((video_id, int(t))) for t in tracks]
        shape0 = torch.stack([s.shape if s is not None else start.get(int(t), m.shape_default)
                              for t, s in zip(tracks, prev)])
        frozen = np.array([s is not None for s in prev])
        b = len(track)
        bones = torch.zeros(b, len(m.fitted), 3, dtype=dtype, device=dev)
        model_torso = self._torso0
        kpn = kp.cpu().numpy()
        g = good
        root = np.zeros((b, 3), np.float32)
        trans = np.zeros((b, 3), np.float32)
        w, h = size
        for r in range(b):
            hips = kpn[r, [11, 12]][g[r, [11, 12]]]
            sh = kpn[r, [5, 6]][g[r, [5, 6]]].mean(0) if g[r, [5, 6]].any() else hips.mean(0)
            hp = kpn[r, [11, 12]][g[r, [11, 12]]].mean(0) if g[r, [11, 12]].any() else sh
            torso_px = max(float(np.linalg.norm(sh - hp)), 0.35 * _person_scale(kpn[r:r + 1], g[r:r + 1])[0])
            z = focal * model_torso / max(torso_px, 1.0)  # at the default shape
            facing = True
            if g[r, 5] and g[r, 6]:
                facing = kpn[r, 5, 0] >= kpn[r, 6, 0]
            elif g[r, 11] and g[r, 12]:
                facing = kpn[r, 11, 0] >= kpn[r, 12, 0]
            rot = m.facing.cpu().numpy() if facing else np.diag([-1.0, 1, -1]) @ m.facing.cpu().numpy()
            root[r] = rotmat_to_rotvec(torch.as_tensor(rot, dtype=torch.float64)).numpy()
            trans[r] = [(hp[0] - w / 2) / focal, (hp[1] - h / 2) / focal, np.log(z)]
        root_t = torch.as_tensor(root, dtype=dtype, device=dev)
        trans_t = torch.as_tensor(trans, dtype=dtype, device=dev)
        for ti, s in enumerate(prev):  # warm start: every row of a known track from its last frame
            if s is not None:
                sel = torch.as_tensor(track == ti, device=dev)
                bones[sel] = s.bones
                root_t[sel] = s.root
                trans_t[sel] = s.trans
        return shape0, frozen, bones, root_t, trans_t, prev

    def _remember(self, video_id, tracks, track, frames, shape_t, bones, root, trans, kp3):
        for ti, t in enumerate(tracks):
            last = int(np.flatnonzero(track == ti)[-1])
            self.state[(video_id, int(t))] = TrackFit(shape=shape_t[ti], bones=bones[last], root=root[last],
                                                      trans=trans[last], joints=kp3[last], frame=int(frames[last]))


def _rotmats(bones: torch.Tensor) -> torch.Tensor:
    from stages.body.skeleton import rotvec_to_rotmat

    return rotvec_to_rotmat(bones)


def _torso_length(rig) -> torch.Tensor:
    """float[T]: shoulder-centre to hip-centre distance of each rest shape, metres."""
    t = rig.rest.shape[0]
    eye = torch.eye(4, dtype=rig.rest.dtype, device=rig.rest.device).expand(t, rig.rest.shape[1], 4, 4)
    kp = skinned_keypoints(eye, rig.kp_coeffs)
    return ((kp[:, 5] + kp[:, 6]) / 2 - (kp[:, 11] + kp[:, 12]) / 2).norm(dim=-1)


def _person_scale(keypoints: np.ndarray, good: np.ndarray) -> np.ndarray:
    """float[B]: diagonal of the box around each person's confident keypoints, pixels (>= 8)."""
    xy = np.where(good[..., None], keypoints[..., :2], np.nan)
    with np.errstate(all="ignore"):
        span = np.nanmax(xy, 1) - np.nanmin(xy, 1)
    return np.maximum(np.nan_to_num(np.hypot(span[:, 0], span[:, 1])), 8.0).astype(np.float32)


def _predecessors(track: np.ndarray, frames: np.ndarray, prev: list, tracks: np.ndarray):
    """Consecutive-frame triples (row, its predecessor, the one before) within the chunk, as int64[M, 3]
    row indices; a missing second predecessor is -1 and then `anchor` names the previous chunk's
    anchor for that track (an index into the stacked anchors) or -1."""
    order = {(int(t), int(f)): i for i, (t, f) in enumerate(zip(track, frames))}
    triples, anchors = [], []
    for i, (t, f) in enumerate(zip(track, frames)):
        j = order.get((int(t), int(f) - 1))
        if j is None:
            continue
        k = order.get((int(t), int(f) - 2), -1)
        a = -1
        if k < 0 and prev[t] is not None and prev[t].frame == int(f) - 2:
            a = int(t)
        triples.append((i, j, k))
        anchors.append(a)
    return torch.as_tensor(np.array(triples, np.int64).reshape(-1, 3)), torch.as_tensor(np.array(anchors, np.int64))


def _empty(num_bones: int, focal: float, skipped: dict) -> FitResult:
    return FitResult(rows=np.zeros(0, np.int64), bone_rotvec=np.zeros((0, num_bones, 3), np.float32),
                     root_rotvec=np.zeros((0, 3), np.float32), translation=np.zeros((0, 3), np.float32),
                     joints=np.zeros((0, 17, 3), np.float32), low_conf=np.zeros((0, 17), bool),
                     reproj_px=np.zeros(0, np.float32), focal=focal, skipped=skipped)
