"""CPU latency of the person detectors, ms per frame including letterbox and decoding.

    python benchmarks/detector.py [--threads 2] [--rounds 7] [--iters 5]

Frames: the first 8 of crowd_synth/p20 (960x540, ~20 people), decoded with PyAV as the decode
stage does. Rows: RTMDet one frame per call, RTMDet 8 frames in one call (the stage's way), RTMDet
without the graph edit (the fallback, one frame per call on the published file), YOLOX (static
batch 1, so 8 frames are 8 calls). Runners are interleaved round after round, because shared VMs
stall in bursts: a burst then hits every runner instead of whichever happened to run during it.
The table gives the median and the 10th percentile of each call's wall time / frames in the call.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from unittest import mock

import av
import numpy as np
import onnxruntime as ort
from timing import measure, print_table

from stages.pose import rtmdet as rtmdet_module
from stages.pose.params import DetectorParams
from stages.pose.rtmdet import RTMDET_FILE, RTMDetPerson
from stages.pose.yolox import YOLOX_FILE, YoloxNano

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = Path(os.environ.get("POSEPIPE_WEIGHTS", REPO.parent / "shared" / "weights"))
EVAL = Path(os.environ.get("POSEPIPE_EVAL", REPO.parent / "shared" / "eval"))


def load_frames(count: int) -> np.ndarray:
    """The first `count` frames of crowd_synth/p20: uint8 [count, 540, 960, 3] RGB."""
    frames = []
    with av.open(str(EVAL / "crowd_synth" / "p20" / "video.mp4")) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return np.stack(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()

    cpu = ["CPUExecutionProvider"]
    params = DetectorParams()
    rtmdet = RTMDetPerson(WEIGHTS / RTMDET_FILE, params, num_threads=args.threads, providers=cpu)
    assert rtmdet.batched, "the RTMDet graph edit did not apply (is the onnx package installed?)"
    with mock.patch.object(rtmdet_module, "batchable_rtmdet_graph", lambda path: None):
        fallback = RTMDetPerson(WEIGHTS / RTMDET_FILE, params, num_threads=args.threads, providers=cpu)
    yolox = YoloxNano(WEIGHTS / YOLOX_FILE, params, num_threads=args.threads, providers=cpu)
    frames = load_frames(8)
    runners = {
        "RTMDet  batch 1": (lambda: rtmdet(frames[:1]), 1),
        "RTMDet  batch 8 (one call)": (lambda: rtmdet(frames), 8),
        "RTMDet  unedited graph, 8 calls": (lambda: fallback(frames), 8),
        "YOLOX   8 frames, 8 calls": (lambda: yolox(frames), 8),
    }
    times = measure(runners, args.rounds, args.iters)

    people = [len(boxes) for boxes, _ in rtmdet(frames)]
    print(
        f"person detectors on crowd_synth/p20 {frames.shape[2]}x{frames.shape[1]} ({people} RTMDet boxes per frame), "
        f"{args.threads} threads (onnxruntime {ort.__version__}, {args.rounds} rounds x {args.iters} calls)"
    )
    print_table(times, "runner")


if __name__ == "__main__":
    main()
