"""How believable the fitted 3D bodies are, per track, on real clips (issue 19).

    python benchmarks/body_plausibility.py [--clips mmhuman3d p10] [--frames N] [--out-dir DIR] [--config F]

Runs `posepipe run CLIP --mesh` per clip unless DIR/<clip> holds its output, then reads it with pyarrow.
The clips have no 3D ground truth, so it checks what any scene of adults must satisfy: ~1.3-1.85 m nose
to ankle, people standing on one floor lean alike with their feet on one plane, and the bodies match
the 2D keypoints. Prints a table per clip (tracks with >= MIN_BODIES bodies) and a summary; writes
benchmarks/results/body_plausibility.csv (a row per track), body_plausibility_clips.csv (per clip).
Camera frame (docs/bodies.md): x right, y down, z forward, metres.
"""
from __future__ import annotations

import argparse
import csv
import functools
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

REPO = Path(__file__).resolve().parents[1]
EVAL = Path(os.environ.get("POSEPIPE_EVAL", REPO.parent / "shared" / "eval"))
CLIPS = {  # name -> (video, pose mode)
    "mmhuman3d": (EVAL / "videos/mmhuman3d_multi_person_demo.mp4", "bottomup"),
    "p10": (EVAL / "crowd_synth/p10/video.mp4", "topdown"),
    "track_a": (EVAL / "crowd_synth/track_a/video.mp4", "topdown"),
    "vtest": (EVAL / "videos/vtest.mp4", "topdown"),  # bottom-up: 304 people rows, top-down 3951
}
RESULTS = REPO / "benchmarks" / "results"
NOSE, L_SHOULDER, R_SHOULDER, L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 0, 5, 6, 11, 12, 13, 14, 15, 16
MIN_BODIES = 10            # fewer frames give medians that one bad fit can move
ADULT_NOSE_ANKLE_M = (1.30, 1.85)  # nose to ankle of adults ~1.45-1.70 m, with margin for posture
STANDING_KNEE_DEG = 45.0   # knee flexion below this in both legs: the frame counts as standing
PLANE_INLIER_M = 0.05      # RANSAC: an ankle this close to the plane supports it (walking lifts feet ~5 cm)


def joints(bodies: pa.Table) -> np.ndarray:
    """float[n, 17, 3]: the fitted COCO-17 joints of every bodies row, camera frame."""
    return np.stack([bodies[c].combine_chunks().flatten().to_numpy().reshape(-1, 17)
                     for c in ("joint_x", "joint_y", "joint_z")], -1).astype(np.float64)


def low_conf(bodies: pa.Table) -> np.ndarray:
    """bool[n, 17]: the joint's 2D keypoint was low-confidence or missing (its 3D is the prior's guess)."""
    return bodies["joint_low_conf"].combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, 17)


def nose_to_ankle(xyz: np.ndarray) -> np.ndarray:
    """Per frame |nose - mean(ankles)|, m: posture shortens it a little, a child-sized fit a lot."""
    return np.linalg.norm(xyz[:, NOSE] - xyz[:, [L_ANKLE, R_ANKLE]].mean(1), axis=-1)


def body_axis(xyz: np.ndarray) -> np.ndarray:
    """Per frame the ankle-midpoint -> shoulder-midpoint vector (not unit)."""
    return xyz[:, [L_SHOULDER, R_SHOULDER]].mean(1) - xyz[:, [L_ANKLE, R_ANKLE]].mean(1)


def lean_deg(xyz: np.ndarray) -> np.ndarray:
    """Per frame the body axis' angle from the camera's up (-y) within the y-z plane, degrees;
    positive = shoulders further from the camera than the ankles. Sideways lean (x) is left out on
    purpose: a wrong depth shows up as a forward/backward tilt, and that is what this catches."""
    v = body_axis(xyz)
    return np.degrees(np.arctan2(v[:, 2], -v[:, 1]))


def knee_flexion_deg(xyz: np.ndarray) -> np.ndarray:
    """Per frame the larger of the two knees' flexion (0 = straight leg), degrees."""
    a, b = xyz[:, [L_HIP, R_HIP]] - xyz[:, [L_KNEE, R_KNEE]], xyz[:, [L_ANKLE, R_ANKLE]] - xyz[:, [L_KNEE, R_KNEE]]
    cos = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-9)
    return (180.0 - np.degrees(np.arccos(np.clip(cos, -1, 1)))).max(1)


