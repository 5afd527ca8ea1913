"""A fake but structurally real SMPL model file, so the SMPL path is tested without the licensed one.

`write_fake_smpl(folder)` writes `SMPL_NEUTRAL.npz` with exactly the arrays smplx reads, in SMPL's
shapes and conventions: a ~1.70 m person standing in a T-pose (metres, y up, facing +z, +x the
person's left), the 24 SMPL joints roughly where a real SMPL neutral has them (rounded, made symmetric).
The mesh is one tube per bone (rings of 16 vertices from the joint to its child), each vertex skinned
to its bone and the rings next to a joint blended with the parent, so posed vertices bend at the
joints like a real LBS body. Each joint is regressed from the ring at its head, whose mean is
exactly the joint. The vertex ids smplx reads as extra keypoints (smplx.vertex_ids 'smplh': nose,
eyes, ears, toes, heels, finger tips) are placed where those landmarks are on a person.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

NUM_VERTICES = 6890
AROUND = 16  # vertices per ring
PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]

# Left-side and centre joints (x > 0 is the person's left); right ones mirror them.
_CENTRE = {0: (0, -0.22, 0.02), 3: (0, -0.11, 0.0), 6: (0, 0.02, 0.03), 9: (0, 0.07, 0.03),
           12: (0, 0.29, -0.01), 15: (0, 0.36, 0.01)}
_LEFT = {1: (0.07, -0.31, 0.02), 4: (0.10, -0.68, 0.03), 7: (0.09, -1.09, -0.02), 10: (0.11, -1.15, 0.10),
         13: (0.08, 0.20, 0.0), 16: (0.17, 0.23, -0.01), 18: (0.43, 0.23, -0.03), 20: (0.69, 0.23, -0.04),
         22: (0.78, 0.23, -0.05)}
_MIRROR = {1: 2, 4: 5, 7: 8, 10: 11, 13: 14, 16: 17, 18: 19, 20: 21, 22: 23}
# Tube end of each bone: its main child, or for leaves the end of the body part.
_TAIL_CHILD = {0: 3, 3: 6, 6: 9, 9: 12, 12: 15, 1: 4, 4: 7, 7: 10, 13: 16, 16: 18, 18: 20, 20: 22}
_LEAF_TAIL = {15: (0, 0.53, 0.02), 10: (0.12, -1.16, 0.19), 22: (0.87, 0.23, -0.05)}
# Tube radii (across the bone: along the axis nearest x, then the other one): the torso is flat.
_RADII = {0: (0.15, 0.11), 3: (0.14, 0.10), 6: (0.15, 0.10), 9: (0.16, 0.11), 12: (0.05, 0.05),
          15: (0.08, 0.095), 1: (0.075, 0.075), 4: (0.05, 0.05), 7: (0.04, 0.045), 10: (0.045, 0.03),
          13: (0.05, 0.05), 16: (0.05, 0.05), 18: (0.04, 0.04), 20: (0.03, 0.03), 22: (0.045, 0.015)}

# smplx's extra keypoint vertices (vertex_ids['smplh']) -> (bone, position); L/R of the person.
_LANDMARKS = {
    332: (15, (0.0, 0.385, 0.115)),  # nose
    2800: (15, (0.032, 0.42, 0.09)), 6260: (15, (-0.032, 0.42, 0.09)),  # eyes
    583: (15, (0.08, 0.41, 0.0)), 4071: (15, (-0.08, 0.41, 0.0)),  # ears
    3216: (10, (0.10, -1.17, 0.19)), 3226: (10, (0.15, -1.17, 0.16)), 3387: (7, (0.09, -1.17, -0.06)),
    6617: (11, (-0.10, -1.17, 0.19)), 6624: (11, (-0.15, -1.17, 0.16)), 6787: (8, (-0.09, -1.17, -0.06)),
    2746: (22, (0.80, 0.22, 0.03)), 2319: (22, (0.88, 0.23, -0.02)), 2445: (22, (0.89, 0.23, -0.05)),
    2556: (22, (0.88, 0.23, -0.07)), 2673: (22, (0.85, 0.23, -0.09)),
    6191: (23, (-0.80, 0.22, 0.03)), 5782: (23, (-0.88, 0.23, -0.02)), 5905: (23, (-0.89, 0.23, -0.05)),
    6016: (23, (-0.88, 0.23, -0.07)), 6133: (23, (-0.85, 0.23, -0.09)),
}


def _mirror(p) -> np.ndarray:
    return np.array([-p[0], p[1], p[2]])


def joints() -> np.ndarray:
    """float[24, 3] rest joints of the fake model (J_regressor @ v_template gives these exactly)."""
    out = np.zeros((24, 3))
    for j, p in _CENTRE.items():
        out[j] = p
    for j, p in _LEFT.items():
        out[j] = p
        out[_MIRROR[j]] = _mirror(p)
    return out


def _tails(joint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float[24, 3] tube ends, float[24, 2] radii), right bones mirrored from the left ones."""
    tails, radii = np.zeros((24, 3)), np.zeros((24, 2))
    for j in list(_CENTRE) + list(_LEFT):
        tails[j] = joint[_TAIL_CHILD[j]] if j in _TAIL_CHILD else _LEAF_TAIL[j]
        radii[j] = _RADII[j]
    for left, right in _MIRROR.items():
        tails[right], radii[right] = _mirror(tails[left]), radii[left]
    return tails, radii


