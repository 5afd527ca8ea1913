"""One fitted track as files for Blender / Unity: BVH (here), glTF binary (export_gltf.py), OBJ (here).

Coordinate system of every export: Y-up, right-handed, metres for glTF/OBJ (glTF's spec) and
centimetres for BVH (the Mixamo / Unity convention for BVH). Posed data comes out of the fit in the
*camera* frame (OpenCV: x right, y down, z forward); the export frame is x right, y up, z toward the
camera, i.e. the camera frame turned 180 degrees about its x axis (`FLIP` = diag(1, -1, -1)). A body
therefore keeps where the camera saw it: a person 3 m in front of the camera stands at z = -3.

The rest pose (the bind pose of the glTF skin, the BVH's zero-rotation skeleton) is the model's rest
in its own model space placed upright facing the camera (`model.facing`) and then flipped, so it
stands on +y and faces +z: `REST = FLIP @ facing`. Joint frames are world-aligned at the rest heads
(identity orientation), which is what BVH expects and what keeps the mapping exact: a point rigid
with bone j moves by A_j = posed_j @ rest_j^-1 (rig.pose_full), so in the export frame bone j's
world rotation relative to the export rest is W_j = FLIP G_j REST^T (G_j = A_j[:3, :3]), its local
rotation is W_parent^T W_j = REST G_parent^T G_j REST^T, and the FK p_j = p_parent + W_parent
(h_j - h_parent) of any BVH/glTF reader reproduces the posed heads.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from stages.body.rig import BodyModel, pose_full

FLIP = np.diag([1.0, -1.0, -1.0])  # camera (x right, y down, z forward) -> export (x right, y up, z back)
BVH_UNITS_PER_METRE = 100.0  # BVH in centimetres


@dataclass(frozen=True)
class TrackMotion:
    """One track of the `bodies` table: the body model's parameters per frame where the track was seen.

    shape: float32[S]; frame_index: int64[N] increasing, may have gaps; time_s: float64[N];
    bone_rotvec: float32[N, J, 3] local axis-angle per bone of the full rig (root entry ignored);
    root_rotvec, translation: float32[N, 3] camera frame (metres); fps: the video's frame rate.
    """

    body_model: str
    shape: np.ndarray
    frame_index: np.ndarray
    time_s: np.ndarray
    bone_rotvec: np.ndarray
    root_rotvec: np.ndarray
    translation: np.ndarray
    fps: float


def check_track(model: BodyModel, m: TrackMotion) -> None:
    """ValueError with one line when the track cannot be exported with this model."""
    n = len(m.frame_index)
    if n == 0:
        raise ValueError("track has no rows: nothing to export")
    if m.body_model != model.name:
        raise ValueError(f"track was fitted with body model {m.body_model!r}, not {model.name!r}")
    j = len(model.bone_names)
    if m.bone_rotvec.shape != (n, j, 3) or m.root_rotvec.shape != (n, 3) or m.translation.shape != (n, 3) \
            or m.time_s.shape != (n,):
        raise ValueError(f"track arrays do not match {n} rows of a {j}-bone rig: bone_rotvec "
                         f"{m.bone_rotvec.shape}, root_rotvec {m.root_rotvec.shape}, translation "
                         f"{m.translation.shape}, time_s {m.time_s.shape}")
    if n > 1 and (np.any(np.diff(m.frame_index) <= 0) or np.any(np.diff(m.time_s) <= 0)):
        raise ValueError("track frame_index and time_s must be strictly increasing")
    if not m.fps > 0:
        raise ValueError(f"track fps must be positive, got {m.fps}")


def fill_gaps(m: TrackMotion) -> TrackMotion:
    """One row per video frame from the track's first to its last frame.

    Rows that exist are copied unchanged. A missing frame f between existing frames a < f < b gets,
    with t = (f - a) / (b - a): translation and time_s linearly interpolated, and every rotation (root and
    each bone's local rotation) slerped between its two neighbours, R_a exp(t log(R_a^T R_b)): the
    shortest arc, so the filled rotation is never further from either neighbour than they are apart.
    """
    if len(m.frame_index) == 0:
        raise ValueError("track has no rows: nothing to fill")
    fi = np.asarray(m.frame_index, np.int64)
    full = np.arange(fi[0], fi[-1] + 1, dtype=np.int64)
    if len(full) == len(fi):
        return m
    missing = np.setdiff1d(full, fi)
    b = np.searchsorted(fi, missing)  # right neighbour; >= 1 since the first frame exists
    a = b - 1
    t = (missing - fi[a]) / (fi[b] - fi[a])
    row = np.searchsorted(full, fi)  # where existing rows go

    def lerp(x: np.ndarray) -> np.ndarray:
        out = np.empty((len(full), *x.shape[1:]), x.dtype)
        out[row] = x
        tt = t.reshape(-1, *[1] * (x.ndim - 1))
        out[missing - fi[0]] = (1 - tt) * x[a] + tt * x[b]
        return out

    def slerp(rv: np.ndarray) -> np.ndarray:
        out = np.empty((len(full), *rv.shape[1:]), rv.dtype)
        out[row] = rv
        ra, rb = Rotation.from_rotvec(rv[a].reshape(-1, 3)), Rotation.from_rotvec(rv[b].reshape(-1, 3))
        tt = np.repeat(t, rv[a].size // (3 * len(t)))[:, None]
        mid = ra * Rotation.from_rotvec((ra.inv() * rb).as_rotvec() * tt)
        out[missing - fi[0]] = mid.as_rotvec().reshape(rv[a].shape).astype(rv.dtype)
        return out

    return replace(m, frame_index=full, time_s=lerp(np.asarray(m.time_s, np.float64)),
                   bone_rotvec=slerp(m.bone_rotvec), root_rotvec=slerp(m.root_rotvec),
                   translation=lerp(m.translation))


def export_names(model: BodyModel) -> list[str]:
    """Joint names in the files: Anny's with the `mixamorig:` prefix (Mixamo retargeting in Blender and
    Unity matches on it), any other model's own bone names."""
    if model.name == "anny":
        from stages.body.anny_body import PREFIX

        return [PREFIX + b for b in model.bone_names]
    return list(model.bone_names)


