"""Which class runs which model file: the config names a file, these build its model.

Plain branches on the file name, one per model file posepipe knows (each class in its own module:
`rtmdet.py`, `yolox.py`, `movenet.py`), so a reader finds every choice here and an unknown name is
one clear error.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stages.pose.params import DetectorParams
from stages.pose.rtmdet import RTMDET_FILE, RTMDetPerson
from stages.pose.yolox import YOLOX_FILE, YoloxNano

Detector = RTMDetPerson | YoloxNano


def build_detector(name: str, path: str | Path, params: DetectorParams = DetectorParams(), num_threads: int = 1,
                   providers: Sequence[str] | None = None) -> Detector:
    """The detector for a model file name (the config's value), loaded from `path`."""
    if name == RTMDET_FILE:
        return RTMDetPerson(path, params, num_threads, providers)
    if name == YOLOX_FILE:
        return YoloxNano(path, params, num_threads, providers)
    raise ValueError(f"unknown person detector {name!r}; known: {RTMDET_FILE}, {YOLOX_FILE}")
