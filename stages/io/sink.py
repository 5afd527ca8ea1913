"""Parquet sink: people, frames and videos tables, each video's output visible whole or not at all.

Layout under OUT (schemas in docs/output.md):
    people/video_id=<id>/part-0.parquet   one row per person per frame
    frames/video_id=<id>/part-0.parquet   one row per decoded frame (so "nobody" != "not processed")
    videos/<id>.parquet                   one row per video: status, error, counts, timings
OUT is a local path or any pyarrow.fs URI (file://, s3://, gs://; see sink_fs.resolve_output); all
reads and writes go through that filesystem.

A video streams into OUT/_staging/<id>/ (readers skip names starting with '_' or '.') and its files
are moved into place only when complete. On a local disk a move is a rename; on object stores it is
a copy + delete, so people and frames appear one after the other, not together. That is fine
because the videos row is the commit point: it is removed before a video's files are replaced and
written (temp name + move) only after they are in place, so a row with status ok/truncated means the
people and frames files beside it are final. A process killed in between leaves files without a
row; remove_unfinished() deletes those before a re-run.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from stages.batches import PoseBatch
from stages.coco17 import NUM_KEYPOINTS
from stages.scores import HOUSE_THRESHOLD  # kp_low_conf: the joints no stage counted as sure
from stages.io.sink_fs import (
    delete_dir,
    delete_file,
    ensure_dir,
    join,
    move,
    put_atomic,
    read_json,
    resolve_output,
    rmdir_if_empty,
    write_json,
)

__all__ = ["DONE_STATUSES", "TABLES", "FRAMES_SCHEMA", "PEOPLE_SCHEMA", "VIDEOS_SCHEMA", "ParquetSink",
           "frames_table", "people_per_frame", "people_table", "put_video_row", "read_json", "read_video_rows",
           "remove_unfinished", "resolve_output", "write_json"]

# Statuses whose videos row vouches for the people and frames files of the video.
DONE_STATUSES = ("ok", "truncated")
# Every per-video table under OUT; bodies and body_tracks exist when the mesh stage ran, dense when the dense stage did.
TABLES = ("people", "frames", "bodies", "body_tracks", "dense")

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
    # Given by the runner, null when it gives none: which input file content and which
    # output-affecting config produced the row, so a re-run can skip videos already done.
    ("fingerprint", pa.string()),
    ("config_hash", pa.string()),
    # Mesh stage (null when it did not run): fitted person-frames, tracks with a shape, the tracked
    # person-frames left without a body (0 when none) and why, by reason ("few_confident_joints=12").
    ("body_rows", pa.int64()),
    ("body_tracks", pa.int64()),
    ("body_skipped", pa.int64()),
    ("body_skipped_reasons", pa.string()),
    # The floor and camera the body fit assumed (stages/body/ground.py; null without the mesh stage).
    ("ground_ok", pa.bool_()),
    ("ground_reason", pa.string()),  # why no floor was found, when ground_ok is false
    ("camera_height_m", pa.float64()),
    ("camera_pitch_deg", pa.float64()),  # > 0: looking down
    ("camera_roll_deg", pa.float64()),
    ("focal_px", pa.float64()),
    # Dense stage: its rows (person-frames rendered; null when it did not run, or since `mocap` refitted).
    ("dense_rows", pa.int64()),
    # What its masks are: "silhouettes" (cut to the people's silhouettes in the frame, stages/dense/silhouette.py)
    # or "bodies" (the fitted bodies alone: [dense] silhouettes off, or its model not installed); null as dense_rows.
    ("dense_masks", pa.string()),
])


def people_table(batch: PoseBatch) -> pa.Table:
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
        pa.FixedSizeListArray.from_arrays(pa.array((kp[:, :, 2] < HOUSE_THRESHOLD).reshape(-1)), NUM_KEYPOINTS),
        pa.FixedSizeListArray.from_arrays(pa.array(batch.bbox.reshape(-1)), 4),
        pa.array(batch.score),
        pa.FixedSizeListArray.from_arrays(pa.array(batch.det_bbox.reshape(-1)), 4, mask=pa.array(no_det)),
        pa.array(batch.det_score, mask=no_det),
        pa.array([batch.mode] * n, pa.string()),
        pa.array([batch.model] * n, pa.string()),
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
    extra: dict = field(default_factory=dict)  # table name -> ParquetWriter, opened at its first rows


class ParquetSink:
    """Streams PoseBatches of many videos to Parquet; memory per video is one row group."""

    def __init__(self, out_dir: str | os.PathLike, row_group_size: int = 65536):
        self.fs, self.root = resolve_output(out_dir)
        self.row_group_size = row_group_size
        self.open_videos: dict[str, _OpenVideo] = {}

    def _path(self, *parts: str) -> str:
        return join(self.root, *parts)

    def _staging(self, video_id: str) -> str:
        return self._path("_staging", video_id)

    def _drop_staging(self, video_id: str) -> None:
        delete_dir(self.fs, self._staging(video_id))
        rmdir_if_empty(self.fs, self._path("_staging"))  # kept while another video is staging

    def open(self, video_id: str) -> None:
        staging = self._staging(video_id)
        delete_dir(self.fs, staging)  # leftovers of a killed earlier run
        try:
            ensure_dir(self.fs, staging)
        except FileNotFoundError:  # another sink removed the empty _staging mid-way: once more
            ensure_dir(self.fs, staging)
        self.open_videos[video_id] = _OpenVideo(
            people=pq.ParquetWriter(join(staging, "people.parquet"), PEOPLE_SCHEMA, filesystem=self.fs),
            frames=pq.ParquetWriter(join(staging, "frames.parquet"), FRAMES_SCHEMA, filesystem=self.fs),
        )

    def write(self, batch: PoseBatch) -> int:
        """Append one batch; batches of a video must come in frame order. Returns rows written."""
        state = self.open_videos[batch.video_id]
        if len(batch.frames) and batch.frames[0] <= state.last_frame:
            raise ValueError(
                f"{batch.video_id}: frame {batch.frames[0]} arrived after frame {state.last_frame}; "
                "the sink needs each video's batches in order"
            )
        state.people.write_table(people_table(batch), row_group_size=self.row_group_size)
        state.frames.write_table(frames_table(batch), row_group_size=self.row_group_size)
        state.frame_count += len(batch.frames)
        state.people_rows += len(batch)
        if len(batch.frames):
            state.last_frame = int(batch.frames[-1])
        return len(batch)

    def write_table(self, video_id: str, name: str, table: pa.Table) -> int:
        """Append rows to one of the video's other tables (bodies, body_tracks), staged like people."""
        state = self.open_videos[video_id]
        if name not in state.extra:
            state.extra[name] = pq.ParquetWriter(join(self._staging(video_id), f"{name}.parquet"), table.schema,
                                                 filesystem=self.fs)
        state.extra[name].write_table(table, row_group_size=self.row_group_size)
        return table.num_rows

    def rewrite_table(self, video_id: str, name: str, fn: Callable[[pa.Table], pa.Table]) -> int:
        """Pass one of the video's staged tables through fn, a row group at a time (memory: one row group),
        before finish() publishes it; rows may still be appended after. Returns its rows (0: none staged).
        For columns known only at the video's end (dense rows' plausibility flags)."""
        state = self.open_videos[video_id]
        writer = state.extra.pop(name, None)
        if writer is None:
            return 0
        writer.close()
        path = join(self._staging(video_id), f"{name}.parquet")
        old = join(self._staging(video_id), f"{name}.before.parquet")
        move(self.fs, path, old)
        rows = 0
        with self.fs.open_input_file(old) as f:
            source = pq.ParquetFile(f)
            for g in range(source.num_row_groups):
                rows += self.write_table(video_id, name, fn(source.read_row_group(g)))
        delete_file(self.fs, old)
        return rows

    def _close_writers(self, video_id: str) -> _OpenVideo | None:
        state = self.open_videos.pop(video_id, None)
        if state is not None:
            for writer in (state.people, state.frames, *state.extra.values()):
                writer.close()
        return state

    def _row_path(self, video_id: str) -> str:
        return self._path("videos", f"{video_id}.parquet")

    def _write_video_row(self, row: dict) -> None:
        put_video_row(self.fs, self.root, row)

    def _unpublish(self, video_id: str) -> None:
        """Withdraw an earlier run's output of the video: its row first, so no ok row ever stands
        beside half-replaced files, then its partitions."""
        delete_file(self.fs, self._row_path(video_id))
        for table in TABLES:
            delete_dir(self.fs, self._path(table, f"video_id={video_id}"))

    def finish(self, video_id: str, row: dict) -> dict:
        """Make a video's output visible: move its files into place, then write its videos row.

        row: videos-table fields known upstream (path, status, error, fps, fingerprint, ...);
        counts and wall time are filled in here. Returns the full row.
        """
        state = self._close_writers(video_id)
        if state is None:
            raise KeyError(f"{video_id}: finish() without open()")
        self._unpublish(video_id)
        for table in ("people", "frames", *state.extra):
            final = self._path(table, f"video_id={video_id}")
            ensure_dir(self.fs, final)
            move(self.fs, join(self._staging(video_id), f"{table}.parquet"), join(final, "part-0.parquet"))
        self._drop_staging(video_id)
        row = {**row, "video_id": video_id, "frames": state.frame_count, "people_rows": state.people_rows,
               "wall_s": row.get("wall_s") or time.monotonic() - state.started}
        self._write_video_row(row)
        return row

    def fail(self, video_id: str, row: dict) -> dict:
        """Record a failed video: drop anything staged or published for it, write its videos row."""
        self._close_writers(video_id)
        self._drop_staging(video_id)
        self._unpublish(video_id)
        row = {**row, "video_id": video_id, "status": "failed", "frames": row.get("frames", 0),
               "people_rows": 0}
        self._write_video_row(row)
        return row


