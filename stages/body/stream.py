"""Streaming body fits for the graph: tracked rows in, bodies rows out, per video, in chunks.

    PoseBatch slices (tracked, confirmed) --tracked_rows--> TrackedRows --BodyStream--> bodies rows

A video's rows arrive in frame order (the sink's tracker releases them so). They are held until a
chunk of `chunk_frames` frames is complete, then every person-frame of the chunk is fitted in one
batched optimisation: a one-batch fit of 8 frames is dominated by per-iteration overhead, a
32-frame chunk amortises it (benchmarks/mesh_fit.py). A track continues from its last fit in the
next chunk (warm start, frozen shape). Memory per video: one chunk of keypoints.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from stages.batches import PoseBatch
from stages.body.table import body_tracks_table, bodies_table

if TYPE_CHECKING:  # torch is imported by fit.py: the sink actor, which uses this module, need not
    from stages.body.fit import BodyFitter


@dataclass(frozen=True)
class TrackedRows:
    """People rows with their track ids: frame_index, track_id int64[P]; time_s float64[P];
    keypoints float32[P, 17, 3] (x, y, score in video pixels)."""

    video_id: str
    frame_index: np.ndarray
    time_s: np.ndarray
    track_id: np.ndarray
    keypoints: np.ndarray

    def __len__(self) -> int:
        return len(self.frame_index)


def tracked_rows(video_id: str, pieces: list[PoseBatch]) -> TrackedRows:
    """The rows of tracked PoseBatch slices (in order) that have a track id."""
    cols = {"frame_index": [], "time_s": [], "track_id": [], "keypoints": []}
    for piece in pieces:
        keep = piece.track_id >= 0
        for name in cols:
            cols[name].append(getattr(piece, name)[keep])
    if not pieces:
        return TrackedRows(video_id, np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64),
                           np.zeros((0, 17, 3), np.float32))
    return TrackedRows(video_id, **{k: np.concatenate(v) for k, v in cols.items()})


def _concat(a: TrackedRows | None, b: TrackedRows) -> TrackedRows:
    if a is None:
        return b
    return TrackedRows(b.video_id, *(np.concatenate([getattr(a, n), getattr(b, n)])
                                     for n in ("frame_index", "time_s", "track_id", "keypoints")))


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
        held = _concat(self.pending.get(vid), rows)
        frames = np.unique(held.frame_index)
        if len(frames) < self.chunk_frames:
            self.pending[vid] = held
            return None
        # Fit every whole chunk held; keep the frames of the last, incomplete one.
        cut = frames[(len(frames) // self.chunk_frames) * self.chunk_frames - 1]
        now = held.frame_index <= cut
        self.pending[vid] = _take(held, ~now)
        return self._fit(_take(held, now), image_size)

    def finish(self, rows: TrackedRows, image_size: tuple[int, int]) -> tuple[pa.Table | None, pa.Table, dict]:
        """The video's last rows: (bodies rows or None, one body_tracks row per fitted track, skip reasons)."""
        vid = rows.video_id
        self._check(vid)
        self.open_videos.discard(vid)
        held = _concat(self.pending.pop(vid, None), rows)
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
        rows = _take(rows, order)
        ids, counts = np.unique(rows.track_id, return_counts=True)
        tables, group, size = [], [], 0
        for t, n in zip(ids, counts):
            if group and size + n > max_rows:
                tables.append(self._fit(_take(rows, np.isin(rows.track_id, group)), image_size))
                group, size = [], 0
            group.append(t)
            size += n
        if group:
            tables.append(self._fit(_take(rows, np.isin(rows.track_id, group)), image_size))
        empty = _take(rows, np.zeros(len(rows), bool))
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


def _take(rows: TrackedRows, keep: np.ndarray) -> TrackedRows:
    return TrackedRows(rows.video_id, rows.frame_index[keep], rows.time_s[keep], rows.track_id[keep],
                       rows.keypoints[keep])
