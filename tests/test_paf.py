"""Unit tests of PAF grouping on synthetic fields with known people."""
import numpy as np

from stages.pose.heatmap import render_gaussian
from stages.pose.paf import (
    LIMBS,
    NUM_PARTS,
    OPENPOSE18_TO_COCO17,
    group_people,
    limb_scores,
    match_limb,
    sample_bilinear,
)
from stages.pose.params import GroupingParams

H, W = 60, 80


def _skeleton(dx: float, dy: float, scale: float = 1.0) -> np.ndarray:
    """OpenPose-18 part positions of an upright person (map pixels)."""
    base = np.array([
        [0, -20], [0, -15], [-5, -15], [-7, -8], [-8, -2], [5, -15], [7, -8], [8, -2],
        [-3, 0], [-3, 9], [-3, 18], [3, 0], [3, 9], [3, 18], [-2, -21], [2, -21], [-4, -20], [4, -20],
    ], np.float64)
    return base * scale + [dx, dy]


def _render_pafs(people: list[np.ndarray], width: float = 1.5) -> np.ndarray:
    """Unit vectors a->b within `width` px of each limb segment (as OpenPose trains them)."""
    pafs = np.zeros((2 * len(LIMBS), H, W))
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    for parts in people:
        for k, (a, b) in enumerate(LIMBS):
            pa, pb = parts[a], parts[b]
            v = pb - pa
            length = np.linalg.norm(v)
            u = v / length
            rel_x, rel_y = xs - pa[0], ys - pa[1]
            along = rel_x * u[0] + rel_y * u[1]
            across = np.abs(rel_x * u[1] - rel_y * u[0])
            on = (along >= -1) & (along <= length + 1) & (across <= width)
            pafs[2 * k][on] = u[0]
            pafs[2 * k + 1][on] = u[1]
    return pafs


def _peaks(people: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    xy = [np.array([p[part] for p in people], np.float32) for part in range(NUM_PARTS)]
    return xy, [np.full(len(people), 0.9, np.float32) for _ in range(NUM_PARTS)]


def test_two_people_are_separated_and_complete():
    people = [_skeleton(22, 30), _skeleton(55, 32)]
    xy, scores = _peaks(people)
    kps, person_score = group_people(xy, scores, _render_pafs(people), GroupingParams())
    assert kps.shape == (2, 17, 3)
    order = np.argsort(kps[:, 0, 0])  # sort by nose x
    for kp, truth in zip(kps[order], people):
        np.testing.assert_allclose(kp[:, :2], truth[OPENPOSE18_TO_COCO17], atol=1e-4)
        np.testing.assert_allclose(kp[:, 2], 0.9)
    np.testing.assert_allclose(person_score, 0.9, rtol=1e-6)


def test_limb_scores_vectorised_equals_per_pair_loop():
    rng = np.random.default_rng(3)
    paf = rng.normal(size=(2, H, W))
    a = rng.uniform(0, [W - 1, H - 1], size=(5, 2))
    b = rng.uniform(0, [W - 1, H - 1], size=(4, 2))
    params = GroupingParams(min_agree_fraction=0.0)
    score, _ = limb_scores(paf, a, b, params)
    for i in range(len(a)):
        for j in range(len(b)):
            v = b[j] - a[i]
            n = np.linalg.norm(v)
            pts = a[i] + np.linspace(0, 1, 10)[:, None] * v
            f = sample_bilinear(paf, pts)
            expect = (f[0] * v[0] / n + f[1] * v[1] / n).mean() + min(0.5 * H / n - 1, 0)
            np.testing.assert_allclose(score[i, j], expect, rtol=1e-10)


def test_field_pointing_backwards_is_rejected():
    people = [_skeleton(40, 30)]
    pafs = _render_pafs(people)
    xy, _ = _peaks(people)
    limb = 1  # r_hip -> r_knee
    a, b = LIMBS[limb]
    forward, ok_f = limb_scores(pafs[2 * limb : 2 * limb + 2], xy[a], xy[b], GroupingParams())
    backward, ok_b = limb_scores(pafs[2 * limb : 2 * limb + 2], xy[b], xy[a], GroupingParams())
    assert ok_f.all() and forward[0, 0] > 0.9
    assert not ok_b.any() and backward[0, 0] < 0


def test_match_limb_is_one_to_one_and_maximises_total():
    # Greedy would take the single best pair (0,0)=0.9 and then (1,1)=0.1: total 1.0.
    # The optimum is (0,1)+(1,0) = 0.8 + 0.85 = 1.65.
    score = np.array([[0.9, 0.8], [0.85, 0.1]])
    pairs = match_limb(score, np.ones_like(score, bool))
    assert sorted(map(tuple, pairs)) == [(0, 1), (1, 0)]


def test_match_limb_skips_invalid_pairs():
    score = np.array([[0.9, 0.8], [0.85, 0.1]])
    valid = np.array([[True, False], [False, False]])
    np.testing.assert_array_equal(match_limb(score, valid), [[0, 0]])
    assert match_limb(score, np.zeros_like(valid)).shape == (0, 2)


def test_fragments_below_min_parts_are_dropped_and_missing_parts_are_nan():
    person = _skeleton(40, 30)
    xy, scores = _peaks([person])
    # Keep only the head: nose, neck, eyes -> 4 parts... then remove one eye: 3 parts < min_parts 4.
    for part in range(NUM_PARTS):
        if part not in (0, 1, 14):
            xy[part] = xy[part][:0]
            scores[part] = scores[part][:0]
    kps, _ = group_people(xy, scores, _render_pafs([person]), GroupingParams())
    assert len(kps) == 0
    xy, scores = _peaks([person])
    xy[9], scores[9] = xy[9][:0], scores[9][:0]  # right knee not found
    kps, _ = group_people(xy, scores, _render_pafs([person]), GroupingParams())
    coco_r_knee = list(OPENPOSE18_TO_COCO17).index(9)
    assert len(kps) == 1 and np.isnan(kps[0, coco_r_knee, :2]).all() and kps[0, coco_r_knee, 2] == 0


def test_no_peaks_no_people():
    empty = [np.zeros((0, 2), np.float32)] * NUM_PARTS
    kps, score = group_people(empty, [np.zeros(0, np.float32)] * NUM_PARTS, np.zeros((38, H, W)), GroupingParams())
    assert kps.shape == (0, 17, 3) and score.shape == (0,)


def test_peaks_from_rendered_heatmaps_roundtrip():
    # Sanity: heatmap rendering + peak finding + grouping on the same synthetic people.
    from stages.pose.heatmap import find_peaks
    people = [_skeleton(25.3, 30.6), _skeleton(57.7, 31.2)]
    heat = np.stack([render_gaussian(H, W, np.array([p[part] for p in people]), 1.5).max(axis=0)
                     for part in range(NUM_PARTS)])
    found = [find_peaks(h, 0.1) for h in heat]
    kps, _ = group_people([f[0] for f in found], [f[1] for f in found], _render_pafs(people), GroupingParams())
    assert len(kps) == 2
    order = np.argsort(kps[:, 0, 0])
    for kp, truth in zip(kps[order], people):
        assert np.abs(kp[:, :2] - truth[OPENPOSE18_TO_COCO17]).max() < 0.1
