"""The one interface fitting and export use for a body model, whatever its family (Anny, SMPL).

A `BodyModel` is a plain object with the attributes and methods of `BodyModel` below; anny_body.py
and smpl_body.py implement it. Fitting works on the *fitted sub-skeleton* only: the bones COCO-17
keypoints constrain (spine, neck, head, clavicles, arms, forearms, thighs, shins, under a root).
Every other bone (hands, feet, fingers, toes, face) stays at rest, and a bone at rest moves exactly
like its nearest fitted ancestor, so its share of the keypoint coefficients is folded into that
ancestor (`fold_to_fitted`): the skeleton the optimiser runs has ~16 bones, not 52 or 104, and
the result is still the exact skinned keypoints of the full model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class Rig:
    """Per-shape data of the fitted sub-skeleton.

    rest: float[T, F, 4, 4] rest frames of the F fitted bones (model space, metres);
    kp_coeffs: float[T, K, F, 4] keypoint coefficients (skeleton.skinned_keypoints);
    joints: float[T, F, 3] rest heads (the joints 3D output and export use).
    """

    rest: torch.Tensor
    kp_coeffs: torch.Tensor

    def take(self, index: torch.Tensor) -> "Rig":
        """Rows of the given tracks, e.g. one row per person-frame: index int64[B] into T."""
        return Rig(self.rest[index], self.kp_coeffs[index])


class BodyModel(Protocol):
    name: str  # "anny", "smpl", ... (the bodies table's body_model column)
    bone_names: list[str]  # every bone of the full rig, parents first
    parents: list[int]  # full rig, -1 for the root
    fitted: list[int]  # full-rig indices of the fitted bones, root first
    shape_names: list[str]
    shape_default: torch.Tensor  # float[S]
    shape_low: torch.Tensor  # float[S] bounds of the shape parameters
    shape_high: torch.Tensor
    facing: torch.Tensor  # float[3, 3]: model -> camera rotation of an upright person facing the camera
    flexion: dict[int, tuple[int, str]]  # fitted hinge bone -> (full index of the child it swings, "front"|"back")
    faces: np.ndarray  # int32[M, 3] triangles of the mesh

    def rig(self, shape: torch.Tensor) -> Rig:
        """shape: float[T, S] -> the fitted sub-skeleton of each shape."""

    def full_rest(self, shape: torch.Tensor) -> torch.Tensor:
        """shape: float[T, S] -> float[T, J, 4, 4] rest frames of every bone (export, vertices)."""

    def vertices(self, shape: torch.Tensor, a_full: torch.Tensor) -> torch.Tensor:
        """shape: float[B, S], a_full: float[B, J, 4, 4] posed-relative-to-rest transforms of every bone
        -> float[B, V, 3] skinned vertices in the same frame as a_full."""

    def rest_vertices(self, shape: torch.Tensor) -> torch.Tensor:
        """shape: float[B, S] -> float[B, V, 3] the shaped mesh at rest. Split from `vertices` so a caller
        posing the same track every frame (stages/dense) computes it once per shape: it is most of the cost."""

    def skinned_vertices(self, rest_v: torch.Tensor, a_full: torch.Tensor) -> torch.Tensor:
        """rest_v: float[B, V, 3] from rest_vertices, a_full as in `vertices` -> float[B, V, 3];
        vertices(shape, a) == skinned_vertices(rest_vertices(shape), a)."""


def fitted_parents(parents: list[int], fitted: list[int]) -> list[int]:
    """Parent of each fitted bone within the fitted list (its nearest fitted ancestor); root -1."""
    where = {bone: i for i, bone in enumerate(fitted)}
    out = []
    for bone in fitted:
        p = parents[bone]
        while p >= 0 and p not in where:
            p = parents[p]
        out.append(where[p] if p >= 0 else -1)
    if out[0] != -1 or any(p < 0 for p in out[1:]):
        raise ValueError("the fitted bones must start with the root and all hang under it")
    return out


def fold_to_fitted(parents: list[int], fitted: list[int]) -> np.ndarray:
    """int64[J]: for every bone of the full rig, the fitted bone (index into `fitted`) it moves with."""
    where = {bone: i for i, bone in enumerate(fitted)}
    owner = np.empty(len(parents), np.int64)
    for j in range(len(parents)):
        b = j
        while b not in where:
            b = parents[b]
        owner[j] = where[b]
    return owner


def folded_coeffs(coeffs_full: torch.Tensor, owner: np.ndarray, num_fitted: int) -> torch.Tensor:
    """float[..., K, J, 4] per-bone keypoint coefficients -> float[..., K, F, 4] summed per owner bone."""
    out = coeffs_full.new_zeros(*coeffs_full.shape[:-2], num_fitted, coeffs_full.shape[-1])
    return out.index_add_(-2, torch.as_tensor(owner, device=coeffs_full.device), coeffs_full)


def flexion_axes(model: BodyModel, rest_full: torch.Tensor, front: torch.Tensor) -> dict[int, torch.Tensor]:
    """Local hinge axis of each fitted knee/elbow (model.flexion), from one rest pose.

    rest_full: float[J, 4, 4]; front: float[3] the model's forward direction. A positive rotation about
    the returned axis swings the child towards front (elbow) or back (knee): flexion.
    """
    axes = {}
    for fi, (child, side) in model.flexion.items():
        bone = model.fitted[fi]
        d = rest_full[child, :3, 3] - rest_full[bone, :3, 3]
        d = d / d.norm()
        towards = front if side == "front" else -front
        a_world = torch.linalg.cross(d, towards)
        a_world = a_world / a_world.norm()
        axes[fi] = rest_full[bone, :3, :3].T @ a_world
    return axes


def pose_full(model: BodyModel, shape: torch.Tensor, bone_rotvec: torch.Tensor, root_rotvec: torch.Tensor,
              translation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every bone of the full rig, posed.

    shape: float[S] (one body); bone_rotvec: float[N, J, 3] local axis-angle per bone (the root's entry is
    ignored: root_rotvec places the body); root_rotvec, translation: float[N, 3] (camera frame, metres).
    Returns (rest float[J, 4, 4], posed frames float[N, J, 4, 4], A = posed @ rest^-1 float[N, J, 4, 4]).
    Bone heads (the joints an exported skeleton shows) are posed[..., :3, 3].
    """
    from stages.body.skeleton import forward_kinematics, placement, rotvec_to_rotmat

    rest = model.full_rest(shape[None])[0]
    n = bone_rotvec.shape[0]
    frames, a = forward_kinematics(model.parents, rest.expand(n, -1, -1, -1), rotvec_to_rotmat(bone_rotvec),
                                   placement(root_rotvec, translation))
    return rest, frames, a
