"""Streaming body fits for the graph: tracked rows in, bodies rows out, per video, in chunks.

    PoseBatch slices (tracked, confirmed) --TrackedRows.concat--> TrackedRows --BodyStream--> bodies rows

A video's rows arrive in frame order (the sink's tracker releases them so). They are held until a
chunk of `chunk_frames` frames is complete, then every person-frame of the chunk is fitted in one
batched optimisation: a one-batch fit of 8 frames is dominated by per-iteration overhead, a
32-frame chunk amortises it (benchmarks/mesh_fit.py). A track continues from its last fit in the
next chunk (warm start, frozen shape).
The video's floor is estimated from its first chunks (ground.py). Until it is found, complete chunks
wait, up to `wait_frames` frames of them: fitted before the floor, a track's first bodies had no floor
to stand on and kept that start (vtest: a walker of its first 90 frames stood upright to the level
camera, 22 degrees off the floor's normal; 10 after). A video whose floor is not found by then is fitted
without one. Memory per video: wait_frames frames of keypoints and one chunk.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from stages.batches import TrackedRows
from stages.body.ground import Ground, estimate_ground, ground_columns
from stages.body.table import bodies_table, body_tracks_table

MAX_GROUND_ROWS = 20000  # people rows a video keeps for its floor estimate until one is found (~4 MB)

if TYPE_CHECKING:  # torch is imported by fit.py: the sink actor, which uses this module, need not
    from stages.body.fit import BodyFitter


class BodyStream:
    """Holds each video's unfitted rows and fits them chunk by chunk with one BodyFitter."""

    def __init__(self, fitter: BodyFitter, chunk_frames: int = 32, wait_frames: int = 128):
        self.fitter = fitter
        self.chunk_frames = chunk_frames
        self.wait_frames = wait_frames
        self.pending: dict[str, TrackedRows] = {}
        self.waiting: dict[str, list[TrackedRows]] = {}  # complete chunks held until the floor is found
        self.skipped: dict[str, Counter] = {}
        self.frames: dict[str, Counter] = {}  # video -> track -> fitted person-frames
        self.open_videos: set[str] = set()
        self.grounds: dict[str, Ground] = {}  # the video's floor, estimated from its first rows on
        self.seen: dict[str, TrackedRows] = {}  # rows kept for the floor estimate until it is found
        self.foot: dict[str, dict[int, list[float]]] = {}  # video -> track -> standing foot's height above floor

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
        chunk = held.take(now)
        waiting = self.waiting.pop(vid, []) + [chunk]
        if not self._ground(chunk, image_size).ok and \
                sum(len(np.unique(c.frame_index)) for c in waiting) < self.wait_frames:
            self.waiting[vid] = waiting
            return None
        return self._fit_chunks(waiting, image_size)

    def finish(self, rows: TrackedRows, image_size: tuple[int, int]) -> tuple[pa.Table | None, pa.Table, dict, dict]:
        """The video's last rows: (bodies rows or None, one body_tracks row per fitted track, skip reasons,
        the videos row's floor columns)."""
        vid = rows.video_id
        self._check(vid)
        self.open_videos.discard(vid)
        held = TrackedRows.concat(vid, [self.pending.pop(vid), rows]) if vid in self.pending else rows
        ground = self._ground(held, image_size)
        table = self._fit_chunks(self.waiting.pop(vid, []) + [held], image_size)
        tracks = body_tracks_table(vid, self.fitter.model.name, list(self.fitter.model.shape_names),
                                   self.fitter.shapes(vid), dict(self.frames.pop(vid, Counter())),
                                   self.fitter.statures(vid), self.foot.pop(vid, {}))
        self.fitter.close(vid)
        self.seen.pop(vid, None)
        self.grounds.pop(vid, None)
        return table, tracks, dict(self.skipped.pop(vid, Counter())), ground_columns(ground)

    def fit_whole(self, rows: TrackedRows, image_size: tuple[int, int], max_rows: int = 4096,
                  ) -> tuple[pa.Table | None, pa.Table, dict, dict]:
        """Offline (`posepipe mocap`): every track fitted in one optimisation over all its frames, so the
        temporal terms smooth it both ways; tracks are grouped up to max_rows person-frames per fit.
        Returns what finish() does."""
        *_, result = self.fit_whole_steps(rows, image_size, max_rows)
        return result

    def fit_whole_steps(self, rows: TrackedRows, image_size: tuple[int, int], max_rows: int = 4096,
                        ) -> Iterator[int | tuple[pa.Table | None, pa.Table, dict, dict]]:
        """fit_whole one group of tracks at a time, for a progress bar: yields the person-frames (rows) of
        each group once it is fitted (they add up to len(rows)), then fit_whole's result."""
        vid = rows.video_id
        self.open(vid)
        self._ground(rows, image_size)  # every row of the video at once: the floor from all its tracks
        self.seen.pop(vid, None)  # ...and no later estimate: finish() below brings no new rows
        order = np.lexsort((rows.frame_index, rows.track_id))
        rows = rows.take(order)
        ids, counts = np.unique(rows.track_id, return_counts=True)
        groups, group, size = [], [], 0
        for t, n in zip(ids, counts):
            if group and size + n > max_rows:
                groups.append((group, size))
                group, size = [], 0
            group.append(t)
            size += n
        if group:
            groups.append((group, size))
        tables = []
        for group, size in groups:
            tables.append(self._fit(rows.take(np.isin(rows.track_id, group)), image_size))
            yield int(size)
        empty = rows.take(np.zeros(len(rows), bool))
        _, tracks, skipped, scene = self.finish(empty, image_size)
        kept = [t for t in tables if t is not None]
        yield (pa.concat_tables(kept) if kept else None), tracks, skipped, scene

    def drop(self, video_id: str) -> None:
        """Forget a video that failed."""
        self.pending.pop(video_id, None)
        self.waiting.pop(video_id, None)
        self.skipped.pop(video_id, None)
        self.frames.pop(video_id, None)
        self.open_videos.discard(video_id)
        self.grounds.pop(video_id, None)
        self.seen.pop(video_id, None)
        self.foot.pop(video_id, None)
        self.fitter.close(video_id)

    def _ground(self, rows: TrackedRows, image_size: tuple[int, int]) -> Ground:
        """The video's floor: estimated from the rows seen so far until an estimate is ok, then kept (the
        fits of a video share one camera). Not ok (too few people, feet never seen, nobody moving in depth):
        the fit falls back to no floor, and the videos row says why."""
        vid = rows.video_id
        known = self.grounds.get(vid)
        full = len(self.seen.get(vid, ())) >= MAX_GROUND_ROWS  # new rows would be cut off: the same estimate
        if known is not None and (known.ok or not len(rows) or full):
            return known
        seen = TrackedRows.concat(vid, [self.seen[vid], rows]) if vid in self.seen else rows
        self.seen[vid] = seen.take(np.arange(min(len(seen), MAX_GROUND_ROWS)))
        p = self.fitter.p
        focal = None if p.estimate_focal else p.focal_factor * float(np.hypot(*image_size))
        ground = estimate_ground(seen.keypoints, seen.track_id, seen.frame_index, image_size, focal,
                                 focal_factor=p.focal_factor, camera_height=p.camera_height_m or None)
        self.grounds[vid] = ground
        if ground.ok:
            self.seen.pop(vid)
        return ground

    def _fit_chunks(self, chunks: list[TrackedRows], image_size: tuple[int, int]) -> pa.Table | None:
        """The bodies rows of chunks fitted one after another (in frame order, each its own optimisation)."""
        tables = [self._fit(c, image_size) for c in chunks if len(c)]
        tables = [t for t in tables if t is not None]
        return pa.concat_tables(tables) if tables else None

    def _fit(self, rows: TrackedRows, image_size: tuple[int, int]) -> pa.Table | None:
        """Fit rows on the video's floor as estimated so far (_ground, called first)."""
        vid = rows.video_id
        ground = self.grounds[vid]
        result = self.fitter.fit(vid, rows.keypoints, rows.track_id, rows.frame_index, image_size, ground)
        self.skipped.setdefault(vid, Counter()).update(result.skipped)
        self.frames.setdefault(vid, Counter()).update(rows.track_id[result.rows].tolist())
        if not len(result.rows):
            return None
        # The lower ankle's height above the floor (NaN without one): on standing frames it should be an
        # ankle's height, ~7 cm; far off, the body floats or sinks (body_tracks' plausibility flag).
        foot = ground.distance(result.joints[:, [15, 16]].reshape(-1, 3)).reshape(-1, 2).min(1) if ground.ok \
            else np.full(len(result.rows), np.nan)
        per_track = self.foot.setdefault(vid, {})
        for t, h, c in zip(rows.track_id[result.rows].tolist(), foot.tolist(), result.contact.tolist()):
            if c and np.isfinite(h):
                per_track.setdefault(t, []).append(h)
        return bodies_table(vid, self.fitter.model.name, rows.frame_index, rows.time_s, rows.track_id, result,
                            foot.astype(np.float32))

