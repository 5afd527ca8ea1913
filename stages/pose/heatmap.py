"""Heatmap math: target rendering, peak finding, sub-pixel refinement, soft-argmax.

Pure functions. Coordinates are (x, y) in heatmap pixels with pixel centres at integers
(pixel (i, j) covers [j - 0.5, j + 0.5) x [i - 0.5, i + 0.5)), the convention cv2.resize and the
network's stride mapping (`map_to_image`) use.
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where it runs, so actors without a network skip it
    import torch


def render_gaussian(height: int, width: int, centers: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian targets, one channel per centre.

    centers: float[K, 2] (x, y); a row with a nan coordinate renders an all-zero channel.
    Returns float32[K, height, width] with value exp(-d^2 / (2 sigma^2)), peak 1 at the centre.
    """
    centers = np.asarray(centers, np.float64).reshape(-1, 2)
    xs = np.arange(width, dtype=np.float64)
    ys = np.arange(height, dtype=np.float64)
    # Separable: exp(-(dx^2 + dy^2)) = exp(-dx^2) * exp(-dy^2), so K outer products, no H*W*K exp.
    gx = np.exp(-((xs[None, :] - centers[:, :1]) ** 2) / (2 * sigma**2))
    gy = np.exp(-((ys[None, :] - centers[:, 1:]) ** 2) / (2 * sigma**2))
    out = gy[:, :, None] * gx[:, None, :]
    out[np.isnan(centers).any(axis=1)] = 0.0
    return out.astype(np.float32)