def put_video_row(fs: pafs.FileSystem, root: str, row: dict) -> None:
    """Write (or replace, atomically) one video's videos-table row; absent fields are null."""
    full = {name: row.get(name) for name in VIDEOS_SCHEMA.names}
    full["finished_at"] = full["finished_at"] or int(time.time())
    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist([full], schema=VIDEOS_SCHEMA), buf)
    put_atomic(fs, join(root, "videos", f"{row['video_id']}.parquet"), buf.getvalue().to_pybytes())


def read_video_rows(out: str | os.PathLike) -> list[dict]:
    """Every videos-table row under OUT, in video-id order; [] when OUT or OUT/videos is missing.

    Rows written before a column was added (fingerprint, config_hash) read it as null; an old row's
    text body_skipped ("few_confident_joints=12") as the count (12) and the reasons.
    """
    fs, root = resolve_output(out)
    infos = fs.get_file_info(pafs.FileSelector(join(root, "videos"), allow_not_found=True))
    paths = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                   and not i.base_name.startswith((".", "_")))  # temp names of rows being written
    if not paths:
        return []
    import pyarrow.dataset as ds  # lazily: it imports pandas (0.5 s) in every actor that writes

    try:
        table = ds.dataset(paths, schema=VIDEOS_SCHEMA, format="parquet", filesystem=fs).to_table()
    except pa.ArrowInvalid:  # some row has the old text body_skipped ("reason=count,...") that int64 can not hold
        table = ds.dataset(paths, schema=_LEGACY_VIDEOS_SCHEMA, format="parquet", filesystem=fs).to_table()
        return [_upgrade_skips(r) for r in table.sort_by("video_id").to_pylist()]
    return table.sort_by("video_id").to_pylist()


