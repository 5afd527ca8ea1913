"""Top-down heatmap decoders (stages/pose/heatmap_decode.py) on synthetic Gaussian heatmaps."""
from functools import cache

import cv2
import numpy as np
import pytest

from stages.pose.heatmap import render_gaussian
from stages.pose.heatmap_decode import (
    DECODERS,
    argmax_decode,
    dark_decode,
    decode_heatmaps,
    parabola_decode,
    soft_argmax_decode,
)

H, W = 64, 48  # PP-TinyPose 256x192 at stride 4
SIGMA = 2.0  # its training targets at this size
NOISE = 0.05  # std of the additive noise of the noisy variant, peaks are 1


@cache
def _synthetic() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """200 Gaussians at random sub-pixel centres >= 3 sigma from the border: (centres [10, 20, 2],
    clean maps, noisy maps [10, 20, H, W])."""
    rng = np.random.default_rng(7)
    centres = np.stack([rng.uniform(6, W - 7, 200), rng.uniform(6, H - 7, 200)], axis=1)
    clean = render_gaussian(H, W, centres, SIGMA).reshape(10, 20, H, W)
    noisy = np.maximum(clean + rng.normal(0, NOISE, clean.shape).astype(np.float32), 0)
    return centres.reshape(10, 20, 2), clean, noisy


@cache
def _errors() -> dict[str, dict[str, float]]:
    """Mean Euclidean error in px per decoder, {"clean" | "noisy": {method: error}}."""
    centres, clean, noisy = _synthetic()
    out = {name: {m: float(np.linalg.norm(decode_heatmaps(maps, m)[..., :2] - centres, axis=-1).mean())
                  for m in DECODERS} for name, maps in (("clean", clean), ("noisy", noisy))}
    print(f"\nmean error (px) on {centres.shape[0] * centres.shape[1]} sigma-{SIGMA:g} Gaussians, {H}x{W}")
    print(f"{'method':<12}{'noise-free':>11}{f'noise {NOISE:g}':>12}")
    for m in DECODERS:
        print(f"{m:<12}{out['clean'][m]:>11.4f}{out['noisy'][m]:>12.4f}")
    return out


def test_refinements_beat_argmax_noise_free():
    err = _errors()["clean"]
    assert err["argmax"] > 0.3  # uniform sub-pixel centres: E|d| ~ 0.38 for the integer cell
    for m in ("parabola", "soft_argmax", "dark"):
        assert err[m] < err["argmax"], m
    assert err["parabola"] < err["argmax"] - 0.1
    assert err["dark"] < 0.05  # Newton on the log of a Gaussian is exact, up to the 3x3 blur
    assert err["soft_argmax"] < 0.05


def test_refinements_beat_argmax_with_noise():
    err = _errors()["noisy"]
    for m in ("parabola", "soft_argmax", "dark"):
        assert err[m] < err["argmax"] - 0.1, m


def _paddle_dark(heatmaps: np.ndarray) -> np.ndarray:
    """PaddleDetection HRNetPostProcess (use_dark, kernel 3), one map at a time: the reference."""
    b, k, h, w = heatmaps.shape
    out = np.zeros((b, k, 2))
    for i in range(b):
        for j in range(k):
            hm = heatmaps[i, j].astype(np.float64)
            py, px = np.unravel_index(hm.argmax(), hm.shape)
            padded = np.zeros((h + 2, w + 2))
            padded[1:-1, 1:-1] = hm
            blur = cv2.GaussianBlur(padded, (3, 3), 0)[1:-1, 1:-1]
            lg = np.log(np.maximum(blur * hm.max() / blur.max(), 1e-10))
            out[i, j] = px, py
            if 1 < px < w - 2 and 1 < py < h - 2:
                grad = [0.5 * (lg[py, px + 1] - lg[py, px - 1]), 0.5 * (lg[py + 1, px] - lg[py - 1, px])]
                dxy = 0.25 * (lg[py + 1, px + 1] - lg[py - 1, px + 1] - lg[py + 1, px - 1] + lg[py - 1, px - 1])
                hess = [[0.25 * (lg[py, px + 2] - 2 * lg[py, px] + lg[py, px - 2]), dxy],
                        [dxy, 0.25 * (lg[py + 2, px] - 2 * lg[py, px] + lg[py - 2, px])]]
                if np.linalg.det(hess) != 0:
                    out[i, j] -= np.linalg.solve(hess, grad)
    return out


