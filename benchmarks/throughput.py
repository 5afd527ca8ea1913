"""Throughput and memory of the whole pipeline against the bare network, in one run.

    python benchmarks/throughput.py [--video V] [--long-video L] [--config FILE]

(a) bare network forward: frames/s of the configured pose backend on frames decoded and resized
    beforehand, in batches of decode.batch_size, with the pose actor's thread count;
(b) `posepipe run` on the same video through a local Ray (num_cpus = this machine's cores):
    frames/s over the whole run and over its steady state (first batch written -> end);
then b/a, grouping ms/frame, and the peak summed RSS of all Ray processes for a video and for the
same video made 10x longer (its packets repeated with shifted timestamps);
(c) with --track-ab N, N pairs of (b) with tracking off (track.enabled = false, track.reid = false) and
    on, alternating: the cost of tracking as the median ratio of per-video times, and the tracker's
    own time in the sink actor.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import threading
import time
from pathlib import Path

import av
import psutil
import ray
import torch

from pipeline.config import load_config, mode_file
from pipeline.models import build_bottomup_forward, choose_bottomup_model
from pipeline.runner import Runner
from stages.pose.bottomup import BottomUpGrouper, BottomUpNet, net_input_size, to_net_input
from stages.io.decode import VideoReader

REPO = Path(__file__).resolve().parents[1]
EVAL = Path(os.environ.get("POSEPIPE_EVAL", REPO.parent / "shared" / "eval"))


def repeat_video(src: Path, dst: Path, times: int) -> Path:
    """dst = src's video packets `times` over, timestamps shifted so it plays as one long video."""
    with av.open(str(src)) as ic, av.open(str(dst), "w") as oc:
        ist = ic.streams.video[0]
        ost = oc.add_stream_from_template(ist)
        packets = [p for p in ic.demux(ist) if p.dts is not None]
        span = max(p.pts + (p.duration or 0) for p in packets) - min(p.pts for p in packets)
        for k in range(times):
            for p in packets:
                p.pts += span if k else 0
                p.dts += span if k else 0
                p.stream = ost
                oc.mux(p)
    return dst


