"""Actor bodies: thin plain classes around the stages, each loading what it needs once.

They hold no Ray code (graph.py makes them remote in one place), so a test can run the whole chain
in one process. Constructors receive model bytes, never paths to download: the driver resolves
weights once and ships the bytes, so workers on other nodes need no weights folder.
"""
from __future__ import annotations

import contextlib
import importlib
import time

import cv2
import numpy as np

from pipeline.config import Config
from pipeline.models import Grouping, build_pose_models
from stages.batches import FrameBatch, PoseBatch, PoseOutput
from stages.body.stream import BodyStream, TrackedRows, tracked_rows
from stages.body.table import body_summary
from stages.track.confirm import TrackOutput
from stages.io.decode import DecodeError, VideoReader
from stages.io.sink import ParquetSink, people_per_frame
from stages.track.track import Tracker, TrackParams


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


def _load_hungarian() -> None:
    """Import scipy.optimize now (0.8 s): grouping and tracking load it on first use, which would put
    it on the first batch's path, once per stage in turn, instead of in the actors' concurrent start."""
    importlib.import_module("scipy.optimize")


class DecodeWorker(_Busy):
    """Holds one open VideoReader per video it was given; hands out batches in order."""

    def __init__(self, batch_size: int, max_side: int, max_pixels: int = 0, max_duration_s: float = 0.0):
        super().__init__()
        self.batch_size = batch_size
        self.max_side = max_side or None
        self.limits = {"max_pixels": max_pixels, "max_duration_s": max_duration_s}  # 0 = no limit
        self.readers: dict[str, VideoReader] = {}
        self.iterators: dict = {}
        self.finished: set[str] = set()  # videos closed here (read to the end or failed): ids are small

    def open(self, path: str, video_id: str) -> dict:
        """Open a video; returns its metadata fields, or {'error': message} for a bad file."""
        try:
            reader = VideoReader(path, batch_size=self.batch_size, max_side=self.max_side, video_id=video_id,
                                 **self.limits)
        except DecodeError as exc:
            return {"error": str(exc)}
        self.readers[video_id] = reader
        self.iterators[video_id] = iter(reader)
        self.finished.discard(video_id)
        return dict(reader.meta.__dict__)

    def next_batch(self, video_id: str) -> tuple[dict, FrameBatch | None]:
        """(info, frames): info = {'frames': n, 'done': bool, 'truncated': str | None}.

        Called with two return values so the driver waits on the small info object while the
        frames go straight to a pose actor.
        """
        iterator = self.iterators.get(video_id)
        if iterator is None and video_id in self.finished:
            # The driver asks ahead of knowing where a video ends: calls past the end say so again.
            return {"frames": 0, "done": True, "truncated": None}, None
        if iterator is None:
            # This actor restarted and lost the reader: the video must fail (and be redone by a
            # re-run) rather than end early and look complete.
            raise RuntimeError(f"{video_id}: the decoder lost this video's reader (actor restarted?)")
        with self.timed():
            batch = next(iterator, None)
        if batch is not None:
            return {"frames": len(batch), "done": False, "truncated": None}, batch
        reader = self.close(video_id)
        truncated = reader.truncation_reason if reader is not None and reader.truncated else None
        return {"frames": 0, "done": True, "truncated": truncated}, None

    def close(self, video_id: str) -> VideoReader | None:
        """Drop a video's reader (at its end, or when a later stage failed it)."""
        self.iterators.pop(video_id, None)
        self.finished.add(video_id)
        reader = self.readers.pop(video_id, None)
        if reader is not None:
            reader.close()
        return reader


class PoseWorker(_Busy):
    """FrameBatch -> PoseOutput on this actor's device (CUDA when Ray gave it a GPU)."""

    def __init__(self, config: Config, blobs: dict[str, tuple[str, bytes]]):
        super().__init__()
        device = "cpu"
        if config.pose.resources.num_gpus > 0:
            import torch  # only to find the GPU: a CPU actor running onnxruntime never imports torch (2 s)

            device = "cuda" if torch.cuda.is_available() else "cpu"
        # cv2 (resizes) would otherwise start a thread per core in every actor, on cores the other actors use.
        cv2.setNumThreads(config.pose.threads)
        self.models = build_pose_models(config, blobs, device)

    def process(self, batch: FrameBatch, mode: str) -> PoseOutput:
        with self.timed():
            return self.models(batch, mode)


class GroupWorker(_Busy):
    """PoseOutput -> PoseBatch (PAF grouping and the hybrid merge, CPU)."""

    def __init__(self, config: Config):
        super().__init__()
        cv2.setNumThreads(1)  # upsampling and blur of the maps: one core's work, beside the pose actors
        _load_hungarian()
        self.grouping = Grouping(config)

    def process(self, out: PoseOutput) -> PoseBatch:
        with self.timed():
            return self.grouping(out)


