"""auto switch hysteresis and the hybrid merge (pure)."""
import numpy as np
import pytest

from stages.batches import PoseBatch
from stages.pose.modes import AutoSwitch, merge_hybrid
from stages.pose.params import AutoParams


def test_auto_switches_with_hysteresis_and_dwell():
    sw = AutoSwitch(AutoParams(to_bottomup_at=8, to_topdown_at=5, window=4, min_dwell=6))
    assert sw.observe([2] * 10) == "topdown"
    assert sw.observe([12] * 2) == "topdown"  # mean of the last 4 = (2 + 2 + 12 + 12) / 4 < 8
    assert sw.observe([12]) == "bottomup"  # (2 + 12 + 12 + 12) / 4 >= 8
    # counts in the band between the thresholds keep the current mode: no flapping
    assert sw.observe([7, 6, 7, 6, 7, 6, 7, 6, 7, 6]) == "bottomup"
    assert sw.observe([4, 4]) == "bottomup"  # (7 + 6 + 4 + 4) / 4 > 5
    assert sw.observe([4]) == "topdown"  # (6 + 4 + 4 + 4) / 4 <= 5


def test_auto_dwell_blocks_immediate_switch_back():
    sw = AutoSwitch(AutoParams(to_bottomup_at=8, to_topdown_at=5, window=1, min_dwell=5))
    assert sw.observe([0] * 5 + [20]) == "bottomup"
    assert sw.observe([0, 0, 0, 0]) == "bottomup"  # only 4 frames since the switch
    assert sw.observe([0]) == "topdown"


def test_auto_needs_a_band():
    with pytest.raises(ValueError, match="hysteresis"):
        AutoSwitch(AutoParams(to_bottomup_at=5, to_topdown_at=5))


def _person(cx: float, cy: float) -> np.ndarray:
    rng = np.random.default_rng(int(cx))
    kp = np.zeros((17, 3), np.float32)
    kp[:, 0] = cx + rng.uniform(-20, 20, 17)
    kp[:, 1] = cy + rng.uniform(-50, 50, 17)
    kp[:, 2] = 0.9
    return kp


def _boxes(kp: np.ndarray) -> np.ndarray:
    """The box around each person's found keypoints, as the pose stages fill PoseBatch.bbox."""
    if not len(kp):
        return np.zeros((0, 4), np.float32)
    return np.concatenate([np.nanmin(kp[:, :, :2], 1), np.nanmax(kp[:, :, :2], 1)], 1).astype(np.float32)


def _batch(frames, people, det: bool) -> PoseBatch:
    idx = np.array([f for f, _ in people], np.int64)
    kp = np.stack([p for _, p in people]) if people else np.zeros((0, 17, 3), np.float32)
    n = len(idx)
    return PoseBatch(video_id="v", frames=np.array(frames, np.int64), frame_time_s=np.array(frames, float),
                     frame_index=idx, time_s=idx.astype(float), keypoints=kp,
                     bbox=_boxes(kp), score=np.full(n, 0.8 if det else 0.5, np.float32),
                     det_score=np.full(n, 0.9 if det else np.nan, np.float32), mode="topdown" if det else "bottomup")


def test_hybrid_adds_only_people_the_detector_missed():
    a, b, c = _person(100, 200), _person(300, 200), _person(600, 250)
    top = _batch([0, 1], [(0, a), (0, b), (1, a)], det=True)
    shifted = a.copy()
    shifted[:, :2] += 2.0  # the same person found by bottom-up, a few px off
    bottom = _batch([0, 1], [(0, shifted), (0, c), (1, shifted), (1, b)], det=False)
    merged = merge_hybrid(top, bottom, max_oks=0.5)
    assert merged.mode == "hybrid"
    # frame 0: a, b (top-down) + c (missed by the detector); frame 1: a + b (missed in frame 1)
    assert merged.frame_index.tolist() == [0, 0, 0, 1, 1]
    from_bottom = np.isnan(merged.det_score)
    assert from_bottom.tolist() == [False, False, True, False, True]
    np.testing.assert_allclose(merged.keypoints[2], c)
    np.testing.assert_allclose(merged.keypoints[4], b)
    # every detector-confirmed person ranks above every person only bottom-up found
    assert merged.score[~from_bottom].min() > merged.score[from_bottom].max()
    np.testing.assert_allclose(merged.score[~from_bottom], 0.5 + 0.8 / 2)


def test_hybrid_writes_a_partly_found_person_once():
    """Bottom-up found only the legs of a person top-down found whole: one person, not two."""
    a, c = _person(100, 200), _person(400, 200)
    top = _batch([0], [(0, a), (0, c)], det=True)
    legs = a.copy()
    legs[:11] = np.nan  # head, arms and shoulders not assembled into this person
    legs[11:, :2] += 1.5
    arms = c.copy()
    arms[[0, 1, 2, 3, 4, 11, 12, 13, 14, 15, 16]] = np.nan  # shoulders, elbows, wrists only
    stranger = _person(700, 220)
    stranger[:5] = np.nan
    bottom = _batch([0], [(0, legs), (0, arms), (0, stranger)], det=False)
    merged = merge_hybrid(top, bottom, max_oks=0.5)
    assert len(merged) == 3, "the partial finds of a and c were written as extra people"
    np.testing.assert_allclose(merged.keypoints[np.isnan(merged.det_score)][0], stranger)


def test_hybrid_keeps_a_neighbour_who_shares_no_confident_joint():
    """A bottom-up person overlapping a top-down one but sure only of joints the other is unsure of
    is not explained by it: too few shared joints to compare."""
    a = _person(100, 200)
    a[11:, 2] = 0.1  # top-down unsure of the legs (behind someone)
    top = _batch([0], [(0, a)], det=True)
    legs = _person(100, 200)
    legs[:11] = np.nan
    legs[11:, 0] += 40.0  # someone else's legs, just beside
    merged = merge_hybrid(top, _batch([0], [(0, legs)], det=False), max_oks=0.5)
    assert len(merged) == 2


def test_hybrid_with_no_top_down_people_keeps_all_bottom_up():
    bottom = _batch([3], [(3, _person(50, 60)), (3, _person(400, 60))], det=False)
    merged = merge_hybrid(_batch([3], [], det=True), bottom, max_oks=0.5)
    assert len(merged) == 2 and np.isnan(merged.det_score).all()