def test_dark_matches_paddledetection_loop():
    _, clean, noisy = _synthetic()
    rng = np.random.default_rng(3)
    # Maps where the 1e-10 floor of the log bites, so the rescale to the original max matters:
    # sparse spikes on zero, and a noisy blob sunk below zero; on dense spikes (a joint out of
    # view) Newton steps of over 1 px occur.
    density = np.array([0.05, 0.5])[:, None, None, None]
    spikes = (rng.uniform(0, 0.9, (2, 20, H, W)) * (rng.uniform(size=(2, 20, H, W)) < density)).astype(np.float32)
    maps = np.concatenate([clean[:2], noisy[:2], spikes, noisy[2:4] - np.float32(0.3)])
    ref, cell = _paddle_dark(maps), argmax_decode(maps)
    sane = (np.abs(ref - cell) <= 1.0).all(axis=-1)  # longer Newton steps are dropped, not taken
    assert 0.5 < sane.mean() < 1
    np.testing.assert_allclose(dark_decode(maps), np.where(sane[..., None], ref, cell), atol=1e-4)


@pytest.mark.parametrize("method", DECODERS)
def test_border_centres_stay_on_the_map(method):
    centres = np.array([[0.0, 0.0], [W - 1, H - 1], [0.3, 30.0], [W - 1.2, 10.6], [20.4, 0.4], [1.4, H - 1.6]])
    maps = render_gaussian(H, W, centres, SIGMA)[None]
    out = decode_heatmaps(maps, method)
    assert np.isfinite(out).all()
    assert (out[..., 0] >= -0.5).all() and (out[..., 0] <= W - 0.5).all()
    assert (out[..., 1] >= -0.5).all() and (out[..., 1] <= H - 0.5).all()
    assert np.abs(out[0, :, :2] - centres).max() < 1.0


@pytest.mark.parametrize("method", DECODERS)
def test_all_zero_map_decodes_to_origin_with_score_zero(method):
    out = decode_heatmaps(np.zeros((1, 2, H, W), np.float32), method)
    np.testing.assert_array_equal(out, np.zeros((1, 2, 3), np.float32))


@pytest.mark.parametrize("method", DECODERS)
def test_score_is_map_max_shape_and_dtype(method):
    rng = np.random.default_rng(1)
    maps = (rng.uniform(-0.05, 0.1, (2, 3, H, W)) +
            0.8 * render_gaussian(H, W, rng.uniform(3, 40, (6, 2)), SIGMA).reshape(2, 3, H, W)).astype(np.float32)
    out = decode_heatmaps(maps, method)
    assert out.shape == (2, 3, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[..., 2], maps.max(axis=(2, 3)))


def test_per_method_functions_match_decode_heatmaps():
    _, _, noisy = _synthetic()
    for method, fn in (("argmax", argmax_decode), ("parabola", parabola_decode),
                       ("soft_argmax", soft_argmax_decode), ("dark", dark_decode)):
        xy = fn(noisy[:2])
        assert xy.shape == (2, 20, 2) and xy.dtype == np.float32
        np.testing.assert_array_equal(xy, decode_heatmaps(noisy[:2], method)[..., :2])
    assert (argmax_decode(noisy) == np.round(argmax_decode(noisy))).all()


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="soft_argmax"):
        decode_heatmaps(np.zeros((1, 1, 8, 8), np.float32), "median")
