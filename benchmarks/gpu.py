"""Whole-pipeline throughput of bottom-up pose on one GPU, for 1, 4, 16... videos at once.

    python benchmarks/gpu.py [--video PATH] [--videos 1,4,16] [--pose-actors N] [--decoders N] [--cpu-smoke]

Makes a 480p H.264 test clip (../shared/eval/videos/vtest.mp4 or --video, re-encoded to 854x480 with
PyAV in a temporary folder), then for each count runs `Runner(prepare(config, out)).run(copies)` in this process
on that many copies of it (distinct names: each is its own video) through a local Ray with this
machine's cores and GPUs. The config is the bottomup preset with: pose actors sharing the one GPU
(--pose-actors x 1/N of it), the torch backend, pose.group_on_device = "on" (peaks and PAF scores
on the GPU: only people leave it), --decoders decode actors, several group
and sink actors, and room for every video in flight. Prints per count: videos, frames, frames/s over
the whole run (actor start-up included) and per video (open -> output), each stage's busy fraction
(busy time / actor lifetime), and the GPU's name.

--cpu-smoke: the same runs with no GPU (num_gpus 0, a 40-frame clip, counts 1 and 2), so the
script can be checked on a CPU machine; its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import ray
import torch

from pipeline.config import Config, StageResources, load_config, mode_file
from pipeline.runner import Runner, prepare

REPO = Path(__file__).resolve().parents[1]
EVAL = Path(os.environ.get("POSEPIPE_EVAL", REPO.parent / "shared" / "eval"))
SIZE = (854, 480)


def make_clip(src: Path, dst: Path, max_frames: int | None = None) -> int:
    """dst = src's frames scaled to SIZE, H.264 yuv420p at src's frame rate; returns frames written."""
    with av.open(str(src)) as ic, av.open(str(dst), "w") as oc:
        ist = ic.streams.video[0]
        rate = Fraction(ist.average_rate or 25).limit_denominator(1001)
        ost = oc.add_stream("libx264" if "libx264" in av.codecs_available else "h264", rate=rate)
        ost.width, ost.height, ost.pix_fmt = *SIZE, "yuv420p"
        ost.codec_context.time_base = 1 / rate
        n = 0
        for frame in ic.decode(ist):
            if max_frames is not None and n >= max_frames:
                break
            out = frame.reformat(width=SIZE[0], height=SIZE[1], format="yuv420p")
            out.pts, out.time_base = n, 1 / rate  # frame numbers: the source's pts may not start at 0
            oc.mux(ost.encode(out))
            n += 1
        oc.mux(ost.encode(None))
    return n


def _resources(res: StageResources, actors: int, num_cpus: float, num_gpus: float = 0.0) -> StageResources:
    return dataclasses.replace(res, actors=actors, num_cpus=num_cpus, num_gpus=num_gpus)


def bench_config(videos: int, pose_actors: int, decoders: int, gpus: int) -> Config:
    config = load_config(mode_file("bottomup"))
    cpus = os.cpu_count() or 1
    side = max(2, cpus // 8)  # group and sink actors: light work, but one per video at a time each
    # Logical CPUs per actor: a whole core for the GPU feeders and decoders, half for group and sink,
    # scaled down together where the machine has fewer cores (Ray would refuse the graph otherwise).
    need = pose_actors * 1.0 + decoders * 1.0 + 2 * side * 0.5
    k = min(1.0, cpus / need)
    pose = dataclasses.replace(
        config.pose, backend="torch", group_on_device="on",
        resources=_resources(config.pose.resources, pose_actors, k, (1.0 / pose_actors) if gpus else 0.0))
    config = dataclasses.replace(
        config, pose=pose,
        decode=dataclasses.replace(config.decode, resources=_resources(config.decode.resources, decoders, k)),
        group=dataclasses.replace(config.group, resources=_resources(config.group.resources, side, 0.5 * k)),
        sink=dataclasses.replace(config.sink, resources=_resources(config.sink.resources, side, 0.5 * k)),
        run=dataclasses.replace(config.run, max_videos_in_flight=max(videos, config.run.max_videos_in_flight)),
    )
    return config


def run_count(config: Config, clip: Path, count: int, tmp: Path) -> dict:
    copies = []
    for i in range(count):
        copy = tmp / f"{clip.stem}_{count}x_{i:02d}{clip.suffix}"  # distinct names: distinct video ids
        shutil.copyfile(clip, copy)
        copies.append(copy)
    t0 = time.perf_counter()
    runner = Runner(prepare(config, tmp / f"out_{count}"), progress=False)
    rows = runner.run([str(c) for c in copies])
    wall = time.perf_counter() - t0
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        raise RuntimeError(f"{len(bad)} of {count} videos not ok: {bad[0]['status']}: {bad[0]['error']}")
    frames = sum(r["frames"] for r in rows)
    return {"videos": count, "frames": frames, "wall_s": wall, "fps": frames / wall,
            "video_fps": frames / max(r["wall_s"] for r in rows), "stages": runner.stage_stats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=str(EVAL / "videos" / "vtest.mp4"), help="source of the 480p clip")
    ap.add_argument("--videos", default=None, help="comma-separated video counts (default 1,4,16; smoke 1,2)")
    ap.add_argument("--pose-actors", type=int, default=None, help="pose actors sharing the GPU (default 2; smoke 1)")
    ap.add_argument("--decoders", type=int, default=None, help="decode actors (default max(4, cores // 2); smoke 1)")
    ap.add_argument("--cpu-smoke", action="store_true", help="no GPU, a 40-frame clip: checks the script runs")
    args = ap.parse_args()
    smoke = args.cpu_smoke
    counts = [int(c) for c in (args.videos or ("1,2" if smoke else "1,4,16")).split(",")]
    pose_actors = args.pose_actors or (1 if smoke else 2)
    decoders = args.decoders or (1 if smoke else max(4, (os.cpu_count() or 1) // 2))
    gpus = 0 if smoke else torch.cuda.device_count()
    if not smoke and not gpus:
        raise SystemExit("no CUDA GPU visible to torch (use --cpu-smoke to check the script on a CPU)")
    gpu_name = torch.cuda.get_device_name(0) if gpus else "none (CPU smoke run)"

    ray.init(num_cpus=os.cpu_count(), num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            clip = tmp / "clip480p.mp4"
            n = make_clip(Path(args.video), clip, max_frames=40 if smoke else None)
            print(f"clip {Path(args.video).name} -> {SIZE[0]}x{SIZE[1]} H.264, {n} frames; GPU {gpu_name}; "
                  f"{os.cpu_count()} CPUs; {pose_actors} pose actor(s), {decoders} decoder(s)", flush=True)
            for count in counts:
                config = bench_config(count, pose_actors, decoders, gpus)
                results.append(run_count(config, clip, count, tmp))
                r = results[-1]
                print(f"  {count:3d} video(s): {r['frames']:6d} frames in {r['wall_s']:6.1f} s = {r['fps']:7.1f} "
                      f"frames/s (per video {r['video_fps']:7.1f})", flush=True)
    finally:
        ray.shutdown()

    res = config.pose.resources
    print(f"GPU: {gpu_name}; pose actors {res.actors} x {res.num_gpus:g} GPU, backend {config.pose.backend}, "
          f"peaks and PAF scores on the pose actors' device, "
          f"decoders {config.decode.resources.actors}, group/sink actors {config.group.resources.actors}")
    print(f"{'videos':>6} {'frames':>7} {'frames/s':>9} {'pose busy':>9} {'decode busy':>11}  other stages busy")
    for r in results:
        st = r["stages"]
        rest = "  ".join(f"{k} {v['busy_fraction']:.2f}" for k, v in st.items() if k not in ("pose", "decode"))
        print(f"{r['videos']:6d} {r['frames']:7d} {r['fps']:9.1f} {st['pose']['busy_fraction']:9.2f} "
              f"{st['decode']['busy_fraction']:11.2f}  {rest}")


if __name__ == "__main__":
    main()
