"""Dense stage (stages/dense): posed meshes from bodies rows, DensePose parts, the per-pixel render.

Every per-pixel answer is checked against something computed another way: a tilted plane's depth,
normal and UVs in closed form; anny bodies against trimesh's own ray casting (embree) on sampled
pixels; occlusion against each body rendered alone; parts against anny's own hand/foot map.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from stages.body.anny_body import AnnyBody
from stages.body.rig import pose_full
from stages.dense.bodies import RestBodies, frame_vertices
from stages.dense.parts import SurfaceLabels, surface_labels
from stages.dense.raster import GlRaster, RayRaster, pixel_rays
from stages.dense.render import DenseFrame, render_dense


@pytest.fixture(scope="module")
def model():
    return AnnyBody()


@pytest.fixture(scope="module")
def labels(model):
    return surface_labels(model)


@pytest.fixture(scope="module")
def gl():
    raster = GlRaster()
    yield raster
    raster.release()


def facing_rotvec(model, turn: float = 0.0) -> np.ndarray:
    """Root rotation of an upright person facing the camera, then turned `turn` radians about the
    vertical (camera y): pi shows the back."""
    facing = model.facing.numpy().astype(np.float64)
    return (Rotation.from_rotvec([0, turn, 0]) * Rotation.from_matrix(facing)).as_rotvec()


def t_pose(model) -> np.ndarray:
    """float[J, 3] bone_rotvec raising both arms from anny's A-pose rest to horizontal.

    A bone's local rotation L turns the bone about its head by R L R^T in model space (R its rest
    frame, parents at rest), so the model-space turn G that lays the arm flat is L = R^T G R.
    """
    rest = model.full_rest(model.shape_default[None])[0].numpy().astype(np.float64)
    names = model.bone_names
    out = np.zeros((len(names), 3))
    for arm, fore in (("LeftArm", "LeftForeArm"), ("RightArm", "RightForeArm")):
        j = names.index(arm)
        d = rest[names.index(fore), :3, 3] - rest[j, :3, 3]
        g = Rotation.align_vectors([[np.sign(d[0]), 0, 0]], [d / np.linalg.norm(d)])[0].as_matrix()
        r = rest[j, :3, :3]
        out[j] = Rotation.from_matrix(r.T @ g @ r).as_rotvec()
    return out


def pose_people(model, places, turns=None, bones=None, shapes=None) -> np.ndarray:
    """Vertices float32[P, V, 3] of people standing at `places` (camera frame, metres)."""
    p = len(places)
    turns = np.zeros(p) if turns is None else turns
    bones = np.zeros((p, len(model.bone_names), 3)) if bones is None else bones
    shapes = np.full((p, len(model.shape_names)), 0.5) if shapes is None else shapes
    root = np.stack([facing_rotvec(model, t) for t in turns])
    return frame_vertices(model, shapes, bones, root, np.asarray(places, np.float64))


def in_image(frame: DenseFrame, p: int, field: str = "mask") -> np.ndarray:
    """One person's crop array pasted into a full-image array (zeros elsewhere)."""
    w, h = frame.image_size
    crop = frame.people[p]
    arr = getattr(crop, field)
    out = np.zeros((h, w, *arr.shape[2:]), arr.dtype)
    x0, y0, x1, y1 = crop.box
    out[y0:y1, x0:x1] = arr
    return out


