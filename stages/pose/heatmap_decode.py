"""Top-down heatmap decoding: one keypoint per joint map, at sub-pixel precision.

A top-down pose network (PP-TinyPose 256x192: float32[B, 17, 64, 48], stride 4) draws each joint as
a blob whose peak lies between pixels, so the integer argmax alone throws away up to half a heatmap
pixel (2 input pixels). Each decoder starts at the argmax cell and refines it:

- argmax: the integer cell of the maximum; the baseline, error uniform in [-0.5, 0.5] px per axis.
- parabola: a 1-D parabola through the argmax and its two neighbours, per axis (heatmap.py's
  `parabola_offsets`); cheap, but a parabola is not a Gaussian, so a little bias is left.
- soft_argmax: the mean of the coordinates in a 7x7 window around the argmax, weighted by
  max(h, 0)^3, i.e. a softmax of 3 * log(h). The window keeps out other people's blobs and the
  background, which pull a global soft-argmax off the peak; the power narrows the blob (sigma 2 ->
  1.15) so the window cuts little of it (plain h-weights in a 5x5 window err by 0.22 px, being pulled
  to the window's centre), and unlike exp(beta * h) it does not depend on the peak height, which for
  this model is anywhere in 0.1-0.9 (not a probability).
- dark: DARK (Zhang et al., CVPR 2020) as PaddleDetection's HRNetPostProcess runs it: blur the map
  with a 3x3 Gaussian (cv2's ksize 3, sigma 0 kernel [1/4, 1/2, 1/4], zero border) rescaled to the
  original max, take L = log(max(h, 1e-10)), and step once by Newton, -Hessian^-1 gradient, from
  finite differences at the argmax. The log of a Gaussian is a quadratic, so one step lands on its
  centre: exact up to the blur. Kept at the argmax within 2 px of the border (no differences there),
  on a singular Hessian, or when the step leaves the 1 px around the cell (there the blob is not
  the quadratic the step assumes: a flat top, a saddle, a floored log).

Scores are the map's value at the argmax cell for every method (what PaddleDetection reports).
Coordinates: (x, y) in heatmap pixels, pixel centres at integers, x = column, y = row.

Measured on the synthetic test (tests/test_heatmap_decode.py: 200 sigma-2 Gaussians of peak 1 at
random sub-pixel centres on 64x48 maps), mean error in px, noise-free / with N(0, 0.05) noise
clipped at 0: argmax 0.377 / 0.506, parabola 0.012 / 0.261, soft_argmax 0.008 / 0.066,
dark 0.0003 / 0.102. With noise, the 3-point parabola suffers most (it reads 3 pixels per axis);
the 7x7 soft-argmax least. Per 1020 maps (60 people x 17 joints), one CPU core: argmax and
parabola ~0.6 ms, soft_argmax ~3 ms, dark ~3 ms (~40 ms if every map needs the whole-map blur).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stages.pose.heatmap import parabola_offsets

DECODERS = ("argmax", "parabola", "soft_argmax", "dark")

_SOFT_RADIUS = 3  # 7x7 window: +-1.5 sigma of a training target, +-12 input px at stride 4
_SOFT_POWER = 3.0  # best of 1-6 on the noisy synthetic maps (noise-free: higher is better)
_DARK_MAX_STEP = 1.0  # px per axis; a longer Newton step is a saddle or noise, not a peak


def _argmax_cells(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """maps: float[n, H, W] -> (rows, cols) int64[n] of each map's first maximum."""
    n, _, w = maps.shape
    return np.divmod(maps.reshape(n, -1).argmax(axis=1), w)


def _window(maps: np.ndarray, rows: np.ndarray, cols: np.ndarray, radius: int) -> np.ndarray:
    """float64[n, 2r+1, 2r+1] around each (row, col); pixels outside the map read 0."""
    n, h, w = maps.shape
    off = np.arange(-radius, radius + 1)
    r = rows[:, None, None] + off[None, :, None]
    c = cols[:, None, None] + off[None, None, :]
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    values = maps[np.arange(n)[:, None, None], np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)]
    return np.where(inside, values.astype(np.float64), 0.0)


