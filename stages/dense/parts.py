"""DensePose's 24 body parts and the texture coordinates on anny's surface, one label per triangle.

Anny ships one part map (data/segmentation/body_parts_segmentation.png, read through the UVs), but it
has only head, hands, feet, the rest of the body and the eye/mouth cavities: not DensePose's 24. The
parts are therefore derived from the skinning, per triangle of model.faces:

1. the triangle's bone is the one with the largest skin weight summed over its three corners; a bone
   not in `_BONE_PARTS` (fingers, toes) takes its nearest listed ancestor (hand, foot);
2. the bone gives a region and, for regions DensePose splits in two, the test that picks the half,
   evaluated once on the model's rest mesh at the default shape (model space, so it does not move
   with the pose):
   - front/back (torso, upper and lower legs): the triangle's normal points forward (model.facing);
   - inside/outside (upper and lower arms): the normal points towards the body's midline, taken
     perpendicular to the limb (the surface that would touch the torso with the arm hanging down);
   - right/left (head): the triangle's centre is on the person's left of the bone's head.

Part indices (0 is background), as DensePose numbers them; the bones of anny's Mixamo rig per part:
  1 torso back, 2 torso front            Hips, Spine, Spine1, Spine2, Left/RightShoulder (clavicles)
  3 right hand, 4 left hand              Right/LeftHand and its fingers
  5 left foot, 6 right foot              Left/RightFoot, Left/RightToeBase
  7 / 9 upper leg right back / front     RightUpLeg      8 / 10 upper leg left back / front  LeftUpLeg
  11 / 13 lower leg right back / front   RightLeg       12 / 14 lower leg left back / front  LeftLeg
  15 / 17 upper arm left inside / outside    LeftArm     16 / 18 upper arm right inside / outside  RightArm
  19 / 21 lower arm left inside / outside    LeftForeArm 20 / 22 lower arm right inside / outside  RightForeArm
  23 head right, 24 head left            Neck, Head (DensePose's head charts include the neck)
"Left" is the person's own left. Anny's eyes, mouth cavity and tongue are skinned to Head: head parts.

UVs are anny's own texture atlas (MakeHuman's layout, export_gltf.texture_coords: u right, v down from
the texture's top row, both in [0, 1]) per face corner, not DensePose's per-part charts: U, V say where
on anny's texture a pixel lies, the same for every person and frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch

from stages.body.rig import BodyModel

PART_NAMES = (
    "torso back", "torso front", "right hand", "left hand", "left foot", "right foot",
    "upper leg right back", "upper leg left back", "upper leg right front", "upper leg left front",
    "lower leg right back", "lower leg left back", "lower leg right front", "lower leg left front",
    "upper arm left inside", "upper arm right inside", "upper arm left outside", "upper arm right outside",
    "lower arm left inside", "lower arm right inside", "lower arm left outside", "lower arm right outside",
    "head right", "head left",
)  # PART_NAMES[i - 1] names part i


class Split(Enum):
    """Which test picks the half of a region DensePose cuts in two (module docstring)."""

    NONE = 0
    FRONT = 1  # holds on the front half
    INSIDE = 2  # holds on the half facing the midline
    LEFT = 3  # holds on the person's left half


# Anny (Mixamo) bone -> (split, part where the test fails, part where it holds).
_BONE_PARTS = {
    "Hips": (Split.FRONT, 1, 2), "Spine": (Split.FRONT, 1, 2), "Spine1": (Split.FRONT, 1, 2),
    "Spine2": (Split.FRONT, 1, 2), "LeftShoulder": (Split.FRONT, 1, 2), "RightShoulder": (Split.FRONT, 1, 2),
    "RightHand": (Split.NONE, 3, 3), "LeftHand": (Split.NONE, 4, 4),
    "LeftFoot": (Split.NONE, 5, 5), "RightFoot": (Split.NONE, 6, 6),
    "RightUpLeg": (Split.FRONT, 7, 9), "LeftUpLeg": (Split.FRONT, 8, 10),
    "RightLeg": (Split.FRONT, 11, 13), "LeftLeg": (Split.FRONT, 12, 14),
    "LeftArm": (Split.INSIDE, 17, 15), "RightArm": (Split.INSIDE, 18, 16),
    "LeftForeArm": (Split.INSIDE, 21, 19), "RightForeArm": (Split.INSIDE, 22, 20),
    "Neck": (Split.LEFT, 23, 24), "Head": (Split.LEFT, 23, 24),
}


@dataclass(frozen=True)
class SurfaceLabels:
    """face_part: uint8[F] DensePose part (1..24) of each triangle of model.faces;
    corner_uv: float32[F, 3, 2] texture coordinates of each triangle's corners, in [0, 1]."""

    face_part: np.ndarray
    corner_uv: np.ndarray


def _listed_bone(parents: list[int], names: list[str]) -> np.ndarray:
    """int64[J]: for each bone, itself or its nearest ancestor that _BONE_PARTS lists."""
    out = np.empty(len(parents), np.int64)
    for j in range(len(parents)):
        b = j
        while b >= 0 and names[b] not in _BONE_PARTS:
            b = parents[b]
        if b < 0:
            raise ValueError(f"bone {names[j]!r} has no ancestor with a DensePose part (anny's Mixamo rig only)")
        out[j] = b
    return out


def face_parts(model: BodyModel) -> np.ndarray:
    """uint8[F] DensePose part of each triangle of model.faces (module docstring)."""
    from stages.body.export_gltf import skin_weights

    faces = np.asarray(model.faces, np.int64)
    names, parents = list(model.bone_names), list(model.parents)
    bone = _listed_bone(parents, names)[skin_weights(model)[faces].sum(1).argmax(1)]

    ref = model.shape_default[None]
    with torch.no_grad():
        rest_v = model.rest_vertices(ref)[0].cpu().double().numpy()
        heads = model.full_rest(ref)[0, :, :3, 3].cpu().double().numpy()
    # model.facing maps model space to the camera for a person facing it: camera x (image right) is
    # the person's left, camera -z (towards the camera) the person's front.
    facing = model.facing.detach().cpu().double().numpy()
    left, front = facing[0], -facing[2]
    tri = rest_v[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-20)
    centre = tri.mean(1)

    children = [[c for c, p in enumerate(parents) if p == j] for j in range(len(parents))]
    part = np.zeros(len(faces), np.uint8)
    for b in np.unique(bone):
        split, when_false, when_true = _BONE_PARTS[names[b]]
        sel = bone == b
        if split is Split.FRONT:
            holds = normal[sel] @ front > 0
        elif split is Split.LEFT:
            holds = (centre[sel] - heads[b]) @ left > 0
        elif split is Split.INSIDE:
            # Limb direction: head to (mean) child head; midline: towards the root along the left axis.
            d = heads[children[b]].mean(0) - heads[b]
            d /= np.linalg.norm(d)
            medial = -np.sign((heads[b] - heads[0]) @ left) * left
            perp = medial - (medial @ d) * d
            holds = normal[sel] @ perp > 0
        else:
            holds = np.zeros(sel.sum(), bool)
        part[sel] = np.where(holds, when_true, when_false)
    return part


def surface_labels(model: BodyModel) -> SurfaceLabels:
    """Parts and corner UVs of the model's triangles; ValueError for a model without UVs (SMPL here)."""
    from stages.body.export_gltf import texture_coords

    uv = texture_coords(model)
    if uv is None:
        raise ValueError(f"body model {model.name!r} has no texture coordinates: dense UVs need anny")
    coords, corners = uv
    return SurfaceLabels(face_part=face_parts(model), corner_uv=coords[corners].astype(np.float32))
