"""A frame's fitted people as posed meshes in the camera frame, from the bodies/body_tracks rows.

The same maths as rig.pose_full and export.write_obj (forward kinematics from bone_rotvec under the
root placement root_rotvec + translation, then linear blend skinning), batched over the frame's people
instead of over one track's frames. Everything that depends only on a track's shape (its rest bone
frames and its shaped rest mesh) is ~30 ms per person on a 2-core CPU against ~1 ms for posing it, and
a track keeps one shape for the whole video: `RestBodies` computes it once per distinct shape.

Run this with torch on one thread (torch.set_num_threads(1)) next to the OpenGL raster: the posing is
small tensor work, and two OpenMP threads spin-waiting after each op took the CPU from llvmpipe's
raster threads (benchmarks/dense_speed.py: 10 people posed in 122 ms with 2 threads, 11 ms with 1).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from stages.body.rig import BodyModel
from stages.body.skeleton import placement, pose_relations, rest_relations, rotvec_to_rotmat


@dataclass(frozen=True)
class Rest:
    """What posing needs of one shape: rest_inv, rel float[J, 4, 4] (skeleton.rest_relations), and the
    shaped rest mesh vertices float[V, 3] (model.rest_vertices)."""

    rest_inv: torch.Tensor
    rel: torch.Tensor
    vertices: torch.Tensor


class RestBodies:
    """Rest data per shape, kept across frames (least recently used first out).

    Keyed by the shape's exact float32 bytes: a track's shape is one row of body_tracks, identical on
    every frame, so no track id is needed and two tracks that happen to share a shape share the entry.
    `capacity` bounds memory (anny: ~170 KB per shape).
    """

    def __init__(self, model: BodyModel, capacity: int = 512):
        self.model = model
        self.capacity = capacity
        self._rows: OrderedDict[bytes, Rest] = OrderedDict()

    def get(self, shape: np.ndarray | torch.Tensor) -> list[Rest]:
        """shape: float[P, S] -> one Rest per row; missing shapes are computed together in one batch."""
        s = np.ascontiguousarray(torch.as_tensor(shape).detach().cpu().numpy(), dtype=np.float32)
        keys = [row.tobytes() for row in s]
        missing = list(dict.fromkeys(k for k in keys if k not in self._rows))
        if missing:
            ref = self.model.shape_default
            batch = torch.as_tensor(np.stack([np.frombuffer(k, np.float32) for k in missing]),
                                    dtype=ref.dtype, device=ref.device)
            with torch.no_grad():
                rest_inv, rel = rest_relations(self.model.parents, self.model.full_rest(batch))
                verts = self.model.rest_vertices(batch)
            # Clones, not views of the batch: a view would keep the whole batch alive after its eviction.
            for i, k in enumerate(missing):
                self._rows[k] = Rest(rest_inv[i].clone(), rel[i].clone(), verts[i].clone())
        for k in keys:
            self._rows.move_to_end(k)
        out = [self._rows[k] for k in keys]
        while len(self._rows) > self.capacity:
            self._rows.popitem(last=False)
        return out


def frame_vertices(model: BodyModel, shape, bone_rotvec, root_rotvec, translation,
                   rest: RestBodies | None = None) -> np.ndarray:
    """Posed vertices of one frame's people in the camera frame (x right, y down, z forward, metres).

    shape: float[P, S] (each person's body_tracks shape); bone_rotvec: float[P, J, 3] (the bodies row's
    bone_rotvec reshaped; the root entry is ignored as in rig.pose_full); root_rotvec, translation:
    float[P, 3]. rest: a RestBodies kept across frames (None: computed now, ~30 ms more per person).
    Returns float32[P, V, 3], vertex order of model.faces.
    """
    ref = model.shape_default
    # ascontiguousarray: torch refuses numpy views with negative strides (a reversed or sliced array).
    as_t = lambda x: torch.as_tensor(np.ascontiguousarray(x), dtype=ref.dtype, device=ref.device)
    shape, bone_rotvec, root_rotvec, translation = map(as_t, (shape, bone_rotvec, root_rotvec, translation))
    p = shape.shape[0]
    if p == 0:
        return np.zeros((0, 0, 3), np.float32)
    if bone_rotvec.shape != (p, len(model.parents), 3) or root_rotvec.shape != (p, 3) \
            or translation.shape != (p, 3):
        raise ValueError(f"{p} people on a {len(model.parents)}-bone rig need bone_rotvec [P, J, 3] and "
                         f"root_rotvec, translation [P, 3]; got {tuple(bone_rotvec.shape)}, "
                         f"{tuple(root_rotvec.shape)}, {tuple(translation.shape)}")
    rows = (rest or RestBodies(model)).get(shape)
    rest_inv = torch.stack([r.rest_inv for r in rows])
    rel = torch.stack([r.rel for r in rows])
    rest_v = torch.stack([r.vertices for r in rows])
    with torch.no_grad():
        _, a = pose_relations(model.parents, rest_inv, rel, rotvec_to_rotmat(bone_rotvec),
                              placement(root_rotvec, translation))
        v = model.skinned_vertices(rest_v, a)
    return v.detach().cpu().numpy().astype(np.float32, copy=False)
