"""The driver: feeds videos through the graph with a bound on batches in flight per video.

Backpressure: a video has at most `run.max_batches_in_flight` batches between its decoder and its
sink, and at most `run.max_videos_in_flight` videos are open, so memory stays
O(videos x batches x batch_size) frames whatever the length of the videos. When the bound is
reached the driver waits (`ray.wait`) on the oldest work, so a slow sink slows decoding.
Failures are per video: a bad file or a failing stage gives that video a `failed` row and the
others go on. Re-running a job skips the videos whose output is complete and current
(pipeline/inputs.py) and redoes the rest; whatever a killed run left half-published is removed first.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ray
from tqdm import tqdm

from pipeline.api import Interrupted
from pipeline.config import Config, ConfigError
from pipeline.graph import Graph, build_graph
from pipeline.inputs import absolute, config_hash, done_ids, fingerprint
from pipeline.jobfile import JobFile
from pipeline.models import ModelChoice, choose_models, choose_segment_model, model_blobs, model_label
from pipeline.say import Say, quiet
from pipeline.workers import SinkWorker
from stages.body.load import check_body_model
from stages.io.decode import video_id_for
from stages.io.dense_table import dense_masks
from stages.pose.modes import AutoSwitch
from stages.io.sink import DONE_STATUSES, read_video_rows, remove_unfinished


@dataclass
class _Video:
    path: str
    video_id: str
    fingerprint: str | None
    decoder: object
    meta: dict
    bar: tqdm
    started: float = field(default_factory=time.monotonic)
    decode_q: deque = field(default_factory=deque)  # (info_ref, frames_ref), in submission order
    sink_q: deque = field(default_factory=deque)  # sink write refs, in frame order
    frames: int = 0  # frames through the sink so far
    people: int = 0  # people rows written so far
    switch: AutoSwitch | None = None  # auto mode: picks the mode of each next batch
    eof_seen: bool = False
    truncated: str | None = None
    error: str | None = None

    def in_flight(self) -> int:
        return len(self.decode_q) + len(self.sink_q)


@contextlib.contextmanager
def _stderr_to_devnull():
    """File descriptor 2 (what C++ libraries write to, below Python's sys.stderr) sent to /dev/null."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _size(meta: dict) -> tuple[int, int]:
    """(width, height) of the upright video: the frame the keypoints are in (the mesh stage's camera)."""
    return int(meta.get("width") or 0), int(meta.get("height") or 0)


@dataclass(frozen=True)
class Prepared:
    """What a run needs that can fail before Ray starts, checked once (`prepare`) and handed to Runner."""

    config: Config
    out: str  # absolute folder, or a URI as given
    models: dict[str, ModelChoice]  # role -> resolved, sha256-checked file
    segment: Path | None = None  # the dense stage's segmentation model (None: the bodies alone, or no --dense)


def prepare(config: Config, out: str | Path) -> Prepared:
    """Resolve the model files (a missing one fails now, not in an actor) and, with --mesh, check the
    body model (SMPL files present; Anny's cache built once per machine) before any Ray work; --dense
    without --mesh (or with SMPL) is a ConfigError."""
    if config.dense.enabled and not config.mesh.enabled:
        raise ConfigError("--dense renders the fitted bodies: give --mesh too (dense.enabled needs mesh.enabled)")
    if config.dense.enabled and config.mesh.body_model != "anny":
        raise ConfigError(f"--dense needs anny's texture coordinates; the {config.mesh.body_model} model has none")
    models = choose_models(config)
    segment = choose_segment_model(config) if config.dense.enabled else None
    if config.mesh.enabled:
        check_body_model(config.mesh.body_model, config.mesh.body_model_path)
    return Prepared(config, absolute(out), models, segment)


def _nothing() -> None:
    return None


class Runner:
    """Runs one job: a list of videos -> OUT (a folder or a pyarrow.fs URI).

    heartbeat: called from the loop (the OUT lock's refresh); before_graph: called once there is work
    (starts or joins Ray); say: told the start-up steps (pipeline/say.py); all from pipeline/api.py.
    sink_cls: the SinkWorker class the graph builds (tests inject a slow one to see backpressure).
    After run(): stage_stats (busy time per stage), peak_in_flight (most batches between decode and
    sink at once, all videos), frames_done."""

    def __init__(self, prepared: Prepared, progress: bool = True, sink_cls: type = SinkWorker,
                 heartbeat: Callable[[], None] = _nothing, before_graph: Callable[[], None] = _nothing,
                 say: Say = quiet):
        self.config = prepared.config
        self.out = prepared.out
        self.models = prepared.models
        self.segment = prepared.segment
        self.progress = progress
        self.sink_cls = sink_cls
        self.heartbeat = heartbeat
        self.before_graph = before_graph
        self.say = say
        self.config_hash = config_hash(self.config)
        self.graph: Graph | None = None
        self.stage_stats: dict = {}
        self.peak_in_flight = 0
        self.frames_done = 0
        self.job: JobFile | None = None

    def _row(self, v: _Video) -> dict:
        meta = v.meta
        return {
            "path": v.path, "size_bytes": meta.get("size_bytes"), "status": "failed" if v.error else (
                "truncated" if v.truncated else "ok"),
            "error": v.error or v.truncated, "width": meta.get("width"), "height": meta.get("height"),
            "fps": meta.get("fps"), "duration_s": meta.get("duration_s"), "rotation": meta.get("rotation"),
            "wall_s": time.monotonic() - v.started, "mode": self.config.run.mode,
            "model": model_label(self.models, self.config.run.mode),
            "fingerprint": v.fingerprint, "config_hash": self.config_hash,
        }

    def _start(self, path: str, video_id: str, fp: str | None, slot: int) -> _Video | dict:
        """Open a video on a decoder (fp: its content fingerprint); a bad file returns its failed row instead."""
        decoder = self.graph.decoders.next()
        meta = ray.get(decoder.open.remote(path, video_id))
        bar = tqdm(total=meta.get("frame_count") or None, desc=video_id[:32], unit="frame",
                   position=slot, leave=True, disable=not self.progress)
        v = _Video(path=path, video_id=video_id, fingerprint=fp, decoder=decoder, meta=meta,
                   bar=bar, switch=AutoSwitch(self.config.auto) if self.config.run.mode == "auto" else None)
        self.job.video(video_id, status="running", frame_count=meta.get("frame_count"))
        if "error" in meta:
            v.error = meta["error"]
            bar.close()
            return ray.get(self.graph.fail_video(video_id, self._row(v)))
        self.graph.open_video(video_id)
        return v

    def _top_up(self, v: _Video) -> None:
        while not v.eof_seen and v.in_flight() < self.config.run.max_batches_in_flight:
            v.decode_q.append(v.decoder.next_batch.options(num_returns=2).remote(v.video_id))

    def _advance(self, v: _Video, ready: set) -> None:
        """Move finished work of one video forward, oldest first (keeps frame order)."""
        while v.decode_q and v.decode_q[0][0] in ready:
            info_ref, frames_ref = v.decode_q.popleft()
            try:
                info = ray.get(info_ref)
            except ray.exceptions.RayError as exc:
                return self._fail(v, exc)
            if info["frames"]:
                mode = v.switch.mode if v.switch else self.config.run.mode
                v.sink_q.append(self.graph.submit_batch(
                    frames_ref, v.video_id, mode, model_label(self.models, mode), _size(v.meta), v.path))
            if info["done"]:
                v.eof_seen = True
                v.truncated = v.truncated or info["truncated"]
        while v.sink_q and v.sink_q[0] in ready:
            try:
                frames, people, per_frame = ray.get(v.sink_q.popleft())
            except ray.exceptions.RayError as exc:
                return self._fail(v, exc)
            if not self.frames_done:
                self.job.save(force=True, first_batch_at=time.time())  # the end of start-up
            v.frames += frames
            v.people += people
            self.frames_done += frames
            if v.switch:
                v.switch.observe(per_frame)
            v.bar.update(frames)  # tqdm shows the speed (frames/s); the postfix counts rows written
            v.bar.set_postfix(people=v.people, refresh=False)
            self.job.video(v.video_id, frames=v.frames)

    def _fail(self, v: _Video, exc: ray.exceptions.RayError) -> None:
        """A stage failed on this video's data (or its actor died for good): the video fails, the batch goes on."""
        cause = getattr(exc, "cause", None) or exc
        v.error = f"{type(cause).__name__}: {cause}".splitlines()[0]
        v.sink_q.clear()
        v.decode_q.clear()
        v.decoder.close.remote(v.video_id)

    def _finish(self, v: _Video) -> dict:
        row = self._row(v)
        try:
            if v.error:
                return ray.get(self.graph.fail_video(v.video_id, row))
            if self.config.dense.enabled:  # the sink adds dense_rows beside it
                row["dense_masks"] = dense_masks(self.segment is not None)
            done = ray.get(self.graph.finish_video(v.video_id, row, _size(v.meta), v.path))
            v.bar.set_postfix(people=done["people_rows"], refresh=False)  # the rows held back, now written
            return done
        except ray.exceptions.RayError as exc:  # a last stage failed (or the sink died): nothing is final
            self._fail(v, exc)
            row = {**row, "status": "failed", "error": v.error}
            try:  # the sink may still be alive to record why (a mesh-stage failure at the end)
                return ray.get(self.graph.fail_video(v.video_id, row))
            except ray.exceptions.RayError:
                return {**row, "video_id": v.video_id, "frames": 0, "people_rows": 0}
        finally:
            v.bar.close()

    def plan(self, paths: list[str]) -> tuple[list[tuple[int, str, str, str | None]], dict[int, dict]]:
        """(videos to process as (index, path, video_id, fingerprint), rows of those already done by index)."""
        ids = [video_id_for(p) for p in paths]
        fps = [fingerprint(p) for p in paths]  # read once: the rows written later carry the same value
        existing = {r["video_id"]: r for r in read_video_rows(self.out)}
        done = done_ids(list(existing.values()), {i: (p, fp) for i, p, fp in zip(ids, paths, fps)},
                        self.config_hash)
        # Published files without a final videos row are leftovers of a killed run: never visible.
        remove_unfinished(self.out, {vid for vid, r in existing.items() if r.get("status") in DONE_STATUSES})
        todo = [(i, p, vid, fp) for i, (p, vid, fp) in enumerate(zip(paths, ids, fps)) if vid not in done]
        return todo, {i: {**existing[vid], "skipped": True} for i, vid in enumerate(ids) if vid in done}

    def run(self, paths: list[str]) -> list[dict]:
        """Process every video; returns one videos-table row per input, in input order."""
        paths = [absolute(p) for p in paths]
        twice = sorted({p for p in paths if paths.count(p) > 1})
        if twice:  # one video id, one sink state: the same file twice would write over itself
            raise ValueError(f"videos given more than once: {', '.join(twice)}")
        todo, rows = self.plan(paths)
        self.job = JobFile(self.out, paths, self.config, self.config_hash)
        for _, path, vid, _ in todo:
            self.job.video(vid, path=path, status="queued")
        for i in rows:
            self.job.video(rows[i]["video_id"], path=paths[i], status="skipped")
        self.job.save(force=True)
        try:
            if todo:
                self.before_graph()  # a re-run with nothing left to do never starts Ray
                # Start-up timeline in job.json (wall clock, like started_at): benchmarks/startup.py reports it.
                self.job.save(force=True, ray_ready_at=time.time())
                self.graph = build_graph(self.config, self.out, model_blobs(self.models), self.sink_cls,
                                         say=self.say, segment=self.segment.read_bytes() if self.segment else None)
                self.job.save(force=True, graph_ready_at=time.time())
                self._loop(deque(todo), rows)
                self.stage_stats = self.graph.stage_stats()
        except KeyboardInterrupt:
            self._interrupted(rows, len(paths))
        self.job.save(force=True, stages=self.stage_stats, finished_at=time.time())
        return [rows[i] for i in range(len(paths))]

    def _interrupted(self, rows: dict[int, dict], total: int) -> None:
        """Ctrl-C: record it and stop. A second Ctrl-C while Ray shuts down would only break that clean-up
        (Python's "Exception ignored in atexit"), so this process ignores it from here on. Videos not
        finished leave no visible output (their files are staged, and plan() removes them on a re-run)."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for info in self.job.job["videos"].values():
            if info.get("status") in ("queued", "running"):
                info["status"] = "interrupted"
        self.job.save(force=True, interrupted_at=time.time())
        # Now, not at exit, and with file descriptor 2 closed meanwhile: the terminal's Ctrl-C reached Ray's
        # workers too, and its C++ core worker reports their failed tasks ("Failed to push error to
        # driver") while it shuts down; none of it is for the user.
        with _stderr_to_devnull():
            ray.shutdown()
        raise Interrupted(sum(r.get("status") in DONE_STATUSES for r in rows.values()), total) from None

    def _loop(self, pending: deque, rows: dict[int, dict]) -> None:
        active: dict[int, _Video] = {}
        while pending or active:
            while pending and len(active) < self.config.run.max_videos_in_flight:
                i, path, vid, fp = pending.popleft()
                started = self._start(path, vid, fp, slot=len(active))
                if isinstance(started, dict):
                    rows[i] = started
                    self.job.video(vid, status=started["status"])
                else:
                    active[i] = started
            for v in active.values():
                self._top_up(v)
            self.peak_in_flight = max(self.peak_in_flight, sum(v.in_flight() for v in active.values()))
            waiting = [ref for v in active.values() for ref in
                       ([v.decode_q[0][0]] if v.decode_q else []) + ([v.sink_q[0]] if v.sink_q else [])]
            ready = set(ray.wait(waiting, num_returns=1)[0]) if waiting else set()
            # ray.wait returned at least one; take every other head that is also done.
            ready |= set(ray.wait(waiting, num_returns=len(waiting), timeout=0)[0]) if waiting else set()
            for i, v in list(active.items()):
                self._advance(v, ready)
                if (v.eof_seen or v.error) and not v.in_flight():
                    rows[i] = self._finish(v)
                    self.job.video(v.video_id, status=rows[i]["status"], frames=rows[i]["frames"])
                    del active[i]
            self.job.save()
            self.heartbeat()
