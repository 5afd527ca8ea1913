"""Synthetic scenes with a known camera and floor for the body tests: anny people of known shape (adults
and children) standing and walking on the floor, seen by a camera at a known height and pitch.

Level frame: the camera's, unpitched (x right, y down, z forward); the floor is y = H. The camera is that
frame turned down by `pitch` about x. A person is posed mildly (sample_pose scaled down: standing, not
acrobatic), turned about the vertical, and set down so its lower ankle is an ankle's height above the floor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from body_synth import sample_pose
from scipy.spatial.transform import Rotation

from stages.body.fit_init import rest_statures
from stages.body.ground import ANKLE_AT, STATURE_M, STATURE_SD_M
from stages.body.rig import BodyModel, fitted_parents
from stages.body.skeleton import forward_kinematics, project, rotvec_to_rotmat, skinned_keypoints


@dataclass
class Scene:
    keypoints: np.ndarray  # float32[P, 17, 3] pixels + score
    joints: np.ndarray  # float32[P, 17, 3] true 3D keypoints, camera frame
    track_id: np.ndarray  # int64[P]
    frame_index: np.ndarray  # int64[P]
    statures: dict[int, float]  # track -> true stature (the fit's definition: fit_init.rest_statures)
    ages: dict[int, float]  # track -> anny age parameter
    camera_height: float
    pitch_deg: float
    image_size: tuple[int, int]
    focal: float


def _height_for(model: BodyModel, shape: torch.Tensor, stature: float) -> float:
    """anny's height parameter that gives `shape` this stature (stature is close to linear in it)."""
    i = model.shape_names.index("height")
    ends = shape[None].repeat(2, 1)
    ends[:, i] = torch.tensor([0.0, 1.0], dtype=shape.dtype)
    lo, hi = rest_statures(model.rig(ends))[1].tolist()
    return float(np.clip((stature - lo) / (hi - lo), 0.0, 1.0))


def make_scene(model: BodyModel, rng: np.random.Generator, adults: int = 6, children: int = 2, frames: int = 48,
               image_size=(1280, 720), noise_px: float = 1.5, drop: float = 0.05) -> Scene:
    w, h = image_size
    focal = float(np.hypot(w, h))
    cam_h, pitch = rng.uniform(2.0, 4.0), rng.uniform(8.0, 25.0)
    r_cam = Rotation.from_rotvec([np.radians(pitch), 0, 0]).as_matrix()  # level -> camera: looking down
    dtype = model.shape_default.dtype
    parents = fitted_parents(model.parents, model.fitted)
    facing = model.facing.cpu().numpy().astype(np.float64)  # model -> level frame, facing the camera
    age_i, height_i = model.shape_names.index("age"), model.shape_names.index("height")
    kps, joints, tids, fids, statures, ages = [], [], [], [], {}, {}
    for t in range(adults + children):
        shape = model.shape_default.clone()
        shape[model.shape_names.index("gender")] = rng.uniform(0, 1)
        if t < adults:  # adults of the population the fit's prior assumes (ground.STATURE_M, STATURE_SD_M)
            shape[age_i] = rng.uniform(0.6, 0.9)
            shape[height_i] = _height_for(model, shape, np.clip(rng.normal(STATURE_M, STATURE_SD_M), 1.5, 1.95))
        else:
            shape[age_i] = rng.uniform(0.2, 0.35)
        rig = model.rig(shape[None])
        statures[t], ages[t] = float(rest_statures(rig)[1][0]), float(shape[age_i])
        pose = torch.as_tensor(0.25 * sample_pose(model, rng), dtype=dtype)
        z0 = rng.uniform(4.0, 12.0)
        x0 = rng.uniform(-0.3, 0.3) * z0
        heading = rng.uniform(0, 2 * np.pi)
        # metres per frame: a walk at 1.0-1.5 m/s at 25 fps, so a track crosses a few metres of depth in 48
        # frames (what pins the horizon; ground.py)
        step = rng.uniform(0.04, 0.06) * np.array([np.sin(heading), 0, np.cos(heading)])
        rot = facing @ Rotation.from_rotvec([0, 0, heading]).as_matrix()  # turned about the model's z (up)
        root = torch.eye(4, dtype=dtype)
        root[:3, :3] = torch.as_tensor(rot, dtype=dtype)
        _, a = forward_kinematics(parents, rig.rest, rotvec_to_rotmat(pose[None]), root[None])
        body = skinned_keypoints(a, rig.kp_coeffs)[0].numpy().astype(np.float64)  # level frame, at the origin
        lift = cam_h - ANKLE_AT * statures[t] - body[[15, 16], 1].max()  # lower ankle an ankle above the floor
        for f in range(frames):
            level = body + np.array([x0, lift, z0]) + f * step
            cam = level @ r_cam.T
            uv = project(torch.as_tensor(cam[None], dtype=dtype), torch.tensor([focal], dtype=dtype),
                         torch.tensor([[w / 2, h / 2]], dtype=dtype))[0].numpy()
            uv = uv + rng.normal(0, noise_px, uv.shape)
            score = rng.uniform(0.6, 1.0, 17)
            gone = rng.random(17) < drop
            uv[gone], score[gone] = np.nan, 0.0
            kps.append(np.concatenate([uv, score[:, None]], 1))
            joints.append(cam)
            tids.append(t)
            fids.append(f)
    return Scene(np.asarray(kps, np.float32), np.asarray(joints, np.float32), np.asarray(tids, np.int64),
                 np.asarray(fids, np.int64), statures, ages, cam_h, pitch, image_size, focal)
