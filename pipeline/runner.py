"""The driver: feeds videos through the graph with a bound on batches in flight per video.

Backpressure: a video has at most `run.max_batches_in_flight` batches between its decoder and its
sink, and at most `run.max_videos_in_flight` videos are open, so memory stays
O(videos x batches x batch_size) frames whatever the length of the videos. When the bound is
reached the driver waits (`ray.wait`) on the oldest work, so a slow sink slows decoding.
Failures are per video: a bad file or a failing stage gives that video a `failed` row and the
others go on.
"""
from __future__ import annotations

import json
import platform
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ray
from tqdm import tqdm

from pipeline.config import Config
from pipeline.graph import Graph, build_graph
from pipeline.models import choose_models, model_blobs, model_label
from stages.decode import video_id_for
from stages.modes import AutoSwitch


@dataclass
class _Video:
    path: str
    video_id: str
    decoder: object
    meta: dict
    bar: tqdm
    started: float = field(default_factory=time.monotonic)
    decode_q: deque = field(default_factory=deque)  # (info_ref, frames_ref), in submission order
    sink_q: deque = field(default_factory=deque)  # sink write refs, in frame order
    people: int = 0  # people rows written so far
    switch: AutoSwitch | None = None  # auto mode: picks the mode of each next batch
    eof_seen: bool = False
    truncated: str | None = None
    error: str | None = None

    def in_flight(self) -> int:
        return len(self.decode_q) + len(self.sink_q)


def _video_row(v: _Video, config: Config, models: dict) -> dict:
    meta = v.meta
    status = "failed" if v.error else ("truncated" if v.truncated else "ok")
    return {
        "path": v.path, "size_bytes": meta.get("size_bytes"), "status": status,
        "error": v.error or v.truncated, "width": meta.get("width"), "height": meta.get("height"),
        "fps": meta.get("fps"), "duration_s": meta.get("duration_s"), "rotation": meta.get("rotation"),
        "wall_s": time.monotonic() - v.started, "mode": config.run.mode,
        "model": model_label(models, config.run.mode),
    }


def _write_job(out: Path, paths: list[str], config: Config, rows: list[dict] | None,
               stage_stats: dict | None = None) -> None:
    job = {
        "inputs": paths,
        "config": asdict(config),
        "versions": {"python": platform.python_version(), "ray": ray.__version__},
        "videos": rows,
        "stages": stage_stats,
    }
    tmp = out / ".job.json.tmp"
    tmp.write_text(json.dumps(job, indent=1, default=str))
    tmp.replace(out / "job.json")


class Runner:
    def __init__(self, config: Config, out_dir: str | Path, progress: bool = True):
        self.config = config
        self.out = Path(out_dir).resolve()
        self.progress = progress
        self.models = choose_models(config)  # resolved before Ray work: a missing file fails fast
        self.graph: Graph | None = None
        self.stage_stats: dict = {}

    def _start(self, path: str, slot: int) -> _Video | dict:
        """Open a video on a decoder; a bad file returns its failed row instead."""
        path = str(Path(path).absolute())
        video_id = video_id_for(path)
        decoder = self.graph.decoders.next()
        meta = ray.get(decoder.open.remote(path, video_id))
        bar = tqdm(total=meta.get("frame_count") or None, desc=video_id[:32], unit="frame",
                   position=slot, leave=True, disable=not self.progress)
        v = _Video(path=path, video_id=video_id, decoder=decoder, meta=meta, bar=bar,
                   switch=AutoSwitch(self.config.auto) if self.config.run.mode == "auto" else None)
        sink = self.graph.sink_for(video_id)
        if "error" in meta:
            v.error = meta["error"]
            bar.close()
            return ray.get(sink.fail.remote(video_id, _video_row(v, self.config, self.models)))
        ray.get(sink.open.remote(video_id))
        return v

    def _top_up(self, v: _Video) -> None:
        while not v.eof_seen and v.in_flight() < self.config.run.max_batches_in_flight:
            v.decode_q.append(v.decoder.next_batch.options(num_returns=2).remote(v.video_id))

    def _advance(self, v: _Video, ready: set) -> None:
        """Move finished work of one video forward, oldest first (keeps frame order)."""
        while v.decode_q and v.decode_q[0][0] in ready:
            info_ref, frames_ref = v.decode_q.popleft()
            info = ray.get(info_ref)
            if info["frames"]:
                mode = v.switch.mode if v.switch else self.config.run.mode
                v.sink_q.append(self.graph.submit_batch(
                    frames_ref, v.video_id, mode, model_label(self.models, mode)))
            if info["done"]:
                v.eof_seen = True
                v.truncated = v.truncated or info["truncated"]
        while v.sink_q and v.sink_q[0] in ready:
            try:
                frames, people, per_frame = ray.get(v.sink_q.popleft())
            except ray.exceptions.RayTaskError as exc:
                # A stage failed on this video's data: the video fails, the batch goes on.
                v.error = f"{type(exc.cause).__name__}: {exc.cause}".splitlines()[0]
                v.sink_q.clear()
                v.decode_q.clear()
                v.decoder.close.remote(v.video_id)
                return
            v.people += people
            if v.switch:
                v.switch.observe(per_frame)
            v.bar.update(frames)
            elapsed = time.monotonic() - v.started
            v.bar.set_postfix(fps=f"{v.bar.n / elapsed:.1f}", people=v.people, refresh=False)

    def _finish(self, v: _Video) -> dict:
        sink = self.graph.sink_for(v.video_id)
        row = _video_row(v, self.config, self.models)
        v.bar.close()
        if v.error:
            return ray.get(sink.fail.remote(v.video_id, row))
        return ray.get(sink.finish.remote(v.video_id, row))

    def run(self, paths: list[str]) -> list[dict]:
        """Process every video; returns one videos-table row per input, in input order."""
        self.out.mkdir(parents=True, exist_ok=True)
        _write_job(self.out, paths, self.config, None)
        self.graph = build_graph(self.config, str(self.out), model_blobs(self.models))
        pending = deque(enumerate(paths))
        active: dict[int, _Video] = {}
        rows: dict[int, dict] = {}
        while pending or active:
            while pending and len(active) < self.config.run.max_videos_in_flight:
                i, path = pending.popleft()
                started = self._start(path, slot=len(active))
                if isinstance(started, dict):
                    rows[i] = started
                else:
                    active[i] = started
            for v in active.values():
                self._top_up(v)
            waiting = [ref for v in active.values() for ref in
                       ([v.decode_q[0][0]] if v.decode_q else []) + ([v.sink_q[0]] if v.sink_q else [])]
            ready = set(ray.wait(waiting, num_returns=1)[0]) if waiting else set()
            # ray.wait returned at least one; take every other head that is also done.
            ready |= set(ray.wait(waiting, num_returns=len(waiting), timeout=0)[0]) if waiting else set()
            for i, v in list(active.items()):
                self._advance(v, ready)
                if (v.eof_seen or v.error) and not v.in_flight():
                    rows[i] = self._finish(v)
                    del active[i]
        result = [rows[i] for i in range(len(paths))]
        self.stage_stats = self.graph.stage_stats()
        _write_job(self.out, paths, self.config, result, self.stage_stats)
        return result
