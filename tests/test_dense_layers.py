"""Who is in front where two bodies overlap (stages/dense/layers.py): the pixels' colours against the depth test.

Two flat people (quads facing the camera) overlap in a band; the left one is fitted nearer, so the depth test
gives it the band. The image says otherwise when the band has the right one's colours: the band then goes to
the right one, labelled from its own surface (its plane's exact depth there). Where the band has the left one's
colours, or both people wear alike colours, the depth test stands.
"""
from __future__ import annotations

import numpy as np
import pytest

from stages.dense.layers import order_by_colour
from stages.dense.raster import GlRaster
from stages.dense.render import render_dense

SIZE, FOCAL = (200, 160), 150.0
FACES = np.array([[0, 2, 1], [0, 3, 2]])  # wound to face the camera
RED, BLUE = (200, 40, 40), (40, 60, 200)


def quad(x0: float, x1: float, z: float) -> np.ndarray:
    return np.array([[x0, -0.8, z], [x1, -0.8, z], [x1, 0.8, z], [x0, 0.8, z]], np.float32)


# The left person 3.0 m away, the right one 3.3 m: in the image they overlap in a band ~19 px wide.
VERTS = np.stack([quad(-0.9, 0.2, 3.0), quad(-0.2, 0.9, 3.3)])


@pytest.fixture(scope="module")
def gl():
    raster = GlRaster()
    yield raster
    raster.release()


def in_image(crop, name: str = "mask") -> np.ndarray:
    out = np.zeros(SIZE[::-1] + getattr(crop, name).shape[2:], getattr(crop, name).dtype)
    x0, y0, x1, y1 = crop.box
    out[y0:y1, x0:x1] = getattr(crop, name)
    return out


def painted(left, right, band, raster: GlRaster, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8[H, W, 3]: each person's pixels (each quad drawn alone) in its colour, the band where both lie in
    `band`'s, the rest grey; every pixel with noise. Also the band, bool[H, W]."""
    alone = [in_image(render_dense(VERTS[i:i + 1], FACES, FOCAL, SIZE, raster=raster).people[0]) for i in range(2)]
    img = np.full((*SIZE[::-1], 3), 128.0)
    img[alone[0]], img[alone[1]], img[alone[0] & alone[1]] = left, right, band
    img += np.random.default_rng(seed).normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), alone[0] & alone[1]


def test_the_band_goes_to_the_person_whose_colours_it_shows(gl):
    image, band = painted(RED, BLUE, BLUE, gl)
    frame = render_dense(VERTS, FACES, FOCAL, SIZE, raster=gl)
    assert in_image(frame.people[0])[band].all()  # the depth test: the nearer, left person holds the band
    out = order_by_colour(frame, frame, VERTS, FACES, FOCAL, image, gl)
    left, right = in_image(out.people[0]), in_image(out.people[1])
    assert band.sum() > 1000 and right[band].all() and not left[band].any()
    # Labelled from the right person's own plane: its exact depth, its triangles; the rest as rendered.
    np.testing.assert_allclose(in_image(out.people[1], "depth")[band], 3.3, rtol=1e-5)
    assert (in_image(out.people[1], "face")[band] >= 0).all()
    np.testing.assert_allclose(in_image(out.people[1], "normal")[band], np.tile([0, 0, -1.0], (band.sum(), 1)),
                               atol=1e-5)
    assert np.array_equal(left, in_image(frame.people[0]) & ~band)
    assert np.array_equal(right, in_image(frame.people[1]) | band)
    # The frame decoded at half size (scale 2: video pixels per image pixel) says the same.
    half = order_by_colour(frame, frame, VERTS, FACES, FOCAL, image[::2, ::2], gl, scale=2.0)
    assert np.array_equal(in_image(half.people[1]), right)


@pytest.mark.parametrize("colours", [(RED, BLUE, RED), ((120, 120, 130), (125, 120, 125), (120, 125, 125))],
                         ids=["band-shows-the-nearer", "alike-clothes"])
def test_the_depth_test_stands_where_the_colours_agree_or_cannot_tell(gl, colours):
    image, band = painted(*colours, gl)
    frame = render_dense(VERTS, FACES, FOCAL, SIZE, raster=gl)
    assert in_image(frame.people[0])[band].all() and in_image(frame.people[1]).sum() > 1000
    out = order_by_colour(frame, frame, VERTS, FACES, FOCAL, image, gl)
    for before, after in zip(frame.people, out.people):
        assert np.array_equal(in_image(after), in_image(before))
