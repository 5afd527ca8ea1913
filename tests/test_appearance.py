"""stages.track.appearance (colour descriptor) and the tracker's re-identification after long gaps."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
from conftest import EVAL
from test_track import batch, person

from stages.track.appearance import BINS, DIM, HUE_BINS, SAT_BINS, appearance, similarity, thumbnails
from stages.io.decode import VideoReader
from stages.track.confirm import TrackOutput
from stages.track.track import Tracker, TrackParams


def shirt_and_trousers(upper_rgb, lower_rgb, size=(200, 100)) -> np.ndarray:
    """A 'person' filling a grey image's middle: coloured upper and lower body."""
    h, w = size
    img = np.full((h, w, 3), 128, np.uint8)
    img[20:110, 20:80] = upper_rgb
    img[110:190, 20:80] = lower_rgb
    return img


def test_descriptor_reads_clothing_colours_and_ignores_mirroring():
    img = shirt_and_trousers((220, 30, 30), (30, 30, 220))
    box = np.array([[20, 10, 80, 200]], np.float32)
    d = appearance(img[None], np.zeros(1, int), box, 1.0).astype(np.float64)
    assert d.shape == (1, DIM)
    upper, lower = d[0, :BINS], d[0, BINS:]
    assert abs(upper.sum() - 1) < 1e-3 and abs(lower.sum() - 1) < 1e-3  # float16
    assert upper[:SAT_BINS].sum() > 0.9  # red: hue bin 0
    blue = int(240 / 360 * HUE_BINS)
    assert lower[blue * SAT_BINS:(blue + 1) * SAT_BINS].sum() > 0.9
    mirrored = appearance(img[None, :, ::-1].copy(), np.zeros(1, int), box, 1.0)
    assert similarity(d, mirrored)[0, 0] > 0.99
    swapped = appearance(shirt_and_trousers((30, 30, 220), (220, 30, 30))[None], np.zeros(1, int), box, 1.0)
    assert similarity(d, swapped)[0, 0] < 0.4  # same colours, other halves: another person


def test_same_person_is_more_similar_than_other_people_on_real_video():
    # crowd_synth/track_a: real people; the same person 50+ frames apart vs two different people.
    root = EVAL / "crowd_synth" / "track_a"
    anns: dict[int, list] = {}
    for a in json.loads((root / "gt_coco.json").read_text())["annotations"]:
        if a["visible_fraction"] > 0.6:
            anns.setdefault(a["frame_index"], []).append(a)
    descs, ids, frames = [], [], []
    with VideoReader(root / "video.mp4", batch_size=16) as reader:
        for b in reader:
            thumbs, scale = thumbnails(b.images, 256)
            for i, f in enumerate(b.frame_index.tolist()):
                if f % 10 or f not in anns:
                    continue
                box = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns[f])])
                descs.append(appearance(thumbs[i:i + 1], np.zeros(len(box), int), box, scale * b.scale))
                ids += [a["track_id"] for a in anns[f]]
                frames += [f] * len(box)
    sim = similarity(np.concatenate(descs), np.concatenate(descs))
    ids, frames = np.array(ids), np.array(frames)
    same = (ids[:, None] == ids[None]) & (np.abs(frames[:, None] - frames[None]) >= 50)
    other = ids[:, None] != ids[None]
    assert np.nanmedian(sim[same]) > 0.8 > np.nanpercentile(sim[other], 95)


def _app(color: int) -> np.ndarray:
    """A descriptor with all mass in one chromatic bin per half."""
    d = np.zeros(DIM, np.float16)
    d[color], d[BINS + color] = 1, 1
    return d


def tracked(rows: list, params: TrackParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, Tracker]:
    """rows [(frame, keypoints, descriptor)] in frame order, 8 frames a batch, through the tracker and
    the confirmed-only output -> (output ids, colour bin and nose y of each output row, the tracker)."""
    output = TrackOutput(Tracker(params))
    pieces = []
    last = rows[-1][0] + 1
    for s in range(0, last, 8):
        chunk = [r for r in rows if s <= r[0] < s + 8]
        b = batch(range(s, min(s + 8, last)), [(f, k) for f, k, _ in chunk])
        pieces += output.push(dataclasses.replace(b, appearance=np.stack([a for *_, a in chunk])))
    pieces += output.flush()
    return (np.concatenate([p.track_id for p in pieces]), np.concatenate([np.argmax(p.appearance, 1) for p in pieces]),
            np.concatenate([p.keypoints[:, 0, 1] for p in pieces]), output.tracker)


def test_reidentified_after_a_gap_longer_than_max_gap():
    # A (colour 0) walks, leaves for 80 frames (> max_gap_frames 30), comes back elsewhere; B (colour
    # 9) is there the whole time; C (colour 17) appears where A left, during A's absence.
    rows = []
    for f in range(200):
        rows.append((f, person(600, 300, arms_up=True), _app(9)))
        if f < 60 or f >= 140:
            rows.append((f, person(100 + 2 * f if f < 60 else 400, 200), _app(0)))
        if 80 <= f < 120:
            rows.append((f, person(220, 200), _app(17)))
    for reid, expect_a_ids in ((True, 1), (False, 2)):
        ids, who, _, tracker = tracked(rows, TrackParams(reid=reid))
        # With reid, every output row of A has one id, the first ones after the return included.
        assert (who == 0).sum() == 120 and len(set(ids[who == 0])) == expect_a_ids, reid
        assert len(set(ids[who == 9])) == 1
        assert set(ids[who == 17]).isdisjoint(ids[who == 0])  # C never takes A's id
        assert tracker.reidentified == (1 if reid else 0)


def test_reidentified_at_confirmation_when_motion_loses_a_person_briefly():
    # A (colour 0) walks right; hidden in frames 20-22, it reappears 90 px further than its walk, as a
    # detector's box jumps around a half-hidden person: motion cannot place it, appearance can (the
    # gap is too short for a re-identification on the first frame back to trust one look). D, dressed
    # like A, begins next to A at frame 18 while A is still seen: two people seen at once are two.
    rows = []
    for f in range(40):
        if not 20 <= f <= 22:
            rows.append((f, person(100 + 2 * f + (90 if f > 22 else 0), 200), _app(0)))
        if f >= 18:
            rows.append((f, person(100 + 2 * f, 420), _app(0)))
    ids, _, nose_y, tracker = tracked(rows, TrackParams())
    assert len(ids) == len(rows) and tracker.reidentified == 1
    assert len(set(ids[nose_y < 300].tolist())) == 1  # A, its rows before and after the gap
    assert set(ids[nose_y > 300].tolist()).isdisjoint(ids[nose_y < 300])  # D kept its own id
    without = tracked(rows, TrackParams(reid=False))[0]
    assert len(set(without.tolist())) == 3  # A's return is a new track by motion alone
