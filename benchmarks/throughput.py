"""posepipe against the script a user would write instead, in one run, alternating.

    python benchmarks/throughput.py [--video V] [--pairs 2] [--copies 4] [--memory] [--track-ab N]

The plain loop: one Python process that decodes with PyAV, runs the same bottom-up network with
onnxruntime on every core (intra-op threads = cores) and groups people with this project's own
grouping, frame by frame. posepipe: the whole `posepipe run VIDEO --out OUT` command (a fresh
process: imports, Ray start, actors, models, the video, publishing). Both run as subprocesses and
alternate, `--pairs` times, so a slow spell of this shared machine hits both alike. Printed:
- frames/s of each (whole process), per pair, and their ratio; posepipe's per-video frames/s
  (video open -> published, from OUT/videos);
- posepipe's start-up: command -> first batch written, split into imports and checks (until the job
  starts), Ray start, actor start (graph built), first batch (job.json's timeline);
- the same for `--copies` videos at once (posepipe one command; the plain loop one after another);
- `--memory`: peak summed RSS of all Ray processes for a clip and for it made 10x longer;
- `--track-ab N`: N alternating pairs with tracking off/on (in-process Runner), the cost of tracking.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
EVAL = Path(os.environ.get("POSEPIPE_EVAL", REPO.parent / "shared" / "eval"))
POSEPIPE = Path(sys.executable).with_name("posepipe")


def plain_loop(paths: list[str]) -> int:
    """The obvious single-process script: returns the frames it processed."""
    from pipeline.config import load_config, mode_file
    from pipeline.models import choose_bottomup_model
    from stages.pose.bottomup import decode_maps, net_input_size, to_net_input
    from stages.pose.onnx_session import onnx_session

    config = load_config(mode_file("bottomup"))
    params = config.bottomup
    session = onnx_session(choose_bottomup_model(config).path, os.cpu_count() or 1, ["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    frames = 0
    for path in paths:
        with av.open(path) as container:
            for frame in container.decode(video=0):
                image = frame.to_ndarray(format="rgb24")
                h, w = image.shape[:2]
                x = to_net_input(image[None], net_input_size(w, h, params.net_height, params.size_multiple))
                maps = session.run(None, {name: x})[0][0].transpose(2, 0, 1)  # NHWC out -> [57, h, w]
                decode_maps(maps.astype(np.float16), params)
                frames += 1
    return frames


def _timed(cmd: list[str]) -> tuple[float, float, str]:
    """(launch wall time, seconds, stdout) of a subprocess that must succeed."""
    launched = time.time()
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return launched, wall, done.stdout


def run_plain(paths: list[str]) -> dict:
    _, wall, out = _timed([sys.executable, __file__, "--plain-loop", *paths])
    frames = int(out.split()[-1])
    return {"frames": frames, "wall_s": wall, "fps": frames / wall}


def run_posepipe(paths: list[str], out: Path) -> dict:
    launched, wall, _ = _timed([str(POSEPIPE), "run", *paths, "--out", str(out), "--no-progress"])
    job = json.loads((out / "job.json").read_text())
    import pyarrow.parquet as pq

    from pipeline.jobfile import startup_breakdown

    videos = pq.read_table(out / "videos").to_pylist()
    frames = sum(v["frames"] for v in videos)
    return {"frames": frames, "wall_s": wall, "fps": frames / wall, "startup": startup_breakdown(job, launched),
            "startup_s": job["first_batch_at"] - launched, "stages": job["stages"],
            "video_fps": [v["frames"] / v["wall_s"] for v in videos]}


def copies(video: Path, n: int, folder: Path) -> list[str]:
    """n hard links of video under distinct names (distinct ids; symlinks would resolve to one)."""
    paths = []
    for k in range(n):
        dst = folder / f"{video.stem}_{k}{video.suffix}"
        try:
            os.link(video, dst)
        except OSError:
            dst.write_bytes(video.read_bytes())
        paths.append(str(dst))
    return paths


def compare(label: str, paths: list[str], pairs: int, tmp: Path) -> None:
    rows = []
    for k in range(pairs):
        plain = run_plain(paths)
        pipe = run_posepipe(paths, tmp / f"{label}_{k}")
        rows.append((plain, pipe))
        print(f"[{label}] pair {k + 1}: plain loop {plain['fps']:.2f} frames/s ({plain['wall_s']:.1f} s), "
              f"posepipe run {pipe['fps']:.2f} frames/s ({pipe['wall_s']:.1f} s), ratio {pipe['fps'] / plain['fps']:.3f}; "
              f"per video {', '.join(f'{f:.2f}' for f in pipe['video_fps'])} frames/s", flush=True)
        print(f"    start-up {pipe['startup_s']:.2f} s to the first batch: "
              + ", ".join(f"{name} {s:.2f} s" for name, s in pipe["startup"].items()), flush=True)
        print("    stages: " + ", ".join(f"{n} x{s['actors']} busy {s['busy_fraction']:.2f}" for n, s in pipe["stages"].items()))
    ratios = [p["fps"] / q["fps"] for q, p in rows]
    print(f"[{label}] ratio posepipe / plain loop: {', '.join(f'{r:.3f}' for r in ratios)}; median {np.median(ratios):.3f}")


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


def in_process(config, video: Path, out: Path) -> dict:
    """One Runner run in this process (Ray already started): wall time, stages, peak RSS."""
    from pipeline.runner import Runner, prepare

    with RssSampler() as rss:
        t0 = time.perf_counter()
        runner = Runner(prepare(config, out), progress=False)
        row = runner.run([str(video)])[0]
    return {"frames": row["frames"], "wall_s": time.perf_counter() - t0, "video_wall_s": row["wall_s"],
            "stages": runner.stage_stats, "peak_rss_mb": rss.peak / 2**20}


def memory_and_tracking(args, tmp: Path) -> None:
    import ray

    from pipeline.api import start_ray
    from pipeline.config import load_config, mode_file

    config = load_config(mode_file("bottomup"))
    start_ray(config)
    if args.track_ab:
        # Off = no association and no appearance work: everything tracking adds to the graph.
        off = dataclasses.replace(config, track=dataclasses.replace(config.track, enabled=False, reid=False))
        ratios = []
        for k in range(args.track_ab):
            b_off = in_process(off, Path(args.video), tmp / f"off{k}")
            b_on = in_process(config, Path(args.video), tmp / f"on{k}")
            ratios.append(b_on["video_wall_s"] / b_off["video_wall_s"])
        track_s = b_on["stages"]["track"]["busy_s"]
        print(f"tracking on/off time ratio per pair {', '.join(f'{r:.3f}' for r in ratios)}; median "
              f"{np.median(ratios):.3f}; tracker {track_s:.1f} s of the last run's {b_on['video_wall_s']:.1f} s")
    if args.memory:
        long1 = Path(args.long_video)
        r1 = in_process(config, long1, tmp / "mem1")
        r10 = in_process(config, repeat_video(long1, tmp / "long10.mp4", 10), tmp / "mem10")
        print(f"peak RSS {long1.name}: 1x ({r1['frames']} frames) {r1['peak_rss_mb']:.0f} MB, 10x ({r10['frames']} "
              f"frames) {r10['peak_rss_mb']:.0f} MB, ratio {r10['peak_rss_mb'] / r1['peak_rss_mb']:.2f}")
    ray.shutdown()


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--plain-loop":
        print(plain_loop(sys.argv[2:]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", default=str(EVAL / "videos" / "vtest.mp4"))
    ap.add_argument("--pairs", type=int, default=2, help="alternating plain loop / posepipe pairs")
    ap.add_argument("--copies", type=int, default=4, help="videos at once in the second comparison (0: skip)")
    ap.add_argument("--memory", action="store_true", help="also the 1x vs 10x memory runs")
    ap.add_argument("--long-video", default=str(EVAL / "videos" / "mmhuman3d_multi_person_demo.mp4"))
    ap.add_argument("--track-ab", type=int, default=0, metavar="N", help="also N tracking off/on pairs")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores; video {Path(args.video).name}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        compare("1 video", [args.video], args.pairs, tmp)
        if args.copies:
            compare(f"{args.copies} videos", copies(Path(args.video), args.copies, tmp), args.pairs, tmp)
        if args.memory or args.track_ab:
            memory_and_tracking(args, tmp)


if __name__ == "__main__":
    main()
