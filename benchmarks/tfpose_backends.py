"""CPU latency of the tf-pose network: native torch port vs onnxruntime, ms per frame.

    python benchmarks/tfpose_backends.py [--threads 2] [--size 432x368] [--rounds 7] [--iters 8]

Frames are the COCO eval photos (BGR, cv2.resize INTER_CUBIC), so the per-frame normalisation
sees real statistics. Backends run interleaved, round after round, because shared VMs stall in
bursts: a burst then hits every backend instead of whichever happened to run during it. The table
gives the median and the 10th percentile of ms per frame over all timed calls (each call's wall
time divided by its batch size).
"""

from __future__ import annotations

import argparse
import copy
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch
from timing import measure, print_table

from stages.pose.tfpose_net import TfPoseNet
from stages.pose.tfpose_onnx import TfPoseOnnx

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = Path(os.environ.get("POSEPIPE_WEIGHTS", REPO.parent / "shared" / "weights"))
EVAL = Path(os.environ.get("POSEPIPE_EVAL", REPO.parent / "shared" / "eval"))


def load_frames(size: tuple[int, int], count: int) -> np.ndarray:
    """`count` eval photos resized to size (W, H): float32 [count, H, W, 3] BGR 0..255."""
    paths = sorted((EVAL / "coco").glob("*.jpg"))
    frames = [cv2.resize(cv2.imread(str(p)), size, interpolation=cv2.INTER_CUBIC) for p in paths]
    return np.stack([frames[i % len(frames)] for i in range(count)]).astype(np.float32)


def torch_runner(net: TfPoseNet, frames: np.ndarray, channels_last: bool) -> Callable[[], None]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = copy.deepcopy(net).to(memory_format=fmt)  # .to() converts in place: keep `net` as it is
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(memory_format=fmt)

    def run() -> None:
        with torch.inference_mode():
            model(x)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", default="432x368", help="network input W x H")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=8)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))

    torch.set_num_threads(args.threads)
    net = TfPoseNet.from_pb(WEIGHTS / "tfpose_mobilenet_v2_small_graph_opt.pb").eval()
    onnx = TfPoseOnnx(
        WEIGHTS / "tfpose_mobilenet_v2_small.onnx", num_threads=args.threads, providers=["CPUExecutionProvider"]
    )
    frames = load_frames(size, 4)
    runners = {
        "torch  batch 1  NCHW": (torch_runner(net, frames[:1], channels_last=False), 1),
        "torch  batch 4  NCHW": (torch_runner(net, frames, channels_last=False), 4),
        "torch  batch 1  channels_last": (torch_runner(net, frames[:1], channels_last=True), 1),
        "torch  batch 4  channels_last": (torch_runner(net, frames, channels_last=True), 4),
        "onnxruntime  1 frame/call": (lambda: onnx(frames[:1]), 1),
    }
    times = measure(runners, args.rounds, args.iters)

    print(
        f"tfpose mobilenet_v2_small {size[0]}x{size[1]}, {args.threads} threads "
        f"(torch {torch.__version__}, onnxruntime {ort.__version__}, {args.rounds} rounds x {args.iters} calls)"
    )
    print_table(times, "backend")


if __name__ == "__main__":
    main()
