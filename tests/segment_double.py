"""A stand-in for the silhouettes' segmentation model, for tests of everything around it.

The real file (pose_landmark_lite.tflite, docs/bodies.md) is downloaded from npm, and tests never download
(tests/conftest.py), so it is not in every weights folder (CI's has none): tests of the plumbing (the graph's
dense actors reading the input video again, `posepipe dense` reading frames at the run's size, the cut, the
videos row's dense_masks) run on this one; tests of the model's own quality (tests/test_silhouette.py) need
the real file, and its conversion is tested on a TFLite file made there.

It has the interface of the converted model (an ONNX graph, which PersonSegmenter takes as it is:
float32[N, 256, 256, 3] RGB in [0, 1] -> "segmentation" [N, 256, 256, 1])
and a crude answer that depends on the pixels, so a wrong frame gives a different cut: the crop's centred disc
(radius 0.45 of the side: the person a crop is centred on) where the pixel is not dark (mean RGB > 0.25).

    with installed_stand_in(folder):   # POSEPIPE_WEIGHTS = folder (the real files linked in) + the stand-in
        ...                            # resolve(SEGMENT_FILE) returns it, its sha256 accepted
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from stages.dense.segment import OUTPUT, SEGMENT_FILE, SIDE
from stages.weights import MODEL_FILES, sha256_of


def stand_in_model() -> bytes:
    """The stand-in's ONNX bytes (module docstring)."""
    yy, xx = np.mgrid[:SIDE, :SIDE] + 0.5
    disc = ((xx - SIDE / 2) ** 2 + (yy - SIDE / 2) ** 2 < (0.45 * SIDE) ** 2).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["input", "axes"], ["grey"], keepdims=1),  # [N, 256, 256, 1]
        helper.make_node("Greater", ["grey", "dark"], ["lit"]),
        helper.make_node("Cast", ["lit"], ["lit_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["lit_f", "disc"], [OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes, "segment_stand_in",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", SIDE, SIDE, 3])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", SIDE, SIDE, 1])],
        [numpy_helper.from_array(np.array([3], np.int64), "axes"),
         numpy_helper.from_array(np.array(0.25, np.float32), "dark"),
         numpy_helper.from_array(disc[None, :, :, None], "disc")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


@contextlib.contextmanager
def installed_stand_in(folder: Path) -> Iterator[Path]:
    """POSEPIPE_WEIGHTS -> `folder`: every file of the current weights folder linked in, the stand-in as
    SEGMENT_FILE, and the resolver told its sha256; all put back on exit. Yields the stand-in's path."""
    real = Path(os.environ["POSEPIPE_WEIGHTS"])
    folder.mkdir(parents=True, exist_ok=True)
    for f in real.iterdir():
        if f.name != SEGMENT_FILE and not (folder / f.name).exists():
            (folder / f.name).symlink_to(f)
    path = folder / SEGMENT_FILE
    path.write_bytes(stand_in_model())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POSEPIPE_WEIGHTS", str(folder))
        patch.setitem(MODEL_FILES, SEGMENT_FILE, dataclasses.replace(MODEL_FILES[SEGMENT_FILE], sha256=sha256_of(path)))
        yield path
