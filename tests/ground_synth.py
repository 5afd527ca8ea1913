"""Synthetic scenes for the ground estimate: a known camera over a flat floor, people walking on it.

World: X right, Y up, Z forward, floor Y = 0, camera at (0, H, 0) pitched down by p and rolled by r. Each
person is a COCO-17 stick body built from fractions of their stature (nose 0.93, shoulders 0.82, hips 0.53,
knees 0.285, ankles 0.04; children's heads are bigger, so their shoulders and nose sit lower), swinging
arms and legs as they walk; the pixels get Gaussian noise and some joints drop below the threshold.
Outliers: people sitting on benches (feet dangling off the floor), one walking on a 0.5 m platform,
one whose feet are always hidden, and a few frames where the ankles are put on the knees.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# stature fractions: height, sideways (+ = the person's left), forward
_BODY = np.array([
    [0.930, 0.000, 0.06], [0.936, 0.035, 0.05], [0.936, -0.035, 0.05], [0.930, 0.070, 0.0], [0.930, -0.070, 0.0],
    [0.818, 0.130, 0.0], [0.818, -0.130, 0.0], [0.630, 0.150, 0.0], [0.630, -0.150, 0.0],
    [0.485, 0.150, 0.02], [0.485, -0.150, 0.02], [0.530, 0.095, 0.0], [0.530, -0.095, 0.0],
    [0.285, 0.070, 0.01], [0.285, -0.070, 0.01], [0.039, 0.070, 0.0], [0.039, -0.070, 0.0]])
_SWING = np.array([0, 0, 0, 0, 0, 0, 0, -0.04, 0.04, -0.08, 0.08, 0, 0, 0.06, -0.06, 0.12, -0.12])
_SEATED = _BODY.copy()
_SEATED[:13, 0] -= 0.27  # hips on a seat at ~0.26 of stature
_SEATED[13:15] = [[0.27, 0.07, 0.25], [0.27, -0.07, 0.25]]
_SEATED[15:17] = [[0.039, 0.07, 0.28], [0.039, -0.07, 0.28]]


def _lean(tilt: float, forward: float, side: float) -> np.ndarray:
    """float64[3, 3] turning a body's (height, sideways, forward) fractions by `tilt` radians about its feet,
    toward the unit direction (forward, side) on the floor."""
    axis = np.array([0.0, -forward, side])  # horizontal, at right angles to the direction of the lean
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(tilt) * k + (1 - np.cos(tilt)) * k @ k


@dataclass
class Scene:
    keypoints: np.ndarray  # float32[P, 17, 3]
    track_id: np.ndarray  # int64[P]
    frame_index: np.ndarray  # int64[P]
    image_size: tuple[int, int]
    focal: float
    camera_height: float
    pitch_deg: float
    roll_deg: float
    stature: dict  # track -> metres
    kind: dict  # track -> adult | child | sitting | raised | no_feet


def rotation(pitch_deg: float, roll_deg: float) -> np.ndarray:
    """float64[3, 3] world (Y up) -> camera (y down) for a camera pitched down and rolled."""
    p, r = np.radians(pitch_deg), np.radians(roll_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ np.diag([1.0, -1.0, 1.0])


def make_scene(seed: int, adults: int = 12, children: int = 3, sitting: int = 2, frames: int = 30,
               fps: float = 10.0, noise_px: float = 1.5, size: tuple[int, int] = (1280, 720),
               lean_deg: float = 0.0) -> Scene:
    """lean_deg > 0: each person holds a lean of up to that many degrees about their feet, in a direction of
    their own (a walker's stoop, a hip out), the same in every frame; 0: everyone upright."""
    rng = np.random.default_rng(seed)
    lean_rng = np.random.default_rng([seed, 1])  # its own stream: lean_deg=0 scenes stay as they were
    w, h = size
    pitch, roll = rng.uniform(0.0, 30.0), rng.uniform(-3.0, 3.0)
    while True:  # a camera that sees whole people within 15 m (a steep, narrow one sees only their tops)
        cam_h, focal = rng.uniform(1.2, 4.0), float(np.hypot(w, h) * rng.uniform(0.45, 1.4))
        half = np.degrees(np.arctan(h / 2 / focal))
        if pitch - half < np.degrees(np.arctan((cam_h - 2.0) / 15)) - 2:
            break
    rot, centre = rotation(pitch, roll), np.array([0.0, cam_h, 0.0])

    def project(p: np.ndarray) -> np.ndarray:
        x = (p - centre) @ rot.T
        return focal * x[..., :2] / x[..., 2:3] + np.array([w / 2, h / 2])

    def foot_spot(stature: float, lift: float) -> np.ndarray:
        for _ in range(500):  # a floor point whose person is whole in the image
            u, v = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.3 * h, 0.95 * h)
            q = np.linalg.solve(rot, np.array([(u - w / 2) / focal, (v - h / 2) / focal, 1.0]))
            if q[1] >= -1e-3:
                continue
            p = centre + q * (lift - cam_h) / q[1]
            top = project(p + [0, stature + 0.1, 0])
            if 2.0 < np.hypot(p[0], p[2]) < 25.0 and 0 < top[1] < h and 0 < top[0] < w:
                return p - [0, lift, 0]
        raise RuntimeError("no place for a person")

    kinds = ["adult"] * adults + ["child"] * children + ["sitting"] * sitting + ["raised", "no_feet"]
    rows, tids, fids, stature, kind = [], [], [], {}, {}
    for tid, k in enumerate(kinds, start=1):
        if k == "child":
            s = rng.uniform(0.9, 1.3)
        else:
            s = rng.normal(1.76, 0.07) if rng.random() < 0.5 else rng.normal(1.63, 0.07)
        lift = 0.5 if k == "raised" else 0.0
        start = foot_spot(s, lift) + [0, lift, 0]
        heading = rng.uniform(0, 2 * np.pi)
        fwd = np.array([np.sin(heading), 0.0, np.cos(heading)])
        left = np.array([-fwd[2], 0.0, fwd[0]])
        speed = 0.0 if k == "sitting" else rng.uniform(1.0, 1.5)
        body = (_SEATED if k == "sitting" else _BODY).copy()
        if k == "child":
            body[:5, 0] -= 0.02
            body[5:7, 0] -= 0.02
        if k == "sitting":
            body[15:17, 0] += rng.uniform(0.05, 0.2)  # feet dangling off a high bench
        tilt, way = np.radians(lean_rng.uniform(0.0, lean_deg)), lean_rng.uniform(0, 2 * np.pi)
        lean = _lean(tilt, np.cos(way), np.sin(way))
        for f in range(frames):
            dist = speed * f / fps
            phase = np.sin(2 * np.pi * dist / 1.4)
            b = body.copy()
            b[:, 2] += _SWING * phase * (speed > 0)
            b = b @ lean.T
            p = start + dist * fwd + s * (b[:, :1] * [0, 1, 0] + b[:, 1:2] * left + b[:, 2:3] * fwd)
            uv = project(p) + rng.normal(0, noise_px, (17, 2))
            score = np.where(rng.random(17) < 0.1, 0.1, 0.9)
            score[(uv[:, 0] < 0) | (uv[:, 0] >= w) | (uv[:, 1] < 0) | (uv[:, 1] >= h)] = 0.0
            if k == "no_feet":
                score[15:17] = 0.05
            if rng.random() < 0.05:  # a mis-detection: ankles on the knees
                uv[15:17] = uv[13:15]
            rows.append(np.concatenate([uv, score[:, None]], 1))
            tids.append(tid)
            fids.append(f)
        stature[tid], kind[tid] = float(s), k
    return Scene(np.array(rows, np.float32), np.array(tids, np.int64), np.array(fids, np.int64), size, focal,
                 float(cam_h), float(pitch), float(roll), stature, kind)


