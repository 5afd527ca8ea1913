"""Fitting bodies to tracked 2D keypoints: HMR's reprojection loss, optimised per track (no open
image-to-body regressor weights exist), batched over every person-frame of a chunk.

    rows (track, frame, COCO-17 x/y/score) -> [new tracks: shape probe, a few frames from each start]
                                           -> stage 1: root orientation + translation from the torso
                                           -> stage 2: fitted bones, root, translation, shape (new tracks)
                                           -> FitResult (bone rotations, root, translation, 3D joints, error)

Loss (stage 2; its terms are losses.py's functions), each term a mean over what it covers:
- Geman-McClure reprojection of the 17 keypoints in units of the person's size in the image, each
  weighted by its score; low-confidence keypoints weigh `low_conf_weight` x their score, missing
  ones (score 0) nothing;
- pose prior: squared axis-angle of the fitted bones (pull to rest), elbows and knees held to their
  hinge (off-axis rotation and hyper-extension cost `w_limits`); no learned prior: no motion-capture
  data with a permissive licence is at hand to learn one honestly;
- shape prior: squared distance of the shape parameters from the model's default;
- temporal: 3D keypoint acceleration and root velocity across consecutive frames of a track, against
  jitter and depth swings; the previous chunk's last frame and (second solve) the first solve's rows
  are fixed neighbours the terms reach;
- plausibility (fit_scene.py gives the scene): every fitted joint within its range; each track's
  stature near the floor's measure of it, else the adult population's (saturating: evidence wins);
  an adult's age unless the body is small; standing people upright; and, where the video's floor is
  known, the standing foot on it, which fixes depth and so size (a single view trades them freely).
  The shape probe scores each start with the same stature and adult priors, so a child start must earn
  its small size.
Shape is one per track: fitted with the track's first chunk and frozen after, so every row of a
track is written with the shape stored once for it. Later chunks start from the track's last frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stages.body import fit_scene, losses
from stages.body.fit_body import RigRows, posed_keypoints, rig_rows
from stages.body.fit_init import (NOTHING_SETTLED, Settled, TrackFit, anchors, cold_start, consecutive, person_scale,
                                   rest_statures, start_lengths)
from stages.body.fit_rows import TORSO, FitResult, choose_rows, empty_result, joined, nearest_rows
from stages.body.ground import ADULT_FROM_M, ANKLE_AT, CHILD_M, Ground
from stages.body.params import FitParams
from stages.body.rig import BodyModel, fitted_parents, flexion_axes

ADULT_AGE = 0.55  # anny's age parameter of an adult (child 1/3, young adult 2/3): losses.adult_prior


@dataclass(frozen=True)
class _Rows:
    """A chunk's fitted rows as the optimiser sees them."""

    kp: np.ndarray  # float32[B, 17, 3]
    track_id: np.ndarray  # int64[B]
    frames: np.ndarray  # int64[B]
    good: np.ndarray  # bool[B, 17] confident keypoints
    weight: np.ndarray  # float32[B, 17] reprojection weights

    def take(self, index: np.ndarray, track_id: np.ndarray | None = None) -> _Rows:
        return _Rows(self.kp[index], self.track_id[index] if track_id is None else track_id, self.frames[index],
                     self.good[index], self.weight[index])


@dataclass(frozen=True)
class _Problem:
    """One solve's constants: B rows of T tracks (a track's index: its position in `tracks`)."""

    tracks: np.ndarray  # int64[T] track ids
    known: list[TrackFit | None]  # [T] where each track left off in an earlier chunk, None for a new one
    track: np.ndarray  # int64[B] each row's track index
    track_t: torch.Tensor  # the same, on the model's device
    kp: torch.Tensor  # float[B, 17, 2] keypoints, pixels (0 where missing)
    weight: torch.Tensor  # float[B, 17] reprojection weights
    scale: torch.Tensor  # float[B] the person's size in the image, pixels
    focal: torch.Tensor  # float[B]
    center: torch.Tensor  # float[B, 2] principal point
    shape0: torch.Tensor  # float[T, S] a known track's frozen shape, a new one's start
    fixed: torch.Tensor  # bool[T, S] shape parameters held at shape0
    motion: losses.Motion
    scene: losses.Scene  # the floor (when the video's is known) and who stands on it
    stature_mean: torch.Tensor  # float[T] each track's expected stature: the floor's measure, else the population's
    stature_sd: torch.Tensor  # float[T]
    stature_w: torch.Tensor  # float[T] the prior's weight: w_stature where measured, else w_stature_unmeasured


