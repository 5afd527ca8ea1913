"""Who is in front where two people's bodies overlap: the fitted depths, unless the pixels clearly say otherwise.

One view fixes a body's depth only through its size in the image and, where the floor is known, its feet, so
two people at about the same depth (feet a few centimetres apart, one of them partly hidden) are often fitted
the wrong way round, and the one depth test then gives the person behind the pixels of the one in front. The
image shows who is there: where two bodies overlap, its pixels are the front person's, whose colours the rest
of that person's pixels show too. For each pair of people whose bodies overlap, the overlap's pixels are scored
under each person's colour histogram (RGB, BINS levels a channel), learnt from the pixels the person holds on
its own body where no other body lies (clothes beyond the body, cut from a silhouette, may hold background).
Where the median log-likelihood ratio is beyond MARGIN one way, that person takes the pixels of the overlap
the other one holds, labelled from its own surface there (render_dense of that person alone). Elsewhere
(alike clothes, too few pixels to tell) the depth test stands.

Measured (benchmarks/dense_accuracy.py, docs/bodies.md): front share on ten held-out crowd clips 0.897 -> 0.909
(seeds 11-17, pooled) and 0.731 -> 0.886 (seeds 18-20: a pair pasted at one depth, fitted the wrong way in
every frame), crowd_synth p20 0.895 -> 0.906, IoU -0.002 to +0.016 a clip; ~7 ms of CPU a person-frame at 10
people, most of it each overlapping body drawn alone once (the raster's cost is per body drawn).
"""
from __future__ import annotations

import numpy as np

from stages.dense.parts import SurfaceLabels
from stages.dense.raster import Box, GlRaster, RayRaster
from stages.dense.render import (DenseCrop, DenseFrame, copy_pixels, empty_crop, owner_map, projected_boxes,
                                 render_dense)

BINS = 8  # levels per RGB channel: 512 colours, coarse enough for lighting to vary across a person
# Median log-likelihood ratio (nats a pixel) beyond which the colours decide: the overlap's median pixel is
# e = 2.7x likelier under one person's colours than the other's. Chosen on held-out clips (seeds 11-14) between
# 0.5 and 1 (docs/bodies.md): at 0.5 a pair of bodies fitted to a muddle of two people swapped a right order.
MARGIN = 1.0
MIN_OVERLAP = 50  # pixels both bodies cover: fewer say too little
MIN_OWN = 100  # pixels a person holds alone: fewer make no colour histogram


