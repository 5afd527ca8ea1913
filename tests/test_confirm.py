"""stages.track.confirm: only confirmed tracks are written, nothing reordered, nothing lost but false tracks."""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from stages.track.confirm import TrackOutput
from stages.io.sink import people_table
from stages.track.track import Tracker, TrackParams
from tests.test_track import batch, person


def scripted(num_frames: int = 24):
    """A walks across the whole clip; ghosts: one frame at 5, two frames 10-11, and a late person C who
    appears in the last two frames (tentative when the video ends). Returns [(frame, kp, who)]."""
    rows = [(f, person(100 + 3 * f, 200), "A") for f in range(num_frames)]
    rows += [(5, person(500, 200), "g1"), (10, person(500, 400), "g2"), (11, person(502, 400), "g2")]
    rows += [(f, person(300, 420, arms_up=True), "C") for f in (num_frames - 2, num_frames - 1)]
    return sorted(rows, key=lambda r: r[0])


def run(params: TrackParams, chunk: int, rows=None, num_frames: int = 24):
    rows = rows or scripted(num_frames)
    out = TrackOutput(Tracker(params))
    pieces = []
    for s in range(0, num_frames, chunk):
        fs = list(range(s, min(s + chunk, num_frames)))
        b = batch(fs, [(f, k) for f, k, _ in rows if f in fs])
        pieces += out.push(dataclasses.replace(b, mode="topdown"))
    pieces += out.flush()
    return out, pieces


def test_only_confirmed_tracks_are_written_and_every_frame_once():
    for chunk in (1, 3, 8, 24):  # the delay crosses batch boundaries the same way at any batch size
        out, pieces = run(TrackParams(min_hits=3), chunk)
        frames = np.concatenate([p.frames for p in pieces])
        assert frames.tolist() == list(range(24)), chunk  # every frame once, in order: "nobody" stays visible
        ids = np.concatenate([p.track_id for p in pieces])
        fi = np.concatenate([p.frame_index for p in pieces])
        assert len(ids) == 24 and set(ids.tolist()) == {0}, chunk  # only A, renumbered from 0
        assert fi.tolist() == list(range(24))
        assert out.rows_dropped == 5 and out.tracks == 1  # g1 (1 row), g2 (2), C (2 rows at the end)
        for p in pieces:  # each slice is a valid sink input with its batch's mode
            assert p.mode == "topdown"
            assert isinstance(people_table(p), pa.Table)


def test_keeping_unconfirmed_passes_every_row_through():
    out, pieces = run(TrackParams(min_hits=3, drop_unconfirmed=False), chunk=8)
    ids = np.concatenate([p.track_id for p in pieces])
    assert len(ids) == 24 + 5 and out.rows_dropped == 0
    assert len(set(ids.tolist())) == 4  # A, g1, g2, C: ids straight from the tracker


def test_ids_contiguous_in_order_of_first_appearance():
    rows = [(f, person(100, 200), "A") for f in range(12)] + [(f, person(400, 200, arms_up=True), "B")
                                                              for f in range(4, 12)]
    _, pieces = run(TrackParams(min_hits=3), chunk=5, rows=sorted(rows, key=lambda r: r[0]), num_frames=12)
    fi = np.concatenate([p.frame_index for p in pieces])
    ids = np.concatenate([p.track_id for p in pieces])
    assert set(ids[fi < 4].tolist()) == {0}
    assert sorted(set(ids.tolist())) == [0, 1] and len(ids) == 12 + 8


def test_disabled_tracking_gives_each_row_its_own_id():
    _, pieces = run(TrackParams(enabled=False), chunk=8)
    ids = np.concatenate([p.track_id for p in pieces])
    assert len(ids) == 29 and len(set(ids.tolist())) == 29 and (ids >= 0).all()