@pytest.mark.parametrize("backend", ["gl", "rays"])
def test_tilted_plane_exact(backend, gl):
    """Two triangles on a tilted plane: mask, depth, normal, UV and part in closed form per pixel."""
    size, focal = (200, 160), 150.0
    n = np.array([0.3, -0.2, -1.0])
    n /= np.linalg.norm(n)
    p0 = np.array([0.1, 0.05, 4.0])
    # Quad corners on the plane: x, y given, z solved from n . (X - p0) = 0.
    xy = np.array([[-1.03, -0.87], [1.11, -0.87], [1.11, 0.93], [-1.03, 0.93]])
    z = p0[2] - (n[0] * (xy[:, 0] - p0[0]) + n[1] * (xy[:, 1] - p0[1])) / n[2]
    verts = np.c_[xy, z][None].astype(np.float32)
    faces = np.array([[0, 2, 1], [0, 3, 2]])  # wound so the normal points at the camera (-z)
    uv = (xy - xy.min(0)) / (xy.max(0) - xy.min(0))  # u, v linear in the plane's x, y
    labels = SurfaceLabels(face_part=np.array([5, 7], np.uint8), corner_uv=uv[faces].astype(np.float32))
    raster = gl if backend == "gl" else RayRaster()
    frame = render_dense(verts, faces, focal, size, labels=labels, raster=raster)

    d = pixel_rays(focal, size, (0, 0, *size))
    t = (p0 @ n) / (d @ n)  # ray-plane distance; the ray's z is 1, so this is the depth
    hit = d * t[..., None]
    # Inside the quad: the hit's x, y within the corners' ranges (its edges run along the plane's x and y).
    # GL snaps vertices to 1/256 px, so pixel centres within 1 mm (~0.03 px) of an edge may go either way.
    margin = np.minimum.reduce([hit[..., 0] - xy[0, 0], xy[1, 0] - hit[..., 0], hit[..., 1] - xy[0, 1],
                                xy[2, 1] - hit[..., 1]])
    mask = in_image(frame, 0)
    assert mask.sum() > 5000
    assert mask[margin > 1e-3].all() and not mask[margin < -1e-3].any()
    depth, normal = in_image(frame, 0, "depth"), in_image(frame, 0, "normal")
    np.testing.assert_allclose(depth[mask], t[mask], rtol=1e-6)
    np.testing.assert_allclose(normal[mask], np.broadcast_to(n, normal[mask].shape), atol=1e-6)
    u, v = in_image(frame, 0, "u"), in_image(frame, 0, "v")
    lo, span = xy.min(0), xy.max(0) - xy.min(0)
    within = margin > 1e-3  # on the edge band the UVs are clamped into the triangle, hence [0, 1]
    np.testing.assert_allclose(u[within], ((hit[..., 0] - lo[0]) / span[0])[within], atol=1e-5)
    np.testing.assert_allclose(v[within], ((hit[..., 1] - lo[1]) / span[1])[within], atol=1e-5)
    assert u[mask].min() >= 0 and v[mask].min() >= 0 and u[mask].max() <= 1 and v[mask].max() <= 1
    # Triangle 0 (corners 0, 2, 1) is the half below the 0-2 diagonal in the plane's x, y.
    diag = (xy[2] - xy[0])
    below = (diag[0] * (hit[..., 1] - xy[0, 1]) - diag[1] * (hit[..., 0] - xy[0, 0])) < 0
    part = in_image(frame, 0, "part")
    clear = mask & (np.abs(diag[0] * (hit[..., 1] - xy[0, 1]) - diag[1] * (hit[..., 0] - xy[0, 0])) > 1e-3)
    assert np.array_equal(part[clear], np.where(below, 5, 7)[clear])
    assert not part[~mask].any() and not depth[~mask].any()


def test_a_raster_draws_into_its_own_context_after_another_was_made_and_released(gl):
    """A second GlRaster made and released on the thread (another renderer, a test's own) leaves its context
    current; the first one's draws still land in its own buffers."""
    faces = np.array([[0, 2, 1], [0, 3, 2]])
    verts = np.array([[[-1, -1, 4], [1, -1, 4], [1, 1, 4], [-1, 1, 4]]], np.float32)
    before = render_dense(verts, faces, 100.0, (120, 100), raster=gl).people[0].mask
    other = GlRaster()
    render_dense(verts[:, :3], faces[:1], 100.0, (120, 100), raster=other)
    other.release()
    assert before.sum() > 1000
    assert np.array_equal(render_dense(verts, faces, 100.0, (120, 100), raster=gl).people[0].mask, before)


