"""`posepipe summary OUT`: one block per video of a finished output, numbers a user checks first.

Pure functions over OUT (read through stages.io.sink, so any pyarrow.fs URI works):

    rows = summary(out)            # list of dicts, one per video, in video-id order
    print("\\n".join(line for line, _ in summary_lines(rows, width=80, out=out)))
    print_summary(rows, out)       # the CLI's: terminal width, colours on a TTY; 80 columns plain when piped
    text = summary_json(rows)

Per video: status, path (the input file: ids of files with the same name differ only by a hash) and
error (the reason of a failed video, the truncation reason of a truncated one), frames, fps, people
per frame (min / median / max over the frames table, so frames with nobody count as 0), tracks,
median track length (frames per track id in the people table), wall seconds, frames per wall second,
and when the mesh stage ran body_rows, body_tracks, body_skipped (a count) and body_skipped_reasons;
dense_rows once the dense stage (`--dense` or `posepipe dense`) has rendered them, and dense_masks (whether
they were cut to the people's silhouettes: "silhouettes", or are the bodies alone: "bodies").

A failed video has a videos row but no people or frames files (the sink withdraws them), so its
numbers are None: it shows its status and reason, the rest blank.

Stage busy fractions are per job, not per video: job.json's "stages" (graph.stage_stats of the last
run) says how busy each stage's actors were over their lifetime. Every row carries the same
`stages` dict ({stage: {"busy_fraction", "actors"}}, {} when job.json has none) and `stages_note`
(which run they describe), so a row stands alone; summary_lines shows them once, after the videos,
and summary_json once, beside the videos. A run that processed no video (a re-run that skipped them
all, or one still in progress) has no statistics of its own: the last run that had some is shown,
named by its start time. Videos a re-run skipped keep the wall seconds of the run that made them.
"""
from __future__ import annotations

import json
import shutil
import sys
import textwrap
import time
from collections import Counter
from typing import TextIO

import numpy as np
import pyarrow.compute as pc

from stages.io.errors import OutputError
from stages.io.output import read_video_table
from stages.io.sink import DONE_STATUSES, read_json, read_video_rows

__all__ = ["OutputReadError", "print_summary", "read_partition", "stages_line", "summary", "summary_json",
           "summary_lines"]

JOB_FILE = "job.json"  # written by pipeline/jobfile.py (stages/ never imports pipeline)
STYLES = {"failed": "red", "truncated": "yellow"}  # a video's first line, on a terminal

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


def _stages(job: dict | None) -> tuple[dict[str, dict], str]:
    """The stage statistics to show and which run they describe. A re-run that skipped every video never
    starts the graph (its "stages" is {}), and a run in progress has none yet: then the latest earlier
    run's, from job.json's history (pipeline/jobfile.py keeps it), named by its start time."""
    job = job or {}
    for run in (job, *reversed(job.get("history") or [])):
        if run.get("stages"):
            stages = {name: {"busy_fraction": float(s["busy_fraction"]), "actors": int(s["actors"])}
                      for name, s in run["stages"].items()}
            if run is job:
                return stages, "last run"
            started = run.get("started_at")
            when = f"run of {time.strftime('%Y-%m-%d %H:%M', time.localtime(started))}" if started else "earlier run"
            later = "the last run processed no video" if job.get("finished_at") else "the last run has not finished"
            return stages, f"{when}; {later}"
    return {}, ""


