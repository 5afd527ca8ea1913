"""Skeleton maths shared by every body model: pure typed torch functions, shapes in the docstrings.

A body model is reduced here to what fitting needs (see rig.py, `Rig`):
- `parents`: int[J], parent of each bone (-1 for the root, bones sorted so parents come first);
- `rest`: float[T, J, 4, 4], each bone's rest frame in model space (per shape, one row per track);
- `kp_coeffs`: float[T, K, J, 4], keypoint k = sum_j A_j @ kp_coeffs[k, j] where A_j is bone j's
  posed-relative-to-rest transform. Linear blend skinning and a linear keypoint regressor are both
  linear in the rest vertices, so folding the regressor through the skin weights once gives the
  exact skinned keypoints without skinning a single vertex (anny regresses COCO points from
  300-4000 vertices each).
"""
from __future__ import annotations

import torch


def rotvec_to_rotmat(v: torch.Tensor) -> torch.Tensor:
    """Rodrigues: float[..., 3] axis-angle -> float[..., 3, 3]; smooth at 0 (Taylor terms)."""
    theta2 = (v * v).sum(-1, keepdim=True)[..., None]  # [..., 1, 1]
    small = theta2 < 1e-8
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / torch.where(small, 1.0, theta2))
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*v.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=v.dtype, device=v.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def rotmat_to_rotvec(r: torch.Tensor) -> torch.Tensor:
    """float[..., 3, 3] rotation -> float[..., 3] axis-angle (angle in [0, pi]); for outputs, not for gradients."""
    import roma  # a dependency of anny; its log map handles angles near pi

    return roma.rotmat_to_rotvec(r)


def depth_levels(parents: list[int]) -> list[list[int]]:
    """Bones grouped by depth (root first): each level's parents are all in earlier levels, so
    forward kinematics takes one batched product per level instead of one per bone."""
    depth = []
    for p in parents:
        depth.append(0 if p < 0 else depth[p] + 1)
    return [[j for j, d in enumerate(depth) if d == level] for level in range(max(depth) + 1)]


def rest_relations(parents: list[int], rest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What forward kinematics needs of a rest pose, computed once per shape.

    rest: float[T, J, 4, 4] rest frames (model space). Returns (rest^-1 float[T, J, 4, 4], rel float[T, J, 4, 4]):
    rel_j = rest_parent^-1 @ rest_j, each bone in its parent's rest frame; the root's rel is its rest frame.
    """
    rest_inv = torch.linalg.inv(rest)
    par = [max(p, 0) for p in parents]
    rel = rest_inv[:, par] @ rest
    return rest_inv, torch.cat([rest[:, :1], rel[:, 1:]], 1)


def forward_kinematics(parents: list[int], rest: torch.Tensor, local: torch.Tensor,
                       root: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posed bone frames.

    parents: J parent indices (-1 root), parents before children.
    rest: float[B, J, 4, 4] rest frames (model space); local: float[B, J, 3, 3] each bone's rotation in
      its own rest frame ("local-bone": the root's entry is ignored); root: float[B, 4, 4] the model's
      placement in the camera frame (orientation about the model origin, then translation).
    Returns (posed frames float[B, J, 4, 4] in the camera frame, A = posed @ rest^-1 float[B, J, 4, 4]).
    """
    return pose_relations(parents, *rest_relations(parents, rest), local, root)


def pose_relations(parents: list[int], rest_inv: torch.Tensor, rel: torch.Tensor, local: torch.Tensor,
                   root: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """forward_kinematics from rest_relations' output (float[B, J, 4, 4] each): (posed frames, A)."""
    frames = posed_frames(parents, rel, local, root)
    return frames, frames @ rest_inv


def posed_frames(parents: list[int], rel: torch.Tensor, local: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    """float[B, J, 4, 4] posed bone frames (camera frame) from rel float[B, J, 4, 4] (rest_relations), local
    float[B, J, 3, 3] and root float[B, 4, 4] (forward_kinematics), one product per depth level."""
    rot = rel[..., :3, :3] @ local
    step = torch.cat([torch.cat([rot, rel[..., :3, 3:]], -1), rel[..., 3:, :]], -2)
    posed: list[torch.Tensor | None] = [None] * len(parents)
    for level in depth_levels(parents):
        if parents[level[0]] < 0:
            posed[level[0]] = root @ rel[:, level[0]]
            continue
        above = torch.stack([posed[parents[j]] for j in level], 1)
        for j, frame in zip(level, (above @ step[:, level]).unbind(1)):
            posed[j] = frame
    return torch.stack(posed, 1)


def skinned_keypoints(a: torch.Tensor, kp_coeffs: torch.Tensor, track: torch.Tensor | None = None) -> torch.Tensor:
    """a: float[B, J, 4, 4] posed-relative-to-rest transforms; kp_coeffs: float[B, K, J, 4], or float[T, K, J, 4]
    with track int64[B] naming each row's. Returns float[B, K, 3], the keypoints of the skinned mesh.

    With track, one (rows x 4J) by (4J x K) product per track instead of one small product per row: B small
    batched products are ~3x slower on a CPU (benchmarks/mesh_fit.py spends most of its time here)."""
    if track is None:
        return torch.einsum("bjrd,bkjd->bkr", a[:, :, :3, :], kp_coeffs)
    b, j = a.shape[:2]
    t, k = kp_coeffs.shape[:2]
    order = torch.argsort(track, stable=True)
    counts = torch.bincount(track, minlength=t).tolist()
    rows = a[order][:, :, :3, :].transpose(1, 2).reshape(b, 3, j * 4)  # [B, 3, 4J], a track's rows together
    coeffs = kp_coeffs.reshape(t, k, j * 4)
    out = torch.cat([r.reshape(-1, j * 4) @ coeffs[i].T for i, r in enumerate(rows.split(counts)) if counts[i]])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(b, device=order.device)
    return out.reshape(b, 3, k).transpose(1, 2)[inverse]


def rest_folded(rest_inv: torch.Tensor, kp_coeffs: torch.Tensor) -> torch.Tensor:
    """float[T, K, J, 4]: keypoint coefficients that skinned_keypoints applies to the posed frames themselves
    (posed_frames), not A = posed @ rest^-1: rest^-1 folded in once per shape, which saves a [B, J, 4, 4]
    product per evaluation. rest_inv: float[T, J, 4, 4]; kp_coeffs: float[T, K, J, 4]."""
    return torch.einsum("tjde,tkje->tkjd", rest_inv, kp_coeffs)


def project(points: torch.Tensor, focal: torch.Tensor, center: torch.Tensor, min_depth: float = 0.05) -> torch.Tensor:
    """Pinhole camera (x right, y down, z forward). points: float[B, K, 3] camera frame (metres);
    focal: float[B] pixels; center: float[B, 2] principal point. Returns float[B, K, 2] pixels;
    depths are clamped at min_depth so a body passing behind the camera cannot blow up the loss."""
    z = points[..., 2:].clamp(min=min_depth)
    return points[..., :2] / z * focal[:, None, None] + center[:, None, :]


def placement(rotvec: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """float[B, 3] axis-angle, float[B, 3] metres -> float[B, 4, 4] rigid transform."""
    r = rotvec_to_rotmat(rotvec)
    top = torch.cat([r, translation[:, :, None]], -1)
    bottom = torch.zeros_like(top[:, :1])
    bottom[..., 3] = 1.0
    return torch.cat([top, bottom], -2)