def with_strays(sc: Scene, tracks: int = 5, views: int = 10, seed: int = 0) -> Scene:
    """The scene plus `tracks` made-up tracks of `views` rows each: real people's rows moved up to 300 px and
    scaled 0.5-1.5x about their feet, so each is an upright person of the wrong size for where they stand
    (detections on posters, reflections, boxes around two people)."""
    rng = np.random.default_rng(1000 + seed)
    m = tracks * views
    kp = sc.keypoints[rng.integers(0, len(sc.keypoints), m)].copy()
    feet = kp[:, 15:17, :2].mean(1, keepdims=True) + rng.uniform(-300, 300, (m, 1, 2))
    kp[..., :2] = feet + (kp[..., :2] - kp[:, 15:17, :2].mean(1, keepdims=True)) * rng.uniform(0.5, 1.5, (m, 1, 1))
    ids = 1000 + np.repeat(np.arange(tracks), views)
    return Scene(np.concatenate([sc.keypoints, kp.astype(np.float32)]), np.concatenate([sc.track_id, ids]),
                 np.concatenate([sc.frame_index, np.tile(np.arange(views), tracks)]), sc.image_size, sc.focal,
                 sc.camera_height, sc.pitch_deg, sc.roll_deg, sc.stature, {**sc.kind, **{int(i): "stray" for i in ids}})


def auc(neg: np.ndarray, pos: np.ndarray) -> float:
    """P(a random pos scores above a random neg), ties half."""
    neg, pos = np.asarray(neg, float)[:, None], np.asarray(pos, float)[None]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean()) if neg.size and pos.size else float("nan")