class PeakSampler:
    """Peak of measure() sampled every period_s seconds on a thread, inside a `with` block."""

    def __init__(self, period_s: float = 0.1):
        self.period_s = period_s
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def measure(self) -> float:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.measure())
            time.sleep(self.period_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class RssSampler(PeakSampler):
    """Peak of the summed resident memory (bytes) of this process and every Ray process."""

    def measure(self) -> float:
        total = 0
        for proc in psutil.process_iter(["cmdline", "memory_info"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if proc.pid == os.getpid() or "ray::" in cmd or "raylet" in cmd or "gcs_server" in cmd:
                total += proc.info["memory_info"].rss if proc.info["memory_info"] else 0
        return total


def bare_forward_fps(config, video: Path, max_frames: int = 200) -> tuple[float, list]:
    """(frames/s of the network alone, its MapBatches for the grouping timing)."""
    torch.set_num_threads(config.pose.threads)
    model = choose_bottomup_model(config)
    net = BottomUpNet(build_bottomup_forward(config, model.backend, model.path.read_bytes(), "cpu"), config.bottomup)
    batches = []
    with VideoReader(video, batch_size=config.decode.batch_size, max_side=config.decode.max_side or None) as r:
        for b in r:
            batches.append(b)
            if sum(len(x) for x in batches) >= max_frames:
                break
    h, w = batches[0].images.shape[1:3]
    size = net_input_size(w, h, config.bottomup.net_height, config.bottomup.size_multiple)
    inputs = [to_net_input(b.images, size) for b in batches]  # pre-resized: (a) is the forward only
    net.forward(inputs[0])  # warm-up
    t0 = time.perf_counter()
    for x in inputs:
        net.forward(x)
    fps = sum(len(x) for x in inputs) / (time.perf_counter() - t0)
    return fps, [net(b) for b in batches[:8]]


def grouping_ms_per_frame(config, map_batches: list) -> float:
    grouper = BottomUpGrouper(config.bottomup)
    t0 = time.perf_counter()
    for b in map_batches:
        grouper(b)
    return 1000 * (time.perf_counter() - t0) / sum(len(b) for b in map_batches)


def pipeline_run(config, video: Path, out: Path) -> dict:
    with RssSampler() as rss:
        t0 = time.perf_counter()
        runner = Runner(config, out, progress=False)
        row = runner.run([str(video)])[0]
        wall = time.perf_counter() - t0
    return {"frames": row["frames"], "wall_s": wall, "fps": row["frames"] / wall, "stages": runner.stage_stats,
            "video_wall_s": row["wall_s"], "video_fps": row["frames"] / row["wall_s"], "peak_rss_mb": rss.peak / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=str(EVAL / "videos" / "vtest.mp4"))
    ap.add_argument("--long-video", default=str(EVAL / "videos" / "mmhuman3d_multi_person_demo.mp4"),
                    help="video for the 1x vs 10x memory comparison")
    ap.add_argument("--config", default=None)
    ap.add_argument("--track-ab", type=int, default=0, metavar="N",
                    help="also N pairs of runs with tracking off / on, alternating")
    ap.add_argument("--no-memory", action="store_true", help="skip the 1x vs 10x memory runs")
    args = ap.parse_args()
    config = load_config(mode_file("bottomup"), *([args.config] if args.config else []))
    video = Path(args.video)

    fps_a, map_batches = bare_forward_fps(config, video)
    group_ms = grouping_ms_per_frame(config, map_batches)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        b = pipeline_run(config, video, tmp / "out_b")
        ratios = []
        if args.track_ab:
            # Off means no association and no appearance (thumbnails in the pose actor, histograms in
            # grouping): everything tracking adds to the graph. On and off alternate, so drift in
            # this machine's speed (10% between runs here) hits both alike; the median ratio is reported.
            off = dataclasses.replace(config, track=dataclasses.replace(config.track, enabled=False, reid=False))
            for k in range(args.track_ab):
                b_off = pipeline_run(off, video, tmp / f"out_b_off{k}")
                b_on = b if k == 0 else pipeline_run(config, video, tmp / f"out_b_on{k}")
                ratios.append(b_on["video_wall_s"] / b_off["video_wall_s"])
        if not args.no_memory:
            long1 = Path(args.long_video)
            long10 = repeat_video(long1, tmp / "long10.mp4", 10)
            r1 = pipeline_run(config, long1, tmp / "out_1x")
            r10 = pipeline_run(config, long10, tmp / "out_10x")
    ray.shutdown()

    print(f"video {video.name}; backend {choose_bottomup_model(config).backend}, pose threads {config.pose.threads}, "
          f"batch {config.decode.batch_size}, cpus {os.cpu_count()}")
    print(f"(a) bare network forward      {fps_a:7.2f} frames/s")
    print(f"(b) posepipe run, whole       {b['fps']:7.2f} frames/s  ({b['frames']} frames in {b['wall_s']:.1f} s, "
          "incl. Ray start-up)")
    print(f"(b) posepipe run, per video   {b['video_fps']:7.2f} frames/s  (video open -> output published)")
    print(f"ratio b/a                     {b['video_fps'] / fps_a:7.3f}  (whole run: {b['fps'] / fps_a:.3f})")
    print(f"grouping                      {group_ms:7.2f} ms/frame")
    for name, s in b["stages"].items():
        print(f"  stage {name:6s} actors {s['actors']}  busy {s['busy_fraction']:.2f} of its lifetime, "
              f"{1000 * s['busy_s'] / b['frames']:.1f} ms/frame")
    if args.track_ab:
        track_s = b["stages"]["sink"].get("track_s", 0.0)
        print(f"(c) tracking on/off time ratio per pair {', '.join(f'{r:.3f}' for r in ratios)}; median "
              f"{sorted(ratios)[len(ratios) // 2]:.3f}; tracker time {track_s:.1f} s = "
              f"{100 * track_s / b['video_wall_s']:.1f}% of the first run (in the sink actor, beside the pose actor)")
    if args.no_memory:
        return
    print(f"peak RSS {long1.name}: 1x ({r1['frames']} frames) {r1['peak_rss_mb']:.0f} MB, "
          f"10x ({r10['frames']} frames) {r10['peak_rss_mb']:.0f} MB, ratio {r10['peak_rss_mb'] / r1['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
