"""Synthetic scenes with a known camera and floor (tests/scene_synth.py): how well the body fit recovers
people's statures, tells children from adults, and poses them, with and without the video's floor.

    python benchmarks/body_scenes.py [--seeds 0-9] [--no-ground] [--known-height] [--frames 48]

Per seed: the floor estimate (camera height, pitch) against the truth, the median PA-MPJPE, reprojection
error and fit speed; per person the true and fitted stature and age. At the end: |stature error| median,
p90 and the share within 5%, and the AUC of the fitted stature separating children (age <= 0.35) from
adults (a shorter fit scoring as the child). One view gives the scene's metric scale only through the
population's mean stature (stages/body/ground.py: STATURE_M), so a scene whose adults average off it has every
stature off with it: each seed also prints its adults' mean against STATURE_M and the fitted adults' mean
against the true one, and at the end the share within 5% once each scene's scale is the true one (what a known
camera height would give). --known-height gives the floor estimate the true camera height, as
`[mesh.fit] camera_height_m` does for a mounted camera.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "tests")]
from body_synth import pa_mpjpe  # noqa: E402
from scene_synth import make_scene  # noqa: E402

from stages.body.fit import BodyFitter  # noqa: E402
from stages.body.ground import STATURE_M, estimate_ground  # noqa: E402
from stages.body.load import load_body_model  # noqa: E402


def auc(child: np.ndarray, adult: np.ndarray) -> float:
    """P(a child's fitted stature < an adult's), ties half."""
    return float(np.mean([(c < a) + 0.5 * (c == a) for c in child for a in adult])) if len(child) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0-9")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--no-ground", action="store_true")
    ap.add_argument("--known-height", action="store_true", help="the floor estimate told the camera's height")
    args = ap.parse_args()
    lo, _, hi = args.seeds.partition("-")
    seeds = range(int(lo), int(hi or lo) + 1)
    torch.set_num_threads(1)
    model = load_body_model("anny")
    age_i = model.shape_names.index("age")
    errs, kids, fitted, cam_errs, mpjpe, scaled = [], [], [], [], [], []
    for seed in seeds:
        sc = make_scene(model, np.random.default_rng(seed), frames=args.frames)
        ground = estimate_ground(sc.keypoints, sc.track_id, sc.frame_index, sc.image_size, sc.focal,
                                 camera_height=sc.camera_height if args.known_height else None)
        fitter = BodyFitter(model)
        t0 = time.perf_counter()
        r = fitter.fit("v", sc.keypoints, sc.track_id, sc.frame_index, sc.image_size,
                       None if args.no_ground else ground)
        rate = len(r.rows) / (time.perf_counter() - t0)
        statures, shapes = fitter.statures("v"), fitter.shapes("v")
        pa = np.median([pa_mpjpe(p, t) for p, t in zip(r.joints, sc.joints[r.rows])])
        mpjpe.append(pa)
        cam_errs.append(ground.camera_height / sc.camera_height - 1 if ground.ok else np.nan)
        print(f"seed {seed}: camera {sc.camera_height:.2f} m, {sc.pitch_deg:.1f} deg; floor ok {ground.ok} "
              f"{ground.camera_height:.2f} m, {ground.pitch_deg:.1f} deg; PA-MPJPE {1000 * pa:.1f} mm, "
              f"reprojection {np.median(r.reproj_px):.2f} px, {rate:.0f} person-frames/s")
        adults = [t for t in statures if sc.ages[t] > 0.35]
        true_mean = np.mean([sc.statures[t] for t in adults])
        scale = true_mean / np.mean([statures[t] for t in adults])  # the fit's statures x this: the true scale
        print(f"  adults' mean {true_mean:.3f} m ({100 * (true_mean / STATURE_M - 1):+.1f}% from the population's), "
              f"fitted {100 * (1 / scale - 1):+.1f}% from it")
        for t in sorted(statures):
            rel = statures[t] / sc.statures[t] - 1
            scaled.append(statures[t] * scale / sc.statures[t] - 1)
            errs.append(rel)
            kids.append(sc.ages[t] <= 0.35)
            fitted.append(statures[t])
            print(f"  person {t}: stature {sc.statures[t]:.2f} -> {statures[t]:.2f} m ({100 * rel:+.1f}%), "
                  f"age {sc.ages[t]:.2f} -> {shapes[t][age_i]:.2f}")
    a, kid, f = np.abs(errs), np.array(kids), np.array(fitted)
    print(f"{len(a)} people, {len(list(seeds))} seeds: |stature error| median {100 * np.median(a):.1f}%, "
          f"p90 {100 * np.percentile(a, 90):.1f}%, within 5% {np.mean(a < 0.05):.2f}; children/adults AUC "
          f"{auc(f[kid], f[~kid]):.3f}; camera height |error| max {100 * np.nanmax(np.abs(cam_errs)):.1f}%; "
          f"PA-MPJPE median {1000 * np.median(mpjpe):.1f} mm")
    print(f"each scene at its true scale: |stature error| median {100 * np.median(np.abs(scaled)):.1f}%, "
          f"within 5% {np.mean(np.abs(scaled) < 0.05):.2f}")


if __name__ == "__main__":
    main()
