"""Top-down per-person cost: one batched MoveNet call over 20 person crops vs 20 single-crop calls.

    python benchmarks/topdown_batching.py [--seq p20] [--frame 0] [--people 20] [--rounds 15] [--threads 1 2]

Crops are real: the GT boxes (`bbox`, visible part) of one crowd_synth frame, cut with the stage's
own crop recipe. For each onnxruntime thread count the runners go round after round, interleaved,
because shared VMs stall in bursts: a burst then hits every runner instead of one. Reported: the
median (and 10th percentile) wall time of one round, i.e. all 20 crops, and per crop. Runners:
  batched   MoveNet (batch-dynamic graph), one session.run over [20, 192, 192, 3]
  chunked   the same, in calls of TopDownParams.max_crops_per_call crops (what the stage does)
  single    the same session, 20 session.run calls of [1, 192, 192, 3]
  original  the unmodified batch-1 ONNX file, 20 calls (what a per-crop loop would use)
  stage     TopDownKeypoints end to end (warp, chunked calls, inverse affine, crowd checks)
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import av
import numpy as np
import onnxruntime as ort

from stages.batches import FrameBatch
from stages.pose.crops import crop_transforms, warp_crops
from stages.pose.movenet import MoveNet
from stages.pose.topdown import TopDownKeypoints

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = Path(os.environ.get("POSEPIPE_WEIGHTS", REPO.parent / "shared" / "weights"))
EVAL = Path(os.environ.get("POSEPIPE_EVAL", REPO.parent / "shared" / "eval"))
MODEL = "movenet_singlepose_lightning_4_dequant_fp32.onnx"


def load_frame(seq: str, frame: int, people: int) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8[H, W, 3], boxes float32[people, 4] xyxy) of one crowd_synth frame, largest boxes first."""
    gt = json.loads((EVAL / "crowd_synth" / seq / "gt_coco.json").read_text())
    anns = sorted((a for a in gt["annotations"] if a["frame_index"] == frame), key=lambda a: -a["area"])
    if len(anns) < people:
        raise SystemExit(f"{seq} frame {frame} has {len(anns)} people, need {people}")
    boxes = np.array([a["bbox"] for a in anns[:people]], np.float32)
    boxes[:, 2:] += boxes[:, :2]
    with av.open(str(EVAL / "crowd_synth" / seq / "video.mp4")) as container:
        for i, f in enumerate(container.decode(video=0)):
            if i == frame:
                return f.to_ndarray(format="rgb24"), boxes
    raise SystemExit(f"{seq} has no frame {frame}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq", default="p20")
    ap.add_argument("--frame", type=int, default=0)
    ap.add_argument("--people", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    rgb, boxes = load_frame(args.seq, args.frame, args.people)
    crops = warp_crops(rgb, crop_transforms(boxes, 1.25, 192)[0], 192)
    frames = FrameBatch(video_id=args.seq, frame_index=np.array([args.frame], np.int64),
                        time_s=np.zeros(1), images=rgb[None])
    raw = (WEIGHTS / MODEL).read_bytes()
    print(f"{len(crops)} real crops from {args.seq} frame {args.frame} (box heights "
          f"{(boxes[:, 3] - boxes[:, 1]).min():.0f}-{(boxes[:, 3] - boxes[:, 1]).max():.0f} px), "
          f"onnxruntime {ort.__version__}, {os.cpu_count()} CPUs, {args.rounds} rounds")
    for threads in args.threads:
        bench(raw, crops, frames, boxes, threads, args.rounds)


def bench(raw: bytes, crops: np.ndarray, frames: FrameBatch, boxes: np.ndarray, threads: int, rounds: int) -> None:
    """Time the four runners interleaved at one thread count and print the table."""
    n = len(crops)
    net = MoveNet(raw, num_threads=threads, providers=["CPUExecutionProvider"])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    original = ort.InferenceSession(raw, options, providers=["CPUExecutionProvider"])
    stage = TopDownKeypoints(net)
    feed = net.input_name
    runners = {
        "batched": lambda: net.session.run(None, {feed: crops}),
        # what the stage runs: MoveNet chunks at TopDownParams.max_crops_per_call
        "chunked": lambda: net(crops, max_batch=stage.params.max_crops_per_call),
        "single": lambda: [net.session.run(None, {feed: crops[i:i + 1]}) for i in range(n)],
        "original": lambda: [original.run(None, {feed: crops[i:i + 1]}) for i in range(n)],
        "stage": lambda: stage(frames, [(boxes, np.ones(n, np.float32))]),
    }
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(2):  # warm-up: allocator arenas, thread pool
        for run in runners.values():
            run()
    for _ in range(rounds):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) * 1e3 for k, v in times.items()}
    print(f"\nORT intra-op threads = {threads}")
    print(f"{'runner':<10} {f'ms / {n} crops':>14} {'p10':>8} {'ms / crop':>10}")
    for name, v in times.items():
        print(f"{name:<10} {med[name]:>14.2f} {np.percentile(v, 10) * 1e3:>8.2f} {med[name] / n:>10.2f}")
    print(f"batched / single = {med['batched'] / med['single']:.2f}  "
          f"(batched / original = {med['batched'] / med['original']:.2f}; "
          f"{n} single-crop calls cost {med['single'] / med['batched']:.2f}x one batched call)")
    print(f"chunked ({stage.params.max_crops_per_call} a call) / single = {med['chunked'] / med['single']:.2f}, "
          f"/ original = {med['chunked'] / med['original']:.2f}")

if __name__ == "__main__":
    main()
