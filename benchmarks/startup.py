"""Start-up of `posepipe run` on a short clip with a Ray of its own and with a Ray kept running.

    python benchmarks/startup.py [--video V] [--pairs 3]

Each run is the whole command in a fresh process (`python -m pipeline.cli run VIDEO --out OUT
--no-progress`), this checkout's code. "own Ray": the run starts a local Ray, as without --address.
"running Ray": RAY_ADDRESS points it at a `ray start --head` started once by this script (free ports,
its own temp dir: tests/ray_head.py; as many logical CPUs as a local run gives itself, so both build
the same graph), as the "many short jobs" recipe in docs/cluster.md does. The two alternate, --pairs times (ABBA), so
a slow spell of this shared machine hits both alike. Printed per run, from job.json's timeline
(pipeline/jobfile.py startup_breakdown): imports and checks, Ray (start or connect), actors (imports and
model loads), first batch written, and the total from the command to the first batch; then the median
of each. Rows go to benchmarks/results/startup.csv.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
from ray_head import local_head  # noqa: E402

from pipeline.config import load_config, mode_file  # noqa: E402
from pipeline.jobfile import startup_breakdown  # noqa: E402
from pipeline.sizing import local_cpus  # noqa: E402

EVAL = Path(os.environ.get("POSEPIPE_EVAL", REPO.parent / "shared" / "eval"))
RESULTS = REPO / "benchmarks" / "results" / "startup.csv"


def one_run(video: Path, out: Path, env: dict) -> dict[str, float]:
    """The start-up steps of one `posepipe run` (seconds), and its whole wall time."""
    launched, t0 = time.time(), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(video), "--out", str(out),
                           "--no-progress"], cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(f"posepipe run failed:\n{done.stderr[-2000:]}")
    job = json.loads((out / "job.json").read_text())
    return {**startup_breakdown(job, launched), "to first batch": job["first_batch_at"] - launched, "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", type=Path, default=EVAL / "videos" / "mmtracking_demo.mp4")
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args()
    own = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    own["PYTHONPATH"] = str(REPO)
    cpus = local_cpus(load_config(mode_file("bottomup")), os.cpu_count() or 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with local_head(num_cpus=cpus) as head:
            print(f"ray start --head: {time.perf_counter() - t0:.1f} s (once, {cpus} logical CPUs)", flush=True)
            running = {**own, **head.env, "RAY_ADDRESS": head.gcs}
            for i in range(args.pairs):
                # ABBA: the run after an own-Ray run shares the machine with that Ray's shutdown
                order = (("own Ray", own), ("running Ray", running))
                for label, env in order if i % 2 == 0 else order[::-1]:
                    steps = one_run(args.video, Path(tmp) / f"{i}-{label.split()[0]}", env)
                    rows.append({"run": i, "ray": label, **{k: round(v, 2) for k, v in steps.items()}})
                    print(f"{label:12s} " + "  ".join(f"{k} {v:5.2f}" for k, v in steps.items()), flush=True)
    steps = [k for k in rows[0] if k not in ("run", "ray")]
    for label in ("own Ray", "running Ray"):
        mine = [r for r in rows if r["ray"] == label]
        print(f"median {label:12s} " + "  ".join(f"{k} {statistics.median(r[k] for r in mine):5.2f}" for k in steps))
    RESULTS.parent.mkdir(exist_ok=True)
    with open(RESULTS, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