def test_frame_vertices_match_pose_full(model):
    """The batched, cached posing equals rig.pose_full + model.vertices one person at a time."""
    rng = np.random.default_rng(0)
    p, j = 3, len(model.bone_names)
    shapes = rng.uniform(0.2, 0.8, (p, len(model.shape_names)))
    bones = rng.normal(0, 0.2, (p, j, 3))
    root = rng.normal(0, 0.5, (p, 3))
    trans = np.c_[rng.uniform(-1, 1, (p, 2)), rng.uniform(3, 6, p)]
    cache = RestBodies(model)
    got = frame_vertices(model, shapes, bones, root, trans, rest=cache)
    again = frame_vertices(model, shapes[::-1], bones[::-1], root[::-1], trans[::-1], rest=cache)
    assert got.shape == (p, model.model.template_vertices.shape[0], 3) and got.dtype == np.float32
    f32 = lambda x: torch.as_tensor(x, dtype=torch.float32)
    for i in range(p):
        with torch.no_grad():
            _, _, a = pose_full(model, f32(shapes[i]), f32(bones[i:i + 1]), f32(root[i:i + 1]), f32(trans[i:i + 1]))
            ref = model.vertices(f32(shapes[i:i + 1]), a)[0].numpy()
        np.testing.assert_allclose(got[i], ref, atol=1e-5)
        np.testing.assert_allclose(again[p - 1 - i], ref, atol=1e-5)
    assert len(cache._rows) == p  # the second frame reused every shape


