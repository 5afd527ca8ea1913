"""Reading an exported .glb back for tests: accessors as arrays, the Khronos validator's verdict where it
is installed, and the rules of its that posepipe's files once broke, checked in Python so CI without npm
still checks them.

The validator: `npm install --prefix .node gltf-validator` in the repository (.node/ is git-ignored);
tests/gltf_validate.js runs it.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VALIDATOR = REPO / ".node" / "node_modules" / "gltf-validator"
_DTYPES = {5126: np.float32, 5125: np.uint32, 5123: np.uint16}
_WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def accessor(gltf, blob: bytes, index: int) -> np.ndarray:
    """Accessor `index` of a loaded pygltflib.GLTF2 as an array [count, width] (tightly packed views)."""
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    width = _WIDTHS[acc.type]
    return np.frombuffer(blob, _DTYPES[acc.componentType], acc.count * width,
                         view.byteOffset + (acc.byteOffset or 0)).reshape(-1, width)


def khronos_report(path: str | Path) -> dict | None:
    """{"numErrors", "numWarnings", "numInfos", "numHints", "codes": {code: count}} from the Khronos
    glTF validator, or None where node or the validator is not installed."""
    node = shutil.which("node")
    if node is None or not VALIDATOR.is_dir():
        return None
    run = subprocess.run([node, str(REPO / "tests" / "gltf_validate.js"), str(path)], check=False,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def check_strict_rules(path: str | Path) -> dict[str, int]:
    """Assert, for every mesh primitive of the file, the validator's rules posepipe has to mind:
    a JOINTS_0 slot whose weight is 0 names joint 0 (ACCESSOR_JOINTS_USED_ZERO_WEIGHT), weights sum to 1
    (ACCESSOR_WEIGHTS_NON_NORMALIZED), and TEXCOORD_0 is there, one finite UV in [0, 1] per position.
    Returns the counts checked, {"vertices", "zero_weight_slots"}."""
    import pygltflib

    gltf = pygltflib.GLTF2().load(str(path))
    blob = gltf.binary_blob()
    vertices = zero_slots = 0
    for mesh in gltf.meshes:
        for prim in mesh.primitives:
            at = prim.attributes
            count = gltf.accessors[at.POSITION].count
            joints, weights = accessor(gltf, blob, at.JOINTS_0), accessor(gltf, blob, at.WEIGHTS_0)
            assert len(joints) == len(weights) == count
            zero = weights == 0
            assert np.all(joints[zero] == 0), f"{int(np.sum(joints[zero] != 0))} zero-weight slots name a joint"
            np.testing.assert_allclose(weights.astype(np.float64).sum(1), 1.0, atol=2e-6)
            assert at.TEXCOORD_0 is not None, "no TEXCOORD_0"
            uv = accessor(gltf, blob, at.TEXCOORD_0)
            assert uv.shape == (count, 2) and np.isfinite(uv).all()
            assert uv.min() >= 0.0 and uv.max() <= 1.0, (uv.min(), uv.max())
            vertices += count
            zero_slots += int(zero.sum())
    assert vertices > 0
    return {"vertices": vertices, "zero_weight_slots": zero_slots}