def lower_ankle(xyz: np.ndarray, low_conf: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per frame the ankle further along the body's own down axis (the one on the floor, whatever
    the camera's tilt), float[n, 3], and whether its 2D keypoint was confident (bool[n])."""
    down = -body_axis(xyz)
    pick = np.where((xyz[:, L_ANKLE] * down).sum(-1) >= (xyz[:, R_ANKLE] * down).sum(-1), L_ANKLE, R_ANKLE)
    rows = np.arange(len(xyz))
    ok = np.ones(len(xyz), bool) if low_conf is None else ~low_conf[rows, pick]
    return xyz[rows, pick], ok


def ground_plane(points: np.ndarray, threshold: float = PLANE_INLIER_M, iterations: int = 500,
                 seed: int = 0) -> tuple[np.ndarray, float, float]:
    """One plane n.x + d = 0 through most of the points (RANSAC, then a least-squares refit on the
    inliers): (unit normal, d, inlier fraction). The normal points to the camera's up side (n_y < 0),
    so n.x + d > 0 is above the floor. Fitted bodies of wrong size sit at wrong depths, so their
    feet leave the plane: a low inlier fraction is itself a finding, hence no least squares on all."""
    p = np.asarray(points, np.float64).reshape(-1, 3)
    p = p[np.isfinite(p).all(1)]
    if len(p) < 3:
        return np.full(3, np.nan), float("nan"), 0.0
    rng = np.random.default_rng(seed)
    tri = p[np.stack([rng.choice(len(p), 3, replace=False) for _ in range(iterations)])]  # [I, 3, 3]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    size = np.linalg.norm(n, axis=-1, keepdims=True)
    n = n / np.maximum(size, 1e-12)
    dist = np.abs(p @ n.T - (tri[:, 0] * n).sum(-1))  # [N, I]
    support = (dist < threshold).sum(0) * (size[:, 0] > 1e-4)  # nearly collinear triples fix no plane
    inliers = dist[:, np.argmax(support)] < threshold
    for _ in range(3):  # total least squares on the inliers, then their set again with the better plane
        c = p[inliers].mean(0)
        normal = np.linalg.svd(p[inliers] - c, full_matrices=False)[2][2]
        d = -float(normal @ c)
        again = np.abs(p @ normal + d) < threshold
        if again.sum() < 3 or (again == inliers).all():
            break
        inliers = again
    sign = -1.0 if normal[1] > 0 else 1.0
    return sign * normal, sign * d, float(inliers.mean())


def floor(bodies: pa.Table) -> tuple[np.ndarray, float, float]:
    """ground_plane of every track's lower ankles, the confident ones only when there are enough:
    an unseen ankle was placed by the pose prior, not measured."""
    foot, ok = lower_ankle(joints(bodies), low_conf(bodies))
    return ground_plane(foot[ok] if ok.sum() >= 3 else foot)


def _median(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else float("nan")


def track_stats(bodies: pa.Table, body_tracks: pa.Table, shape_names: list[str] | None = None,
                plane: tuple[np.ndarray, float, float] | None = None,
                statures: dict[int, float] | None = None, min_bodies: int = MIN_BODIES) -> list[dict]:
    """One dict per track of one video with >= min_bodies bodies. plane: the floor (ground_plane's
    result); None fits one to every track's confident lower ankles. shape_names: body_tracks' own
    when None. statures: track -> rest height of its shape (m), from rest_statures, if wanted."""
    xyz, tid = joints(bodies), bodies["track_id"].to_numpy()
    foot, foot_ok = lower_ankle(xyz, low_conf(bodies))
    normal, d, _ = plane or floor(bodies)
    axis = body_axis(xyz)
    up_lean = np.degrees(np.arccos(np.clip(axis @ normal / np.linalg.norm(axis, axis=-1), -1, 1)))
    shapes = dict(zip(body_tracks["track_id"].to_pylist(), body_tracks["shape"].to_pylist()))
    names = shape_names or (body_tracks["shape_names"][0].as_py() if body_tracks.num_rows else [])
    reproj, flex = bodies["reproj_px"].to_numpy(), knee_flexion_deg(xyz)
    out = []
    for t in np.unique(tid):
        k = tid == t
        if k.sum() < min_bodies:
            continue
        shape = dict(zip(names, shapes.get(int(t)) or []))
        out.append({
            "track_id": int(t), "bodies": int(k.sum()), "ankle_conf_frac": float(foot_ok[k].mean()),
            "nose_ankle_m": _median(nose_to_ankle(xyz[k])),
            "stature_m": (statures or {}).get(int(t), float("nan")),
            "age": shape.get("age", float("nan")),
            "lean_deg": _median(lean_deg(xyz[k])),
            "lean_vs_floor_deg": _median(up_lean[k]),  # body axis vs the floor normal: tilt whatever the camera
            "standing": bool((flex[k] < STANDING_KNEE_DEG).mean() >= 0.5),
            "foot_floor_cm": 100 * _median(foot[k] @ normal + d),
            "reproj_px": _median(reproj[k]),
            "depth_m": _median(xyz[k][:, [L_HIP, R_HIP], 2].mean(1)),
            **{f"shape_{n}": v for n, v in shape.items()},
        })
    return out


def clip_summary(stats: list[dict], plane: tuple[np.ndarray, float, float], bodies: pa.Table,
                 job: dict | None = None) -> dict:
    """The clip's one line: adult-height fraction, lean spread of standing tracks, floor fit, speed."""
    def over(f, x):  # f of the tracks' values, NaN for a clip without tracks
        return float(f(np.asarray(x, np.float64))) if len(x) else float("nan")
    h, age = [s["nose_ankle_m"] for s in stats], [s["age"] for s in stats]
    lean = [s["lean_deg"] for s in stats if s["standing"]]
    busy = (((job or {}).get("stages") or {}).get("mesh") or {}).get("busy_s")
    normal, _, inliers = plane
    return {
        "tracks": len(stats), "bodies": bodies.num_rows,
        "adult_height_frac": over(lambda x: ((x >= ADULT_NOSE_ANKLE_M[0]) & (x <= ADULT_NOSE_ANKLE_M[1])).mean(), h),
        "nose_ankle_min_m": over(np.min, h), "nose_ankle_max_m": over(np.max, h),
        "age_min": over(np.min, age), "age_max": over(np.max, age),
        "standing": len(lean), "lean_spread_deg": over(np.ptp, lean), "floor_inlier_frac": inliers,
        # the floor normal vs the camera's up: the camera's pitch/roll, if the bodies are right
        "floor_tilt_deg": float(np.degrees(np.arccos(np.clip(-normal[1], -1, 1)))),
        "foot_floor_abs_cm": over(lambda x: np.median(np.abs(x)), [s["foot_floor_cm"] for s in stats]),
        "reproj_px": _median(bodies["reproj_px"].to_numpy()),
        "fit_person_frames_per_s": bodies.num_rows / busy if busy else float("nan"),  # mesh actors' busy time
    }


@functools.cache
def _anny():
    """anny's model, loaded once per process (torch; seconds), float32 as the fit uses it."""
    import torch

    from stages.body.anny_body import _build
    return _build(quiet=True).to(dtype=torch.float32)


def rest_statures(shapes: dict[int, list[float]], shape_names: list[str]) -> dict[int, float]:
    """Track -> top-to-sole height (m) of anny's rest mesh in the track's shape (model z is up); the one
    part needing torch, so optional. The fit keeps `height` at 0.5: stature follows age/gender/weight."""
    import torch
    from anny.skinning.skinning import apply_linear_blendshape

    model, ids = _anny(), sorted(shapes)
    assert list(shape_names) == list(model.phenotype_labels), (shape_names, model.phenotype_labels)
    s = torch.tensor([shapes[t] for t in ids], dtype=torch.float32)
    with torch.no_grad():
        coeffs = model._get_phenotype_blendshape_coefficients(s, s[:, :0], s[:, :0])
        z = apply_linear_blendshape(model.template_vertices, model.blendshapes, coeffs)[..., 2].numpy()
    return {t: float(z[i].max() - z[i].min()) for i, t in enumerate(ids)}


def read_output(out: Path) -> tuple[pa.Table, pa.Table, dict]:
    """bodies, body_tracks and job.json of a finished output (one video)."""
    bodies, tracks = (ds.dataset(out / n, format="parquet", partitioning="hive").to_table()
                      for n in ("bodies", "body_tracks"))
    return bodies, tracks, json.loads((out / "job.json").read_text())


def cut_frames(src: Path, frames: int, dst: Path) -> Path:
    """The first `frames` frames of src re-encoded to dst (posepipe run has no frame cap)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as outp:
        vin = inp.streams.video[0]
        vout = outp.add_stream("libx264", rate=vin.average_rate, options={"crf": "17"})
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        for frame in itertools.islice(inp.decode(vin), frames):
            outp.mux(vout.encode(frame.reformat(format="yuv420p")))
        outp.mux(vout.encode())
    return dst


def run_clip(name: str, out: Path, frames: int | None, config: str | None) -> float | None:
    """posepipe run --mesh into out unless a finished video is already there; wall seconds or None."""
    if any((out / "videos").glob("*.parquet")) and any((out / "bodies").glob("*/*.parquet")):
        return None
    video, mode = CLIPS[name]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if frames:
            video = cut_frames(video, frames, Path(tmp) / f"{name}.mp4")
        subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(video), "--out", str(out), "--mesh",
                        "--mode", mode, "--no-progress", *(["--config", config] if config else [])], check=True)
    return time.perf_counter() - t0


def _save(path: Path, rows: list[dict], runs: set[tuple[str, str]]) -> None:
    """Replace the rows of these (clip, frames_cap) runs in path, keeping the others from earlier runs."""
    old = list(csv.DictReader(path.open())) if path.exists() else []
    rows = [r for r in old if (r["clip"], r["frames_cap"]) not in runs] + rows
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", nargs="+", choices=list(CLIPS), default=list(CLIPS))
    ap.add_argument("--frames", type=int, default=None, help="first N frames of each clip only")
    ap.add_argument("--out-dir", type=Path, default=Path(tempfile.gettempdir()) / "body_plausibility",
                    help="outputs per clip (DIR/<clip>[-<N>f]); an existing one is read, not rerun")
    ap.add_argument("--config", default=None, help="passed to posepipe run")
    ap.add_argument("--no-stature", action="store_true", help="skip loading anny (torch) for the rest statures")
    args = ap.parse_args()
    track_rows, clip_rows = [], []
    for name in args.clips:
        out = args.out_dir / (f"{name}-{args.frames}f" if args.frames else name)
        wall = run_clip(name, out, args.frames, args.config)
        bodies, tracks, job = read_output(out)
        statures = None if args.no_stature or tracks["body_model"][0].as_py() != "anny" else rest_statures(
            dict(zip(tracks["track_id"].to_pylist(), tracks["shape"].to_pylist())), tracks["shape_names"][0].as_py())
        plane = floor(bodies)
        stats = track_stats(bodies, tracks, plane=plane, statures=statures)
        summary = clip_summary(stats, plane, bodies, job)
        job_s = (job.get("finished_at") or float("nan")) - (job.get("started_at") or float("nan"))
        print(f"\n== {name}: {CLIPS[name][1]}, {out} "
              f"({'reused' if wall is None else f'run {wall:.0f} s'}, job {job_s:.0f} s)")
        cols = ["track_id", "bodies", "nose_ankle_m", "stature_m", "age", "lean_deg", "lean_vs_floor_deg",
                "standing", "foot_floor_cm", "reproj_px", "depth_m", "ankle_conf_frac"]
        print(" ".join(f"{c:>10.10s}" for c in cols))
        for s in stats:
            print(" ".join(f"{s[c]:>10.3g}" if isinstance(s[c], float) else f"{s[c]!s:>10s}" for c in cols))
        print("summary:", ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()))
        meta = {"clip": name, "mode": CLIPS[name][1], "frames_cap": args.frames or ""}
        track_rows += [{**meta, **s} for s in stats]
        clip_rows.append({**meta, "job_s": round(job_s, 1), "run_s": "" if wall is None else round(wall, 1), **summary})
    runs = {(name, str(args.frames or "")) for name in args.clips}
    _save(RESULTS / "body_plausibility.csv", track_rows, runs)
    _save(RESULTS / "body_plausibility_clips.csv", clip_rows, runs)


if __name__ == "__main__":
    main()
