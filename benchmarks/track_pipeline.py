"""Tracking through the whole pipeline: MOT metrics on crowd_synth/track_a and track statistics on
real crowd video, per mode.

    python benchmarks/track_pipeline.py [--modes bottomup,topdown,hybrid] [--videos vtest.mp4,...]
                                        [--config FILE] [--keep-unconfirmed]

For each mode, `posepipe run` (local Ray, this machine's cores) on track_a and on each real video:
- track_a: MOTA, IDF1, ID switches against gt_mot.txt (py-motmetrics, IoU >= 0.5), and left/right
  accuracy of the output keypoints against gt_coco.json (poses matched to a GT person at OKS > 0.3
  whose mirror scores at least 0.05 lower, so side views do not count either way);
- real videos (no ground truth): distinct track ids, median / mean track length in frames, tracks
  of >= 25 frames, rows, flips corrected.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import ray

from pipeline.config import load_config, mode_file
from pipeline.evaluate import mot_rows_from_output
from pipeline.runner import Runner, prepare
from stages.eval.metrics import oks_matrix
from stages.eval.mot import clear_mot, load_mot
from stages.coco17 import FLIP_PAIRS

REPO = Path(__file__).resolve().parents[1]
EVAL = Path(os.environ.get("POSEPIPE_EVAL", REPO.parent / "shared" / "eval"))


def people(out: Path) -> dict:
    return ds.dataset(out / "people", partitioning="hive").to_table(
        columns=["frame_index", "track_id", "kp_x", "kp_y", "kp_score"]).to_pydict()


def track_lengths(t: dict) -> np.ndarray:
    _, counts = np.unique(np.asarray(t["track_id"], np.int64), return_counts=True)
    return counts


def left_right(t: dict, gt_coco: Path) -> tuple[int, int]:
    """(correct, swapped) among output poses matched unambiguously to a GT pose of the same frame."""
    gt = json.loads(gt_coco.read_text())
    by_frame: dict[int, list] = {}
    for a in gt["annotations"]:
        by_frame.setdefault(a["frame_index"], []).append(a)
    frames = np.asarray(t["frame_index"])
    kp = np.stack([np.asarray(t[c], np.float64) for c in ("kp_x", "kp_y", "kp_score")], -1)
    correct = swapped = 0
    for f, anns in by_frame.items():
        rows = np.flatnonzero(frames == f)
        if not len(rows):
            continue
        g = np.array([a["keypoints"] for a in anns], np.float64).reshape(len(anns), 17, 3)
        areas = np.array([a["area"] for a in anns], np.float64)
        pred = kp[rows][..., :2]
        oks = oks_matrix(pred, g, areas)  # [pred, gt]
        oks_m = oks_matrix(pred[:, FLIP_PAIRS], g, areas)
        for i in range(len(rows)):
            j = int(np.argmax(oks[i]))
            best, mirrored = oks[i, j], oks_m[i, j]
            if max(best, mirrored) > 0.3 and abs(best - mirrored) >= 0.05:
                correct += int(best > mirrored)
                swapped += int(mirrored > best)
    return correct, swapped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="bottomup,topdown,hybrid")
    ap.add_argument("--videos", default="vtest.mp4,mmtracking_demo.mp4")
    ap.add_argument("--config", default=None)
    ap.add_argument("--no-track-a", action="store_true")
    args = ap.parse_args()
    track_a = EVAL / "crowd_synth" / "track_a"
    videos = [EVAL / "videos" / v for v in args.videos.split(",") if v]
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    for mode in args.modes.split(","):
        config = load_config(mode_file(mode), *([args.config] if args.config else []))
        with tempfile.TemporaryDirectory() as tmp:
            if not args.no_track_a:
                out = Path(tmp) / "track_a"
                row = Runner(prepare(config, out), progress=False).run([str(track_a / "video.mp4")])[0]
                m = clear_mot(load_mot(track_a / "gt_mot.txt"), mot_rows_from_output(out))
                ok, bad = left_right(people(out), track_a / "gt_coco.json")
                print(f"{mode:9s} track_a  MOTA {m['MOTA']:.3f}  IDF1 {m['IDF1']:.3f}  IDs {int(m['IDs'])}  "
                      f"tracks {row['tracks']}  flips corrected {row['flips_corrected']}  "
                      f"left/right correct {ok}, swapped {bad} ({ok / max(ok + bad, 1):.3f})", flush=True)
            for video in videos:
                out = Path(tmp) / video.stem
                row = Runner(prepare(config, out), progress=False).run([str(video)])[0]
                lengths = track_lengths(people(out))
                print(f"{mode:9s} {video.name:18s} frames {row['frames']}  rows {row['people_rows']}  "
                      f"track ids {len(lengths)}  median length {np.median(lengths):.0f}  "
                      f"mean {lengths.mean():.1f}  >=25 frames {(lengths >= 25).sum()}  "
                      f"flips corrected {row['flips_corrected']}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
