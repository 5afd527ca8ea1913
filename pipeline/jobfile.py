"""OUT/job.json: what a job was asked to do and how far it got, for `posepipe status` and re-runs.

The videos table (OUT/videos/<id>.parquet) is the record of finished videos; job.json adds what is
queued or running, so `posepipe status OUT` can show a job in progress from another shell or
machine. It is rewritten whole (temp + move) at most every `period_s` seconds and at the end, so a
reader never sees half a file.
"""
from __future__ import annotations

import platform
import time
from dataclasses import asdict

import ray

from pipeline.config import Config
from stages.io.sink import read_json, read_video_rows, write_json

JOB_FILE = "job.json"


class JobFile:
    """Per-video progress of one run: video_id -> {path, fingerprint, status, frames, ...}."""

    def __init__(self, out: str, paths: list[str], config: Config, config_hash: str, period_s: float = 2.0):
        self.out = out
        self.period_s = period_s
        self.last = 0.0
        self.job = {
            "inputs": paths, "config": asdict(config), "config_hash": config_hash,
            "versions": {"python": platform.python_version(), "ray": ray.__version__},
            "started_at": time.time(), "finished_at": None, "videos": {}, "stages": None,
            "history": _history(_previous(out)),
        }

    def video(self, video_id: str, **fields) -> None:
        self.job["videos"].setdefault(video_id, {}).update(fields)

    def save(self, force: bool = False, **fields) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.period_s:
            self.job.update(fields)
            write_json(self.out, JOB_FILE, self.job)
            self.last = now


HISTORY_RUNS = 20  # earlier runs kept in job.json


def _previous(out: str) -> dict | None:
    try:
        return read_json(out, JOB_FILE)
    except ValueError:  # a job.json cut short by a crash: no history to keep
        return None


def _history(previous: dict | None) -> list[dict]:
    """Earlier runs of this OUT, oldest first: each one's times, stage statistics and per-video
    outcome, so a re-run (even one with nothing left to do) never loses a real run's figures."""
    if not previous:
        return []
    record = {k: previous.get(k) for k in ("started_at", "finished_at", "config_hash", "stages")}
    record["videos"] = {vid: {k: v.get(k) for k in ("status", "frames")} for vid, v in
                        (previous.get("videos") or {}).items()}
    return [*(previous.get("history") or []), record][-HISTORY_RUNS:]


def startup_breakdown(job: dict, launched: float) -> dict[str, float]:
    """Seconds of each start-up step of a run from its job.json timeline (wall clock), launched: when its
    command started (time.time()). The steps: imports and checks (until the job starts), Ray (start, or
    connect to a running one), actors (the graph built: imports and model loads), first batch (written)."""
    return {"imports and checks": job["started_at"] - launched, "Ray": job["ray_ready_at"] - job["started_at"],
            "actors": job["graph_ready_at"] - job["ray_ready_at"],
            "first batch": job["first_batch_at"] - job["graph_ready_at"]}


def video_line(status: str, video_id: str, path: str | None, *counts: str, error: str | None = None,
               note: str = "") -> str:
    """One video on one line, for `run` and `status`: status, id, the counts given ("frames=50"), the
    input's path (files with one name, say crowd_synth/*/video.mp4, get ids that differ only by a hash,
    so the path is what tells them apart), and why it failed or was truncated."""
    parts = [f"{status:9s} {video_id}", *counts, path or "", f"error: {error}" if error else "", note]
    return "  ".join(part for part in parts if part)


def status_lines(out: str) -> tuple[list[str], bool]:
    """Per-video lines for `posepipe status OUT` and whether every video is finished.

    A video's status comes from its videos row when there is one (final), else from job.json
    (queued / running with frames so far)."""
    job = read_json(out, JOB_FILE)
    rows = {r["video_id"]: r for r in read_video_rows(out)}
    if job is None and not rows:
        raise FileNotFoundError(f"{out}: no job.json and no videos table: not a posepipe output")
    videos = dict((job or {}).get("videos") or {})
    for vid, row in rows.items():  # a video of an earlier run that this one was not given: its row is final
        videos.setdefault(vid, {"path": row.get("path"), "status": row["status"]})
    lines, counts, finished = [], {}, True
    for vid, info in videos.items():
        row = rows.get(vid)
        job_status = info.get("status", "queued")
        if row is not None and job_status not in ("queued", "running", "interrupted"):
            status, frames, error = row["status"], f"frames={row.get('frames')}", row.get("error")
            path = row.get("path") or info.get("path")
        else:
            total = info.get("frame_count")
            status, error, path = job_status, None, info.get("path")
            frames = f"frames={info.get('frames', 0)}" + (f" of ~{total}" if total else "")
        finished &= status not in ("queued", "running", "interrupted")
        counts[status] = counts.get(status, 0) + 1
        lines.append(video_line(status, vid, path, frames, error=error))
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    state = "finished" if job and job.get("finished_at") else (
        "interrupted (Ctrl-C): re-run to resume" if job and job.get("interrupted_at") else
        ("running or killed" if job else ""))
    return [*lines, f"{len(videos)} videos: {summary}" + (f"; job {state}" if state else "")], finished