def test_anny_pixels_match_trimesh(model, labels, gl):
    """Three posed bodies: sampled pixels' triangle, depth and part agree with trimesh's ray casting,
    and the ray-cast backend agrees with OpenGL on the whole frame."""
    import trimesh

    rng = np.random.default_rng(1)
    size, focal = (480, 360), 420.0
    places = [[-0.7, 0.3, 4.0], [0.2, 0.4, 5.0], [0.9, 0.2, 6.5]]
    bones = rng.normal(0, 0.15, (3, len(model.bone_names), 3))
    verts = pose_people(model, places, turns=[0.3, -0.5, 2.0], bones=bones)
    frame = render_dense(verts, model.faces, focal, size, labels=labels, raster=gl)

    faces = np.asarray(model.faces, np.int64)
    nf = len(faces)
    every = (faces[None] + (np.arange(3) * verts.shape[1])[:, None, None]).reshape(-1, 3)
    mesh = trimesh.Trimesh(verts.reshape(-1, 3).astype(np.float64), every, process=False)
    owner = np.full((size[1], size[0]), -1)
    for p in range(3):
        owner[in_image(frame, p)] = p
    depth = sum(in_image(frame, p, "depth") for p in range(3))
    face = np.full(owner.shape, -1)
    for p in range(3):
        face[in_image(frame, p)] = frame.people[p].face[frame.people[p].mask] + p * len(model.faces)
    part = sum(in_image(frame, p, "part").astype(np.int64) for p in range(3))
    # Sample pixels in the people's boxes, half on bodies; trimesh casts them independently.
    x0, y0 = np.min([c.box[:2] for c in frame.people], 0)
    x1, y1 = np.max([c.box[2:] for c in frame.people], 0)
    on = np.argwhere(owner >= 0)
    off = np.argwhere(owner[y0:y1, x0:x1] < 0) + [y0, x0]
    pix = np.concatenate([on[rng.choice(len(on), 300, replace=False)], off[rng.choice(len(off), 300, replace=False)]])
    d = np.stack([(pix[:, 1] + 0.5 - size[0] / 2) / focal, (pix[:, 0] + 0.5 - size[1] / 2) / focal,
                  np.ones(len(pix))], 1)
    loc, ray, tri = mesh.ray.intersects_location(np.zeros_like(d), d, multiple_hits=False)
    ref_tri = np.full(len(pix), -1)
    ref_tri[ray] = tri
    ref_depth = np.zeros(len(pix))
    ref_depth[ray] = loc[:, 2]
    got_owner = owner[pix[:, 0], pix[:, 1]]
    assert np.mean((ref_tri >= 0) == (got_owner >= 0)) >= 0.99
    both = (ref_tri >= 0) & (got_owner >= 0)
    assert np.mean(ref_tri[both] // nf == got_owner[both]) >= 0.99
    assert np.mean(ref_tri[both] == face[pix[both, 0], pix[both, 1]]) >= 0.97  # the rest: pixels on an edge
    np.testing.assert_allclose(np.median(np.abs(depth[pix[both, 0], pix[both, 1]] - ref_depth[both])), 0, atol=1e-5)
    assert np.mean(np.abs(depth[pix[both, 0], pix[both, 1]] - ref_depth[both]) < 1e-3) >= 0.98
    assert np.mean(part[pix[both, 0], pix[both, 1]] == labels.face_part[ref_tri[both] % nf]) >= 0.98

    rays = render_dense(verts, model.faces, focal, size, labels=labels, raster=RayRaster())
    for a, b in zip(frame.people, rays.people):
        assert a.box == b.box and a.mask.sum() > 500
        assert np.mean(a.mask != b.mask) < 0.002
        common = a.mask & b.mask
        assert np.mean(np.abs(a.depth - b.depth)[common] < 1e-4) > 0.995


def test_nearer_body_owns_the_overlap(model, labels, gl):
    """Two overlapping bodies: where both would be seen alone, the nearer one is seen."""
    size, focal = (500, 500), 800.0
    verts = pose_people(model, [[-0.1, 0.2, 4.0], [0.1, 0.3, 6.0]])
    alone = [in_image(render_dense(verts[i:i + 1], model.faces, focal, size, raster=gl), 0) for i in range(2)]
    together = render_dense(verts, model.faces, focal, size, labels=labels, raster=gl)
    near, far = in_image(together, 0), in_image(together, 1)
    overlap = alone[0] & alone[1]
    assert overlap.sum() > 2000
    assert near[overlap].mean() >= 0.99 and far[overlap].mean() <= 0.01
    assert np.array_equal(near, alone[0])  # the nearer body loses nothing
    assert np.mean(far[alone[1] & ~alone[0]]) >= 0.99  # the farther keeps what is not hidden
    assert not (near & far).any()


def test_parts_uvs_on_t_pose_front_and_back(model, labels, gl):
    """Every masked pixel has a part in 1..24 and U, V in [0, 1]; front and back views of a T-posed
    body show all 24 parts between them, each view its own side, the person's left on the correct side."""
    size, focal = (640, 640), 800.0
    seen: set[int] = set()
    for turn, front_parts, back_parts in ((0.0, {2, 9, 10}, {1, 7, 8}), (np.pi, {1, 7, 8}, {2, 9, 10})):
        verts = pose_people(model, [[0.0, 0.1, 3.0]], turns=[turn], bones=t_pose(model)[None])
        crop = render_dense(verts, model.faces, focal, size, labels=labels, raster=gl).people[0]
        m = crop.mask
        assert m.sum() > 20000
        part, u, v = crop.part[m], crop.u[m], crop.v[m]
        assert part.min() >= 1 and part.max() <= 24
        assert u.min() >= 0 and u.max() <= 1 and v.min() >= 0 and v.max() <= 1
        assert not crop.part[~m].any()
        # Outward unit normals face the camera on (nearly) all visible pixels.
        rows, cols = np.nonzero(m)
        d = np.stack([cols + crop.box[0] + 0.5 - size[0] / 2, rows + crop.box[1] + 0.5 - size[1] / 2,
                      np.full(len(rows), focal)], 1)
        nrm = crop.normal[m]
        np.testing.assert_allclose(np.linalg.norm(nrm, axis=1), 1, atol=1e-4)
        assert np.mean(np.einsum("ij,ij->i", nrm, d) < 0) > 0.97
        counts = np.bincount(part, minlength=25)
        assert sum(counts[list(front_parts)]) > 10 * sum(counts[list(back_parts)])
        # Facing the camera the person's left hand (4) is on the image's right; from the back, on its left.
        left_x, right_x = cols[part == 4].mean(), cols[part == 3].mean()
        assert (left_x > right_x) == (turn == 0.0)
        seen |= set(np.unique(part).tolist())
    assert seen == set(range(1, 25))


def test_parts_agree_with_anny_part_map(model, labels):
    """Anny's own segmentation (hands, feet by UV) agrees with the skinning-derived parts."""
    from anny.face_segmentation import get_face_segmentation_mask

    for name, part in (("hand.L", 4), ("hand.R", 3), ("foot.L", 5), ("foot.R", 6)):
        theirs = get_face_segmentation_mask(model.model, [name]).numpy()
        assert np.mean(labels.face_part[theirs] == part) > 0.95
    assert labels.face_part.min() >= 1 and labels.face_part.max() <= 24
    assert np.all(np.isfinite(labels.corner_uv)) and labels.corner_uv.min() >= 0 and labels.corner_uv.max() <= 1


def test_boxes_crop_and_people_out_of_view(model, gl):
    """Given boxes crop each person (pixels outside are dropped); a person behind the camera is empty."""
    size, focal = (300, 300), 400.0
    verts = pose_people(model, [[0.0, 0.2, 4.0], [0.0, 0.0, -3.0]])
    full = render_dense(verts, model.faces, focal, size, raster=gl)
    assert full.people[1].mask.size == 0 and full.people[0].mask.sum() > 1000
    x0, y0, x1, y1 = full.people[0].box
    box = [x0 + 10.4, y0 + 20, (x0 + x1) / 2, y1 - 5.6]
    cut = render_dense(verts, model.faces, focal, size, boxes=[box, [0, 0, 50, 50]], raster=gl)
    c = cut.people[0]
    assert c.box == (x0 + 10, y0 + 20, int(np.ceil((x0 + x1) / 2)), y1 - 5)
    assert c.mask.any() and np.array_equal(in_image(cut, 0), in_image(full, 0) & _box_mask(size, c.box))
    assert not cut.people[1].mask.any()


def _box_mask(size, box) -> np.ndarray:
    m = np.zeros((size[1], size[0]), bool)
    m[box[1]:box[3], box[0]:box[2]] = True
    return m


def test_grown_bodies_cover_the_bare_one_and_come_nearer_by_the_growth(model, gl):
    """`[dense] grow_cm` (render.grown): every bare-body pixel stays covered, the silhouette widens by about
    focal x growth / distance px all round, and where the surface faces the camera it comes that much nearer."""
    from stages.dense.render import grown

    size, focal, z, by = (480, 640), 800.0, 3.0, 0.01
    verts, faces = pose_people(model, [[0.0, 0.2, z]]), np.asarray(model.faces, np.int64)
    bare = render_dense(verts, faces, focal, size, raster=gl)
    wide = render_dense(grown(verts, faces, by), faces, focal, size, raster=gl)
    m0, m1 = in_image(bare, 0), in_image(wide, 0)
    assert (m1[m0]).mean() > 0.999
    rows = np.flatnonzero(m0.any(1))
    mid = rows[len(rows) // 2]  # a row through the torso: its outer edges move out by ~focal * by / z px each
    span = lambda m: np.ptp(np.flatnonzero(m[mid]))  # noqa: E731
    assert abs((span(m1) - span(m0)) / 2 - focal * by / z) < 1.0, (span(m0), span(m1))
    both = m0 & m1
    facing = np.abs(in_image(bare, 0, "normal")[..., 2]) > 0.95
    nearer = (in_image(bare, 0, "depth") - in_image(wide, 0, "depth"))[both & facing]
    assert len(nearer) > 1000 and abs(np.median(nearer) - by) < 0.001, np.median(nearer)
    np.testing.assert_array_equal(grown(verts, faces, 0.0), verts)


def test_a_grown_body_drawn_with_its_unmoved_normals(model, gl):
    """grown_with_normals hands render_dense the normals it grew along (one vertex_normals a frame, not two):
    the render is the same pixels, triangles and depths, and its normals those of the grown mesh itself (a
    surface moved along its normals keeps them): median 0.2 degrees apart, 90% within 1; in creases and between
    the fingers (~1.5% of pixels) 1 cm folds the grown mesh over and its own normals turn, the unmoved ones not."""
    from stages.dense.render import grown, grown_with_normals

    size, focal, by = (480, 640), 800.0, 0.01
    verts, faces = pose_people(model, [[-0.3, 0.2, 3.0], [0.3, 0.2, 4.0]]), np.asarray(model.faces, np.int64)
    moved, normals = grown_with_normals(verts, faces, by)
    np.testing.assert_array_equal(moved, grown(verts, faces, by))
    own = render_dense(moved, faces, focal, size, raster=gl)
    given = render_dense(moved, faces, focal, size, raster=gl, normals=normals)
    for a, b in zip(own.people, given.people):
        assert a.box == b.box and a.mask.sum() > 1000
        for name in ("mask", "face", "depth"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        cos = (a.normal * b.normal).sum(-1)[a.mask]
        deg = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        assert np.median(deg) < 0.5 and np.quantile(deg, 0.9) < 1.5, np.quantile(deg, [0.5, 0.9])