@dataclass(frozen=True)
class _Unknowns:
    """What the optimiser moves (leaf tensors, updated in place)."""

    shape_logit: torch.Tensor  # float[T, S] logit of each shape parameter within the model's range
    bones: torch.Tensor  # float[B, F, 3] fitted-bone axis-angle (entry 0 unused: `root` turns the root)
    root: torch.Tensor  # float[B, 3] root axis-angle
    txy: torch.Tensor  # float[B, 2] x/z, y/z
    tz: torch.Tensor  # float[B, 1] log of depth per body size


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
        self._torso0, self._segments0 = start_lengths(model)  # cold_start's yardsticks; rig_rows' torso too
        self._starts = list(getattr(model, "shape_starts", [model.shape_default]))
        self._torso_w = self._tensor([0.5] + [0.0] * 16)  # stage 1: the nose tells facing and head-down from head-up
        self._torso_w[list(TORSO)] = 1.0
        self._age = model.shape_names.index("age") if "age" in model.shape_names else None
        limits = getattr(model, "joint_limits", {})
        self._limits = self._tensor([limits.get(i, float("inf")) for i in range(len(model.fitted))])

    # -- public ----------------------------------------------------------------------------------
    def fit(self, video_id: str, keypoints: np.ndarray, track_id: np.ndarray, frame_index: np.ndarray,
            image_size: tuple[int, int], ground: Ground | None = None) -> FitResult:
        """keypoints: float32[N, 17, 3] (x, y, score; video pixels, NaN/0 where missing); track_id, frame_index:
        int64[N], each track's rows in frame order. Rows with too few confident keypoints to pose a body
        alone are fitted from their track's body when it has one, else skipped and counted (fit_rows).
        Tracks seen before (same video_id) continue from their last fit with their shape frozen.
        ground: the video's floor (ground.estimate_ground); where it is ok its focal is the camera's and
        standing feet are held on it, else the focal is focal_factor x the diagonal and no floor is assumed."""
        p = self.p
        ground = ground if ground is not None and ground.ok else None
        focal = ground.focal if ground else float(p.focal_factor * np.hypot(*image_size))
        known = {t for v, t in self.state if v == video_id}
        pick = choose_rows(keypoints, track_id, known, p)
        weight = np.where(pick.good, pick.conf, p.low_conf_weight * pick.conf).astype(np.float32)
        every = _Rows(keypoints, track_id, frame_index, pick.good, weight)
        parts, near, settled = [], None, anchors(self.state, video_id)
        if len(pick.alone):
            data = every.take(pick.alone)
            start = self._probe(video_id, data, image_size, focal, ground)
            cold = any((video_id, int(t)) not in self.state for t in data.track_id)
            out = self._solve(video_id, data, image_size, focal, start, p.iters_full if cold else p.iters_warm,
                              remember=True, ground=ground, settled=settled)
            parts.append(self._result(pick.alone, data, focal, out))
            nearest = nearest_rows(track_id, frame_index, pick.alone, pick.tracked)
            near = {"rows": np.flatnonzero(nearest >= 0),
                    **{k: out[k][nearest[nearest >= 0]] for k in ("bones", "root", "params", "joints")}}
            settled = Settled.joined(settled, Settled(data.track_id, data.frames, out["joints"], out["translation"]))
        if len(pick.tracked):  # every track is known now: a warm start from its body, its shape held
            data = every.take(pick.tracked)
            parts.append(self._result(pick.tracked, data, focal, self._solve(
                video_id, data, image_size, focal, {}, p.iters_warm, remember=True, ground=ground, near=near,
                settled=settled)))
        if not parts:
            return empty_result(len(self.model.parents), focal, pick.skipped)
        return joined(parts, focal, pick.skipped)

    def _result(self, rows: np.ndarray, data: _Rows, focal: float, out: dict) -> FitResult:
        """A solve's output (_solve) for the input rows `rows`, bones spread over the full rig."""
        full = np.zeros((len(rows), len(self.model.parents), 3), np.float32)
        full[:, self.model.fitted[1:]] = out["bones"][:, 1:]
        return FitResult(rows=rows, bone_rotvec=full, root_rotvec=out["root"], translation=out["translation"],
                         joints=out["joints"], low_conf=~data.good, reproj_px=out["err"], contact=out["contact"],
                         focal=focal)

    def shapes(self, video_id: str) -> dict[int, np.ndarray]:
        """track id -> float32[S] shape of every track of the video fitted so far."""
        return {t: s.shape.cpu().numpy() for (v, t), s in self.state.items() if v == video_id}

    def statures(self, video_id: str) -> dict[int, float]:
        """track id -> stature (metres) of every track of the video fitted so far."""
        keys = [k for k in self.state if k[0] == video_id]
        if not keys:
            return {}
        with torch.no_grad():
            _, stature = rest_statures(self.model.rig(torch.stack([self.state[k].shape for k in keys])))
        return {t: float(s) for (_, t), s in zip(keys, stature.cpu().tolist())}

    def close(self, video_id: str) -> None:
        for key in [k for k in self.state if k[0] == video_id]:
            del self.state[key]

    # -- the shape probe -------------------------------------------------------------------------
    def _probe(self, video_id: str, data: _Rows, size, focal, ground: Ground | None) -> dict[int, torch.Tensor]:
        """Starting shape of each new track: the model's `shape_starts` (anny: the default, a child's and an
        old person's age) each fitted to a few of its frames; the lowest loss wins. From one start the
        age barely moves: a pose change explains most of what a proportion change would. (Starting at the
        floor's measured stature instead was worse for children, whom the floor measures ~7% short.)"""
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
        out = self._solve(video_id, rows, size, focal, start, self.p.probe_iters, remember=False, shape_free=False,
                          ground=ground)
        best = {}
        ids = np.unique(data.track_id[pick])
        priors = self._start_priors(ids, ground)  # [T, starts]: a child start must earn its small size
        for i, t in enumerate(ids):
            scores = [out["loss"][rows.track_id == k * span + t].mean() + priors[i, k]
                      for k in range(len(self._starts))]
            best[int(t)] = self._starts[int(np.argmin(scores))]
        return best

    def _start_priors(self, tracks: np.ndarray, ground: Ground | None) -> np.ndarray:
        """float[T, starts]: the stature and adult priors of each starting shape for each track, what the
        probe adds to its reprojection loss (the same terms stage 2 minimises)."""
        with torch.no_grad():
            starts = torch.stack(self._starts)
            stature = rest_statures(self.model.rig(starts))[1]  # [starts]
            e = fit_scene.expected_statures(tracks, ground, self.p, stature)
            out = np.zeros((len(tracks), len(self._starts)))
            for k in range(len(self._starts)):
                s = stature[k].expand(len(tracks))
                out[:, k] = (e["stature_w"] * losses.stature_costs(s, e["stature_mean"], e["stature_sd"])).cpu().numpy()
                if self._age is not None:
                    out[:, k] += float(losses.adult_prior(self.p.w_adult, starts[k, self._age][None], stature[k][None],
                                                          ADULT_AGE, ADULT_FROM_M, CHILD_M))
        return out

    # -- one optimisation ------------------------------------------------------------------------
    def _solve(self, video_id, data: _Rows, size, focal, start, iters, remember, shape_free=True,
               ground: Ground | None = None, near: dict | None = None, settled: Settled = NOTHING_SETTLED) -> dict:
        """Stages 1 and 2 on rows that all get fitted; start: track id -> initial shape of a new track;
        near: rows of known tracks to start from another row's body (_unknowns); settled: fitted rows the
        temporal terms reach (losses.Motion)."""
        p = self.p
        pb = self._problem(video_id, data, size, focal, start, shape_free, ground, settled)
        x = self._unknowns(pb, data, size, focal, ground, near)
        held = None if bool((~pb.fixed).any()) else self._held_rig(pb, x)
        # a new track's shape waits at its probed start while the pose settles (params.py: shape_after)
        wait = p.shape_after if held is None else 0
        if wait:
            held, x.shape_logit.requires_grad = self._held_rig(pb, x), False
        if any(s is None for s in pb.known) and p.iters_root:
            # stage 1 moves the root and translation only: the rig and the bones are constants there, so
            # neither is differentiated (a quarter of a cold chunk's iterations, each ~2x cheaper)
            rig = held if held is not None else self._held_rig(pb, x)
            x.bones.requires_grad_(False)
            opt = self._adam(x, pose=False)
            for _ in range(p.iters_root):
                opt.zero_grad()
                _, proj, _, _ = self._posed(pb, x, rig)
                losses.reprojection(proj, pb.kp, pb.scale, pb.weight * self._torso_w, p.root_sigma).mean().backward()
                opt.step()
            x.bones.requires_grad_(True)
        opt = self._adam(x, pose=True)
        for it in range(iters):
            if wait and it == wait:
                held = None
                x.shape_logit.requires_grad_(True)
            if it == wait + p.shape_iters and held is None:
                held = self._held_rig(pb, x)  # the shape has settled; the rest only refines the pose (a third cheaper)
                # ...and the shape stays exactly that one: left in Adam, momentum and the priors would move
                # the stored shape away from the one the poses were fitted with
                x.shape_logit.requires_grad_(False)
                x.shape_logit.grad = None
            opt.zero_grad()
            kp3, proj, t3, rig = self._posed(pb, x, held)
            self._terms(pb, x, kp3, proj, t3, rig.stature).total().backward()
            opt.step()
        with torch.no_grad():
            kp3, proj, t3, rig = self._posed(pb, x, held)
            good = torch.as_tensor(data.good, device=pb.kp.device)
            err = ((proj - pb.kp).norm(dim=-1) * good).sum(1) / good.sum(1)
            # what the probe compares starts by: the reprojection, and a standing foot off the floor (a
            # child's body fits an adult's keypoints as well, floating at a nearer depth)
            final = losses.reprojection(proj, pb.kp, pb.scale, pb.weight, p.robust_sigma) \
                + p.w_ground * losses.ground_costs(kp3, pb.scene, ANKLE_AT * rig.stature[pb.track_t], p.ground_tol)
            shape = self._shape(pb, x)
        if remember:
            self._remember(video_id, data, pb, x, shape, kp3, t3)
        cpu = lambda v: v.detach().cpu().numpy().astype(np.float32)
        contact = pb.scene.contact.cpu().numpy()
        return {"bones": cpu(x.bones), "root": cpu(x.root), "translation": cpu(t3), "joints": cpu(kp3),
                "err": cpu(err), "loss": cpu(final), "contact": contact, "params": cpu(torch.cat([x.txy, x.tz], 1))}

    def _terms(self, pb: _Problem, x: _Unknowns, kp3, proj, t3, stature) -> losses.LossTerms:
        """Stage 2's loss on the body posed from x: kp3 float[B, 17, 3], proj float[B, 17, 2], t3 float[B, 3];
        stature float[T] of each track's shape, metres."""
        p = self.p
        shape = self._shape(pb, x)
        age = shape[:, self._age] if self._age is not None else None
        return losses.LossTerms(
            reprojection=losses.reprojection(proj, pb.kp, pb.scale, pb.weight, p.robust_sigma).mean(),
            rest=losses.rest_pull(p.w_pose, x.bones),
            hinges=losses.hinge_limits(p.w_limits, x.bones, self.hinges),
            shape=losses.shape_prior(p.w_shape, shape, self.model.shape_default),
            accel=losses.acceleration(p.w_accel, kp3, pb.motion),
            velocity=losses.root_velocity(p.w_velocity, t3, pb.motion),
            limits=losses.joint_limits(p.w_joint_limits, x.bones, self._limits),
            stature=losses.stature_prior(pb.stature_w, stature, pb.stature_mean, pb.stature_sd),
            adult=losses.adult_prior(p.w_adult, age, stature, ADULT_AGE, ADULT_FROM_M, CHILD_M) if age is not None
            else stature.new_zeros(()),
            ground=losses.ground_contact(p.w_ground, kp3, pb.scene, ANKLE_AT * stature[pb.track_t], p.ground_tol),
            upright=losses.upright(p.w_upright, kp3, pb.scene, np.radians(p.upright_free_deg)))

    # -- a solve's constants, unknowns and optimiser ----------------------------------------------
    def _problem(self, video_id: str, data: _Rows, size, focal, start, shape_free: bool,
                 ground: Ground | None, settled: Settled) -> _Problem:
        m, t_ = self.model, self._tensor
        tracks, track = np.unique(data.track_id, return_inverse=True)
        prev = [self.state.get((video_id, int(t))) for t in tracks]
        b = len(track)
        shape0 = torch.stack([s.shape if s is not None else start.get(int(t), m.shape_default)
                              for t, s in zip(tracks, prev)])
        fixed = torch.as_tensor([s is not None or not shape_free for s in prev], device=shape0.device)[:, None] \
            | self._shape_fixed[None]
        kp = t_(np.nan_to_num(data.kp[..., :2]))
        beside = settled.beside(data.track_id, data.frames)
        triples = consecutive(track, data.frames, np.searchsorted(tracks, beside.track_id), beside.frames)
        return _Problem(tracks=tracks, known=prev, track=track, track_t=torch.as_tensor(track, device=kp.device), kp=kp,
                        weight=t_(data.weight), scale=t_(person_scale(data.kp, data.good)),
                        focal=torch.full((b,), focal, dtype=kp.dtype, device=kp.device),
                        center=t_([[size[0] / 2, size[1] / 2]]).expand(b, 2), shape0=shape0, fixed=fixed,
                        motion=losses.Motion(triples, t_(beside.kp3), t_(beside.t3)),
                        scene=fit_scene.scene(data.kp, data.good, data.track_id, data.frames, ground, kp),
                        **fit_scene.expected_statures(tracks, ground, self.p, kp))

    def _unknowns(self, pb: _Problem, data: _Rows, size, focal, ground: Ground | None,
                  near: dict | None = None) -> _Unknowns:
        """Cold rows start from the torso (stage 1 refines that), or where a foot stands on a known floor
        at that foot's depth; every row of a known track from its last frame's pose and depth (or, for
        near["rows"], from the bones, root, params and joints given beside them: a nearer frame's fit),
        moved across the image to where this row's keypoints are. Not moved, a row a person-size away from
        its keypoints (a walker 32 frames on, a track re-identified after seconds away) lies where the
        saturating reprojection no longer pulls, and the other terms held it there (vtest: bodies 100-300
        px off)."""
        m = self.model
        root, trans = cold_start(m, data.kp, data.good, focal, size, self._torso0, self._segments0)
        if ground is not None:
            rows, depth = fit_scene.floor_depths(data.kp, pb.scene, ground)
            trans[rows, 2] = np.log(depth)
        root, trans = self._tensor(root), self._tensor(trans)
        bones = root.new_zeros(len(pb.track), len(m.fitted), 3)
        last = root.new_ones(len(pb.track), 17, 3)  # [B, 17, 3] the 3D keypoints each warm row starts from
        warm = torch.zeros(len(pb.track), dtype=torch.bool, device=root.device)
        for ti, s in enumerate(pb.known):
            if s is not None:
                sel = torch.as_tensor(pb.track == ti, device=root.device)
                bones[sel], root[sel], trans[sel], last[sel], warm[sel] = s.bones, s.root, s.trans, s.joints, True
        if near is not None:
            i = torch.as_tensor(near["rows"], device=root.device)
            bones[i], root[i], trans[i], last[i] = (self._tensor(near[k])
                                                    for k in ("bones", "root", "params", "joints"))
        good = torch.as_tensor(data.good, dtype=root.dtype, device=root.device)[warm]
        then = last[warm, :, :2] / last[warm, :, 2:].clamp(min=0.05)  # [R, 17, 2] x/z, y/z
        now = (pb.kp[warm] - pb.center[warm][:, None]) / focal  # [R, 17, 2] this row's keypoints
        trans[warm, :2] += ((now - then) * good[..., None]).sum(1) / good.sum(1, keepdim=True).clamp(min=1)
        logit = torch.logit(((pb.shape0 - m.shape_low) / (m.shape_high - m.shape_low)).clamp(1e-3, 1 - 1e-3))
        return _Unknowns(logit.requires_grad_(), bones.requires_grad_(), root.requires_grad_(),
                         trans[:, :2].clone().requires_grad_(), trans[:, 2:].clone().requires_grad_())

    def _adam(self, x: _Unknowns, pose: bool) -> torch.optim.Adam:
        """Stage 1 moves the root and translation, stage 2 the bones and shape too. Per-parameter steps:
        x/z, y/z move the body by focal x step pixels, so their step is small."""
        lr = self.p.lr
        groups = [{"params": [x.bones, x.shape_logit], "lr": lr}] if pose else []
        return torch.optim.Adam(groups + [{"params": [x.root], "lr": lr}, {"params": [x.txy], "lr": lr * self.p.lr_xy},
                                          {"params": [x.tz], "lr": lr * self.p.lr_depth}])

    def _remember(self, video_id: str, data: _Rows, pb: _Problem, x: _Unknowns, shape, kp3, t3) -> None:
        """Each track's last row of the solve, where no later frame of it is remembered already."""
        trans = torch.cat([x.txy, x.tz], 1).detach()
        for ti, t in enumerate(pb.tracks):
            last = int(np.flatnonzero(pb.track == ti)[-1])
            if pb.known[ti] is None or pb.known[ti].frame < data.frames[last]:
                self.state[(video_id, int(t))] = TrackFit(shape[ti], x.bones[last].detach(), x.root[last].detach(),
                                                          trans[last], kp3[last], t3[last], int(data.frames[last]))

    # -- the model evaluated on parameters ------------------------------------------------------
    def _tensor(self, x) -> torch.Tensor:
        return torch.as_tensor(x, dtype=self.model.shape_default.dtype, device=self.model.shape_default.device)

    def _shape(self, pb: _Problem, x: _Unknowns) -> torch.Tensor:
        """float[T, S]: the free parameters within the model's range, the others held."""
        m = self.model
        free = m.shape_low + (m.shape_high - m.shape_low) * torch.sigmoid(x.shape_logit)
        return torch.where(pb.fixed, pb.shape0, free)

    def _held_rig(self, pb: _Problem, x: _Unknowns) -> RigRows:
        """The rig while the shape is held: a constant, so computed once and without gradient."""
        with torch.no_grad():
            return rig_rows(self.model, self.parents, self._torso0, self._shape(pb, x), pb.track_t)

    def _posed(self, pb: _Problem, x: _Unknowns, held: RigRows | None) -> tuple:
        """(kp3, proj, t3) of the body at x (fit_body.posed_keypoints), on the held rig if there is one, and
        that rig."""
        rig = held if held is not None else rig_rows(self.model, self.parents, self._torso0, self._shape(pb, x),
                                                     pb.track_t)
        return (*posed_keypoints(self.parents, rig, x.bones, x.root, x.txy, x.tz, pb.focal, pb.center), rig)
