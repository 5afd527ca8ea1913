"""Streaming body fits for the graph: tracked rows in, bodies rows out, per video, in chunks.

    PoseBatch slices (tracked, confirmed) --TrackedRows.concat--> TrackedRows --BodyStream--> bodies rows

A video's rows arrive in frame order (the sink's tracker releases them so). They are held until a
chunk of `chunk_frames` frames is complete, then every person-frame of the chunk is fitted in one
batched optimisation: a one-batch fit of 8 frames is dominated by per-iteration overhead, a
32-frame chunk amortises it (benchmarks/mesh_fit.py). A track continues from its last fit in the
next chunk (warm start, frozen shape). Memory per video: one chunk of keypoints.
"""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from stages.batches import TrackedRows
from stages.body.table import body_tracks_table, bodies_table

if TYPE_CHECKING:  # torch is imported by fit.py: the sink actor, which uses this module, need not
    from stages.body.fit import BodyFitter


class BodyStream:
    """Holds each video's unfitted rows and fits them chunk by chunk with one BodyFitter."""

    def __init__(self, fitter: BodyFitter, chunk_frames: int = 32):
        self.fitter = fitter
        self.chunk_frames = chunk_frames
        self.pending: dict[str, TrackedRows] = {}
        self.skipped: dict[str, Counter] = {}
        self.frames: dict[str, Counter] = {}  # video -> track -> fitted person-frames
        self.open_videos: set[str] = set()

    def open(self, video_id: str) -> None:
        """Start a video (again: whatever an earlier run of it left here is dropped)."""
        self.drop(video_id)
        self.open_videos.add(video_id)

    def _check(self, video_id: str) -> None:
        if video_id not in self.open_videos:
            # A restarted actor lost the held rows and warm starts: the video must fail, not miss bodies.
            raise RuntimeError(f"{video_id}: the mesh stage lost this video's state (actor restarted?)")

    def push(self, rows: TrackedRows, image_size: tuple[int, int]) -> pa.Table | None:
        """Add rows; returns the bodies rows of the chunks now complete (None while a chunk fills)."""
        vid = rows.video_id
        self._check(vid)
        held = TrackedRows.concat(vid, [self.pending[vid], rows]) if vid in self.pending else rows
        frames = np.unique(held.frame_index)
        if len(frames) < self.chunk_frames:
            self.pending[vid] = held
            return None
        # Fit every whole chunk held; keep the frames of the last, incomplete one.
        cut = frames[(len(frames) // self.chunk_frames) * self.chunk_frames - 1]
        now = held.frame_index <= cut
        self.pending[vid] = held.take(~now)
        return self._fit(held.take(now), image_size)

    def finish(self, rows: TrackedRows, image_size: tuple[int, int]) -> tuple[pa.Table | None, pa.Table, dict]:
        """The video's last rows: (bodies rows or None, one body_tracks row per fitted track, skip reasons)."""
        vid = rows.video_id
        self._check(vid)
        self.open_videos.discard(vid)
        held = TrackedRows.concat(vid, [self.pending.pop(vid), rows]) if vid in self.pending else rows
        table = self._fit(held, image_size) if len(held) else None
        tracks = body_tracks_table(vid, self.fitter.model.name, list(self.fitter.model.shape_names),
                                   self.fitter.shapes(vid), dict(self.frames.pop(vid, Counter())))
        self.fitter.close(vid)
        return table, tracks, dict(self.skipped.pop(vid, Counter()))

    def fit_whole(self, rows: TrackedRows, image_size: tuple[int, int], max_rows: int = 4096,
                  ) -> tuple[pa.Table | None, pa.Table, dict]:
        """Offline (`posepipe mocap`): every track fitted in one optimisation over all its frames, so the
        temporal terms smooth it both ways; tracks are grouped up to max_rows person-frames per fit.
        Returns what finish() does."""
        vid = rows.video_id
        self.open(vid)
        order = np.lexsort((rows.frame_index, rows.track_id))
        rows = rows.take(order)
        ids, counts = np.unique(rows.track_id, return_counts=True)
        tables, group, size = [], [], 0
        for t, n in zip(ids, counts):
            if group and size + n > max_rows:
                tables.append(self._fit(rows.take(np.isin(rows.track_id, group)), image_size))
                group, size = [], 0
            group.append(t)
            size += n
        if group:
            tables.append(self._fit(rows.take(np.isin(rows.track_id, group)), image_size))
        empty = rows.take(np.zeros(len(rows), bool))
        _, tracks, skipped = self.finish(empty, image_size)
        kept = [t for t in tables if t is not None]
        return (pa.concat_tables(kept) if kept else None), tracks, skipped

    def drop(self, video_id: str) -> None:
        """Forget a video that failed."""
        self.pending.pop(video_id, None)
        self.skipped.pop(video_id, None)
        self.frames.pop(video_id, None)
        self.open_videos.discard(video_id)
        self.fitter.close(video_id)

    def _fit(self, rows: TrackedRows, image_size: tuple[int, int]) -> pa.Table | None:
        result = self.fitter.fit(rows.video_id, rows.keypoints, rows.track_id, rows.frame_index, image_size)
        self.skipped.setdefault(rows.video_id, Counter()).update(result.skipped)
        self.frames.setdefault(rows.video_id, Counter()).update(rows.track_id[result.rows].tolist())
        if not len(result.rows):
            return None
        return bodies_table(rows.video_id, self.fitter.model.name, rows.frame_index, rows.time_s, rows.track_id,
                            result)

