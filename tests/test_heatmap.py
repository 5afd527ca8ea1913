"""Unit tests of the heatmap math (pure numpy/torch)."""
import numpy as np
import torch

from stages.pose.heatmap import (argmax_subpixel, find_peaks, map_to_image, parabola_offsets, render_gaussian,
                                 soft_argmax)


def test_render_gaussian_peak_and_width():
    maps = render_gaussian(30, 40, np.array([[12.0, 7.0], [np.nan, 3.0]]), sigma=2.0)
    assert maps.shape == (2, 30, 40) and maps.dtype == np.float32
    assert maps[0, 7, 12] == 1.0
    # one sigma away the value is exp(-1/2)
    np.testing.assert_allclose(maps[0, 7, 14], np.exp(-0.5), rtol=1e-6)
    assert not maps[1].any()


def test_argmax_subpixel_recovers_off_grid_centres():
    rng = np.random.default_rng(0)
    centres = rng.uniform(5, 35, size=(6, 2))
    xy, score = argmax_subpixel(render_gaussian(40, 40, centres, sigma=2.0))
    # A parabola on a Gaussian is biased by a few hundredths of a pixel, far below stride noise.
    assert np.abs(xy - centres).max() < 0.05
    assert (score > 0.88).all()
    # integer argmax alone would be off by up to 0.5 px
    assert np.abs(np.round(centres) - centres).max() > 0.3


def test_parabola_offset_is_zero_on_flat_top_and_border():
    flat = np.zeros((5, 5))
    flat[2, 2] = flat[2, 3] = 1.0
    off = parabola_offsets(flat, np.array([2, 0]), np.array([2, 0]))
    assert off[0, 0] == 0.5 or off[0, 0] == 0.0  # equal neighbours -> vertex half-way or none
    np.testing.assert_array_equal(off[1], [0.0, 0.0])  # corner: no neighbours on one side


def test_find_peaks_suppresses_non_maxima_and_sorts():
    maps = render_gaussian(50, 60, np.array([[10.2, 10.7], [40.6, 30.1], [45.0, 45.0]]), 2.0)
    heat = maps[0] + 0.6 * maps[1] + 0.04 * maps[2]  # third peak below threshold
    xy, score = find_peaks(heat, threshold=0.05)
    assert len(xy) == 2
    assert score[0] > score[1]
    np.testing.assert_allclose(xy, [[10.2, 10.7], [40.6, 30.1]], atol=0.05)


def test_find_peaks_empty_map():
    xy, score = find_peaks(np.zeros((8, 8), np.float32), 0.1)
    assert xy.shape == (0, 2) and score.shape == (0,)


def test_soft_argmax_matches_centre_and_has_gradient():
    centres = np.array([[7.3, 11.6], [20.0, 12.25]])  # > 5 sigma from the borders
    # As logits, log of a Gaussian makes the softmax that Gaussian: its mean is the centre exactly
    # (a sharply peaked map instead would snap to the nearest pixel).
    logits = np.log(np.maximum(render_gaussian(24, 32, centres, sigma=1.5), 1e-30))
    maps = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    xy = soft_argmax(maps, beta=1.0)
    assert torch.allclose(xy, torch.tensor(centres, dtype=xy.dtype), atol=1e-3)
    xy.sum().backward()
    assert maps.grad is not None and maps.grad.abs().sum() > 0


def test_map_to_image_pixel_centres():
    # map pixel 0 covers image pixels 0..7 at stride 8: its centre is image x = 3.5
    out = map_to_image(np.array([[0.0, 0.0], [53.0, 45.0]]), (54, 46), (432, 368))
    np.testing.assert_allclose(out, [[3.5, 3.5], [427.5, 363.5]])
