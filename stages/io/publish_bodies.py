"""Replacing a finished video's bodies in OUT (the offline `posepipe mocap` job), atomically per table.

The new bodies and body_tracks files are written under OUT/_staging/mocap-<id>/ and moved over the
old ones (a rename on local disks), then the video's row is rewritten with the new counts. A reader
sees the old bodies or the new ones; on object stores the two tables are replaced one after the
other (copy + delete), as for a live job's publish (stages/io/sink.py). The video's dense table was
rendered from the old bodies: it is removed (its row's dense_rows null), for `posepipe dense` to redo.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stages.body.table import body_summary
from stages.io.output import read_video_table
from stages.io.sink import put_video_row, read_video_rows, resolve_output
from stages.io.sink_fs import delete_dir, ensure_dir, join, move, rmdir_if_empty


def replace_bodies(out: str, video_id: str, bodies: pa.Table | None, tracks: pa.Table, skipped: dict[str, int] | None,
                   scene: dict, only_track: int | None = None) -> dict:
    """Publish a refit of a video (only_track: of that track; the other tracks' rows are kept); scene: the
    videos row's floor columns (ground.ground_columns). Returns the rewritten videos row."""
    fs, root = resolve_output(out)
    if only_track is not None:
        keep = {}
        for name, new in (("bodies", bodies), ("body_tracks", tracks)):
            old = read_video_table(out, name, video_id)
            if old is not None:
                old = old.filter(pc.not_equal(old["track_id"], only_track)).select(
                    (new if new is not None else old).schema.names)
            parts = [t for t in (old, new) if t is not None and t.num_rows]
            keep[name] = pa.concat_tables(parts).sort_by([("track_id", "ascending")]) if parts else None
        bodies, tracks = keep["bodies"], keep["body_tracks"]
        # The old skip counts are not per track, so the row's can not be updated for one: unknown (null)
        # until a whole-video mocap recounts them.
        skipped = None
    staging = join(root, "_staging", f"mocap-{video_id}")
    ensure_dir(fs, staging)
    for name, table in (("bodies", bodies), ("body_tracks", tracks)):
        final = join(root, name, f"video_id={video_id}")
        if table is None:
            delete_dir(fs, final)
            continue
        tmp = join(staging, f"{name}.parquet")
        pq.write_table(table, tmp, filesystem=fs)
        ensure_dir(fs, final)
        move(fs, tmp, join(final, "part-0.parquet"))
    delete_dir(fs, staging)
    rmdir_if_empty(fs, join(root, "_staging"))
    delete_dir(fs, join(root, "dense", f"video_id={video_id}"))
    row = {r["video_id"]: r for r in read_video_rows(out)}[video_id]
    empty = pa.table({"frames": pa.array([], pa.int64())})
    row.update(body_summary(tracks if tracks is not None else empty, skipped), **scene,
               dense_rows=None, dense_masks=None)
    put_video_row(fs, root, row)
    return row
