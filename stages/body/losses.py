"""The body fit's loss terms (fit.py): pure typed torch functions, shapes in the docstrings.

B rows (person-frames) of T tracks, K = 17 COCO keypoints, F fitted bones (index 0 the root),
S shape parameters, P consecutive-frame triples. Each term is a scalar already scaled by its
weight `w` (where a term takes the weight inside an expression, moving it out would change the
gradient's rounding, and the fit is kept bit-identical across refactors).

A new term is a field of LossTerms, a function here, and one keyword where fit.py builds the terms.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, fields
from functools import reduce

import torch

MAX_HINGE = 2.6  # radians an elbow or knee may flex before it costs


@dataclass(frozen=True)
class Motion:
    """Which rows are consecutive frames of a track (fit_init.predecessors)."""

    triples: torch.Tensor  # int64[P, 3] (row, the row one frame before, two frames before or -1)
    anchor: torch.Tensor  # int64[P] track index whose previous-chunk anchor is the third frame, else -1
    anchors: torch.Tensor  # float[T, K, 3] each track's last keypoints of the previous chunk


@dataclass(frozen=True)
class LossTerms:
    """Stage 2's loss, term by term; total() sums them in field order."""

    reprojection: torch.Tensor
    rest: torch.Tensor
    hinges: torch.Tensor
    shape: torch.Tensor
    accel: torch.Tensor
    velocity: torch.Tensor

    def total(self) -> torch.Tensor:
        return reduce(operator.add, (getattr(self, f.name) for f in fields(self)))


def reprojection(proj: torch.Tensor, kp: torch.Tensor, scale: torch.Tensor, weight: torch.Tensor,
                 sigma: float) -> torch.Tensor:
    """float[B]: Geman-McClure error of each row's projected keypoints, weighted mean over keypoints.

    proj, kp: float[B, K, 2] pixels (kp 0 where missing); scale: float[B] the person's size in the
    image, pixels, so sigma is in person sizes and a far person's error counts as a near one's;
    weight: float[B, K] (0 for missing keypoints)."""
    e2 = ((proj - kp) ** 2).sum(-1) / scale[:, None] ** 2
    return (weight * e2 / (e2 + sigma ** 2)).sum(1) / weight.sum(1).clamp(min=1e-6)


def rest_pull(w: float, bones: torch.Tensor) -> torch.Tensor:
    """Squared axis-angle of the fitted bones below the root, pulling them to rest; bones: float[B, F, 3]."""
    return w * (bones[:, 1:] ** 2).sum((1, 2)).mean()


def hinge_limits(w: float, bones: torch.Tensor, hinges: dict[int, torch.Tensor]) -> torch.Tensor:
    """Elbows and knees held to their hinge: off-axis rotation, hyper-extension (negative flexion)
    and flexion past MAX_HINGE cost. bones: float[B, F, 3]; hinges: fitted bone -> unit flexion axis float[3]."""
    out = bones.new_zeros(())
    for fi, axis in hinges.items():
        r = bones[:, fi]
        angle = r @ axis
        off = r - angle[:, None] * axis
        out = out + w * ((off ** 2).sum(1) + torch.relu(-angle) ** 2 + torch.relu(angle - MAX_HINGE) ** 2).mean()
    return out


def shape_prior(w: float, shape: torch.Tensor, default: torch.Tensor) -> torch.Tensor:
    """Squared distance of each track's shape float[T, S] from the model's default float[S]."""
    return w * ((shape - default) ** 2).sum(1).mean()


def acceleration(w: float, kp3: torch.Tensor, motion: Motion) -> torch.Tensor:
    """Squared acceleration of the 3D keypoints kp3: float[B, K, 3] (metres per frame^2, summed over
    keypoints), mean over the triples whose third frame is known (a row of this chunk or the anchor)."""
    if not w or not len(motion.triples):
        return kp3.new_zeros(())
    i, j, k = motion.triples[:, 0], motion.triples[:, 1], motion.triples[:, 2]
    third = torch.where((k >= 0)[:, None, None], kp3[k.clamp(min=0)], motion.anchors[motion.anchor.clamp(min=0)])
    valid = ((k >= 0) | (motion.anchor >= 0)).to(kp3.dtype)
    accel = kp3[i] - 2 * kp3[j] + third
    return w * ((accel ** 2).sum((1, 2)) * valid).sum() / valid.sum().clamp(min=1)


def root_velocity(w: float, t3: torch.Tensor, motion: Motion) -> torch.Tensor:
    """Squared velocity of the root translation t3: float[B, 3] (metres per frame), mean over the triples."""
    if not w or not len(motion.triples):
        return t3.new_zeros(())
    i, j = motion.triples[:, 0], motion.triples[:, 1]
    return w * ((t3[i] - t3[j]) ** 2).sum(1).mean()