def colour_codes(image_rgb: np.ndarray) -> np.ndarray:
    """int32[H, W] each pixel's colour bin (0 .. BINS^3 - 1) of an RGB uint8[H, W, 3] image."""
    q = (np.asarray(image_rgb, np.uint8) // (256 // BINS)).astype(np.int32)
    return (q[..., 0] * BINS + q[..., 1]) * BINS + q[..., 2]


def log_histogram(codes: np.ndarray) -> np.ndarray:
    """float64[BINS^3] log of the colour frequencies of codes int[N], one added to every bin (no colour is
    impossible: a person's histogram comes from a few thousand pixels)."""
    h = np.bincount(codes.ravel(), minlength=BINS ** 3).astype(np.float64) + 1.0
    return np.log(h / h.sum())


def _intersection(a: np.ndarray, b: np.ndarray) -> Box | None:
    """The boxes' common pixels, None where they hold fewer than MIN_OVERLAP (the bodies' overlap lies in it)."""
    box = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    big = box[2] > box[0] and box[3] > box[1] and (box[2] - box[0]) * (box[3] - box[1]) >= MIN_OVERLAP
    return tuple(int(c) for c in box) if big else None


def _within(region: Box, mask: np.ndarray, box: Box) -> np.ndarray:
    """mask bool[region] over box, a box inside region."""
    return mask[box[1] - region[1]:box[3] - region[1], box[0] - region[0]:box[2] - region[0]]


def order_by_colour(frame: DenseFrame, drawn: DenseFrame, vertices: np.ndarray, faces: np.ndarray, focal: float,
                    image_rgb: np.ndarray, raster: GlRaster | RayRaster, labels: SurfaceLabels | None = None,
                    normals: np.ndarray | None = None, scale: float = 1.0, margin: float = MARGIN) -> DenseFrame:
    """The frame (render_dense's, or refined to silhouettes) with each overlap of two bodies given to the person
    its colours show (module docstring). drawn: render_dense's frame of the bodies alone (frame itself when not
    refined), drawn from vertices float[P, V, 3] and normals (None: computed); image_rgb uint8[h, w, 3] the
    frame's pixels, `scale` video pixels per image pixel. People come back in the same order; a crop that gains
    pixels grows its box to hold them."""
    w, h = size = frame.image_size
    extent = projected_boxes(vertices, focal, size)
    pairs = {(i, j): box for i in range(len(extent)) for j in range(i + 1, len(extent))
             if (box := _intersection(extent[i], extent[j])) is not None}
    # Each body alone over the bounding box of its overlaps: where it lies under the others (the triangles only;
    # labels are shaded where pixels change hands). One draw a person.
    alone: dict[int, tuple[Box, np.ndarray]] = {}
    for p in sorted({k for pair in pairs for k in pair}):
        mine = np.array([box for pair, box in pairs.items() if p in pair])
        region = tuple(int(v) for v in (*mine[:, :2].min(0), *mine[:, 2:].max(0)))
        alone[p] = region, raster.nearest_triangles(vertices[p:p + 1], faces, focal, size, region) >= 0
    both: dict[tuple[int, int], tuple[Box, np.ndarray]] = {}  # (i, j) -> box, bool[box] pixels both bodies cover
    shared = np.zeros((h, w), bool)  # ...all of them: no person's colours are learnt there
    for (i, j), box in pairs.items():
        o = _within(*alone[i], box) & _within(*alone[j], box)
        if o.sum() >= MIN_OVERLAP:
            both[(i, j)] = box, o
            shared[box[1]:box[3], box[0]:box[2]] |= o
    if not both:
        return frame
    owner, body = owner_map(frame), owner_map(drawn)
    codes = colour_codes(image_rgb)
    if codes.shape != (h, w):  # a frame decoded smaller: each video pixel looks up its image pixel
        rows = np.minimum((np.arange(h) / scale).astype(np.int64), codes.shape[0] - 1)
        cols = np.minimum((np.arange(w) / scale).astype(np.int64), codes.shape[1] - 1)
        codes = codes[rows][:, cols]
    colours = {}
    for p in sorted({k for pair in both for k in pair}):
        x0, y0, x1, y1 = frame.people[p].box  # every pixel p holds lies in its crop
        own = (owner[y0:y1, x0:x1] == p) & (body[y0:y1, x0:x1] == p) & ~shared[y0:y1, x0:x1]
        colours[p] = log_histogram(codes[y0:y1, x0:x1][own]) if own.sum() >= MIN_OWN else None
    moved = np.zeros((h, w), bool)  # pixels that changed hands
    touched = set()  # people who gained or lost some
    for (i, j), ((x0, y0, x1, y1), o) in both.items():
        if colours[i] is None or colours[j] is None:
            continue
        llr = float(np.median(colours[i][codes[y0:y1, x0:x1][o]] - colours[j][codes[y0:y1, x0:x1][o]]))
        if abs(llr) <= margin:
            continue
        win, lose = (i, j) if llr > 0 else (j, i)
        take = o & (owner[y0:y1, x0:x1] == lose)
        if take.any():
            owner[y0:y1, x0:x1][take] = win
            moved[y0:y1, x0:x1] |= take
            touched |= {win, lose}
    if not touched:
        return frame
    ys, xs = np.nonzero(moved)
    now = owner[ys, xs]
    return DenseFrame(size, [_redrawn(c, p, owner, ys[now == p], xs[now == p], vertices, faces, focal, raster,
                                      labels, normals) if p in touched else c for p, c in enumerate(frame.people)])


def _redrawn(crop: DenseCrop, p: int, owner: np.ndarray, gy: np.ndarray, gx: np.ndarray, vertices: np.ndarray,
             faces: np.ndarray, focal: float, raster: GlRaster | RayRaster, labels: SurfaceLabels | None,
             normals: np.ndarray | None) -> DenseCrop:
    """Person p's crop after the overlaps changed hands (owner int32[H, W]): the pixels it still holds keep
    their labels; those it gained (rows gy, columns gx of the frame) take its own surface's there (render_dense
    of p alone over them); boxed to hold both."""
    x0, y0, x1, y1 = crop.box
    ky, kx = np.nonzero(crop.mask & (owner[y0:y1, x0:x1] == p))
    if not len(gy) and len(ky) == crop.mask.sum():
        return crop
    sources = [(crop, ky + y0, kx + x0)]
    box = [x0, y0, x1, y1]
    if len(gy):
        region = (int(gx.min()), int(gy.min()), int(gx.max()) + 1, int(gy.max()) + 1)
        alone = render_dense(vertices[p:p + 1], faces, focal, owner.shape[::-1], [region], labels=labels,
                             raster=raster, normals=None if normals is None else normals[p:p + 1]).people[0]
        sources.append((alone, gy, gx))
        box = [min(box[0], region[0]), min(box[1], region[1]), max(box[2], region[2]), max(box[3], region[3])]
    out = empty_crop(tuple(box))
    for source, ys, xs in sources:
        copy_pixels(out, ys - box[1], xs - box[0], source, ys - source.box[1], xs - source.box[0])
    return out
