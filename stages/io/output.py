"""Reading one video's rows of a finished output, and checking where an export goes (torch-free:
summary, render and exports use it)."""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from stages.io.errors import OutputError
from stages.io.sink import read_video_rows, resolve_output
from stages.io.sink_fs import join


def read_video_table(out: str, name: str, video_id: str, columns: list[str] | None = None) -> pa.Table | None:
    """OUT/<name>/video_id=<id>/ as one table (people, frames, bodies, body_tracks), None when absent."""
    fs, root = resolve_output(out)
    path = join(root, name, f"video_id={video_id}")
    if fs.get_file_info(path).type.name != "Directory":
        return None
    return ds.dataset(path, format="parquet", filesystem=fs).to_table(columns=columns)


def video_table(out: str, name: str, video_id: str) -> pa.Table:
    """read_video_table, or an OutputError when the video has no such table."""
    table = read_video_table(out, name, video_id)
    if table is None:
        hint = " (was it run with --mesh?)" if name.startswith("bod") else ""
        raise OutputError(f"{out}: no {name} for video {video_id!r}{hint}")
    return table


def fixed_column(table: pa.Table, name: str, width: int, dtype) -> np.ndarray:
    """A fixed-size-list column as dtype[N, width]; null lists (det_bbox of bottom-up people) -> NaN (0 for
    integers and bools)."""
    col = table[name].combine_chunks()
    out = np.full((table.num_rows, width), np.nan if np.dtype(dtype).kind == "f" else 0, dtype)
    valid = pc.invert(pc.is_null(col)).to_numpy(zero_copy_only=False)
    if valid.any():
        values = col.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False)
        out[valid] = values.reshape(-1, width).astype(dtype)
    return out


def video_row(out: str, video_id: str) -> dict:
    """The videos-table row of one video of OUT."""
    rows = {r["video_id"]: r for r in read_video_rows(out)}
    if video_id not in rows:
        raise OutputError(f"{out}: no video {video_id!r} (videos: {', '.join(sorted(rows)) or 'none'})")
    return rows[video_id]


def check_file_target(path: str | os.PathLike) -> None:
    """A local file about to be written: its folder must exist and it must not be a folder itself.
    Checked before any row is read or model loaded, so a typo costs one line (OutputError), not a
    traceback at the end of the work."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise OutputError(f"{path}: cannot write there (no folder {folder!r})")
    if os.path.isdir(path):
        raise OutputError(f"{path}: is a folder; give a file name")
