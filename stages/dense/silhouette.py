"""A frame's dense render cut to its people's silhouettes (segment.py): the clothes and hair a naked body misses,
less what the body spills, with the body's surface coordinates carried out to them.

DensePose labels every pixel of a person, clothes included, with the place on the body surface beneath it;
a render of the fitted body only labels the bare body. Per pixel here: where a person's body is seen (the
render's one depth test) and a silhouette holds the pixel (its own, or only those of people behind it: a
person is there, and the nearest body there is this one), it is that person's, unless a nearer person's
silhouette holds it within `clothes` of that nearer person's seen body (CLOTHES: clothes and hair over the
body behind). Every other pixel a silhouette holds within `reach` of its person's seen body (clothes, hair, a
limb the fit put elsewhere) goes to the nearest such person, by the depth of its body at its nearest seen
pixel, so a coat over a body whose own silhouette does not hold it hides that body. A body pixel no silhouette
holds is cut away. A pixel taken by a person gets part, U, V, depth, normal and triangle from that person's
nearest seen pixel (its own, where the body is seen there). A person whose silhouette misses most of its
seen body is segmenting someone else (a crowded crop centred on a neighbour): its render is kept as it is.

Measured (benchmarks/dense_accuracy.py, docs/bodies.md): the seen-and-held rule against letting depth decide
every pixel (a front person's coat over any body behind it): crowd_synth p10 mask IoU 0.701 vs 0.696, front
share 0.830 vs 0.865; p20 0.356 vs 0.353, 0.853 vs 0.872; COCO photos 0.782 vs 0.736, and on bodies fitted to
the ground truth's keypoints p20 0.604 vs 0.552: in a crowded crop a silhouette leaks onto its neighbours, and
depth alone then hands a front person the pixels of the people behind it. Clothes' reach near the nearer body
(0.03, against 0: the seen body always its person's), on the fits with the cold-start bound (fit_init.py):
p10 front share 0.884 -> 0.915 (IoU 0.709 both), p05 0.955 -> 0.976, p20 0.854 -> 0.872, held-out seeds
0.809 / 0.768 -> 0.815 / 0.801 (IoU -0.001), COCO photos IoU 0.780 -> 0.769 (single-photo fits: the least
sure depth order), OCHuman 0.569 -> 0.566. On the fits before that bound it helped the shared clips as much
but not the held-out seeds (0.786 / 0.761 -> 0.781 / 0.784): the rule is as good as the depth order it trusts.
A seen body held by the silhouettes of people behind it where its own misses it (the crop of a person behind
segments the one in front as well; the front one's own crop missed a limb), against cutting it away and
letting the person behind take it, on seven held-out clips (benchmarks/results/dense_held_out.csv): front
share 0.864 -> 0.876 (every clip up), IoU 0.609 -> 0.607; COCO / OCHuman photos 0.769 / 0.566 -> 0.769 / 0.569.
Counting nearer people's silhouettes there too did as well on the mean (0.873) but took a coat's pixels from
the nearer person (two clips down 0.006 and 0.014). Its cost: refine 28 -> 33 ms of CPU a frame of 9 people
(p10, 10 alternating rounds), against ~300 ms for the whole stage on such a frame.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from stages.dense.raster import Box
from stages.dense.render import DenseCrop, DenseFrame, copy_pixels, empty_crop
from stages.dense.segment import PersonSegmenter, Silhouette

# How far clothes and hair reach out of the body, as a share of the person's projected height: a coat or
# a skirt stands ~10 cm off a 1.7 m body. Silhouette pixels further out belong to someone or something else.
REACH = 0.1
# Clothes and hair lie within ~5 cm of the body (3% of a 1.7 m person's height): that close to a person's seen
# body its silhouette is its clothes, and hides a farther body even where that body's own silhouette holds the
# pixel (a crowded crop's leak reaches further; docstring).
CLOTHES = 0.03
# A silhouette holding less than this share of its person's rendered pixels is someone else's (docstring).
MIN_AGREEMENT = 0.5


def cut_to_silhouettes(frame: DenseFrame, segmenter: PersonSegmenter, image_rgb: np.ndarray, scale: float = 1.0,
                       reach: float = REACH) -> DenseFrame:
    """The frame refined (below) by the silhouettes segmenter finds in image_rgb (the frame's pixels, `scale`
    video pixels per image pixel: segment.PersonSegmenter) around each person's crop box, which render_dense
    made the person's projected extent."""
    boxes = np.array([c.box for c in frame.people], np.float64).reshape(-1, 4)
    return refine(frame, segmenter(image_rgb, boxes, scale), reach)


def _paste(crop: DenseCrop, window: Box) -> tuple[np.ndarray, tuple[slice, slice], tuple[slice, slice]]:
    """(bool[h, w] the crop's mask placed into window, the window's slices it covers, the crop's slices)."""
    wx0, wy0, wx1, wy1 = window
    x0, y0, x1, y1 = crop.box
    out = np.zeros((wy1 - wy0, wx1 - wx0), bool)
    cx0, cy0, cx1, cy1 = max(x0, wx0), max(y0, wy0), min(x1, wx1), min(y1, wy1)
    if cx1 <= cx0 or cy1 <= cy0:
        return out, (slice(0, 0), slice(0, 0)), (slice(0, 0), slice(0, 0))
    into = (slice(cy0 - wy0, cy1 - wy0), slice(cx0 - wx0, cx1 - wx0))
    take = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
    out[into] = crop.mask[take]
    return out, into, take