def summary(out: str) -> list[dict]:
    """One dict per video of OUT, in video-id order (keys: see the module docstring).

    Raises OutputReadError when OUT has neither a videos table nor job.json (not a posepipe output).
    An OUT whose job has not finished a video yet gives [].
    """
    videos = read_video_rows(out)
    job = read_json(out, JOB_FILE)
    if not videos and job is None:
        raise OutputReadError(f"{out}: no videos table and no {JOB_FILE}: not a posepipe output")
    stages, note = _stages(job)
    rows = []
    for v in videos:
        row = {"video_id": v["video_id"], "path": v["path"], "status": v["status"], "error": v["error"],
               "frames": None, "fps": None, "people_min": None, "people_median": None, "people_max": None,
               "tracks": None, "track_len_median": None, "wall_s": None, "frames_per_s": None,
               "body_rows": None, "body_tracks": None, "body_skipped": None, "body_skipped_reasons": None,
               "dense_rows": None, "dense_masks": None, "stages": stages, "stages_note": note}
        if v["status"] in DONE_STATUSES:
            numbers = _people_numbers(out, v["video_id"])
            tracks_seen = numbers.pop("tracks_seen")
            wall = v["wall_s"]
            row.update(numbers, frames=v["frames"], fps=v["fps"], wall_s=wall,
                       **{k: v[k] for k in ("body_rows", "body_tracks", "body_skipped", "body_skipped_reasons",
                                            "dense_rows", "dense_masks")},
                       # The row's count is the tracker's; an output written without one still has ids.
                       tracks=v["tracks"] if v["tracks"] is not None else tracks_seen,
                       frames_per_s=v["frames"] / wall if wall and v["frames"] is not None else None)
        rows.append(row)
    return rows


def _stage_parts(stages: dict[str, dict], note: str = "last run") -> tuple[str, list[str]]:
    if not stages:
        return "stage busy fractions: none in job.json (run unfinished or interrupted)", []
    parts = [f"{name} {s['busy_fraction']:.2f} x{s['actors']}" for name, s in stages.items()]
    return f"stage busy fraction of actor lifetime ({note}):", parts


def stages_line(stages: dict[str, dict], note: str = "last run") -> str:
    """'stage busy fraction of actor lifetime (last run): decode 0.41 x1, ...' or a note that there are none."""
    head, parts = _stage_parts(stages, note)
    return " ".join([head, ", ".join(parts)]) if parts else head


def _wrap(text: str, width: int, indent: str, hanging: str | None = None) -> list[str]:
    """textwrap at width, words never cut at hyphens (paths, ids); a word wider than a line is cut
    into pieces, not shortened."""
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent if hanging is None else hanging,
                         break_on_hyphens=False) or [indent.rstrip()]


def _cut(text: str, width: int, indent: str) -> list[str]:
    """text in pieces of the width left after indent, every character kept (spaces too): a path or id
    reads back whole by joining the pieces."""
    room = max(width - len(indent), 1)
    return [indent + text[i:i + room] for i in range(0, len(text), room)]


def _pack(items: list[str], width: int, indent: str, hanging: str | None = None, sep: str = ";",
          head: str = "") -> list[str]:
    """head, then the items separated by sep, as many to a line as fit; an item is broken only when it
    alone is wider than a line (its spaces become no-break spaces, which textwrap does not split at)."""
    words = [item.replace(" ", "\xa0") + (sep if k < len(items) - 1 else "") for k, item in enumerate(items)]
    return [line.replace("\xa0", " ") for line in _wrap(" ".join([head, *words]).strip(), width, indent, hanging)]


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _numbers(r: dict) -> list[str]:
    items = []
    if r["frames"] is not None:
        items.append(f"{r['frames']} frames" + (f" at {r['fps']:.2f} fps" if r["fps"] else ""))
    if r["people_median"] is not None:
        items.append(f"people per frame min {r['people_min']}, median {r['people_median']:g}, max {r['people_max']}")
    if r["tracks"] is not None:
        length = f", median length {r['track_len_median']:g} frames" if r["track_len_median"] is not None else ""
        items.append(_count(r["tracks"], "track") + length)
    if r["wall_s"] is not None:
        rate = f", {r['frames_per_s']:.1f} frames/s" if r["frames_per_s"] is not None else ""
        items.append(f"wall {r['wall_s']:.1f} s{rate}")
    if r["body_rows"] is not None:
        tracks = f" ({_count(r['body_tracks'], 'track')})" if r["body_tracks"] is not None else ""
        items.append(f"{r['body_rows']} bodies{tracks}")
        if r["body_skipped"]:
            why = f": {r['body_skipped_reasons']}" if r["body_skipped_reasons"] else ""
            items.append(f"{r['body_skipped']} person-frames without a body{why}")
    if r["dense_rows"] is not None:
        alone = " (masks: the bodies alone)" if r["dense_masks"] == "bodies" else ""
        items.append(f"{r['dense_rows']} dense rows{alone}")
    return items