def _argmax_xy(maps: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return np.stack([cols, rows], axis=1).astype(np.float64)


def _parabola_xy(maps: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return _argmax_xy(maps, rows, cols) + parabola_offsets(maps, rows, cols, np.arange(len(rows)))


def _soft_argmax_xy(maps: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    weight = np.maximum(_window(maps, rows, cols, _SOFT_RADIUS), 0.0) ** _SOFT_POWER
    total = weight.sum(axis=(1, 2))
    off = np.arange(-_SOFT_RADIUS, _SOFT_RADIUS + 1, dtype=np.float64)
    safe = np.where(total > 0, total, 1.0)  # an all-zero window (empty map) stays at the argmax
    dx = (weight.sum(axis=1) * off).sum(axis=1) / safe
    dy = (weight.sum(axis=2) * off).sum(axis=1) / safe
    return _argmax_xy(maps, rows, cols) + np.stack([dx, dy], axis=1)


def _blur3(maps: np.ndarray) -> np.ndarray:
    """cv2.GaussianBlur(ksize 3, sigma 0) of each zero-padded float[n, H, W] map, separably over the stack."""
    p = np.pad(maps, ((0, 0), (1, 1), (1, 1)))
    p = 0.5 * p[:, :, 1:-1] + 0.25 * (p[:, :, :-2] + p[:, :, 2:])
    return 0.5 * p[:, 1:-1] + 0.25 * (p[:, :-2] + p[:, 2:])


def _dark_xy(maps: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    n, h, w = maps.shape
    # The blurred 5x5 stencil needs only the 7x7 around the argmax: blurring whole maps costs 10x more.
    stencil = _blur3(_window(maps, rows, cols, 3))[:, 1:-1, 1:-1]
    # Rescaling to the original max multiplies by a constant >= 1, which drops out of log differences
    # unless the 1e-10 floor bites; so only maps with a stencil value at the floor are blurred whole.
    inner = (cols > 1) & (cols < w - 2) & (rows > 1) & (rows < h - 2)  # the 5x5 stencil fits
    scale = np.ones(n)
    floored = np.flatnonzero(inner & (stencil <= 1e-10).any(axis=(1, 2)))
    if len(floored):
        sub = maps[floored].astype(np.float32)  # float32 halves the time; the ratio needs no more
        peak, blurred_peak = sub.reshape(len(sub), -1).max(axis=1), _blur3(sub).reshape(len(sub), -1).max(axis=1)
        scale[floored] = np.where(blurred_peak > 0, peak / np.where(blurred_peak > 0, blurred_peak, 1.0), 1.0)
    lg = np.log(np.maximum(stencil * scale[:, None, None], 1e-10))
    dx = 0.5 * (lg[:, 2, 3] - lg[:, 2, 1])
    dy = 0.5 * (lg[:, 3, 2] - lg[:, 1, 2])
    dxx = 0.25 * (lg[:, 2, 4] - 2 * lg[:, 2, 2] + lg[:, 2, 0])
    dyy = 0.25 * (lg[:, 4, 2] - 2 * lg[:, 2, 2] + lg[:, 0, 2])
    dxy = 0.25 * (lg[:, 3, 3] - lg[:, 1, 3] - lg[:, 3, 1] + lg[:, 1, 1])
    det = dxx * dyy - dxy**2
    safe = np.where(det != 0, det, 1.0)
    step = -np.stack([dyy * dx - dxy * dy, dxx * dy - dxy * dx], axis=1) / safe[:, None]  # -H^-1 g
    ok = inner & (det != 0) & (np.abs(step) <= _DARK_MAX_STEP).all(axis=1)  # nan fails the bound too
    return _argmax_xy(maps, rows, cols) + np.where(ok[:, None], step, 0.0)


_DECODE: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "argmax": _argmax_xy, "parabola": _parabola_xy, "soft_argmax": _soft_argmax_xy, "dark": _dark_xy}


def _run(heatmaps: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """float[B, K, H, W] -> (xy float32[B, K, 2], score float32[B, K])."""
    if method not in _DECODE:
        raise ValueError(f"unknown heatmap decoder {method!r}; choose one of {', '.join(DECODERS)}")
    heatmaps = np.asarray(heatmaps)
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be [B, K, H, W], got shape {heatmaps.shape}")
    b, k, h, w = heatmaps.shape
    if b * k == 0:  # a frame batch with nobody in it
        return np.zeros((b, k, 2), np.float32), np.zeros((b, k), np.float32)
    maps = heatmaps.reshape(b * k, h, w)
    rows, cols = _argmax_cells(maps)
    xy = _DECODE[method](maps, rows, cols)
    score = maps[np.arange(b * k), rows, cols]
    return xy.reshape(b, k, 2).astype(np.float32), score.reshape(b, k).astype(np.float32)


def argmax_decode(heatmaps: np.ndarray) -> np.ndarray:
    """float[B, K, H, W] -> float32[B, K, 2] (x, y): the integer cell of each map's maximum."""
    return _run(heatmaps, "argmax")[0]


def parabola_decode(heatmaps: np.ndarray) -> np.ndarray:
    """float[B, K, H, W] -> float32[B, K, 2] (x, y): argmax + per-axis parabola vertex (|offset| <= 0.5, 0 at
    the border)."""
    return _run(heatmaps, "parabola")[0]


def soft_argmax_decode(heatmaps: np.ndarray) -> np.ndarray:
    """float[B, K, H, W] -> float32[B, K, 2] (x, y): mean under max(h, 0)^3 in the 7x7 window at the argmax."""
    return _run(heatmaps, "soft_argmax")[0]


def dark_decode(heatmaps: np.ndarray) -> np.ndarray:
    """float[B, K, H, W] -> float32[B, K, 2] (x, y): argmax + one Newton step on the blurred log-map (DARK)."""
    return _run(heatmaps, "dark")[0]


def decode_heatmaps(heatmaps: np.ndarray, method: str = "dark") -> np.ndarray:
    """float32[B, K, H, W] -> float32[B, K, 3] = (x, y, score) in heatmap px; score = the heatmap's
    max value at the argmax cell (same for every method). method: one of DECODERS."""
    xy, score = _run(heatmaps, method)
    return np.concatenate([xy, score[..., None]], axis=-1)
