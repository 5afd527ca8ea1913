"""One fitted track as a skinned, animated glTF binary (.glb) for Blender and Unity, written with pygltflib.

Export frame and rest pose as in export.py (Y-up, right-handed, metres, z toward the camera; the bind
pose is the model's rest standing on +y facing +z). The file holds:
- one skinned mesh: rest positions, triangles, JOINTS_0 / WEIGHTS_0 = the 4 largest skin weights per
  vertex renormalised (glTF's one set of 4; anny has 5, the 5th is at most ~0.04), a slot of weight 0
  naming joint 0 (glTF's rule: strict readers such as the Khronos validator flag any other joint there);
- TEXCOORD_0 where the model has UVs (anny: MakeHuman's texture layout). UVs belong to face corners, so
  a mesh vertex on a UV seam becomes one glTF vertex per distinct UV, each with the vertex's position
  and skin weights (`split_seams`): the file has more vertices than the model, the same triangles;
- one node per bone of the full rig (export.export_names), world-aligned at the rest heads (translation
  = head - parent head, no rotation), inverse bind matrices translate(-rest head);
- one animation: per-bone rotation channels (W_parent^T W_j) and the root's translation, keyed at
  time_s - time_s[0] on the rows where the track was seen. glTF's LINEAR interpolation slerps rotations
  and lerps translations, which is exactly export.fill_gaps, so gaps are left to the player.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from stages.body.export import TrackMotion, check_track, children_of, export_names, export_pose, rest_rotation
from stages.body.rig import BodyModel

WEIGHTS_PER_VERTEX = 4  # glTF's JOINTS_0 / WEIGHTS_0


def skin_weights(model: BodyModel) -> np.ndarray:
    """float32[V, J] dense linear-blend-skinning weights of the model's mesh.

    From `model.skin_weights()` where a model has it; Anny keeps its weights as 5 (bone, weight) pairs per
    vertex in its buffers, read here rather than added to the model classes, so the BodyModel interface
    stays what fitting needs.
    """
    if hasattr(model, "skin_weights"):
        return np.asarray(model.skin_weights(), np.float32)
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "vertex_bone_weights"):
        raise ValueError(f"body model {model.name!r} exposes no skin weights (skin_weights() or anny's buffers)")
    idx, w = inner.vertex_bone_indices.long(), inner.vertex_bone_weights.float()
    dense = torch.zeros(idx.shape[0], len(model.bone_names), dtype=torch.float32, device=idx.device)
    return dense.scatter_add_(1, idx, w).cpu().numpy()


def top_weights(dense: np.ndarray, k: int = WEIGHTS_PER_VERTEX) -> tuple[np.ndarray, np.ndarray]:
    """float[V, J] -> (uint16[V, k] bone indices, float32[V, k] weights summing to 1): the k largest."""
    idx = np.argsort(-dense, axis=1, kind="stable")[:, :k]
    w = np.take_along_axis(dense, idx, 1).astype(np.float64)
    total = w.sum(1, keepdims=True)
    if np.any(total <= 0):
        raise ValueError("some mesh vertices have no skin weight")
    w = (w / total).astype(np.float32)
    # argsort fills the slots of a vertex with fewer than k bones with arbitrary zero-weight bones.
    idx[w == 0] = 0
    return idx.astype(np.uint16), w


def texture_coords(model: BodyModel) -> tuple[np.ndarray, np.ndarray] | None:
    """(float32[T, 2] UVs in glTF's convention, int64[F, 3] UV index of each corner of model.faces), or
    None for a model without UVs (SMPL's files carry none).

    Read from anny's buffers (texture_coordinates, face_texture_coordinate_indices), like its skin
    weights. MakeHuman's v counts up from the texture's bottom row as in OBJ files, glTF's v down from
    its top row, hence 1 - v.
    """
    inner = getattr(model, "model", None)
    uv = getattr(inner, "texture_coordinates", None)
    corners = getattr(inner, "face_texture_coordinate_indices", None)
    if uv is None or corners is None:
        return None
    corners = corners.cpu().numpy().astype(np.int64)
    faces = np.asarray(model.faces)
    # The UV indices follow anny's own face list; model.faces is anny's triangulation of it, which
    # is the same list while anny stores triangles (0.6 does). Anything else would pair wrong corners.
    if corners.shape != faces.shape or not np.array_equal(inner.faces.cpu().numpy(), faces):
        raise ValueError(f"body model {model.name!r}: texture coordinates do not follow the mesh's triangles")
    uv = uv.detach().cpu().double().numpy()
    return np.stack([uv[:, 0], 1.0 - uv[:, 1]], 1).astype(np.float32), corners


def split_seams(faces: np.ndarray, corners: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One output vertex per distinct (mesh vertex, UV index) pair of the face corners.

    faces, corners: int[F, 3] mesh vertex and UV index of each corner. Returns (int64[V'] the mesh vertex
    of each output vertex, int64[V'] its UV index, uint32[F, 3] the same triangles on output vertices).
    A mesh vertex no face uses has no UV and is left out.
    """
    pairs = np.stack([np.asarray(faces, np.int64).ravel(), np.asarray(corners, np.int64).ravel()], 1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return unique[:, 0], unique[:, 1], inverse.reshape(np.shape(faces)).astype(np.uint32)


class _Blob:
    """The GLB's one binary buffer: arrays appended as 4-byte aligned buffer views, one accessor each."""

    _TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4", 16: "MAT4"}

    def __init__(self, gltf):
        self.gltf, self.data = gltf, bytearray()

    def add(self, array: np.ndarray, width: int, target: int | None = None, bounds: bool = False) -> int:
        import pygltflib as g

        component = {np.dtype(np.float32): g.FLOAT, np.dtype(np.uint32): g.UNSIGNED_INT,
                     np.dtype(np.uint16): g.UNSIGNED_SHORT}[array.dtype]
        raw = np.ascontiguousarray(array).tobytes()
        self.data.extend(b"\0" * (-len(self.data) % 4))
        self.gltf.bufferViews.append(g.BufferView(buffer=0, byteOffset=len(self.data), byteLength=len(raw),
                                                  target=target))
        self.data.extend(raw)
        flat = array.reshape(-1, width)
        self.gltf.accessors.append(g.Accessor(
            bufferView=len(self.gltf.bufferViews) - 1, componentType=component, count=len(flat),
            type=self._TYPES[width], min=flat.min(0).tolist() if bounds else None,
            max=flat.max(0).tolist() if bounds else None))
        return len(self.gltf.accessors) - 1


def _continuous(q: np.ndarray) -> np.ndarray:
    """float[N, 4] quaternions with signs flipped so consecutive keys are on the same hemisphere (q and -q
    are the same rotation, but a player interpolating between them would spin the long way round)."""
    q = q.copy()
    for i in range(1, len(q)):
        if np.dot(q[i], q[i - 1]) < 0:
            q[i] = -q[i]
    return q


def write_glb(model: BodyModel, m: TrackMotion, path: str | Path) -> None:
    """Skinned mesh + skeleton + one animation of the track as a .glb (module docstring)."""
    import pygltflib as g

    check_track(model, m)
    pose = export_pose(model, m)
    j_count, parents, names = len(model.bone_names), model.parents, export_names(model)
    with torch.no_grad():
        eye = torch.eye(4, dtype=pose.a.dtype, device=pose.a.device).expand(1, j_count, 4, 4)
        rest_v = model.vertices(pose.shape, eye)[0].cpu().double().numpy() @ rest_rotation(model).T
    joints, weights = top_weights(skin_weights(model))
    uv = texture_coords(model)
    if uv is None:
        source, faces, tex = np.arange(len(rest_v)), np.asarray(model.faces, np.uint32), None
    else:
        source, uv_index, faces = split_seams(model.faces, uv[1])
        tex = uv[0][uv_index]

    gltf = g.GLTF2(asset=g.Asset(generator="posepipe", version="2.0"), scene=0)
    blob = _Blob(gltf)
    attributes = g.Attributes(
        POSITION=blob.add(rest_v[source].astype(np.float32), 3, g.ARRAY_BUFFER, bounds=True),
        JOINTS_0=blob.add(joints[source], 4, g.ARRAY_BUFFER), WEIGHTS_0=blob.add(weights[source], 4, g.ARRAY_BUFFER),
        TEXCOORD_0=None if tex is None else blob.add(tex, 2, g.ARRAY_BUFFER))
    indices = blob.add(faces.reshape(-1), 1, g.ELEMENT_ARRAY_BUFFER)
    gltf.meshes.append(g.Mesh(name=model.name, primitives=[g.Primitive(attributes=attributes, indices=indices)]))

    # Nodes 0..J-1 are the bones in the model's order, node J the mesh (its own transform is ignored by
    # glTF for a skinned mesh, so it sits at the scene root, beside the skeleton).
    kids, heads = children_of(parents), pose.rest_heads
    for j in range(j_count):
        offset = heads[j] - heads[parents[j]] if parents[j] >= 0 else heads[j]
        gltf.nodes.append(g.Node(name=names[j], translation=offset.tolist(), children=kids[j]))
    ibm = np.tile(np.eye(4, dtype=np.float32), (j_count, 1, 1))
    ibm[:, :3, 3] = -heads
    # glTF matrices are column-major: write each matrix transposed.
    gltf.skins.append(g.Skin(name="skeleton", joints=list(range(j_count)), skeleton=parents.index(-1),
                             inverseBindMatrices=blob.add(np.swapaxes(ibm, 1, 2).copy(), 16)))
    gltf.nodes.append(g.Node(name=model.name, mesh=0, skin=0))
    roots = [j for j, p in enumerate(parents) if p < 0]
    gltf.scenes.append(g.Scene(nodes=[j_count, *roots]))

    times = blob.add((np.asarray(m.time_s, np.float64) - m.time_s[0]).astype(np.float32), 1, bounds=True)
    anim = g.Animation(name="track")

    def channel(node: int, path_: str, values: np.ndarray, width: int) -> None:
        anim.samplers.append(g.AnimationSampler(input=times, output=blob.add(values.astype(np.float32), width),
                                                interpolation=g.ANIM_LINEAR))
        anim.channels.append(g.AnimationChannel(sampler=len(anim.samplers) - 1,
                                                target=g.AnimationChannelTarget(node=node, path=path_)))

    for j in range(j_count):
        quat = Rotation.from_matrix(pose.local[:, j]).as_quat()  # x, y, z, w: glTF's order
        channel(j, "rotation", _continuous(quat), 4)
    for j in roots:
        channel(j, "translation", pose.heads[:, j], 3)
    gltf.animations.append(anim)

    gltf.buffers.append(g.Buffer(byteLength=len(blob.data)))
    gltf.set_binary_blob(bytes(blob.data))
    gltf.save_binary(str(path))
