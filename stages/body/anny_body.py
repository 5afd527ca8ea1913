"""Anny (NAVER, code Apache-2.0, data CC0) as a `rig.BodyModel`, on its Mixamo rig (52 bones named
`mixamorig:*`, so an exported BVH retargets in Blender and Unity as a Mixamo character).

Anny's first load builds a ~790 MB cache in ~/.cache/anny (about 80-110 s on a 2-core CPU; later
loads take seconds): `ensure_cache()` does that once per machine, before any actor starts, with a
message. Model space: metres, z up, -y forward (the person faces -y), +x the person's left.
Shape = the six phenotypes gender, age, muscle, weight, height, proportions, each in [0, 1]
(age: newborn -1/3 is outside, baby 0, child 1/3, young 2/3, old 1).

This uses anny 0.6's model buffers (blendshapes, bone heads/tails blendshapes, skin weights): the
fitted keypoints are computed from them without skinning (skeleton.py).
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

from stages.body.rig import Rig, fold_to_fitted, folded_coeffs

_FITTED = ("Hips", "Spine", "Spine1", "Spine2", "Neck", "Head",
           "LeftShoulder", "LeftArm", "LeftForeArm", "RightShoulder", "RightArm", "RightForeArm",
           "LeftUpLeg", "LeftLeg", "RightUpLeg", "RightLeg")
_FLEXION = {"LeftForeArm": ("LeftHand", "front"), "RightForeArm": ("RightHand", "front"),
            "LeftLeg": ("LeftFoot", "back"), "RightLeg": ("RightFoot", "back")}
_LIMITS = {"Spine": 0.6, "Spine1": 0.6, "Spine2": 0.6, "Neck": 0.8, "Head": 0.9, "LeftShoulder": 0.5,
           "RightShoulder": 0.5, "LeftArm": 2.8, "RightArm": 2.8, "LeftUpLeg": 2.2, "RightUpLeg": 2.2}
RIG = "mixamo"
PREFIX = "mixamorig:"


_NO_DRIVER = "Could not find or load the NVIDIA CUDA driver"


def quiet_warp() -> None:
    """Initialise NVIDIA Warp (anny skins the mesh with its kernels) without its console output.

    Warp prints a banner (version, devices, kernel cache) when it starts and "Module ... took N ms" for
    every kernel module it loads: both are info messages, so Warp's log level is raised to warnings
    (`warp.config.log_level`; older Warp releases had `config.quiet` instead). On a machine without the CUDA
    driver its native library also writes a line saying so to file descriptor 2 while it initialises,
    which no setting reaches; the fit and export run on the CPU there anyway, so that line is dropped and
    anything else written meanwhile is passed on. Called before anny is built, in every process that
    builds it (the driver, `posepipe export`, each Ray mesh actor): later `wp.init()` calls do nothing.
    """
    import warp as wp

    if hasattr(wp, "LOG_WARNING"):
        wp.config.log_level = wp.LOG_WARNING
    else:
        wp.config.quiet = True
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no stderr to filter (closed): nothing to keep quiet either
        wp.init()
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            wp.init()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        lines = caught.read().decode(errors="replace").splitlines(keepends=True)
    rest = "".join(line for line in lines if _NO_DRIVER not in line)
    if rest:
        sys.stderr.write(rest)
        sys.stderr.flush()


def _build(quiet: bool):
    import anny  # imported here: only mesh actors and tools that need the model pay for it

    quiet_warp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("anny").setLevel(logging.WARNING)
        return anny.Anny(rig=RIG)


def cache_ready() -> bool:
    """True when anny's model files for this rig are already built (a load then takes seconds)."""
    from anny.paths import get_anny_cache_path

    root = get_anny_cache_path()
    return root.exists() and any(root.glob("v*/build_compact_model_data_*.safetensors"))