def refine(frame: DenseFrame, silhouettes: list[Silhouette], reach: float = REACH, clothes: float = CLOTHES
           ) -> DenseFrame:
    """The frame's crops cut to the silhouettes (module docstring); silhouettes[i] is people[i]'s. Crops
    come back in the same order, each boxed to its new pixels (its old box when it has none)."""
    people = frame.people
    if len(silhouettes) != len(people):
        raise ValueError(f"{len(silhouettes)} silhouettes for {len(people)} people")
    w, h = frame.image_size
    key = np.full((h, w), np.inf, np.float32)  # the taker's depth (m): its body's, seen or at its nearest seen pixel
    owner = np.full((h, w), -1, np.int32)
    close = np.zeros((h, w), bool)  # the taker's claim is its seen body or within clothes' reach of it
    seen = np.zeros((h, w), bool)  # some person's body is seen there and a silhouette holds it
    source = np.zeros((2, h, w), np.int32)  # the owner's rendered pixel (row, col) whose labels a pixel takes
    windows: list[Box | None] = [None] * len(people)  # where each person may take pixels
    # The depth of the nearest person whose silhouette holds each pixel (a person's median seen depth; inf: none)
    depths = [float(np.median(c.depth[c.mask])) if c.mask.any() else np.inf for c in people]
    holder = np.full((h, w), np.inf, np.float32)
    for d, sil in zip(depths, silhouettes):
        part = holder[sil.box[1]:sil.box[3], sil.box[0]:sil.box[2]]
        np.minimum(part, np.where(sil.mask, np.float32(d), np.float32(np.inf)), out=part)
    for i, (crop, sil) in enumerate(zip(people, silhouettes)):
        if not crop.mask.any():
            continue
        window = windows[i] = (min(crop.box[0], sil.box[0]), min(crop.box[1], sil.box[1]),
                               max(crop.box[2], sil.box[2]), max(crop.box[3], sil.box[3]))
        body, into, take = _paste(crop, window)
        held = np.zeros_like(body)
        held[sil.box[1] - window[1]:sil.box[3] - window[1], sil.box[0] - window[0]:sil.box[2] - window[0]] = sil.mask
        tall = crop.box[3] - crop.box[1]
        if (held & body).sum() < MIN_AGREEMENT * body.sum():
            claim, near = body, body
            rows, cols = np.indices(body.shape)
        else:
            far, (rows, cols) = ndimage.distance_transform_edt(~body, return_indices=True)
            claim, near = held & (far <= reach * tall), held & (far <= clothes * tall)
        z = np.zeros(body.shape, np.float32)
        z[into] = crop.depth[take]
        z = z[rows, cols]  # its body's depth where seen, else at its nearest seen pixel
        sl = (slice(window[1], window[3]), slice(window[0], window[2]))
        # Its seen body is this person's where its own silhouette holds it or only people behind it hold it
        # (their crops see a person there; nearer people's silhouettes there are their clothes), unless a
        # nearer person's clothes lie over it (close); elsewhere, a pixel another's seen body holds goes to it
        # only from close by.
        mine = body & claim
        ys, xs = np.nonzero(body & ~claim)  # its seen body its own silhouette does not hold (a few pixels)
        nearest = holder[sl][ys, xs]
        keep = np.isfinite(nearest) & (nearest > depths[i])
        mine[ys[keep], xs[keep]] = True
        beaten = close[sl] & (key[sl] < z)
        take_it = np.where(mine, ~beaten, claim & (z < key[sl]) & (near | ~seen[sl]))
        key[sl][take_it] = z[take_it]
        owner[sl][take_it] = i
        close[sl][take_it] = near[take_it]
        seen[sl] |= mine
        source[0][sl][take_it] = rows[take_it] + window[1]
        source[1][sl][take_it] = cols[take_it] + window[0]
    return DenseFrame(frame.image_size, [_moved(c, i, owner, source, win) for i, (c, win) in
                                         enumerate(zip(people, windows))])


def _moved(crop: DenseCrop, i: int, owner: np.ndarray, source: np.ndarray, window: Box | None) -> DenseCrop:
    """crop's labels on the pixels owner int[H, W] gives person i (all inside its window), each from its source
    pixel (frame rows, cols)."""
    if window is not None:
        ys, xs = np.nonzero(owner[window[1]:window[3], window[0]:window[2]] == i)
        ys, xs = ys + window[1], xs + window[0]
    if window is None or not len(ys):
        return DenseCrop(crop.box, np.zeros_like(crop.mask), np.full_like(crop.face, -1), np.zeros_like(crop.part),
                         np.zeros_like(crop.u), np.zeros_like(crop.v), np.zeros_like(crop.depth),
                         np.zeros_like(crop.normal))
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    out = empty_crop(box)
    copy_pixels(out, ys - box[1], xs - box[0], crop, source[0, ys, xs] - crop.box[1],  # its source, in the old crop
                source[1, ys, xs] - crop.box[0])
    return out