def summary_lines(rows: list[dict], width: int = 80, out: str | None = None) -> list[tuple[str, str | None]]:
    """The summary as (line, style) pairs, no line wider than width: a count line, one block per video
    (status and id, then its path, numbers and reason indented under the id), the stage statistics once.

    Blocks rather than a table: ids (up to 73 characters), paths and error messages do not fit columns
    of an 80-column terminal without being cut. style: a rich style for a failed or truncated video's
    first line, else None."""
    width = max(width, 40)
    indent = " " * 10 if width >= 60 else "  "  # under the id, after "truncated "
    counts = ", ".join(f"{n} {s}" for s, n in sorted(Counter(r["status"] for r in rows).items()))
    head = f"{len(rows)} videos" + (f": {counts}" if rows else "")
    lines: list[tuple[str, str | None]] = [(line, None) for line in
                                           _wrap(f"{out}: {head}" if out else head, width, "", "  ")]
    for r in rows:
        style = STYLES.get(r["status"])
        first = f"{r['status']:9s} {r['video_id']}"
        # An id too long for the status's line gets its own, whole or (wider than the terminal) in pieces.
        firsts = [first] if len(first) <= width else [r["status"], *_cut(r["video_id"], width, "  ")]
        lines += [(line, style) for line in firsts]
        lines += [(line, None) for line in _cut(r["path"], width, indent)] if r["path"] else []
        numbers = _numbers(r)
        lines += [(line, None) for line in _pack(numbers, width, indent)] if numbers else []
        if r["error"]:
            label = "error" if r["status"] == "failed" else "reason"
            lines += [(line, None) for line in _wrap(f"{label}: {r['error']}", width, indent)]
    stages = rows[0]["stages"] if rows else {}
    note = rows[0]["stages_note"] if rows else ""
    head, parts = _stage_parts(stages, note)
    return lines + [(line, None) for line in _pack(parts, width, "", "  ", sep=",", head=head)]


def print_summary(rows: list[dict], out: str | None = None, file: TextIO | None = None) -> None:
    """summary_lines at the terminal's width with colours on a TTY; plain lines, 80 columns (or $COLUMNS)
    when piped, so `posepipe summary OUT | less` or a log file reads the same as a terminal."""
    file = file or sys.stdout
    width = shutil.get_terminal_size().columns  # $COLUMNS, else the terminal's, else 80
    lines = summary_lines(rows, width, out)
    if not file.isatty():
        file.write("".join(line + "\n" for line, _ in lines))
        return
    from rich.console import Console
    from rich.text import Text

    console = Console(file=file, width=width, highlight=False, soft_wrap=True)
    for line, style in lines:
        console.print(Text(line, style=style or ""))


def summary_json(rows: list[dict]) -> str:
    """{"videos": [rows without the job-level keys], "stages": {...}, "stages_note": "..."}: the job-level
    numbers once, as in the text. NaN would not be valid JSON, so none is written (missing numbers are null)."""
    stages = rows[0]["stages"] if rows else {}
    note = rows[0]["stages_note"] if rows else ""
    videos = [{k: v for k, v in r.items() if k not in ("stages", "stages_note")} for r in rows]
    return json.dumps({"videos": videos, "stages": stages, "stages_note": note}, indent=1, allow_nan=False)