def ensure_cache() -> None:
    """Build anny's cache now, with a message, if this machine does not have it yet."""
    if cache_ready():
        return
    print("posepipe: building the Anny body model cache in ~/.cache/anny (once per machine, ~2 min, ~790 MB)...",
          file=sys.stderr, flush=True)
    t0 = time.monotonic()
    _build(quiet=True)
    print(f"posepipe: Anny cache built in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)


class AnnyBody:
    """Anny's Mixamo rig behind the BodyModel interface (see rig.py). Load once per process."""

    name = "anny"

    def __init__(self, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        import anny

        model = _build(quiet=True).to(device=device, dtype=dtype)
        self.model = model
        self.device = torch.device(device)
        self.dtype = dtype
        self.bone_names = [b.removeprefix(PREFIX) for b in model.bone_labels]
        self.parents = [int(p) for p in model.bone_parents]
        index = {b: i for i, b in enumerate(self.bone_names)}
        self.fitted = [index[b] for b in _FITTED]
        self.flexion = {_FITTED.index(b): (index[c], side) for b, (c, side) in _FLEXION.items()}
        self.shape_names = list(model.phenotype_labels)
        n = len(self.shape_names)
        self.shape_default = torch.full((n,), 0.5, dtype=dtype, device=device)
        self.shape_low = torch.zeros(n, dtype=dtype, device=device)
        self.shape_high = torch.ones(n, dtype=dtype, device=device)
        # Left at 0.5 by the fit: proportions and muscle trade with age and weight in 17 keypoints
        # (measured: fitting them moved age less). Height is fitted: the floor and the stature prior
        # (fit.py) tell a tall adult from a near one, and age alone cannot make an adult 1.55 or 1.90 m.
        self.fixed_shape = ("proportions", "muscle")
        # Most a fitted bone turns from rest (axis-angle magnitude, radians): loose anatomical ranges
        # (spine segments ~35 degrees each, neck and head ~45-50, clavicle ~30, shoulder and hip ball
        # joints 160 and 125); elbows and knees have their hinge terms instead.
        self.joint_limits = {_FITTED.index(b): lim for b, lim in _LIMITS.items()}
        # Starting shapes a new track is fitted from (fit.py keeps the best): default, child, old.
        age = self.shape_names.index("age")
        self.shape_starts = [self.shape_default.clone() for _ in range(3)]
        self.shape_starts[1][age], self.shape_starts[2][age] = 0.25, 0.8
        # Model (x left, y back, z up) -> camera (x right, y down, z forward) for a person facing it.
        self.facing = torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=dtype, device=device)
        self.front = torch.tensor([0.0, -1, 0], dtype=dtype, device=device)
        self.faces = model.get_triangular_faces().cpu().numpy().astype(np.int32)
        self._owner = fold_to_fitted(self.parents, self.fitted)

        # Keypoint coefficients (skeleton.py): c[k, j] = sum_v w[k, v] skin[v, j] [x_v; 1], linear in
        # the rest vertices, so one term for the template and one per blendshape, folded once here.
        regressor = anny.KeypointsRegressor.coco(model)
        w = regressor.regression_weights[:17]  # COCO-17 first, then 6 foot points
        skin = torch.zeros(model.template_vertices.shape[0], len(self.parents), dtype=dtype, device=device)
        skin.scatter_add_(1, model.vertex_bone_indices.long(), model.vertex_bone_weights.to(dtype))
        template = model.template_vertices.to(dtype)
        blend = model.blendshapes.to(dtype)  # [C, V, 3]
        c0 = torch.zeros(17, len(self.parents), 4, dtype=dtype, device=device)
        cb = torch.zeros(blend.shape[0], 17, len(self.parents), 3, dtype=dtype, device=device)
        for k in range(17):
            support = torch.nonzero(w[k] > 0).squeeze(1)
            m = w[k, support, None] * skin[support]  # [S, J]
            c0[k, :, :3] = m.T @ template[support]
            c0[k, :, 3] = m.sum(0)
            cb[:, k] = torch.einsum("sj,csd->cjd", m, blend[:, support])
        self._c0 = folded_coeffs(c0, self._owner, len(self.fitted))
        self._cb = folded_coeffs(cb, self._owner, len(self.fitted))

    def _coeffs(self, shape: torch.Tensor) -> torch.Tensor:
        """float[T, 6] phenotypes -> float[T, C] blendshape coefficients."""
        empty = shape.new_zeros(shape.shape[0], 0)
        return self.model._get_phenotype_blendshape_coefficients(shape, empty, empty)

    def full_rest(self, shape: torch.Tensor) -> torch.Tensor:
        from anny.skinning.skinning import apply_linear_blendshape
        from anny.utils.kinematics import get_bone_poses

        m = self.model
        coeffs = self._coeffs(shape)
        heads = apply_linear_blendshape(m.template_bone_heads, m.bone_heads_blendshapes, coeffs)
        tails = apply_linear_blendshape(m.template_bone_tails, m.bone_tails_blendshapes, coeffs)
        rest = get_bone_poses(heads, tails, m.bone_rolls_rotmat, y_axis=m.y_axis,
                              degenerate_rotation=m.degenerate_rotation)
        if m.root_identity_orientation:  # as anny does: the root's rest frame is axis-aligned
            rest = rest.clone()
            rest[:, 0, :3, :3] = torch.eye(3, dtype=rest.dtype, device=rest.device)
        return rest

    def rig(self, shape: torch.Tensor) -> Rig:
        rest = self.full_rest(shape)[:, self.fitted]
        coeffs = self._coeffs(shape)
        kp = self._c0.expand(shape.shape[0], -1, -1, -1).clone()
        kp[..., :3] = kp[..., :3] + torch.einsum("tc,ckfd->tkfd", coeffs, self._cb)
        return Rig(rest=rest, kp_coeffs=kp)

    def rest_vertices(self, shape: torch.Tensor) -> torch.Tensor:
        from anny.skinning.skinning import apply_linear_blendshape

        m = self.model
        return apply_linear_blendshape(m.template_vertices.to(self.dtype), m.blendshapes.to(self.dtype),
                                       self._coeffs(shape))

    def skinned_vertices(self, rest_v: torch.Tensor, a_full: torch.Tensor) -> torch.Tensor:
        return self.model.get_skinned_vertices(rest_v, a_full)

    def vertices(self, shape: torch.Tensor, a_full: torch.Tensor) -> torch.Tensor:
        return self.skinned_vertices(self.rest_vertices(shape), a_full)
