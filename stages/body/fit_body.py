"""The body at the fit's parameters (fit.py): per-track rig work done once per shape, then the posed COCO-17
keypoints of B rows. Pure torch functions, shapes in the docstrings.

The fit places a body by (x/z, y/z, log of depth per body size): depth is exp(tz) in units of the shape's
torso length, so a change of shape (a child's smaller body) keeps the body's size in the image and only
changes its proportions; otherwise age and depth trade against each other along a narrow valley the
optimiser crawls through.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from stages.body.fit_init import rest_statures
from stages.body.rig import BodyModel
from stages.body.skeleton import (placement, posed_frames, project, rest_folded, rest_relations, rotvec_to_rotmat,
                                  skinned_keypoints)


class RigRows(NamedTuple):
    """What posing B rows of T tracks needs of their shapes."""

    kp_coeffs: torch.Tensor  # float[T, K, J, 4] keypoint coefficients folded through the rest pose (rest_folded)
    track: torch.Tensor  # int64[B] each row's track index
    rel: torch.Tensor  # float[B, J, 4, 4] each bone in its parent's rest frame (rest_relations), per row
    size: torch.Tensor  # float[B] the row's torso length over the default shape's (depth's unit)
    stature: torch.Tensor  # float[T] metres


def rig_rows(model: BodyModel, parents: list[int], torso0: float, shape_t: torch.Tensor,
             track: torch.Tensor) -> RigRows:
    """The rig of each track's shape float[T, S], computed once per track and gathered per row by track
    int64[B]; parents: the fitted sub-skeleton's; torso0: the default shape's torso length, metres."""
    rig = model.rig(shape_t)
    rest_inv, rel = rest_relations(parents, rig.rest)
    torso, stature = rest_statures(rig)
    return RigRows(rest_folded(rest_inv, rig.kp_coeffs), track, rel[track], (torso / torso0)[track], stature)


def posed_keypoints(parents: list[int], rig: RigRows, bones: torch.Tensor, root: torch.Tensor, txy: torch.Tensor,
                    tz: torch.Tensor, focal: torch.Tensor, center: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(kp3 float[B, 17, 3] camera frame, their projections float[B, 17, 2], the translation float[B, 3]) of B
    rows at bones float[B, F, 3], root float[B, 3], txy float[B, 2] (x/z, y/z), tz float[B, 1] (log depth per
    body size); focal float[B], center float[B, 2] pixels."""
    z = tz.exp() * rig.size[:, None]
    t3 = torch.cat([txy * z, z], 1)
    frames = posed_frames(parents, rig.rel, rotvec_to_rotmat(bones), placement(root, t3))
    kp3 = skinned_keypoints(frames, rig.kp_coeffs, rig.track)
    return kp3, project(kp3, focal, center), t3
