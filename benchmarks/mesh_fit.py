"""Mesh-stage speed: person-frames/s of the body fit on real tracks (crowd_synth p01 / p10 / p50:
1, 10 and 50 people, 50 frames, exact COCO-17 keypoints with track ids), in chunks of
[mesh] chunk_frames frames as the graph runs it, with warm starts across chunks.

    python benchmarks/mesh_fit.py [--sets p01,p10,p50] [--device cuda] [--threads 1]

Prints, per set: person-frames, seconds, person-frames/s (per wall and per CPU second), mean and median
reprojection error (px).
The pose stage's time on the same frames is in benchmarks/crowd_scaling.py (same machine, same sets).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas  # noqa: F401  pyarrow imports it on a first conversion (0.6 s here): an actor pays that once, not per set
import torch

from pipeline.config import load_config
from stages.body.fit import BodyFitter
from stages.body.load import load_body_model
from stages.body.stream import BodyStream, TrackedRows

EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval" / "crowd_synth"


def tracked(set_dir: Path) -> tuple[list[TrackedRows], tuple[int, int]]:
    """The set's ground truth as one TrackedRows per frame (visible keypoints score 1, others 0)."""
    gt = json.loads((set_dir / "gt_coco.json").read_text())
    frame_of = {im["id"]: im["frame_index"] for im in gt["images"]}
    size = (gt["images"][0]["width"], gt["images"][0]["height"])
    by_frame: dict[int, list] = {}
    for a in gt["annotations"]:
        by_frame.setdefault(frame_of[a["image_id"]], []).append(a)
    out = []
    for f in sorted(by_frame):
        anns = by_frame[f]
        kp = np.array([a["keypoints"] for a in anns], np.float32).reshape(-1, 17, 3)
        kp[..., 2] = (kp[..., 2] > 0).astype(np.float32)
        kp[kp[..., 2] == 0, :2] = np.nan
        n = len(anns)
        out.append(TrackedRows(set_dir.name, np.full(n, f, np.int64), np.full(n, f / 25.0),
                               np.array([a["track_id"] for a in anns], np.int64), kp))
    return out, size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="p01,p10,p50,track_a")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config()
    model = load_body_model(config.mesh.body_model, config.mesh.body_model_path, args.device)
    print(f"device {args.device}, threads {args.threads}, chunk_frames {config.mesh.chunk_frames}, "
          f"iters {config.mesh.fit.iters_root}+{config.mesh.fit.iters_full}")
    for name in args.sets.split(","):
        frames, size = tracked(EVAL / name)
        stream = BodyStream(BodyFitter(model, config.mesh.fit), config.mesh.chunk_frames, config.mesh.floor_wait_frames)
        stream.open(name)
        t0, c0 = time.perf_counter(), time.process_time()
        tables = [stream.push(rows, size) for rows in frames[:-1]]
        last, tracks, skipped, _ = stream.finish(frames[-1], size)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        err = np.concatenate([t["reproj_px"].to_numpy() for t in [*tables, last] if t is not None])
        print(f"{name}: {len(err)} person-frames in {dt:.1f} s = {len(err) / dt:.1f} person-frames/s "
              f"({len(err) / cpu:.1f} per CPU-second: a shared machine's wall time varies); "
              f"reprojection mean {err.mean():.2f} px, median {np.median(err):.2f} px; "
              f"{tracks.num_rows} tracks; skipped {skipped or 0}", flush=True)


if __name__ == "__main__":
    main()
