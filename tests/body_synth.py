"""Synthetic tracks for the body tests: poses sampled from a body model, projected by a known camera.

Poses are plausible rather than uniform: each fitted bone turns by a random axis-angle whose size
depends on the bone (spine little, arms much), elbows and knees bend only about their hinge and only
forwards, and a track moves smoothly from one such pose to another over its frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from stages.body.rig import BodyModel, fitted_parents, flexion_axes
from stages.body.skeleton import forward_kinematics, project, rotvec_to_rotmat, skinned_keypoints

_STD = {"spine": 0.12, "neck": 0.15, "head": 0.25, "collar": 0.08, "shoulder": 0.1, "arm": 0.5, "leg": 0.35}


def _bone_std(name: str) -> float:
    n = name.lower()
    if "spine" in n or n in ("pelvis",):
        return _STD["spine"]
    if "neck" in n:
        return _STD["neck"]
    if "head" in n:
        return _STD["head"]
    if "collar" in n or n.endswith("shoulder") and "left_shoulder" not in n and "right_shoulder" not in n:
        return _STD["collar"]
    if "upleg" in n or "hip" in n:
        return _STD["leg"]
    return _STD["arm"]


@dataclass
class SynthTrack:
    keypoints: np.ndarray  # float32[N, 17, 3] pixels + score (0 where dropped)
    joints: np.ndarray  # float32[N, 17, 3] true 3D keypoints, camera frame
    shape: np.ndarray  # float32[S]


def sample_pose(model: BodyModel, rng: np.random.Generator) -> np.ndarray:
    """float32[F, 3] fitted-bone axis-angles (root entry 0)."""
    rest = model.full_rest(model.shape_default[None])[0]
    hinges = flexion_axes(model, rest, model.front)
    out = np.zeros((len(model.fitted), 3), np.float32)
    for fi, bone in enumerate(model.fitted[1:], start=1):
        if fi in hinges:
            out[fi] = hinges[fi].cpu().numpy() * rng.uniform(0.05, 1.4)
        else:
            out[fi] = rng.normal(0, _bone_std(model.bone_names[bone]), 3)
    return out


def sample_track(model: BodyModel, shape: np.ndarray, frames: int, rng: np.random.Generator,
                 image_size=(1280, 720), depth=(3.0, 6.0), noise_px=2.0, drop=0.2) -> SynthTrack:
    """A person moving smoothly in front of a camera with focal = image diagonal, 2D noise and drops."""
    w, h = image_size
    focal = float(np.hypot(w, h))
    dtype = model.shape_default.dtype
    rig = model.rig(torch.as_tensor(shape, dtype=dtype)[None])
    a_pose, b_pose = sample_pose(model, rng), sample_pose(model, rng)
    yaw0, z0 = rng.uniform(-1.2, 1.2), rng.uniform(*depth)
    x0 = rng.uniform(-0.25, 0.25) * z0
    kps, joints = [], []
    for f in range(frames):
        s = 0.5 - 0.5 * np.cos(np.pi * f / max(frames - 1, 1))
        bones = torch.as_tensor((1 - s) * a_pose + s * b_pose, dtype=dtype)
        rot = Rotation.from_rotvec([0.0, yaw0 + 0.01 * f, 0.0]).as_matrix() @ model.facing.cpu().numpy()
        root = torch.eye(4, dtype=dtype)
        root[:3, :3] = torch.as_tensor(rot, dtype=dtype)
        root[:3, 3] = torch.tensor([x0 + 0.01 * f, 0.1, z0 + 0.005 * f], dtype=dtype)
        _, a = forward_kinematics(fitted_parents(model.parents, model.fitted), rig.rest,
                                  rotvec_to_rotmat(bones[None]), root[None])
        kp3 = skinned_keypoints(a, rig.kp_coeffs)
        uv = project(kp3, torch.tensor([focal], dtype=dtype), torch.tensor([[w / 2, h / 2]], dtype=dtype))[0].numpy()
        uv = uv + rng.normal(0, noise_px, uv.shape)
        score = rng.uniform(0.5, 1.0, 17)
        gone = rng.random(17) < drop
        uv[gone], score[gone] = np.nan, 0.0
        kps.append(np.concatenate([uv, score[:, None]], 1))
        joints.append(kp3[0].numpy())
    return SynthTrack(np.asarray(kps, np.float32), np.asarray(joints, np.float32), np.asarray(shape, np.float32))


def pa_mpjpe(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean joint error after the best similarity transform (Procrustes), metres. [K, 3] each."""
    x, y = pred - pred.mean(0), true - true.mean(0)
    u, s, vt = np.linalg.svd(x.T @ y)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    r = u @ d @ vt
    scale = (s * np.diag(d)).sum() / (x ** 2).sum()
    return float(np.linalg.norm(scale * x @ r - y, axis=1).mean())
