"""Batch-scale behaviour of the Ray graph, in one run: memory against video length, and throughput and
stage busy fractions for 1 and for 4 videos at once.

    python benchmarks/scale.py [--mode bottomup] [--config FILE] [--short VIDEO] [--many VIDEO]

(1) the same clip 1x and 10x longer (packets repeated, timestamps shifted): peak summed RSS of this
    process and every Ray process, and peak object-store use (`ray memory --stats-only`'s numbers),
    sampled every 0.1 s;
(2) one video, then 4 copies of it at once (run.max_videos_in_flight = 4): frames/s over the whole
    run and each stage's busy fraction (busy time / actor lifetime). On a GPU node the pose stage's
    fraction is the GPU stage's; here (no GPU) it is a CPU stage like the others.
Local Ray with this machine's cores; model start-up is inside each run's wall time.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import ray
from throughput import PeakSampler, RssSampler, repeat_video

from pipeline.config import load_config, mode_file
from pipeline.runner import Runner, prepare

REPO = Path(__file__).resolve().parents[1]
EVAL = Path(os.environ.get("POSEPIPE_EVAL", REPO.parent / "shared" / "eval"))


class PlasmaSampler(PeakSampler):
    """Peak object-store use in MiB across the cluster."""

    def __init__(self, period_s: float = 0.1):
        from ray._private.internal_api import memory_summary  # what `ray memory --stats-only` prints

        super().__init__(period_s)
        self._summary = memory_summary
        self.address = ray.get_runtime_context().gcs_address

    def measure(self) -> float:
        text = self._summary(address=self.address, stats_only=True)
        m = re.search(r"Plasma memory usage (\d+) MiB", text)
        return float(m.group(1)) if m else 0.0


def run(config, videos: list[Path], out: Path) -> dict:
    with RssSampler() as rss, PlasmaSampler() as plasma:
        t0 = time.perf_counter()
        runner = Runner(prepare(config, out), progress=False)
        rows = runner.run([str(v) for v in videos])
        wall = time.perf_counter() - t0
    frames = sum(r["frames"] for r in rows)
    assert all(r["status"] == "ok" for r in rows), rows
    return {"frames": frames, "wall_s": wall, "fps": frames / wall, "rss_mb": rss.peak / 2**20,
            "plasma_mib": plasma.peak, "stages": runner.stage_stats, "peak_in_flight": runner.peak_in_flight}


def busy(stages: dict) -> str:
    return "  ".join(f"{k} {v['busy_fraction']:.2f}" for k, v in stages.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", default="bottomup")
    ap.add_argument("--config", default=None)
    ap.add_argument("--short", default=str(EVAL / "videos" / "mmhuman3d_multi_person_demo.mp4"),
                    help="clip for the 1x vs 10x memory runs")
    ap.add_argument("--many", default=str(EVAL / "crowd_synth" / "track_a" / "video.mp4"),
                    help="clip for the 1 vs 4 videos runs")
    args = ap.parse_args()
    config = load_config(mode_file(args.mode), *([args.config] if args.config else []))
    four = dataclasses.replace(config, run=dataclasses.replace(config.run, max_videos_in_flight=4))
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        short = Path(args.short)
        long10 = repeat_video(short, tmp / f"{short.stem}_x10.mp4", 10)
        m1 = run(config, [short], tmp / "m1")
        m10 = run(config, [long10], tmp / "m10")
        many = Path(args.many)
        copies = [tmp / f"copy_{k}{many.suffix}" for k in range(4)]
        for c in copies:
            shutil.copyfile(many, c)
        v1 = run(config, copies[:1], tmp / "v1")
        v4 = run(four, copies, tmp / "v4")
    ray.shutdown()

    b = config.decode.batch_size
    print(f"mode {args.mode}, {os.cpu_count()} CPUs, decode batch {b}, max batches in flight "
          f"{config.run.max_batches_in_flight} per video")
    print("(1) memory vs video length")
    for name, r in (("1x", m1), ("10x", m10)):
        print(f"  {short.name} {name:3s}: {r['frames']:5d} frames  peak RSS {r['rss_mb']:6.0f} MB  "
              f"peak object store {r['plasma_mib']:4.0f} MiB  peak batches in flight {r['peak_in_flight']}")
    print(f"  ratio 10x/1x: RSS {m10['rss_mb'] / m1['rss_mb']:.2f}, object store "
          f"{m10['plasma_mib'] / max(m1['plasma_mib'], 1):.2f}")
    print("(2) throughput and stage busy fraction")
    for name, r in (("1 video ", v1), ("4 videos", v4)):
        print(f"  {name}: {r['frames']:5d} frames in {r['wall_s']:6.1f} s = {r['fps']:5.2f} frames/s; "
              f"busy: {busy(r['stages'])}")


if __name__ == "__main__":
    main()
