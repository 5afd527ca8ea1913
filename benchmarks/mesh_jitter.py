"""Jitter of the fitted bodies on a real clip, with and without the temporal terms.

    posepipe run CLIP --out OUT --mode topdown          (any finished output with tracks)
    python benchmarks/mesh_jitter.py OUT [--video ID]

For the tracked people of the video, fits bodies four ways with the default [mesh.fit]: streaming
(chunks of [mesh] chunk_frames, as `run --mesh`) with w_accel = w_velocity = 0, with w_velocity = 0, with
the defaults, and whole tracks (as `posepipe mocap`). Prints per way: mean 3D keypoint acceleration
(m/frame^2, over three consecutive frames of a track, the 17 keypoints), its median, and the mean
and median reprojection error (px) of the confident keypoints.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import pyarrow as pa
import torch

from pipeline.config import load_config
from stages.body.fit import BodyFitter
from stages.body.load import load_body_model
from stages.io.read_bodies import tracked_people
from stages.body.stream import BodyStream, TrackedRows
from stages.io.sink import read_video_rows


def _frames(rows: TrackedRows) -> list[TrackedRows]:
    """The rows split per frame, as the graph hands them to the mesh stage."""
    out = []
    for f in np.unique(rows.frame_index):
        k = rows.frame_index == f
        out.append(TrackedRows(rows.video_id, rows.frame_index[k], rows.time_s[k], rows.track_id[k], rows.keypoints[k]))
    return out


def acceleration(table: pa.Table) -> np.ndarray:
    """Per (track, frame) with both neighbours fitted: mean over the 17 keypoints of |x(t+1) - 2x(t) + x(t-1)|."""
    t = table.sort_by([("track_id", "ascending"), ("frame_index", "ascending")])
    n = t.num_rows
    xyz = np.stack([t[c].combine_chunks().flatten().to_numpy().reshape(n, 17) for c in ("joint_x", "joint_y",
                                                                                          "joint_z")], -1)
    tid, f = t["track_id"].to_numpy(), t["frame_index"].to_numpy()
    ok = (tid[2:] == tid[:-2]) & (f[2:] - f[:-2] == 2)
    acc = np.linalg.norm(xyz[2:] - 2 * xyz[1:-1] + xyz[:-2], axis=-1).mean(-1)
    return acc[ok]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--video", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    vid = args.video or read_video_rows(args.out)[0]["video_id"]
    rows, size = tracked_people(args.out, vid)
    config = load_config()
    model = load_body_model(config.mesh.body_model, config.mesh.body_model_path)
    print(f"{vid}: {len(rows)} tracked person-frames, {len(np.unique(rows.track_id))} tracks, {size[0]}x{size[1]}")
    ways = [("streaming, no temporal", dataclasses.replace(config.mesh.fit, w_accel=0.0, w_velocity=0.0), False),
            ("streaming, acceleration only", dataclasses.replace(config.mesh.fit, w_velocity=0.0), False),
            ("streaming, temporal (default)", config.mesh.fit, False),
            ("whole tracks (mocap)", config.mesh.fit, True)]
    for name, params, whole in ways:
        stream = BodyStream(BodyFitter(model, params), config.mesh.chunk_frames, config.mesh.floor_wait_frames)
        t0 = time.perf_counter()
        if whole:
            table = stream.fit_whole(rows, size)[0]
            tables = [table]
        else:
            stream.open(vid)
            parts = _frames(rows)
            tables = [stream.push(p, size) for p in parts[:-1]] + [stream.finish(parts[-1], size)[0]]
        table = pa.concat_tables([t for t in tables if t is not None])
        dt = time.perf_counter() - t0
        acc, err = acceleration(table), table["reproj_px"].to_numpy()
        print(f"{name:30s} accel mean {acc.mean() * 1000:6.1f} mm/frame^2 (median {np.median(acc) * 1000:5.1f}); "
              f"reprojection mean {err.mean():5.2f} px (median {np.median(err):5.2f}); "
              f"{table.num_rows} rows, {dt:.0f} s",
              flush=True)


if __name__ == "__main__":
    main()