@dataclass(frozen=True)
class ExportPose:
    """The track posed in the export frame (metres).

    rest_heads: float64[J, 3] bone heads of the export rest pose; heads: float64[N, J, 3] posed heads;
    world: float64[N, J, 3, 3] W_j; local: float64[N, J, 3, 3] W_parent^T W_j (root: W_0);
    a: float[N, J, 4, 4] pose_full's A (camera frame), for model.vertices; shape: float[1, S].
    """

    rest_heads: np.ndarray
    heads: np.ndarray
    world: np.ndarray
    local: np.ndarray
    a: torch.Tensor
    shape: torch.Tensor


def rest_rotation(model: BodyModel) -> np.ndarray:
    """float64[3, 3] model space -> export frame for the rest pose: upright, facing +z (FLIP @ facing)."""
    return FLIP @ model.facing.detach().cpu().double().numpy()


def export_pose(model: BodyModel, m: TrackMotion) -> ExportPose:
    """Every row of the track posed with rig.pose_full and mapped to the export frame (module docstring)."""
    ref = model.shape_default
    as_t = lambda x: torch.as_tensor(np.asarray(x), dtype=ref.dtype, device=ref.device)  # noqa: E731
    shape = as_t(m.shape)
    with torch.no_grad():
        rest, posed, a = pose_full(model, shape, as_t(m.bone_rotvec), as_t(m.root_rotvec), as_t(m.translation))
    rest_rot = rest_rotation(model)
    g = a[..., :3, :3].cpu().double().numpy()
    world = FLIP @ g @ rest_rot.T
    parents = np.asarray(model.parents)
    local = world.copy()
    child = parents >= 0
    local[:, child] = np.swapaxes(world[:, parents[child]], -1, -2) @ world[:, child]
    return ExportPose(rest_heads=rest[:, :3, 3].cpu().double().numpy() @ rest_rot.T,
                      heads=posed[..., :3, 3].cpu().double().numpy() @ FLIP.T,
                      world=world, local=local, a=a, shape=shape[None])