# Rows written before body_skipped was a count held the reasons there as text (null when none).
_LEGACY_VIDEOS_SCHEMA = VIDEOS_SCHEMA.set(VIDEOS_SCHEMA.get_field_index("body_skipped"),
                                          pa.field("body_skipped", pa.string()))


def _upgrade_skips(row: dict) -> dict:
    """An old row's "few_confident_joints=12,..." as body_skipped 12 and the text as its reasons (a new
    row, read as text beside old ones, holds the count's digits)."""
    skipped = row["body_skipped"]
    if skipped is not None and not skipped.isdigit():
        row["body_skipped_reasons"] = row["body_skipped_reasons"] or skipped
        skipped = sum(int(part.rpartition("=")[2]) for part in skipped.split(","))
    row["body_skipped"] = None if skipped is None else int(skipped)
    return row


def remove_unfinished(out: str | os.PathLike, video_ids_done: set[str] | None = None) -> list[str]:
    """Delete what a killed run left half-published; returns the video ids whose files were removed.

    Removes people/frames partitions of every video not in video_ids_done (default: ids with a
    videos row of status ok/truncated, read from OUT), all of OUT/_staging and temp row files.
    Call it only while no sink writes to OUT (before a run starts): it would take a live video's
    staging away.
    """
    fs, root = resolve_output(out)
    if video_ids_done is None:
        video_ids_done = {r["video_id"] for r in read_video_rows(out) if r["status"] in DONE_STATUSES}
    removed: set[str] = set()
    for table in TABLES:
        for info in fs.get_file_info(pafs.FileSelector(join(root, table), allow_not_found=True)):
            video_id = info.base_name.removeprefix("video_id=")
            if info.type == pafs.FileType.Directory and video_id != info.base_name and video_id not in video_ids_done:
                delete_dir(fs, info.path)
                removed.add(video_id)
    delete_dir(fs, join(root, "_staging"))
    for info in fs.get_file_info(pafs.FileSelector(join(root, "videos"), allow_not_found=True)):
        if info.base_name.startswith(".") and info.base_name.endswith(".tmp"):
            delete_file(fs, info.path)
    return sorted(removed)
