"""Confirmed tracks only: hold a video's tracked rows until their track is decided.

    PoseBatch --Tracker--> rows with ids --TrackOutput (holds <= min_hits - 1 frames)--> rows of confirmed tracks

A tracker must give every detection an id at once, but most one- or two-frame tracks are false
detections (a coat on a chair, a reflection): on vtest.mp4 they were 178 of 229 ids, median track
length 2 frames. SORT-style trackers report confirmed tracks only; doing that online needs a
short delay. A tentative track ends at its first missed frame (stages/track/track.py), so its fate is known
at most min_hits - 1 processed frames after any of its rows: confirmed (the rows are written, ids
included) or ended (the rows are dropped and counted). A track re-identified at confirmation as an
older one (Tracker.merged) has its held rows written with the older id. Ids are renumbered 0, 1, 2,
... in order of first appearance, so a video's ids are contiguous in the output.

The delay is at frame granularity and never reorders anything: a frame is released whole once every
row in it is decided, and a batch is released in slices of its own frames (a PoseBatch has one mode,
so slices of two batches are never merged).
"""
from __future__ import annotations

import dataclasses
from collections import deque

import numpy as np

from stages.batches import PoseBatch
from stages.track.track import Tracker


class TrackOutput:
    """Tracker plus the hold-back of undecided rows; one per video, fed its batches in frame order.

    With params.drop_unconfirmed False (or tracking disabled) batches pass straight through with
    the tracker's ids: every detection kept, one-frame tracks included.
    """

    def __init__(self, tracker: Tracker):
        p = tracker.params
        self.tracker = tracker
        self.hold = p.drop_unconfirmed and p.enabled and p.min_hits > 1
        self.pending: deque[PoseBatch] = deque()
        self.out_ids: dict[int, int] = {}  # tracker id -> output id
        self.rows_dropped = 0  # rows of tracks that ended before min_hits

    @property
    def tracks(self) -> int:
        """Distinct ids written so far."""
        return len(self.out_ids) if self.hold else self.tracker.next_id

    def push(self, batch: PoseBatch) -> list[PoseBatch]:
        """Track one batch; returns the slices now decided (possibly of earlier batches), in order."""
        tracked = self.tracker(batch)
        if not self.hold:
            return [tracked]
        self.pending.append(tracked)
        return self._release(final=False)

    def flush(self) -> list[PoseBatch]:
        """At the video's end: whatever is still tentative never reached min_hits and is dropped."""
        return self._release(final=True) if self.hold else []

    def _release(self, final: bool) -> list[PoseBatch]:
        confirmed = self.tracker.confirmed_ids
        open_ids = set() if final else {tr.id for tr in self.tracker.tracks if tr.id not in confirmed}
        out = []
        while self.pending:
            b = self.pending[0]
            undecided = np.isin(b.track_id, list(open_ids))
            if undecided.any():
                first = b.frame_index[undecided].min()  # release the frames before it, keep the rest
                head = b.frames < first
                if head.any():
                    out.append(self._confirmed(b.take(b.frame_index < first, head)))
                    self.pending[0] = b.take(b.frame_index >= first, ~head)
                break
            out.append(self._confirmed(b))
            self.pending.popleft()
        return out

    def _confirmed(self, b: PoseBatch) -> PoseBatch:
        # A new track re-identified at confirmation continues an older one: its held rows take that id.
        merged = self.tracker.merged
        if merged:
            b = dataclasses.replace(b, track_id=np.array([merged.get(t, t) for t in b.track_id.tolist()], np.int64))
        keep = np.isin(b.track_id, list(self.tracker.confirmed_ids))
        self.rows_dropped += int((~keep).sum())
        b = b.take(keep)
        for tid in b.track_id.tolist():
            self.out_ids.setdefault(tid, len(self.out_ids))
        ids = np.array([self.out_ids[t] for t in b.track_id.tolist()], np.int64)
        return dataclasses.replace(b, track_id=ids)
