"""`posepipe summary OUT`: one line per video of a finished output, numbers a user checks first.

Pure functions over OUT (read through stages.io.sink, so any pyarrow.fs URI works):

    rows = summary(out)            # list of dicts, one per video, in video-id order
    console.print(summary_table(rows))
    text = summary_json(rows)

Per video: status and error (the reason of a failed video, the truncation reason of a truncated
one), frames, fps, people per frame (min / median / max over the frames table, so frames with
nobody count as 0), tracks, median track length (frames per track id in the people table), wall
seconds, frames per wall second, and body_rows when the mesh stage ran.

A failed video has a videos row but no people or frames files (the sink withdraws them), so its
numbers are None: it shows its status and reason, the rest blank.

Stage busy fractions are per job, not per video: job.json's "stages" (graph.stage_stats of the last
run) says how busy each stage's actors were over their lifetime. Every row carries the same
`stages` dict ({stage: {"busy_fraction", "actors"}}, {} when job.json has none, e.g. a run still in
progress), so a row stands alone; summary_table shows it once, in the table's caption, and
summary_json once, beside the videos. They describe the last run only: videos a re-run skipped keep
the wall seconds of the run that made them.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.compute as pc
from rich.table import Table

from stages.io.errors import OutputError
from stages.io.output import read_video_table
from stages.io.sink import DONE_STATUSES, read_json, read_video_rows

__all__ = ["OutputReadError", "read_partition", "stages_line", "summary", "summary_json", "summary_table"]

JOB_FILE = "job.json"  # written by pipeline/jobfile.py (stages/ never imports pipeline)

# (key, header, format) of the table's columns, in order; body_rows is added when any video has it.
_COLUMNS = (
    ("video_id", "video", "{}"),
    ("status", "status", "{}"),
    ("frames", "frames", "{:d}"),
    ("fps", "fps", "{:.2f}"),
    ("people", "people/frame\nmin/med/max", None),  # one cell of the three numbers: narrower, reads as a range
    ("tracks", "tracks", "{:d}"),
    ("track_len_median", "track len", "{:g}"),
    ("wall_s", "wall s", "{:.1f}"),
    ("frames_per_s", "frames/s", "{:.1f}"),
)
_BODY_COLUMN = ("body_rows", "bodies", "{:d}")


OutputReadError = OutputError  # the name this module's callers use


def read_partition(out: str, table: str, video_id: str, columns: list[str]):
    """One video's table, only the columns asked for. A done video without the file is a broken
    output (its videos row vouches for it), so that is an error, not a blank."""
    result = read_video_table(out, table, video_id, columns)
    if result is None:
        raise OutputReadError(f"{out}: video {video_id!r} is marked done but has no {table} file")
    return result


def _people_numbers(out: str, video_id: str) -> dict:
    """People per frame from the frames table; tracks and their lengths from the people table."""
    frames = read_partition(out, "frames", video_id, ["num_people"])["num_people"].to_numpy()
    people = read_partition(out, "people", video_id, ["frame_index", "track_id"])
    tracked = people.filter(pc.is_valid(people["track_id"]))
    # A track has one row per frame it was seen in; count distinct frames anyway, so a stray
    # duplicate row can not lengthen it.
    lengths = tracked.group_by("track_id").aggregate([("frame_index", "count_distinct")])
    lengths = lengths["frame_index_count_distinct"].to_numpy()
    return {
        "people_min": int(frames.min()) if len(frames) else None,
        "people_median": float(np.median(frames)) if len(frames) else None,
        "people_max": int(frames.max()) if len(frames) else None,
        "tracks_seen": len(lengths),
        "track_len_median": float(np.median(lengths)) if len(lengths) else None,
    }


def _stages(job: dict | None) -> dict[str, dict]:
    stages = (job or {}).get("stages") or {}
    return {name: {"busy_fraction": float(s["busy_fraction"]), "actors": int(s["actors"])}
            for name, s in stages.items()}


def summary(out: str) -> list[dict]:
    """One dict per video of OUT, in video-id order (keys: see the module docstring).

    Raises OutputReadError when OUT has neither a videos table nor job.json (not a posepipe output).
    An OUT whose job has not finished a video yet gives [].
    """
    videos = read_video_rows(out)
    job = read_json(out, JOB_FILE)
    if not videos and job is None:
        raise OutputReadError(f"{out}: no videos table and no {JOB_FILE}: not a posepipe output")
    stages = _stages(job)
    rows = []
    for v in videos:
        row = {"video_id": v["video_id"], "status": v["status"], "error": v["error"],
               "frames": None, "fps": None, "people_min": None, "people_median": None, "people_max": None,
               "tracks": None, "track_len_median": None, "wall_s": None, "frames_per_s": None,
               "body_rows": None, "stages": stages}
        if v["status"] in DONE_STATUSES:
            numbers = _people_numbers(out, v["video_id"])
            tracks_seen = numbers.pop("tracks_seen")
            wall = v["wall_s"]
            row.update(numbers, frames=v["frames"], fps=v["fps"], wall_s=wall, body_rows=v["body_rows"],
                       # The row's count is the tracker's; an output written without one still has ids.
                       tracks=v["tracks"] if v["tracks"] is not None else tracks_seen,
                       frames_per_s=v["frames"] / wall if wall and v["frames"] is not None else None)
        rows.append(row)
    return rows


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return fmt.format(value)


def _people_cell(row: dict) -> str:
    if row["people_median"] is None:
        return ""
    return f"{row['people_min']} / {row['people_median']:g} / {row['people_max']}"


def stages_line(stages: dict[str, dict]) -> str:
    """'stage busy (last run): decode 0.41 x1, pose 0.97 x2, ...' or a note that there are none."""
    if not stages:
        return "stage busy fractions: none in job.json (run unfinished or interrupted)"
    parts = [f"{name} {s['busy_fraction']:.2f} x{s['actors']}" for name, s in stages.items()]
    return "stage busy fraction of actor lifetime (last run): " + ", ".join(parts)


def summary_table(rows: list[dict]) -> Table:
    """The rows as a rich Table; the job's stage busy fractions in its caption (once per job).

    Failed and truncated videos' reasons go in an error column after the numbers, shown only when
    some video has one, so a clean job's table stays narrow.
    """
    columns = list(_COLUMNS)
    if any(r["body_rows"] is not None for r in rows):
        columns.append(_BODY_COLUMN)
    with_errors = any(r["error"] for r in rows)
    stages = rows[0]["stages"] if rows else {}
    table = Table(title="posepipe output", caption=stages_line(stages), caption_justify="left")
    for key, header, _ in columns:
        numeric = key not in ("video_id", "status")
        table.add_column(header, justify="right" if numeric else "left", no_wrap=key == "video_id")
    if with_errors:
        table.add_column("error", overflow="fold")
    for r in rows:
        cells = [_people_cell(r) if key == "people" else _cell(r[key], fmt) for key, _, fmt in columns]
        style = {"failed": "red", "truncated": "yellow"}.get(r["status"])
        if with_errors:
            cells.append(r["error"] or "")
        table.add_row(*cells, style=style)
    return table


def summary_json(rows: list[dict]) -> str:
    """{"videos": [rows without "stages"], "stages": {...}}: the job-level numbers once, as in the
    table. NaN would not be valid JSON, so none is written (missing numbers are null)."""
    stages = rows[0]["stages"] if rows else {}
    videos = [{k: v for k, v in r.items() if k != "stages"} for r in rows]
    return json.dumps({"videos": videos, "stages": stages}, indent=1, allow_nan=False)