def _vertex(left: np.ndarray, mid: np.ndarray, right: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Vertex offset of the parabola through (-1, left), (0, mid), (1, right), in [-0.5, 0.5]."""
    left, mid, right = (a.astype(np.float64) for a in (left, mid, right))
    curvature = left - 2.0 * mid + right  # < 0 at a strict maximum; 0 on a flat top
    ok = inside & (curvature < 0)
    delta = np.where(ok, 0.5 * (left - right) / np.where(ok, curvature, -1.0), 0.0)
    return np.clip(delta, -0.5, 0.5)


def parabola_offsets(heatmaps: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                     channels: np.ndarray | None = None) -> np.ndarray:
    """Sub-pixel offset of integer maxima by a 1-D parabola fit per axis.

    heatmaps: float[H, W], or float[K, H, W] with `channels`: int[n] choosing the map of each
    maximum; rows, cols: int[n] positions of the maxima.
    Returns float[n, 2] (dx, dy) in [-0.5, 0.5]; 0 at the border or on a flat top.
    """
    maps = heatmaps[None] if channels is None else heatmaps
    ch = np.zeros(len(rows), np.int64) if channels is None else np.asarray(channels, np.int64)
    _, h, w = maps.shape
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    mid = maps[ch, rows, cols]
    dx = _vertex(maps[ch, rows, np.maximum(cols - 1, 0)], mid, maps[ch, rows, np.minimum(cols + 1, w - 1)],
                 (cols > 0) & (cols < w - 1))
    dy = _vertex(maps[ch, np.maximum(rows - 1, 0), cols], mid, maps[ch, np.minimum(rows + 1, h - 1), cols],
                 (rows > 0) & (rows < h - 1))
    return np.stack([dx, dy], axis=1)


# Neighbours a peak must not be below, nearest first: most candidates (the slopes of a blob) fail on
# one of the first four, so later comparisons run on few.
_NEIGHBOURS = ((0, -1), (0, 1), (-1, 0), (1, 0), (-1, -1), (-1, 1), (1, -1), (1, 1))


def _survivors(flat: np.ndarray, idx: np.ndarray, neighbour) -> np.ndarray:
    """Positions into idx of the pixels flat[idx] that no neighbour beats; neighbour(sel, dy, dx):
    flat indices of the (dy, dx) neighbours of idx[sel]. A candidate is dropped as soon as it loses,
    so later neighbours are read for few."""
    alive = np.arange(len(idx))
    for dy, dx in _NEIGHBOURS:
        alive = alive[flat[neighbour(alive, dy, dx)] <= flat[idx[alive]]]
    return alive


def find_peaks_stack(heatmaps: np.ndarray, threshold: float,
                     origin: tuple[int, int] = (0, 0)) -> list[tuple[np.ndarray, np.ndarray]]:
    """Local maxima of every channel of a channels-last stack, refined to sub-pixel.

    heatmaps: float32[H, W, K]. A pixel is a peak when it exceeds `threshold` and no pixel of its 3x3
    neighbourhood in its channel is higher (local-maximum suppression; ties are all kept; the
    border has no outside neighbours). Returns per channel (xy float32[n, 2], score float32[n])
    ordered by descending score; score is the map value at the integer maximum. origin: (x, y) of
    the stack's first pixel in a larger map it was cut from, added to xy.
    Only pixels above the threshold are compared to their neighbours (gathers): a dilation and a
    full-size mask scan every pixel of every channel, which cost more than the rest of grouping.
    """
    heatmaps = np.ascontiguousarray(heatmaps, np.float32)
    h, w, k = heatmaps.shape
    flat = heatmaps.reshape(-1)
    idx = np.flatnonzero(flat > threshold)
    rows, rest = np.divmod(idx, w * k)
    cols = rest // k
    inner = (rows > 0) & (rows < h - 1) & (cols > 0) & (cols < w - 1)
    # Inside, a neighbour is a fixed flat offset. The few candidates on the border have their
    # neighbours clamped to themselves (never beating themselves), as if the outside were -inf.
    i_in, i_b, r_b, c_b = idx[inner], idx[~inner], rows[~inner], cols[~inner]

    def inside(sel, dy, dx):
        return i_in[sel] + (dy * w + dx) * k

    def on_border(sel, dy, dx):
        r, c = r_b[sel], c_b[sel]
        return i_b[sel] + ((np.clip(r + dy, 0, h - 1) - r) * w + np.clip(c + dx, 0, w - 1) - c) * k

    # Sorted back to raster order, so peaks of equal score keep the order a full scan gives them.
    idx = np.sort(np.concatenate([i_in[_survivors(flat, i_in, inside)], i_b[_survivors(flat, i_b, on_border)]]))
    rows, rest = np.divmod(idx, w * k)
    cols, chans = np.divmod(rest, k)
    value = flat[idx]
    offsets = parabola_offsets(heatmaps.transpose(2, 0, 1), rows, cols, chans)
    xy = (np.stack([cols + origin[0], rows + origin[1]], axis=1) + offsets).astype(np.float32)
    order = np.lexsort((-value, chans))  # by channel, then best first
    bounds = np.searchsorted(chans[order], np.arange(k + 1))
    return [(xy[order[a:b]], value[order[a:b]]) for a, b in itertools.pairwise(bounds)]


def find_peaks(heatmap: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """`find_peaks_stack` of one float[H, W] map."""
    return find_peaks_stack(heatmap[:, :, None], threshold)[0]


def argmax_subpixel(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Single-person decoding: argmax of each channel plus parabola refinement.

    heatmaps: float[K, H, W]. Returns (xy float32[K, 2], score float32[K]).
    """
    k, _, w = heatmaps.shape
    rows, cols = np.divmod(heatmaps.reshape(k, -1).argmax(axis=1), w)
    channels = np.arange(k)
    xy = np.stack([cols, rows], axis=1) + parabola_offsets(heatmaps, rows, cols, channels)
    return xy.astype(np.float32), heatmaps[channels, rows, cols].astype(np.float32)


def soft_argmax(heatmaps: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Differentiable expected location under softmax(beta * heatmap).

    heatmaps: float[..., H, W]. Returns float[..., 2] (x, y) in pixel coordinates.
    """
    *lead, h, w = heatmaps.shape
    import torch  # lazily: the grouping actors use this module without torch

    prob = torch.softmax(beta * heatmaps.reshape(*lead, h * w), dim=-1).reshape(*lead, h, w)
    xs = torch.arange(w, dtype=prob.dtype, device=prob.device)
    ys = torch.arange(h, dtype=prob.dtype, device=prob.device)
    x = (prob.sum(dim=-2) * xs).sum(dim=-1)
    y = (prob.sum(dim=-1) * ys).sum(dim=-1)
    return torch.stack([x, y], dim=-1)


def map_to_image(xy: np.ndarray, map_size: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """Map pixel-centre coordinates of a (w, h) map onto a (W, H) image it was computed from.

    Both grids cover the same extent, so x_img = (x_map + 0.5) * W / w - 0.5 (same for y).
    """
    (mw, mh), (iw, ih) = map_size, image_size
    scale = np.array([iw / mw, ih / mh], np.float64)
    return ((np.asarray(xy, np.float64) + 0.5) * scale - 0.5).astype(np.float32)
