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
    """Which rows are consecutive frames of a track (fit_init.consecutive). Indices count the solve's B rows,
    then Q settled rows it does not move but its temporal terms reach: a track's last frame of the previous
    chunk and, in a chunk's second solve, the first solve's rows (fit.BodyFitter.fit)."""

    triples: torch.Tensor  # int64[P, 3] (row, the row one frame before, two frames before or -1), one of them moving
    settled_kp3: torch.Tensor  # float[Q, K, 3] the settled rows' 3D keypoints
    settled_t3: torch.Tensor  # float[Q, 3] and root translations


@dataclass(frozen=True)
class LossTerms:
    """Stage 2's loss, term by term; total() sums them in field order."""

    reprojection: torch.Tensor
    rest: torch.Tensor
    hinges: torch.Tensor
    shape: torch.Tensor
    accel: torch.Tensor
    velocity: torch.Tensor
    limits: torch.Tensor
    stature: torch.Tensor
    adult: torch.Tensor
    ground: torch.Tensor
    upright: torch.Tensor

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
    keypoints), mean over the triples whose third frame is known."""
    if not w or not len(motion.triples):
        return kp3.new_zeros(())
    every = torch.cat([kp3, motion.settled_kp3])
    i, j, k = motion.triples[:, 0], motion.triples[:, 1], motion.triples[:, 2]
    valid = (k >= 0).to(kp3.dtype)
    accel = every[i] - 2 * every[j] + every[k.clamp(min=0)]
    return w * ((accel ** 2).sum((1, 2)) * valid).sum() / valid.sum().clamp(min=1)


def root_velocity(w: float, t3: torch.Tensor, motion: Motion) -> torch.Tensor:
    """Squared velocity of the root translation t3: float[B, 3] (metres per frame), mean over the pairs of
    consecutive frames one of which moves."""
    if not w or not len(motion.triples):
        return t3.new_zeros(())
    every = torch.cat([t3, motion.settled_t3])
    i, j = motion.triples[:, 0], motion.triples[:, 1]
    moving = ((i < len(t3)) | (j < len(t3))).to(t3.dtype)
    return w * (((every[i] - every[j]) ** 2).sum(1) * moving).sum() / moving.sum().clamp(min=1)


@dataclass(frozen=True)
class Scene:
    """The video's floor in the fit's camera frame, and which rows stand on it."""

    normal: torch.Tensor  # float[3] unit up vector: the floor's, else the camera's own -y (a level camera)
    camera_height: float | None  # metres above the floor; None: no floor known (no contact term)
    contact: torch.Tensor  # bool[B] rows with a foot on the floor
    ankle: torch.Tensor  # int64[B] that foot's COCO-17 index
    upright: torch.Tensor  # bool[B] rows held upright: standing on a foot, or legs not seen (fit_scene.scene)


def ground_contact(w: float, kp3: torch.Tensor, scene: Scene, ankle_height: torch.Tensor, tol: float) -> torch.Tensor:
    """The standing foot on the floor: ground_costs (below) weighted by w, mean over the contact rows."""
    if not w or scene.camera_height is None or not bool(scene.contact.any()):
        return kp3.new_zeros(())
    # Saturating, like the reprojection's Geman-McClure: where the floor estimate and a person disagree
    # (a floor a few degrees off, far across the image) a quadratic pull grew without bound while the
    # reprojection term, saturated, let go, and the body slid off its keypoints (vtest: 76 px).
    return w * ground_costs(kp3, scene, ankle_height, tol)[scene.contact].mean()


def ground_costs(kp3: torch.Tensor, scene: Scene, ankle_height: torch.Tensor, tol: float) -> torch.Tensor:
    """float[B]: log(1 + z^2) of each row's lower ankle's height error (in 3D: the lower one in the image may
    be the nearer, raised one) above the floor against ankle_height float[B] (where an ankle of that person's
    stature sits), z in units of tol metres; 0 for rows not standing on a foot or without a known floor.
    kp3 float[B, K, 3] camera frame."""
    if scene.camera_height is None:
        return kp3.new_zeros(len(kp3))
    above = (kp3[:, [15, 16]] @ scene.normal).min(1).values + scene.camera_height
    return torch.log1p(((above - ankle_height) / tol) ** 2) * scene.contact.to(kp3.dtype)


def upright(w: float, kp3: torch.Tensor, scene: Scene, free_rad: float) -> torch.Tensor:
    """People standing on a foot, and people whose legs are not seen, stand upright: the ankle-centre to
    shoulder-centre direction of the scene's upright rows within free_rad of the up vector; log(1 +
    (excess / free_rad)^2) beyond it, mean over those rows. A single view leaves a standing body free to
    lean toward or away from the camera at almost no reprojection cost (the issue measured -28 to +46
    degrees among people on one floor); saturating, so a person the 2D says is bent over is not pulled off
    its keypoints."""
    if not w or not bool(scene.upright.any()):
        return kp3.new_zeros(())
    rows = torch.nonzero(scene.upright).squeeze(1)
    axis = kp3[rows][:, [5, 6]].mean(1) - kp3[rows][:, [15, 16]].mean(1)
    cos = (axis @ scene.normal) / (axis.norm(dim=-1) + 1e-9)
    angle = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))
    return w * torch.log1p((torch.relu(angle - free_rad) / free_rad) ** 2).mean()


def stature_prior(w: torch.Tensor, stature: torch.Tensor, mean: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """Each track's stature float[T] (metres) near what is known of it, mean, sd and weight w float[T]: the
    floor's measure of that person where there is one, else the population's (weighed more: then nothing
    else tells size from depth). log(1 + z^2), z in sds: it saturates, so strong evidence outweighs it,
    while a free size that only trades against depth is pulled to the expected one."""
    return (w * stature_costs(stature, mean, sd)).mean()


def stature_costs(stature: torch.Tensor, mean: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """float[T]: log(1 + z^2) of each stature, z = (stature - mean) / sd (stature_prior before weights)."""
    return torch.log1p(((stature - mean) / sd) ** 2)


def adult_prior(w: float, age: torch.Tensor, stature: torch.Tensor, adult_age: float, adult_from_m: float,
                child_m: float) -> torch.Tensor:
    """An adult unless the body is small: each track's age parameter float[T] below adult_age costs, as much
    as its stature float[T] says it is an adult (1 at adult_from_m and above, 0 at child_m and below); a
    small body can then be a child, a tall one cannot."""
    adult = ((stature - child_m) / (adult_from_m - child_m)).clamp(0, 1)
    return w * (adult * torch.relu(adult_age - age) ** 2).mean()


def joint_limits(w: float, bones: torch.Tensor, limits: torch.Tensor) -> torch.Tensor:
    """Every fitted bone's rotation within its range: squared excess of the axis-angle's magnitude over
    limits float[F] (radians; inf = no limit) for bones float[B, F, 3]."""
    angle = ((bones ** 2).sum(-1) + 1e-12).sqrt()  # the epsilon: a finite gradient at rest
    return w * (torch.relu(angle - limits) ** 2).sum(1).mean()
