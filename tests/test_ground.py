"""The ground estimate (stages/body/ground.py): a known camera recovered from people walking on its floor,
the plane's geometry, and the flagged fallback when a scene gives no usable ground."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stages.body.ground import HEIGHT_SD, Ground, estimate_ground, floor_grid, up_normal
from stages.body.ground_views import upright_views
from tests.ground_synth import auc, make_scene, rotation, with_strays

SEEDS = range(10)


def sure(g: Ground) -> dict[int, float]:
    """The statures measured from tracks whose views fit the upright model (the floor's inliers); the others
    are measured too, less surely (a larger height_sd)."""
    return {t: h for t, h in g.heights.items() if g.height_sd[t] <= HEIGHT_SD}


@pytest.fixture(scope="module")
def solved() -> list:
    """(scene, ground) per seed; the focal is given on even seeds and estimated on odd ones."""
    out = []
    for seed in SEEDS:
        sc = make_scene(seed)
        out.append((sc, estimate_ground(sc.keypoints, sc.track_id, sc.frame_index, sc.image_size,
                                        sc.focal if seed % 2 == 0 else None)))
    return out


def test_camera_recovered(solved: list) -> None:
    for sc, g in solved:
        assert g.ok, g.reason
        assert abs(g.camera_height / sc.camera_height - 1) < 0.10, (sc.camera_height, g.camera_height)
        assert abs(g.pitch_deg - sc.pitch_deg) < 2.0, (sc.pitch_deg, g.pitch_deg)
        assert abs(g.roll_deg - sc.roll_deg) < 1.0, (sc.roll_deg, g.roll_deg)
        assert abs(g.focal / sc.focal - 1) < 0.10, (sc.focal, g.focal)
        # the same plane, judged by its normal: the angle between true and estimated up
        true_up = rotation(sc.pitch_deg, sc.roll_deg) @ [0.0, 1.0, 0.0]
        assert np.degrees(np.arccos(np.clip(true_up @ g.normal, -1, 1))) < 2.0
        assert g.inlier_fraction > 0.8 and g.n_tracks >= 10


def test_statures(solved: list) -> None:
    adult, child, aucs, seated = [], [], [], []
    for sc, g in solved:
        assert set(g.height_sd) == set(g.heights) and min(g.height_sd.values()) == HEIGHT_SD
        g = dataclasses.replace(g, heights=sure(g))
        walkers = [t for t, k in sc.kind.items() if k in ("adult", "child")]
        views = upright_views(sc.keypoints, sc.track_id, sc.frame_index)
        seen = views.ids[np.bincount(views.track) >= 3]  # some walk out of the picture
        assert all(t in g.heights for t in walkers if sc.kind[t] == "adult" and t in seen)
        assert not any(sc.kind[t] == "no_feet" for t in g.heights)
        # a seated person passes for a standing one only seen steeply from above (legs toward the camera), and
        # then reads short; from lower cameras their legs are too short in the image to count as upright
        seated.extend((g.heights[t], sc.stature[t]) for t in g.heights if sc.kind[t] == "sitting")
        err = {t: g.heights[t] / sc.stature[t] - 1 for t in walkers if t in g.heights}
        adult += [e for t, e in err.items() if sc.kind[t] == "adult"]
        child += [e for t, e in err.items() if sc.kind[t] == "child"]
        aucs.append(auc([g.heights[t] for t in err if sc.kind[t] == "child"],
                        [g.heights[t] for t in err if sc.kind[t] == "adult"]))
    a = np.abs(adult)
    print(f"\nadult |stature error| p50 {np.median(a):.3f} p90 {np.percentile(a, 90):.3f} p95 "
          f"{np.percentile(a, 95):.3f} max {a.max():.3f} (n={a.size}); children {np.round(np.sort(child), 3)}; "
          f"AUC min {min(aucs):.2f}; seated people given a stature {seated}")
    assert len(seated) <= 2 and all(est < true for est, true in seated)
    assert np.percentile(a, 95) < 0.05 and a.max() < 0.08
    # children have bigger heads, so an adult body's fractions make them a little shorter than they are
    assert np.all(np.abs(child) < 0.10) and len(child) >= 25
    assert min(aucs) >= 0.95


def test_a_known_camera_height_sets_the_scale(solved: list) -> None:
    """Without it, the scale is the adults' mean stature taken as the population's: a scene's adults miss that
    mean by their own (seeds 4 and 9: adults up to 5.1 and 5.4% off). Given the camera's height, as a mounted
    camera's is known, every adult measured surely is within 4% (at most 3.5%, seed 9, its focal estimated)."""
    for seed, (sc, free) in zip(SEEDS, solved):
        focal = sc.focal if seed % 2 == 0 else None  # as the `solved` fixture
        g = estimate_ground(sc.keypoints, sc.track_id, sc.frame_index, sc.image_size, focal,
                            camera_height=sc.camera_height)
        assert g.ok and g.camera_height == sc.camera_height, g.reason
        assert (g.pitch_deg, g.roll_deg) == (free.pitch_deg, free.roll_deg)  # the scale only: the same floor
        err = [g.heights[t] / sc.stature[t] - 1 for t in sure(g) if sc.kind[t] == "adult"]
        assert len(err) >= 10 and np.abs(err).max() < 0.04, (seed, np.round(err, 3))


def test_people_who_lean_their_own_way() -> None:
    """Everyone holds a lean of up to 8 degrees, each in a direction of their own, in every frame: the camera
    is still found (held upright, each leaning track bent the one camera its way: on seeds 0-9 the pitch was
    off by up to 3.3 degrees and a third of the views were left out as misfits)."""
    for seed in range(10):
        sc = make_scene(seed, lean_deg=8.0)
        focal = sc.focal if seed % 2 == 0 else None
        g = estimate_ground(sc.keypoints, sc.track_id, sc.frame_index, sc.image_size, focal)
        assert g.ok, g.reason
        assert abs(g.camera_height / sc.camera_height - 1) < 0.07, (sc.camera_height, g.camera_height)
        assert abs(g.pitch_deg - sc.pitch_deg) < 1.0, (sc.pitch_deg, g.pitch_deg)
        assert g.inlier_fraction > 0.95
        if sc.pitch_deg > 5.0:  # a level camera's verticals hardly converge: the leans take what little they say
            assert abs(g.focal / sc.focal - 1) < 0.10, (sc.focal, g.focal)


def test_strays() -> None:
    """A fifth of the views from made-up tracks of the wrong size for where they stand: they are left out."""
    for seed in range(0, 10, 2):
        sc = with_strays(make_scene(seed), seed=seed)
        g = estimate_ground(sc.keypoints, sc.track_id, sc.frame_index, sc.image_size, None)
        assert g.ok, g.reason
        assert abs(g.camera_height / sc.camera_height - 1) < 0.10 and abs(g.pitch_deg - sc.pitch_deg) < 2.0
        assert abs(g.focal / sc.focal - 1) < 0.10
        assert sum(sc.kind[t] == "stray" for t in sure(g)) <= 1  # measured, but as unsure


def test_plane_geometry() -> None:
    g = Ground(image_size=(1280, 720), focal=900.0, camera_height=2.5, pitch_deg=12.0, roll_deg=2.0, ok=True)
    assert np.allclose(g.normal, up_normal(np.radians(12.0), np.radians(2.0)))
    assert np.isclose(np.linalg.norm(g.normal), 1.0) and g.normal[1] < 0  # up is -y in the image
    assert np.isclose(g.distance(np.zeros((1, 3)))[0], 2.5)  # the camera is camera_height above the floor
    uv = np.array([[640.0, 700.0], [100.0, 500.0], [1200.0, 400.0]])
    floor = g.backproject(uv)
    assert np.allclose(g.distance(floor), 0.0, atol=1e-9) and np.all(floor[:, 2] > 0)
    assert np.allclose(g.project(floor), uv)
    assert np.allclose(g.distance(g.backproject(uv, height=0.07)), 0.07)
    a, b, c = g.horizon()
    u = np.array([0.0, 640.0, 1280.0])
    on = np.stack([u, -(a * u + c) / b], 1)
    assert np.allclose(g.rays(on) @ g.normal, 0.0, atol=1e-12)  # rays to the horizon run parallel to the floor
    assert np.isclose(on[1, 1], g.horizon_row) and g.horizon_row < 360  # looking down: above the centre
    assert np.isnan(g.backproject([[640.0, g.horizon_row - 5]])).all()  # sky pixels never reach the floor


def test_an_adult_and_a_child_alone_set_the_scale_by_the_adult() -> None:
    """Two people 30-45% apart in stature: the median of the two lies between them, near neither (it found
    no scale before: "the fit did not converge"); the taller is taken as the adult. Two people seen from a
    level camera (seed 3, pitch 2.6 degrees) leave the horizon unsure once each may lean: flagged, not wrong;
    and two leans free of each other cost the camera height some of its sureness (seed 4: 10.2% off)."""
    found = 0
    for seed in range(6):
        sc = make_scene(seed, adults=1, children=1, sitting=0)
        two = sc.track_id <= 2  # the adult and the child, without the scene's raised and feetless people
        g = estimate_ground(sc.keypoints[two], sc.track_id[two], sc.frame_index[two], sc.image_size, sc.focal)
        if not g.ok:
            assert g.reason.startswith("horizon undetermined") and sc.pitch_deg < 5.0, g.reason
            continue
        found += 1
        assert abs(g.camera_height / sc.camera_height - 1) < 0.15, (sc.camera_height, g.camera_height)
        ratio = (g.heights[2] / g.heights[1]) / (sc.stature[2] / sc.stature[1])
        assert abs(ratio - 1) < 0.10, ratio
    assert found >= 5


def _finite(g: Ground) -> bool:
    values = [v for v in dataclasses.astuple(g) if isinstance(v, float)] + list(g.normal)
    return bool(np.all(np.isfinite(values)))


def _fallback_ok(g: Ground) -> None:
    assert not g.ok and g.reason and _finite(g)
    assert g.pitch_deg == 0.0 and g.roll_deg == 0.0 and g.focal > 0 and g.heights == {}


def test_fallbacks() -> None:
    size = (1280, 720)
    _fallback_ok(estimate_ground(np.zeros((0, 17, 3), np.float32), np.zeros(0, int), np.zeros(0, int), size))
    _fallback_ok(estimate_ground(np.zeros((0,)), [], [], size, focal=1000.0))
    sc = make_scene(3)
    one = np.flatnonzero((sc.track_id == 1) & (sc.frame_index == 0))
    _fallback_ok(estimate_ground(sc.keypoints[one], sc.track_id[one], sc.frame_index[one], size))
    no_feet = sc.keypoints.copy()
    no_feet[:, 15:17, 2] = 0.2
    _fallback_ok(estimate_ground(no_feet, sc.track_id, sc.frame_index, size))
    # one person standing still for 40 frames: many views, one depth, so no horizon
    first = sc.keypoints[(sc.track_id == 2) & (sc.frame_index == 0)][0]
    still = first[None].repeat(40, 0)
    still[..., :2] += np.random.default_rng(0).normal(0, 1.0, (40, 17, 2))
    still[..., 2] = 0.9
    g = estimate_ground(still, np.full(40, 7), np.arange(40), size)
    _fallback_ok(g)
    assert "horizon" in g.reason
    _fallback_ok(estimate_ground(np.full((5, 17, 3), np.nan), np.arange(5), np.zeros(5, int), size))
    _fallback_ok(estimate_ground(sc.keypoints, sc.track_id, sc.frame_index, (0, 0)))


def test_floor_grid_lies_below_the_horizon_and_is_drawn_there():
    """The grid `posepipe render` draws (ground.floor_grid, render_draw.draw_floor): every point below
    the horizon row, the far ends close to it, the grid symmetric about the centre column of a camera
    without roll; none for a video whose floor was not found."""
    from stages.io.render_draw import People, draw_frame

    g = Ground(image_size=(1280, 720), focal=1468.6, camera_height=3.0, pitch_deg=12.0, roll_deg=0.0, ok=True)
    grid = floor_grid(g)
    pts = grid[np.isfinite(grid).all(-1)]
    assert len(pts) > 100 and (pts[:, 1] > g.horizon_row).all()
    # the far end, 40 m out: ~ focal x 3 m / 40 m = 110 px under the horizon (the depression of that point)
    assert 0.8 < (np.min(pts[:, 1]) - g.horizon_row) / (1468.6 * 3.0 / 40.0) < 1.2
    assert abs(np.median(pts[:, 0]) - 640) < 1
    none = People(*(np.zeros((0,) + s, t) for s, t in (((), np.int64), ((), np.int64), ((17, 2), np.float32),
                                                          ((17,), bool), ((4,), np.float32), ((4,), np.float32))))
    img = draw_frame(np.zeros((720, 1280, 3), np.uint8), none, floor=grid)
    drawn = img.max(-1) > 0
    rows = np.flatnonzero(drawn.any(1))
    assert drawn.sum() > 1000 and rows.min() >= int(g.horizon_row) - 1
    assert floor_grid(Ground(image_size=(1280, 720), focal=1000.0)).shape[0] == 0  # not ok: no grid