def _frame(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors across direction d: the first nearest x (z for bones along x)."""
    ref = np.array([1.0, 0, 0]) if abs(d[0]) < 0.9 else np.array([0, 0, 1.0])
    u = ref - (ref @ d) * d
    u /= np.linalg.norm(u)
    return u, np.cross(d, u)


def _shapedirs(x: np.ndarray) -> np.ndarray:
    """float[V, 3, 10] smooth deformations of rest positions x: float[V, 3] (per unit beta)."""
    sd = np.zeros((x.shape[0], 3, 10))
    pelvis_y, hip_y = -0.22, -0.31
    sd[:, 1, 0] = 0.06 * (x[:, 1] - pelvis_y)  # taller / shorter about the pelvis
    sd[:, 0, 1], sd[:, 2, 1] = 0.08 * x[:, 0], 0.08 * x[:, 2]  # wider / narrower
    arm = np.abs(x[:, 0]) > 0.17
    sd[arm, 0, 2] = 0.1 * (x[arm, 0] - np.sign(x[arm, 0]) * 0.17)  # longer arms
    leg = x[:, 1] < hip_y
    sd[leg, 1, 3] = 0.08 * (x[leg, 1] - hip_y)  # longer legs
    for s in range(4, 10):  # small smooth wobbles for the remaining components
        sd[:, s % 3, s] = 0.01 * np.sin((s + 1) * x[:, 1] + s * x[:, 0])
    return sd


def build_fake_smpl(seed: int = 0) -> dict[str, np.ndarray]:
    """The arrays of a SMPL model file (see the module docstring), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    joint = joints()
    tails, radii = _tails(joint)
    # Tubes start at their joint, except the pelvis one, which reaches down between the hips as far as
    # it goes up: its middle ring is then the one at the pelvis joint.
    heads = joint.copy()
    heads[0] = 2 * joint[0] - tails[0]
    lengths = np.linalg.norm(tails - heads, axis=1)

    # Rings per bone in proportion to length; the cap centre of each tube and the landmark ids take
    # the rest, and the few vertices left over are loose points inside the pelvis (no faces).
    generic = NUM_VERTICES - len(_LANDMARKS) - 24
    total_rings = generic // AROUND
    rings = np.maximum(2, np.floor(lengths / lengths.sum() * total_rings)).astype(int)
    rings[np.argsort(-lengths)[: total_rings - rings.sum()]] += 1
    if rings[0] % 2:
        rings[0] += 1
        rings[np.argmax(lengths[1:]) + 1] -= 1
    loose = generic - AROUND * rings.sum()

    pos, bone, blend, faces = [], [], [], []
    ring_of_joint = {}
    angles = 2 * np.pi * np.arange(AROUND) / AROUND
    for j in range(24):
        d = (tails[j] - heads[j]) / lengths[j]
        u, w = _frame(d)
        start = len(pos)
        first = start + (rings[j] // 2 if j == 0 else 0) * AROUND  # evenly spaced: its mean is the joint
        ring_of_joint[j] = list(range(first, first + AROUND))
        for r in range(rings[j]):
            t = r / rings[j]
            centre = heads[j] + t * (tails[j] - heads[j])
            for a in angles:
                pos.append(centre + radii[j, 0] * np.cos(a) * u + radii[j, 1] * np.sin(a) * w)
                bone.append(j)
                blend.append(min(1.0, 0.5 + 2.5 * t) if PARENTS[j] >= 0 else 1.0)
        cap = len(pos)
        pos.append(tails[j])
        bone.append(j)
        blend.append(1.0)
        for r in range(rings[j] - 1):
            for a in range(AROUND):
                i0, i1 = start + r * AROUND + a, start + r * AROUND + (a + 1) % AROUND
                faces += [(i0, i1, i1 + AROUND), (i0, i1 + AROUND, i0 + AROUND)]
        last = start + (rings[j] - 1) * AROUND
        faces += [(last + a, last + (a + 1) % AROUND, cap) for a in range(AROUND)]
    for _ in range(loose):
        pos.append(joint[0] + rng.uniform(-0.03, 0.03, 3))
        bone.append(0)
        blend.append(1.0)

    # Landmark ids go where smplx reads them; the generic vertices fill the other ids in order.
    ids = np.setdiff1d(np.arange(NUM_VERTICES), list(_LANDMARKS))
    where = np.empty(len(pos), np.int64)
    where[:] = ids
    x = np.zeros((NUM_VERTICES, 3))
    weights = np.zeros((NUM_VERTICES, 24))
    x[where] = np.array(pos)
    bone, blend = np.array(bone), np.array(blend)
    weights[where, bone] = blend
    has_parent = bone > 0
    np.add.at(weights, (where[has_parent], np.array(PARENTS)[bone[has_parent]]), 1 - blend[has_parent])
    for v, (b, p) in _LANDMARKS.items():
        x[v], weights[v, b] = p, 1.0

    regressor = np.zeros((24, NUM_VERTICES))
    for j, ring in ring_of_joint.items():
        regressor[j, where[ring]] = 1.0 / AROUND
    kintree = np.array([PARENTS, range(24)], dtype=np.int64).astype(np.uint32)  # root parent 2^32-1, as in SMPL files
    return {
        "v_template": x,
        "shapedirs": _shapedirs(x),
        "posedirs": np.zeros((NUM_VERTICES, 3, 207), np.float32),
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": kintree,
        "f": where[np.array(faces)].astype(np.uint32),
    }


def write_fake_smpl(folder: str | Path, name: str = "SMPL_NEUTRAL.npz") -> Path:
    """Write the fake model to folder/name (folder created); returns the file's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    np.savez(path, **build_fake_smpl())
    return path
