"""One frame's people rendered together into DensePose-style per-person crops: mask, part, U, V, depth, normal.

All people go through one depth test (raster.py), so a nearer person hides a farther one and every
pixel belongs to at most one person. For each covered pixel the raster gives only the triangle; the
rest is computed here from that triangle and the pixel's ray, in float64:
- the ray-plane intersection (Moeller-Trumbore) gives the hit's barycentrics and its distance; the
  ray's z component is 1, so that distance is the depth z in metres, exact for a planar triangle;
- U, V: the barycentric mix of the triangle's corner UVs (parts.SurfaceLabels), within [0, 1];
- part: the triangle's DensePose part (1..24); 0 outside the mask, and everywhere without labels;
- normal: the barycentric mix of area-weighted vertex normals of the posed mesh (camera frame, unit),
  the smooth normal a shaded render would use; on a flat surface it is the plane's normal.
The camera is the fit's pinhole (raster.pixel_rays): principal point at the image centre, focal in pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from stages.dense.parts import SurfaceLabels
from stages.dense.raster import Box, GlRaster, RayRaster, make_raster


@dataclass(frozen=True)
class DenseCrop:
    """One person inside `box` (x0, y0, x1, y1 image pixels, x1 and y1 exclusive), arrays [y1-y0, x1-x0]:
    mask bool (the person is the nearest surface there; cut to its silhouette, silhouette.refine: where the
    person is seen, its clothes too, which take the labels of their nearest body pixel); face int32 the mesh
    triangle seen (-1 off the mask: what a consumer needs to look up anything else per triangle); part uint8
    (1..24 on the mask); u, v float32 texture coordinates in [0, 1]; depth float32 metres (z, camera frame);
    normal float32[..., 3] unit, camera frame (x right, y down, z forward). All but face zero off the mask."""

    box: Box
    mask: np.ndarray
    face: np.ndarray
    part: np.ndarray
    u: np.ndarray
    v: np.ndarray
    depth: np.ndarray
    normal: np.ndarray


@dataclass(frozen=True)
class DenseFrame:
    """image_size: (width, height); people: one DenseCrop per person, in the order of the vertices."""

    image_size: tuple[int, int]
    people: list[DenseCrop]


def projected_boxes(vertices: np.ndarray, focal: float, image_size: tuple[int, int]) -> np.ndarray:
    """int64[P, 4] the pixels each person's vertices in front of the camera fall on, clipped to the
    image (x1, y1 exclusive); (0, 0, 0, 0) for a person wholly behind the camera."""
    v = np.asarray(vertices, np.float32)
    w, h = image_size
    front = v[..., 2] > 1e-6
    z = np.where(front, v[..., 2], 1.0)
    u = np.where(front, focal * v[..., 0] / z + w / 2, np.nan)
    r = np.where(front, focal * v[..., 1] / z + h / 2, np.nan)
    out = np.zeros((len(v), 4), np.int64)
    seen = front.any(1)
    if seen.any():
        # A point at u lies in pixel floor(u); the box runs from the lowest pixel to the highest.
        box = np.stack([np.nanmin(u[seen], 1), np.nanmin(r[seen], 1), np.nanmax(u[seen], 1) + 1,
                        np.nanmax(r[seen], 1) + 1], 1)
        out[seen] = np.clip(np.floor(box), 0, [w, h, w, h]).astype(np.int64)
    return out


def owner_map(frame: DenseFrame) -> np.ndarray:
    """int32[H, W]: index (in frame.people) of the person seen at each pixel, -1 where nobody is."""
    w, h = frame.image_size
    out = np.full((h, w), -1, np.int32)
    for i, c in enumerate(frame.people):
        x0, y0, x1, y1 = c.box
        out[y0:y1, x0:x1][c.mask] = i  # the render gives a pixel to one person at most
    return out


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a x b for coordinate-major arrays float[3, ...]. Everything per pixel here is coordinate-major:
    each product then runs over one contiguous row, ~3x faster than np.cross on [N, 3]."""
    return np.stack([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """float32[P, V, 3] unit vertex normals: the sum of the adjacent triangles' area-weighted normals.

    Computed coordinate-major in float32 (plenty for a direction), the result a view of a [3, P, V]
    array; the sum over adjacent triangles is one sparse vertex-by-triangle product for all people at
    once (np.add.at is ~10x slower).
    """
    x = np.ascontiguousarray(np.asarray(vertices, np.float32).transpose(2, 0, 1))  # [3, P, V]
    p, nv = x.shape[1:]
    nf = len(faces)
    a = x[:, :, faces[:, 0]]
    fn = _cross(x[:, :, faces[:, 1]] - a, x[:, :, faces[:, 2]] - a)  # [3, P, F], length = 2 x area
    incidence = scipy.sparse.csr_matrix((np.ones(3 * nf, np.float32), (faces.ravel(), np.repeat(np.arange(nf), 3))),
                                        shape=(nv, nf))
    vn = (incidence @ fn.reshape(3 * p, nf).T).T.reshape(3, p, nv)
    vn = vn / np.maximum(np.sqrt((vn * vn).sum(0)), 1e-20)
    return vn.transpose(1, 2, 0)


def grown(vertices: np.ndarray, faces: np.ndarray, by_m: float) -> np.ndarray:
    """float32[P, V, 3]: every vertex moved by_m metres out along its unit normal (vertex_normals).

    A body model is a naked body; the person in the video wears clothes and hair, so the bare surface
    misses a rim of the person's pixels and, where two people overlap, hands that rim to the one behind.
    by_m = 0 returns the vertices as they are."""
    return grown_with_normals(vertices, faces, by_m)[0] if by_m else np.asarray(vertices, np.float32)


def grown_with_normals(vertices: np.ndarray, faces: np.ndarray, by_m: float) -> tuple[np.ndarray, np.ndarray]:
    """(grown(vertices, faces, by_m), their unit vertex normals float32[P, V, 3]) from one vertex_normals:
    a surface moved along its normals has the same normals (the offset surface's), so render_dense can take
    them as they are (at 10 people the normals are ~15 ms of a frame's ~100 ms render, benchmarks/dense_speed.py)."""
    v = np.asarray(vertices, np.float32)
    n = vertex_normals(v, faces)
    return (v + np.float32(by_m) * n if by_m else v), n


def ray_triangle(d: np.ndarray, corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rays from the camera centre along d float[3, N] against the planes of triangles float[3, 3, N]
    (coordinate, corner, ray).

    Returns (barycentrics float64[3, N], t float64[N]) with hit = t d = sum_i b_i corner_i. The raster
    may hand a pixel a triangle whose edge passes a hair from the pixel centre, so the barycentrics
    are clipped into the triangle and renormalised (t stays the plane's: the surface's depth there).
    """
    d = np.asarray(d, np.float64)
    c = np.asarray(corners, np.float64)
    a = c[:, 0]
    e1, e2 = c[:, 1] - a, c[:, 2] - a
    pv = _cross(d, e2)
    det = (e1 * pv).sum(0)
    flat = np.abs(det) < 1e-18  # the triangle seen edge-on: its centre stands in
    det = np.where(flat, 1.0, det)
    s = -a
    q = _cross(s, e1)
    bu = (s * pv).sum(0) / det
    bv = (d * q).sum(0) / det
    t = (e2 * q).sum(0) / det
    bary = np.stack([1 - bu - bv, bu, bv])
    bary[:, flat] = 1 / 3
    t = np.where(flat, c[2].mean(0) / d[2], t)
    bary = np.clip(bary, 0.0, 1.0)
    return bary / bary.sum(0), t


def _clip_boxes(boxes, count: int, image_size: tuple[int, int]) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(b) != count:
        raise ValueError(f"{len(b)} boxes for {count} people")
    w, h = image_size
    # Pixel bounds: a box edge at 10.4 still covers pixel 10; the far edge is exclusive.
    out = np.stack([np.floor(b[:, 0]), np.floor(b[:, 1]), np.ceil(b[:, 2]), np.ceil(b[:, 3])], 1)
    return np.clip(out, 0, [w, h, w, h]).astype(np.int64)


def empty_crop(box: Box) -> DenseCrop:
    """A crop of box (x0, y0, x1, y1) with no pixel of the person: mask False, face -1, the rest 0."""
    x0, y0, x1, y1 = box
    hw = (max(y1 - y0, 0), max(x1 - x0, 0))
    z = np.zeros(hw, np.float32)
    return DenseCrop(box=box, mask=np.zeros(hw, bool), face=np.full(hw, -1, np.int32), part=np.zeros(hw, np.uint8),
                     u=z, v=z.copy(),
                     depth=z.copy(), normal=np.zeros((*hw, 3), np.float32))


def copy_pixels(out: DenseCrop, rows: np.ndarray, cols: np.ndarray, source: DenseCrop, source_rows: np.ndarray,
                source_cols: np.ndarray) -> None:
    """Marks out's pixels (rows, cols: int[N] in out) as the person's, with the labels of source's pixels
    (source_rows, source_cols: int[N] in source)."""
    out.mask[rows, cols] = True
    for name in ("face", "part", "u", "v", "depth", "normal"):
        getattr(out, name)[rows, cols] = getattr(source, name)[source_rows, source_cols]


def render_dense(vertices: np.ndarray, faces: np.ndarray, focal: float, image_size: tuple[int, int],
                 boxes=None, *, labels: SurfaceLabels | None = None,
                 raster: GlRaster | RayRaster | None = None, normals: np.ndarray | None = None) -> DenseFrame:
    """Dense render of one frame's people (module docstring).

    vertices: float[P, V, 3] camera frame (bodies.frame_vertices); faces: int[F, 3]; focal: pixels;
    image_size: (width, height). boxes: float[P, 4] x0, y0, x1, y1 to crop each person to (e.g. its
    detection; a person's pixels outside its box are left out), None: each person's projected mesh.
    labels: parts and UVs of the faces (parts.surface_labels), None: part, u, v stay 0.
    raster: a GlRaster (or RayRaster) kept across frames; None: raster.make_raster() for this call only.
    normals: float[P, V, 3] the vertices' unit normals where the caller has them (grown_with_normals), None:
    computed here for the people seen.
    """
    v = np.asarray(vertices, np.float32)
    faces = np.asarray(faces, np.int64)
    size = (int(image_size[0]), int(image_size[1]))
    if v.ndim != 3 or v.shape[-1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"vertices must be [P, V, 3] and faces [F, 3], got {v.shape} and {faces.shape}")
    if labels is not None and len(labels.face_part) != len(faces):
        raise ValueError(f"labels cover {len(labels.face_part)} triangles, the mesh has {len(faces)}")
    box = projected_boxes(v, focal, size) if boxes is None else _clip_boxes(boxes, len(v), size)
    live = (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])
    crops = [empty_crop(tuple(int(c) for c in b)) for b in box]
    if not live.any():
        return DenseFrame(size, crops)

    # One raster over the union's bounding rectangle; only pixels inside some person's box are shaded.
    region = (int(box[live, 0].min()), int(box[live, 1].min()), int(box[live, 2].max()), int(box[live, 3].max()))
    made = raster is None
    raster = make_raster() if made else raster
    try:
        ids = raster.nearest_triangles(v, faces, focal, size, region)
    finally:
        if made:
            raster.release()

    rx0, ry0 = region[:2]
    rows, cols = np.nonzero(ids >= 0)
    g = ids[rows, cols]
    person, tri = g // len(faces), g % len(faces)
    ys, xs = rows + ry0, cols + rx0
    own = box[person]
    keep = (xs >= own[:, 0]) & (xs < own[:, 2]) & (ys >= own[:, 1]) & (ys < own[:, 3])
    person, tri, xs, ys = person[keep], tri[keep], xs[keep], ys[keep]

    w, h = size
    n = len(tri)
    d = np.stack([(xs + 0.5 - w / 2) / focal, (ys + 0.5 - h / 2) / focal, np.ones(n)])  # [3, N]
    nv = v.shape[1]
    corner_ids = faces[tri].T  # [3 corners, N]
    flat_v = np.ascontiguousarray(v.transpose(2, 0, 1)).reshape(3, -1)  # [3, P * V]
    bary, depth = ray_triangle(d, flat_v[:, person * nv + corner_ids])
    seen = np.unique(person)
    vn = vertex_normals(v[seen], faces) if normals is None else np.asarray(normals, np.float32)[seen]
    vn = vn.transpose(2, 0, 1).reshape(3, -1)  # [3, seen * V]: only people with a pixel
    slot = np.searchsorted(seen, person)
    normal = (vn[:, slot * nv + corner_ids] * bary).sum(1)  # [3, N]
    normal = (normal / np.maximum(np.sqrt((normal * normal).sum(0)), 1e-20)).T
    if labels is not None:
        uv = (labels.corner_uv[tri] * bary.T[:, :, None]).sum(1)  # [N, 2]
        part = labels.face_part[tri]
    else:
        uv, part = np.zeros((n, 2)), np.zeros(n, np.uint8)

    for p in seen:  # the crops' arrays are zeros so far: fill each person's pixels in
        sel = person == p
        crop = crops[p]
        r, c = ys[sel] - crop.box[1], xs[sel] - crop.box[0]
        crop.mask[r, c] = True
        crop.face[r, c] = tri[sel]
        crop.part[r, c] = part[sel]
        crop.u[r, c] = uv[sel, 0]
        crop.v[r, c] = uv[sel, 1]
        crop.depth[r, c] = depth[sel]
        crop.normal[r, c] = normal[sel]
    return DenseFrame(size, crops)
