"""stages.track.appearance (colour descriptor) and the tracker's re-identification after long gaps."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
from conftest import EVAL
from test_track import batch, person

from stages.track.appearance import BINS, DIM, HUE_BINS, SAT_BINS, appearance, similarity, thumbnails
from stages.io.decode import VideoReader
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
        tracker = Tracker(TrackParams(reid=reid))
        out = []
        for s in range(0, 200, 8):
            chunk = [r for r in rows if s <= r[0] < s + 8]
            b = batch(range(s, s + 8), [(f, k) for f, k, _ in chunk])
            b = dataclasses.replace(b, appearance=np.stack([a for *_, a in chunk]))
            out.append((tracker(b).track_id, np.array([int(np.argmax(a)) for *_, a in chunk])))
        ids = np.concatenate([o[0] for o in out])
        who = np.concatenate([o[1] for o in out])
        assert len(set(ids[who == 0])) == expect_a_ids, reid
        assert len(set(ids[who == 9])) == 1
        assert set(ids[who == 17]).isdisjoint(ids[who == 0])  # C never takes A's id
        assert tracker.reidentified == (1 if reid else 0)
