"""Actor bodies: thin plain classes around the stages, each loading what it needs once.

They hold no Ray code (graph.py makes them remote in one place), so a test can run the whole chain
in one process. Constructors receive model bytes, never paths to download: the driver resolves
weights once and ships the bytes, so workers on other nodes need no weights folder.
"""
from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

from pipeline.config import Config
from pipeline.models import Grouping, build_pose_models
from stages.batches import FrameBatch, PoseBatch, PoseOutput
from stages.decode import DecodeError, VideoReader
from stages.sink import ParquetSink, people_per_frame
from stages.track import Tracker, TrackParams


class _Busy:
    """Time spent inside an actor's work methods, for the busy fraction benchmarks report."""

    def __init__(self) -> None:
        self.busy_s = 0.0
        self.calls = 0
        self.created = time.monotonic()

    @contextlib.contextmanager
    def timed(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.busy_s += time.perf_counter() - t0
            self.calls += 1

    def stats(self) -> dict:
        """{'busy_s', 'calls', 'alive_s'} since the actor started."""
        return {"busy_s": self.busy_s, "calls": self.calls, "alive_s": time.monotonic() - self.created}


class DecodeWorker(_Busy):
    """Holds one open VideoReader per video it was given; hands out batches in order."""

    def __init__(self, batch_size: int, max_side: int):
        super().__init__()
        self.batch_size = batch_size
        self.max_side = max_side or None
        self.readers: dict[str, VideoReader] = {}
        self.iterators: dict = {}

    def open(self, path: str, video_id: str) -> dict:
        """Open a video; returns its metadata fields, or {'error': message} for a bad file."""
        try:
            reader = VideoReader(path, batch_size=self.batch_size, max_side=self.max_side, video_id=video_id)
        except DecodeError as exc:
            return {"error": str(exc)}
        self.readers[video_id] = reader
        self.iterators[video_id] = iter(reader)
        return dict(reader.meta.__dict__)

    def next_batch(self, video_id: str) -> tuple[dict, FrameBatch | None]:
        """(info, frames): info = {'frames': n, 'done': bool, 'truncated': str | None}.

        Called with two return values so the driver waits on the small info object while the
        frames go straight to a pose actor.
        """
        iterator = self.iterators.get(video_id)
        with self.timed():
            batch = next(iterator, None) if iterator is not None else None
        if batch is not None:
            return {"frames": len(batch), "done": False, "truncated": None}, batch
        reader = self.close(video_id)
        truncated = reader.truncation_reason if reader is not None and reader.truncated else None
        return {"frames": 0, "done": True, "truncated": truncated}, None

    def close(self, video_id: str) -> VideoReader | None:
        """Drop a video's reader (at its end, or when a later stage failed it)."""
        self.iterators.pop(video_id, None)
        reader = self.readers.pop(video_id, None)
        if reader is not None:
            reader.close()
        return reader


class PoseWorker(_Busy):
    """FrameBatch -> PoseOutput on this actor's device (CUDA when Ray gave it a GPU)."""

    def __init__(self, config: Config, blobs: dict[str, tuple[str, bytes]]):
        super().__init__()
        device = "cuda" if torch.cuda.is_available() and config.pose.resources.num_gpus > 0 else "cpu"
        torch.set_num_threads(config.pose.threads)
        self.models = build_pose_models(config, blobs, device)

    def process(self, batch: FrameBatch, mode: str) -> PoseOutput:
        with self.timed():
            return self.models(batch, mode)


class GroupWorker(_Busy):
    """PoseOutput -> PoseBatch (PAF grouping and the hybrid merge, CPU)."""

    def __init__(self, config: Config):
        super().__init__()
        self.grouping = Grouping(config)

    def process(self, out: PoseOutput) -> PoseBatch:
        with self.timed():
            return self.grouping(out)


class SinkWorker(_Busy):
    """Tracking and Parquet for the videos given to it. Every batch of a video goes to the same
    SinkWorker and Ray runs one caller's actor calls in order, so each video's tracker sees its
    frames in order; videos spread over SinkWorkers are tracked in parallel."""

    def __init__(self, out_dir: str, row_group_size: int, low_confidence: float, track: TrackParams):
        super().__init__()
        self.sink = ParquetSink(out_dir, row_group_size, low_confidence)
        self.track = track
        self.trackers: dict[str, Tracker] = {}

    def open(self, video_id: str) -> None:
        self.sink.open(video_id)
        self.trackers[video_id] = Tracker(self.track)  # state per video, new for each run of it

    def write(self, batch: PoseBatch, model: str) -> tuple[int, int, np.ndarray]:
        """Returns (frames, people, people per frame) written: progress and the auto-mode switch."""
        with self.timed():
            batch = self.trackers[batch.video_id](batch)
            self.sink.write(batch, model)
            return len(batch.frames), len(batch), people_per_frame(batch)

    def finish(self, video_id: str, row: dict) -> dict:
        tracker = self.trackers.pop(video_id)
        return self.sink.finish(video_id, {**row, "tracks": tracker.next_id, "flips_corrected": tracker.flips_corrected})

    def fail(self, video_id: str, row: dict) -> dict:
        self.trackers.pop(video_id, None)
        return self.sink.fail(video_id, row)