def children_of(parents: list[int]) -> list[list[int]]:
    """Children of each bone, in index order."""
    kids: list[list[int]] = [[] for _ in parents]
    for j, p in enumerate(parents):
        if p >= 0:
            kids[p].append(j)
    return kids


def write_bvh(model: BodyModel, m: TrackMotion, path: str | Path) -> None:
    """BVH of the track, in centimetres, Y-up (module docstring), written with pybvh.

    Skeleton: the model's full rig (export_names), offsets child head - parent head of the export rest,
    world-aligned joint frames; the root has OFFSET 0 and 6 channels (Xposition Yposition Zposition
    Zrotation Xrotation Yrotation) holding its absolute position (readers disagree on whether root
    position adds to the offset; with a zero offset both read the same), the other joints 3 rotation
    channels, leaves an End Site half their bone's length further along it. One BVH frame per video frame
    from the track's first to its last (fill_gaps), Frame Time = 1 / fps.
    """
    from pybvh import Bvh
    from pybvh.bvhnode import BvhEndSite, BvhJoint, BvhRoot

    check_track(model, m)
    pose = export_pose(model, fill_gaps(m))
    names, parents, kids = export_names(model), model.parents, children_of(model.parents)
    rest = pose.rest_heads * BVH_UNITS_PER_METRE
    order = "ZXY"

    # pybvh writes the hierarchy depth first from the root and the motion columns in `nodes` order,
    # so the joints are listed in that same depth-first order.
    nodes: list = []
    joint_order: list[int] = []

    def build(j: int, parent):
        if parents[j] < 0:
            node = BvhRoot(names[j], [0.0, 0.0, 0.0], pos_channels=list("XYZ"), rot_channels=list(order))
        else:
            node = BvhJoint(names[j], rest[j] - rest[parents[j]], rot_channels=list(order), parent=parent)
        nodes.append(node)
        joint_order.append(j)
        if kids[j]:
            node.children = [build(c, node) for c in kids[j]]
        else:
            tip = 0.5 * (rest[j] - rest[parents[j]]) if parents[j] >= 0 else np.array([0.0, 10.0, 0.0])
            node.children = [BvhEndSite(f"{names[j]}_End", tip, parent=node)]
            nodes.append(node.children[0])
        return node

    roots = [j for j, p in enumerate(parents) if p < 0]
    if len(roots) != 1:
        raise ValueError(f"BVH needs a single-root skeleton, the model has {len(roots)} roots")
    build(roots[0], None)

    local = pose.local[:, joint_order]
    angles = Rotation.from_matrix(local.reshape(-1, 3, 3)).as_euler(order, degrees=False)  # intrinsic Z, X, Y
    bvh = Bvh(nodes=nodes, root_pos=pose.heads[:, roots[0]] * BVH_UNITS_PER_METRE,
              joint_angles=angles.reshape(local.shape[0], len(joint_order), 3), frame_time=1.0 / m.fps,
              world_up="+y")
    bvh.write(path)


def write_obj(model: BodyModel, m: TrackMotion, frame_index: int, path: str | Path) -> None:
    """The skinned mesh (metres, export frame) at one video frame of the track, written with trimesh.

    The frame must be one where the track was seen (a row of m): a gap frame is an error, not a guess.
    """
    import trimesh

    check_track(model, m)
    rows = np.flatnonzero(np.asarray(m.frame_index) == frame_index)
    if len(rows) == 0:
        raise ValueError(f"frame {frame_index} is not in the track (seen on {len(m.frame_index)} frames "
                         f"between {int(m.frame_index[0])} and {int(m.frame_index[-1])})")
    r = slice(int(rows[0]), int(rows[0]) + 1)
    one = replace(m, frame_index=m.frame_index[r], time_s=m.time_s[r], bone_rotvec=m.bone_rotvec[r],
                  root_rotvec=m.root_rotvec[r], translation=m.translation[r])
    pose = export_pose(model, one)
    with torch.no_grad():
        v = model.vertices(pose.shape, pose.a)[0].cpu().double().numpy() @ FLIP.T
    # process=False: keep the model's vertex order and count (no merging), so the file lines up with the model.
    trimesh.Trimesh(vertices=v, faces=model.faces, process=False).export(str(path), file_type="obj")
