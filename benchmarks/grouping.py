"""Bottom-up grouping ms/frame, this checkout against an earlier commit's, on the same network maps.

    python benchmarks/grouping.py [--against 18d6e15] [--rounds 5] [--threads 1]

The network runs once per clip (onnxruntime); then both versions of `decode_maps` (peaks, limb
scores, assembly) run on the same maps, alternating round by round, at one cv2 thread (a grouping
actor's setting). The earlier version is loaded from `git show REV:stages/pose/{heatmap,paf,bottomup}.py`
into a temporary package, so no old code lives in the tree. Printed per clip: people per frame,
median ms/frame of each and their ratio, and whether both found the same people (count per frame,
keypoints bit-equal).
"""
from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from pipeline.models import choose_bottomup_model
from pipeline.config import load_config, mode_file
from stages.pose.bottomup import decode_maps, net_input_size, to_net_input
from stages.pose.tfpose_onnx import TfPoseOnnx

REPO = Path(__file__).resolve().parents[1]
EVAL = Path(os.environ.get("POSEPIPE_EVAL", REPO.parent / "shared" / "eval"))
CLIPS = {"vtest (0.4 people/frame)": EVAL / "videos" / "vtest.mp4",
         "crowd_synth p20": EVAL / "crowd_synth" / "p20" / "video.mp4",
         "crowd_synth p50": EVAL / "crowd_synth" / "p50" / "video.mp4"}


def earlier_decode_maps(rev: str, folder: Path):
    """decode_maps of commit `rev`, imported from a copy of its three modules."""
    package = folder / "earlier_grouping"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("heatmap", "paf", "bottomup"):
        text = subprocess.run(["git", "show", f"{rev}:stages/pose/{name}.py"], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout
        for dep in ("heatmap", "paf"):
            text = text.replace(f"from stages.pose.{dep} import", f"from earlier_grouping.{dep} import")
        (package / f"{name}.py").write_text(text)
    sys.path.insert(0, str(folder))
    return importlib.import_module("earlier_grouping.bottomup").decode_maps


def clip_maps(net: TfPoseOnnx, path: Path, params, frames: int = 40) -> np.ndarray:
    """float16[N, 57, h, w] network maps of every other frame of the clip's first 2 * frames."""
    with av.open(str(path)) as container:
        images = [f.to_ndarray(format="rgb24") for i, f in zip(range(2 * frames), container.decode(video=0))][::2]
    images = np.stack(images)
    h, w = images.shape[1:3]
    return net(to_net_input(images, net_input_size(w, h, params.net_height, params.size_multiple))).astype(np.float16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", default="18d6e15", help="git revision of the earlier grouping")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="cv2 threads (a grouping actor uses 1)")
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    params = load_config(mode_file("bottomup")).bottomup
    net = TfPoseOnnx(choose_bottomup_model(load_config()).path, num_threads=os.cpu_count() or 1,
                     providers=["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory() as tmp:
        earlier = earlier_decode_maps(args.against, Path(tmp))
        for label, path in CLIPS.items():
            maps = clip_maps(net, path, params)
            runners = {"earlier": earlier, "now": decode_maps}
            times = {name: [] for name in runners}
            out = {}
            for _ in range(args.rounds):
                for name, fn in runners.items():
                    t0 = time.perf_counter()
                    out[name] = [fn(m, params) for m in maps]
                    times[name].append(1000 * (time.perf_counter() - t0) / len(maps))
            same = all(len(a[0]) == len(b[0]) and np.array_equal(a[0], b[0], equal_nan=True)
                       for a, b in zip(out["earlier"], out["now"]))
            ms = {name: float(np.median(t)) for name, t in times.items()}
            people = np.mean([len(kp) for kp, _ in out["now"]])
            print(f"{label:28s} {people:4.1f} people/frame  {args.against} {ms['earlier']:6.2f} ms/frame  "
                  f"now {ms['now']:6.2f} ms/frame  ({ms['earlier'] / ms['now']:.2f}x)  same people: {same}")


if __name__ == "__main__":
    main()
