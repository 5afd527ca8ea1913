"""The ground estimate (stages/body/ground.py) on synthetic scenes with a known camera, and on real outputs.

    python benchmarks/ground_scenes.py [--seeds 10] [--strays 5] [--out OUT ...] [--coco gt_coco.json ...]

Synthetic (tests/ground_synth.py: 12 adults, 3 children, 2 seated, one on a platform, one without feet; focal
given on even seeds, estimated on odd ones): per seed the true -> estimated camera height, pitch, roll and
focal, the adults' and children's stature errors and the children-vs-adults AUC, then percentiles over seeds;
--strays adds made-up tracks of the wrong size for where they stand (tests/ground_synth.with_strays).
--out: every video of a posepipe output folder (its people table); --coco: a crowd_synth gt_coco.json (visible
keypoints score 1, the rest 0). Each prints the ground and every track's stature.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.body.ground import estimate_ground
from stages.io.output import read_video_table
from stages.io.sink import read_video_rows
from tests.ground_synth import auc, make_scene, with_strays


def synthetic(seeds: int, strays: int) -> None:
    print("seed focal   cam_h true->est   pitch true->est   roll true->est   focal true->est    "
          "adult |err| med/max  child err  AUC   s")
    rows = []
    for seed in range(seeds):
        sc = make_scene(seed)
        if strays:
            sc = with_strays(sc, strays, 10, seed)
        given = seed % 2 == 0
        t0 = time.perf_counter()
        g = estimate_ground(sc.keypoints, sc.track_id, sc.frame_index, sc.image_size, sc.focal if given else None)
        dt = time.perf_counter() - t0
        err = {t: g.heights[t] / sc.stature[t] - 1 for t in sc.stature if t in g.heights}
        adult = np.array([e for t, e in err.items() if sc.kind[t] == "adult"])
        child = np.array([e for t, e in err.items() if sc.kind[t] == "child"])
        score = auc([g.heights[t] for t in err if sc.kind[t] == "child"],
                    [g.heights[t] for t in err if sc.kind[t] == "adult"])
        print(f"{seed:4d} {'given' if given else 'free ':6s} {sc.camera_height:5.2f} -> {g.camera_height:5.2f}"
              f"     {sc.pitch_deg:5.1f} -> {g.pitch_deg:5.1f}    {sc.roll_deg:5.1f} -> {g.roll_deg:5.1f}"
              f"    {sc.focal:6.0f} -> {g.focal:6.0f}    {np.median(np.abs(adult)):.3f}/{np.abs(adult).max():.3f}"
              f"    {' '.join(f'{e:+.3f}' for e in child)}  {score:.2f}  {dt:.2f}  {'' if g.ok else g.reason}")
        rows.append((g.camera_height / sc.camera_height - 1, g.pitch_deg - sc.pitch_deg, g.roll_deg - sc.roll_deg,
                     g.focal / sc.focal - 1, adult, child, score))
    cam, pitch, roll, focal = (np.array([r[i] for r in rows]) for i in range(4))
    adult, child = np.concatenate([r[4] for r in rows]), np.concatenate([r[5] for r in rows])
    pct = [50, 90, 95, 100]
    print(f"\n|camera height error| max {np.abs(cam).max():.3f}, median {np.median(np.abs(cam)):.3f}")
    print(f"|pitch error| max {np.abs(pitch).max():.2f} deg, |roll error| max {np.abs(roll).max():.2f} deg, "
          f"|focal error| (free seeds) max {np.abs(focal[1::2]).max():.3f}")
    print(f"adult |stature error| p50/p90/p95/max {np.round(np.percentile(np.abs(adult), pct), 3)} (n={len(adult)})")
    print(f"child stature error p50/min/max {np.median(child):+.3f} {child.min():+.3f} {child.max():+.3f} "
          f"(n={len(child)}); AUC min {min(r[6] for r in rows):.2f}")


def show(name: str, args: tuple, focal: float | None) -> None:
    """Estimate and print; when the estimate is flagged, also what the fit found with the horizon check off."""
    g = estimate_ground(*args, focal)
    print(f"\n{name}: {g.image_size[0]}x{g.image_size[1]}, {len(args[0])} rows, "
          f"{len(np.unique(args[1]))} tracks: {'ok' if g.ok else 'NOT OK (' + g.reason + ')'}")
    if not g.ok and g.n_obs:
        g = estimate_ground(*args, focal, max_horizon_sd=1e9)
        print("  with the horizon check off (not to be used):")
    if g.ok:
        print(f"  camera height {g.camera_height:.2f} m, pitch {g.pitch_deg:.1f} deg, roll {g.roll_deg:.1f} deg, "
              f"focal {g.focal:.0f} px ({'estimated' if g.focal_estimated else 'given'}), horizon row "
              f"{g.horizon_row:.0f} (sd {g.horizon_sd_px:.0f}), {g.n_obs} upright views, {g.n_tracks} tracks for "
              f"the scale, inliers {g.inlier_fraction:.0%}")
    views = dict(zip(*np.unique(args[1], return_counts=True)))
    for t, s in sorted(g.heights.items()):
        print(f"  track {t:4d}: {s:.2f} m  ({views.get(t, 0)} rows)")


def from_output(out: str, focal: float | None) -> None:
    for row in read_video_rows(out):
        vid = row["video_id"]
        people = read_video_table(out, "people", vid, ["frame_index", "track_id", "kp_x", "kp_y", "kp_score"])
        if people is None or people.num_rows == 0:
            print(f"\n{out} {vid}: no people")
            continue
        n = people.num_rows
        kp = np.stack([people[c].combine_chunks().flatten().to_numpy().reshape(n, 17)
                       for c in ("kp_x", "kp_y", "kp_score")], -1)
        track = people["track_id"].to_numpy(zero_copy_only=False)
        keep = ~np.isnan(track.astype(float))  # untracked rows have no track to be constant over
        track = np.nan_to_num(track.astype(float), nan=-1).astype(np.int64)
        show(f"{out} {vid}", (kp[keep], track[keep], people["frame_index"].to_numpy()[keep],
                              (int(row["width"]), int(row["height"]))), focal)


def from_coco(path: str, focal: float | None) -> None:
    gt = json.loads(Path(path).read_text())
    im = gt["images"][0]
    anns = gt["annotations"]
    kp = np.array([a["keypoints"] for a in anns], np.float32).reshape(-1, 17, 3)
    kp[..., 2] = (kp[..., 2] == 2).astype(np.float32)
    track = np.array([a["track_id"] for a in anns], np.int64)
    show(path, (kp, track, np.array([a["frame_index"] for a in anns]), (im["width"], im["height"])), focal)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=10, help="synthetic scenes (0: none)")
    ap.add_argument("--strays", type=int, default=0, help="add this many made-up tracks (10 rows each) per scene")
    ap.add_argument("--out", action="append", default=[], help="a posepipe output folder")
    ap.add_argument("--coco", action="append", default=[], help="a gt_coco.json with track ids")
    ap.add_argument("--focal", type=float, default=None, help="focal (px) of the real clips, when known")
    args = ap.parse_args()
    if args.seeds:
        synthetic(args.seeds, args.strays)
    for out in args.out:
        from_output(out, args.focal)
    for path in args.coco:
        from_coco(path, args.focal)


if __name__ == "__main__":
    main()
