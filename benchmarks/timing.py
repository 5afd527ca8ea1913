"""Interleaved timing shared by the per-model benchmarks.

Runners go round after round, one warm-up call each per round, because this shared VM stalls in
bursts: a burst then hits every runner instead of whichever happened to run during it.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def measure(runners: dict[str, tuple[Callable[[], object], int]], rounds: int, iters: int) -> dict[str, list[float]]:
    """runners: name -> (call, frames per call). Returns per runner the ms per frame of every timed call."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, (run, frames) in runners.items():
            run()
            for _ in range(iters):
                start = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - start) * 1e3 / frames)
    return times


def print_table(times: dict[str, list[float]], label: str) -> None:
    """Median and 10th percentile of ms per frame, one line per runner."""
    width = max(len(label), *map(len, times)) + 2
    print(f"{label:{width}s} {'median ms/frame':>16s} {'p10 ms/frame':>13s}")
    for name, ms in times.items():
        print(f"{name:{width}s} {np.median(ms):16.1f} {np.percentile(ms, 10):13.1f}")
