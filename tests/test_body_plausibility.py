"""The body-plausibility benchmark's pure functions on synthetic bodies with known answers
(benchmarks/body_plausibility.py): a wrong sign or axis there would make the before/after numbers
of issue 19 meaningless, and the real clips have no ground truth to catch it."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from benchmarks import body_plausibility as bp

FLOOR_Y = 1.5  # camera 1.5 m above a level floor (camera y points down)


def _rotation(axis: int, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def test_ground_plane_tilted_with_outliers():
    rng = np.random.default_rng(1)
    normal = _rotation(0, 20) @ _rotation(2, -8) @ np.array([0.0, -1.0, 0.0])  # a camera pitched and rolled
    d = 1.7
    # points on the plane: any point minus its offset along the normal, spread over a 8 m x 10 m floor
    raw = rng.uniform([-4, 0, 3], [4, 2, 13], (300, 3))
    on = raw - ((raw @ normal + d)[:, None]) * normal + rng.normal(0, 0.005, (300, 3))
    # 30% outliers: feet of wrongly sized bodies, 15-80 cm off the floor on both sides
    out = on[:130].copy() + np.outer(rng.choice([-1, 1], 130) * rng.uniform(0.15, 0.8, 130), normal)
    n_fit, d_fit, inliers = bp.ground_plane(np.concatenate([on[130:], out]))
    assert np.degrees(np.arccos(np.clip(n_fit @ normal, -1, 1))) < 1.0
    assert abs(d_fit - d) < 0.01
    assert abs(inliers - 170 / 300) < 0.02
    assert n_fit[1] < 0  # oriented to the camera's up


def _person(height: float, lean: float, x: float, z: float, frames: int) -> np.ndarray:
    """A straight-legged person whose ankles stand at (x, FLOOR_Y, z) and whose nose is `height` above
    them along a body axis leaning `lean` degrees away from the camera; float[frames, 17, 3]."""
    axis = np.array([0.0, -np.cos(np.radians(lean)), np.sin(np.radians(lean))])
    foot = np.array([x, FLOOR_Y, z])
    side = np.array([1.0, 0, 0])
    j = np.zeros((17, 3))
    j[:] = foot + 0.85 * height * axis  # head and arms: on the axis, only shoulders and nose matter here
    j[bp.NOSE] = foot + height * axis
    for sign, (sh, hip, knee, ankle) in ((1, (bp.L_SHOULDER, bp.L_HIP, bp.L_KNEE, bp.L_ANKLE)),
                                         (-1, (bp.R_SHOULDER, bp.R_HIP, bp.R_KNEE, bp.R_ANKLE))):
        j[sh] = foot + 0.82 * height * axis + sign * 0.18 * side
        j[hip] = foot + 0.5 * height * axis + sign * 0.1 * side
        j[knee] = foot + 0.27 * height * axis + sign * 0.1 * side
        j[ankle] = foot + sign * 0.1 * side
    return np.repeat(j[None], frames, 0)


def _fixed(values: np.ndarray, dtype: pa.DataType | None = None) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), dtype or pa.float32()), 17)


def _tables(people: list[np.ndarray], ages: list[float]) -> tuple[pa.Table, pa.Table]:
    xyz = np.concatenate(people)
    tid = np.concatenate([np.full(len(p), t) for t, p in enumerate(people)])
    bodies = pa.table({"track_id": pa.array(tid, pa.int64()),
                       **{c: _fixed(xyz[..., i]) for i, c in enumerate(("joint_x", "joint_y", "joint_z"))},
                       "joint_low_conf": _fixed(np.zeros((len(xyz), 17), bool), pa.bool_()),
                       "reproj_px": pa.array(np.full(len(xyz), 2.5, np.float32))})
    names = ["gender", "age", "muscle", "weight", "height", "proportions"]
    tracks = pa.table({"track_id": list(range(len(people))), "shape_names": [names] * len(people),
                       "shape": [[0.5, a, 0.5, 0.5, 0.5, 0.5] for a in ages]})
    return bodies, tracks


def test_height_and_lean_of_known_bodies():
    xyz = _person(1.55, 12.0, 0.3, 6.0, 3)
    assert np.allclose(bp.nose_to_ankle(xyz), 1.55)
    assert np.allclose(bp.lean_deg(xyz), 12.0)
    assert np.allclose(bp.lean_deg(_person(1.55, -20.0, 0.3, 6.0, 3)), -20.0)


def test_track_stats_and_summary():
    # three people on one level floor at different places (a plane needs non-collinear feet), one
    # too short (a child-sized fit), one leaning back 10 degrees, one a 5-frame track left out
    people = [_person(1.6, 0.0, -1.0, 5.0, 12), _person(1.0, 10.0, 1.5, 9.0, 12), _person(1.5, 0.0, 0.5, 7.0, 12),
              _person(1.5, 0.0, 0.0, 4.0, 5)]
    bodies, tracks = _tables(people, [0.7, 0.3, 0.6, 0.5])
    stats = bp.track_stats(bodies, tracks)
    assert [s["track_id"] for s in stats] == [0, 1, 2]
    by = {s["track_id"]: s for s in stats}
    assert abs(by[0]["nose_ankle_m"] - 1.6) < 1e-4 and abs(by[1]["nose_ankle_m"] - 1.0) < 1e-4
    assert abs(by[1]["lean_deg"] - 10.0) < 1e-3 and abs(by[0]["lean_deg"]) < 1e-3
    assert abs(by[1]["lean_vs_floor_deg"] - 10.0) < 0.01  # the floor is level: same as the camera's vertical
    assert abs(by[1]["age"] - 0.3) < 1e-6 and by[0]["shape_weight"] == 0.5
    assert all(s["standing"] and abs(s["foot_floor_cm"]) < 0.01 and s["bodies"] == 12 for s in stats)
    plane = bp.floor(bodies)
    assert np.allclose(plane[0], [0, -1, 0], atol=1e-6) and abs(plane[1] - FLOOR_Y) < 1e-6 and plane[2] == 1.0
    summary = bp.clip_summary(stats, plane, bodies, {"stages": {"mesh": {"busy_s": 2.0}}})
    assert abs(summary["adult_height_frac"] - 2 / 3) < 1e-9
    assert abs(summary["lean_spread_deg"] - 10.0) < 1e-3 and summary["standing"] == 3
    assert abs(summary["floor_tilt_deg"]) < 1e-3 and summary["reproj_px"] == 2.5
    assert summary["fit_person_frames_per_s"] == bodies.num_rows / 2.0
