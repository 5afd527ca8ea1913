"""Parquet sink: people, frames and videos tables, each video's output visible whole or not at all.

Layout under OUT (schemas in README.md):
    people/video_id=<id>/part-0.parquet   one row per person per frame
    frames/video_id=<id>/part-0.parquet   one row per decoded frame (so "nobody" != "not processed")
    videos/<id>.parquet                   one row per video: status, error, counts, timings
A video streams into OUT/_staging/<id>/ (readers skip names starting with '_' or '.') and is moved
into place only when complete; its videos row is written last, so a row with status ok/truncated
means the people and frames files beside it are final.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stages.batches import NUM_KEYPOINTS, PoseBatch

_KP = pa.list_(pa.float32(), NUM_KEYPOINTS)
PEOPLE_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("frame_index", pa.int64()),
    ("time_s", pa.float64()),
    ("person_index", pa.int32()),  # 0.. within the frame, in output order (by person score)
    ("track_id", pa.int64()),  # null until tracking assigns one
    ("kp_x", _KP),  # COCO-17 order, video pixels; NaN where the keypoint was not found
    ("kp_y", _KP),
    ("kp_score", _KP),  # 0 where not found
    ("kp_low_conf", pa.list_(pa.bool_(), NUM_KEYPOINTS)),  # score below the sink's threshold: occluded
    ("bbox", pa.list_(pa.float32(), 4)),  # x1, y1, x2, y2 in video pixels
    ("score", pa.float32()),
    ("det_bbox", pa.list_(pa.float32(), 4)),  # detector box (top-down people), null for bottom-up
    ("det_score", pa.float32()),  # null for bottom-up people
    ("mode", pa.string()),  # bottomup / topdown / hybrid
    ("model", pa.string()),  # model files that produced the row
])
FRAMES_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("frame_index", pa.int64()),
    ("time_s", pa.float64()),
    ("num_people", pa.int32()),
])
VIDEOS_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("path", pa.string()),
    ("size_bytes", pa.int64()),
    ("status", pa.string()),  # ok | truncated | failed
    ("error", pa.string()),  # null when ok
    ("frames", pa.int64()),  # frames decoded and processed
    ("people_rows", pa.int64()),
    ("tracks", pa.int64()),  # distinct track ids given in the video
    ("flips_corrected", pa.int64()),  # poses whose left/right labels the tracker swapped back
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("fps", pa.float64()),
    ("duration_s", pa.float64()),
    ("rotation", pa.int32()),
    ("wall_s", pa.float64()),
    ("mode", pa.string()),
    ("model", pa.string()),
    ("finished_at", pa.timestamp("s", tz="UTC")),
])


def people_table(batch: PoseBatch, model: str, low_confidence: float) -> pa.Table:
    """Columns of one PoseBatch as a people-table slice (person_index counts within each frame)."""
    n = len(batch)
    no_det = np.isnan(batch.det_score)
    # person_index: rank within the frame in batch order (frames are contiguous in a PoseBatch).
    starts = np.searchsorted(batch.frame_index, batch.frame_index, side="left") if n else np.zeros(0, np.int64)
    kp = batch.keypoints
    arrays = [
        pa.array([batch.video_id] * n, pa.string()),
        pa.array(batch.frame_index),
        pa.array(batch.time_s),
        pa.array((np.arange(n) - starts).astype(np.int32)),
        pa.array(batch.track_id, mask=batch.track_id < 0),
        *(pa.FixedSizeListArray.from_arrays(pa.array(kp[:, :, c].reshape(-1)), NUM_KEYPOINTS) for c in range(3)),
        pa.FixedSizeListArray.from_arrays(pa.array((kp[:, :, 2] < low_confidence).reshape(-1)), NUM_KEYPOINTS),
        pa.FixedSizeListArray.from_arrays(pa.array(batch.bbox.reshape(-1)), 4),
        pa.array(batch.score),
        pa.FixedSizeListArray.from_arrays(pa.array(batch.det_bbox.reshape(-1)), 4, mask=pa.array(no_det)),
        pa.array(batch.det_score, mask=no_det),
        pa.array([batch.mode] * n, pa.string()),
        pa.array([model] * n, pa.string()),
    ]
    return pa.Table.from_arrays(arrays, schema=PEOPLE_SCHEMA)


def people_per_frame(batch: PoseBatch) -> np.ndarray:
    """int64[F]: people of each of batch.frames (people are grouped by frame, frames in order)."""
    return (np.searchsorted(batch.frame_index, batch.frames, side="right")
            - np.searchsorted(batch.frame_index, batch.frames, side="left"))


def frames_table(batch: PoseBatch) -> pa.Table:
    counts = people_per_frame(batch)
    return pa.Table.from_arrays([
        pa.array([batch.video_id] * len(batch.frames), pa.string()),
        pa.array(batch.frames), pa.array(batch.frame_time_s), pa.array(counts.astype(np.int32)),
    ], schema=FRAMES_SCHEMA)


@dataclass
class _OpenVideo:
    people: pq.ParquetWriter
    frames: pq.ParquetWriter
    started: float = field(default_factory=time.monotonic)
    frame_count: int = 0
    people_rows: int = 0
    last_frame: int = -1


class ParquetSink:
    """Streams PoseBatches of many videos to Parquet; memory per video is one row group."""

    def __init__(self, out_dir: str | Path, row_group_size: int = 65536, low_confidence: float = 0.3):
        self.out = Path(out_dir)
        self.row_group_size = row_group_size
        self.low_confidence = low_confidence
        self.open_videos: dict[str, _OpenVideo] = {}

    def _staging(self, video_id: str) -> Path:
        return self.out / "_staging" / video_id

    def _drop_staging(self, video_id: str) -> None:
        shutil.rmtree(self._staging(video_id), ignore_errors=True)
        with contextlib.suppress(OSError):  # not empty: another video is still staging
            (self.out / "_staging").rmdir()

    def open(self, video_id: str) -> None:
        staging = self._staging(video_id)
        shutil.rmtree(staging, ignore_errors=True)  # leftovers of a killed earlier run
        staging.mkdir(parents=True)
        self.open_videos[video_id] = _OpenVideo(
            people=pq.ParquetWriter(staging / "people.parquet", PEOPLE_SCHEMA),
            frames=pq.ParquetWriter(staging / "frames.parquet", FRAMES_SCHEMA),
        )

    def write(self, batch: PoseBatch, model: str) -> int:
        """Append one batch; batches of a video must come in frame order. Returns rows written."""
        state = self.open_videos[batch.video_id]
        if len(batch.frames) and batch.frames[0] <= state.last_frame:
            raise ValueError(
                f"{batch.video_id}: frame {batch.frames[0]} arrived after frame {state.last_frame}; "
                "the sink needs each video's batches in order"
            )
        state.people.write_table(people_table(batch, model, self.low_confidence), row_group_size=self.row_group_size)
        state.frames.write_table(frames_table(batch), row_group_size=self.row_group_size)
        state.frame_count += len(batch.frames)
        state.people_rows += len(batch)
        if len(batch.frames):
            state.last_frame = int(batch.frames[-1])
        return len(batch)

    def _close_writers(self, video_id: str) -> _OpenVideo | None:
        state = self.open_videos.pop(video_id, None)
        if state is not None:
            state.people.close()
            state.frames.close()
        return state

    def _write_video_row(self, row: dict) -> None:
        videos = self.out / "videos"
        videos.mkdir(parents=True, exist_ok=True)
        full = {name: row.get(name) for name in VIDEOS_SCHEMA.names}
        full["finished_at"] = full["finished_at"] or int(time.time())
        table = pa.Table.from_pylist([full], schema=VIDEOS_SCHEMA)
        tmp = videos / f".{row['video_id']}.parquet.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, videos / f"{row['video_id']}.parquet")

    def finish(self, video_id: str, row: dict) -> dict:
        """Make a video's output visible: move its files into place, then write its videos row.

        row: videos-table fields known upstream (path, status, error, fps, ...); counts and wall
        time are filled in here. Returns the full row.
        """
        state = self._close_writers(video_id)
        if state is None:
            raise KeyError(f"{video_id}: finish() without open()")
        for table in ("people", "frames"):
            final = self.out / table / f"video_id={video_id}"
            shutil.rmtree(final, ignore_errors=True)  # an earlier run's output of the same video
            final.mkdir(parents=True)
            os.replace(self._staging(video_id) / f"{table}.parquet", final / "part-0.parquet")
        self._drop_staging(video_id)
        row = {**row, "video_id": video_id, "frames": state.frame_count, "people_rows": state.people_rows,
               "wall_s": row.get("wall_s") or time.monotonic() - state.started}
        self._write_video_row(row)
        return row

    def fail(self, video_id: str, row: dict) -> dict:
        """Record a failed video: drop anything staged or published for it, write its videos row."""
        self._close_writers(video_id)
        self._drop_staging(video_id)
        for table in ("people", "frames"):
            shutil.rmtree(self.out / table / f"video_id={video_id}", ignore_errors=True)
        row = {**row, "video_id": video_id, "status": "failed", "frames": row.get("frames", 0),
               "people_rows": 0}
        self._write_video_row(row)
        return row