class SinkWorker(_Busy):
    """Tracking and Parquet for the videos given to it. Every batch of a video goes to the same
    SinkWorker and Ray runs one caller's actor calls in order, so each video's tracker sees its
    frames in order; videos spread over SinkWorkers are tracked in parallel."""

    def __init__(self, out_dir: str, row_group_size: int, track: TrackParams):
        super().__init__()
        _load_hungarian()
        self.sink = ParquetSink(out_dir, row_group_size)
        self.track = track
        self.outputs: dict[str, TrackOutput] = {}
        self.track_s = 0.0  # of busy_s, the time spent tracking (benchmarks report its share)
        self.labels: dict[str, str] = {}  # batch mode -> model label (held rows are written later)

    def open(self, video_id: str) -> None:
        self.sink.open(video_id)
        self.outputs[video_id] = TrackOutput(Tracker(self.track))  # state per video, new for each run of it

    def write(self, batch: PoseBatch, model: str) -> tuple[int, int, np.ndarray]:
        """Returns (frames, people rows written, people detected per frame) of this batch: progress and
        the auto-mode switch. Rows of still-tentative tracks are written by a later call."""
        return self._track_and_write(batch, model)[0]

    def write_tracked(self, batch: PoseBatch, model: str) -> tuple[tuple[int, int, np.ndarray], TrackedRows]:
        """write(), and the tracked rows it wrote (for the mesh stage; called with num_returns=2)."""
        info, ready = self._track_and_write(batch, model)
        return info, tracked_rows(batch.video_id, ready)

    def _track_and_write(self, batch: PoseBatch, model: str) -> tuple[tuple[int, int, np.ndarray], list[PoseBatch]]:
        with self.timed():
            t0 = time.perf_counter()
            ready = self.outputs[batch.video_id].push(batch)
            self.track_s += time.perf_counter() - t0
            self.labels[batch.mode] = model
            self._write_ready(ready)
            # people: rows written now (what the progress bar counts); per frame: people detected (auto mode)
            return (len(batch.frames), sum(len(piece) for piece in ready), people_per_frame(batch)), ready

    def _write_ready(self, pieces: list[PoseBatch]) -> None:
        for piece in pieces:
            self.sink.write(piece, self.labels[piece.mode])

    def flush(self, video_id: str) -> TrackedRows:
        """At a video's end: write the rows still held, return them as tracked rows."""
        ready = self.outputs[video_id].flush()
        self._write_ready(ready)
        return tracked_rows(video_id, ready)

    def write_bodies(self, video_id: str, bodies, info):
        """bodies: a bodies-table slice (or None); info passes through, so the driver waits on this call."""
        with self.timed():
            if bodies is not None:
                self.sink.write_table(video_id, "bodies", bodies)
            return info

    def finish(self, video_id: str, row: dict, bodies_end: tuple | None = None) -> dict:
        """bodies_end: the mesh stage's (last bodies rows, body_tracks rows, skip counts), when it ran."""
        output = self.outputs.pop(video_id)
        self._write_ready(output.flush())  # nothing left when flush() ran first (with the mesh stage)
        row = {**row, "tracks": output.tracks, "flips_corrected": output.tracker.flips_corrected}
        if bodies_end is not None:
            last, tracks, skipped = bodies_end
            if last is not None:
                self.sink.write_table(video_id, "bodies", last)
            self.sink.write_table(video_id, "body_tracks", tracks)
            row.update(body_summary(tracks, skipped))
        return self.sink.finish(video_id, row)

    def fail(self, video_id: str, row: dict) -> dict:
        self.outputs.pop(video_id, None)
        return self.sink.fail(video_id, row)

    def stats(self) -> dict:
        return {**super().stats(), "track_s": self.track_s}


class MeshWorker(_Busy):
    """Tracked rows -> bodies rows (stages/body/stream.py) on this actor's device. A video's calls all
    go to the same MeshWorker, in order (warm start and the frozen shape of each track live here)."""

    def __init__(self, config: Config):
        super().__init__()
        import torch

        from stages.body.fit import BodyFitter
        from stages.body.load import load_body_model

        device = "cuda" if torch.cuda.is_available() and config.mesh.resources.num_gpus > 0 else "cpu"
        torch.set_num_threads(config.mesh.threads)
        model = load_body_model(config.mesh.body_model, config.mesh.body_model_path, device)
        self.stream = BodyStream(BodyFitter(model, config.mesh.fit), config.mesh.chunk_frames)

    def open(self, video_id: str) -> None:
        self.stream.open(video_id)

    def fit(self, rows: TrackedRows, image_size: tuple[int, int]):
        with self.timed():
            return self.stream.push(rows, image_size)

    def finish(self, rows: TrackedRows, image_size: tuple[int, int]) -> tuple:
        with self.timed():
            return self.stream.finish(rows, image_size)

    def drop(self, video_id: str) -> None:
        self.stream.drop(video_id)

    def mocap(self, rows: TrackedRows, image_size: tuple[int, int]) -> tuple:
        """Offline: a video's tracks fitted whole (stream.fit_whole)."""
        with self.timed():
            return self.stream.fit_whole(rows, image_size)
