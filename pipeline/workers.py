"""Actor bodies: thin plain classes around the stages, each loading what it needs once.

They hold no Ray code (graph.py makes them remote in one place), so a test can run the whole chain
in one process. Constructors receive model bytes, never paths to download: the driver resolves
weights once and ships the bytes, so workers on other nodes need no weights folder.
"""
from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Iterator
from functools import partial

import cv2
import numpy as np
import pyarrow as pa

from pipeline.config import Config
from pipeline.models import Grouping, build_pose_models
from stages.batches import FrameBatch, PoseBatch, PoseOutput, TrackedRows
from stages.body.table import body_summary, track_shapes
from stages.track.confirm import TrackOutput
from stages.io.decode import DecodeError, VideoReader
from stages.io.dense_table import DENSE_SCHEMA, flag_plausibility
from stages.io.frame_source import FrameSource, FrameSources
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

    def process(self, batch: FrameBatch, mode: str, model: str) -> PoseOutput:
        """mode: the branch mode to run (never auto); model: the label its people rows carry."""
        with self.timed():
            return self.models(batch, mode, model)


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


class TrackWorker(_Busy):
    """PoseBatch -> tracked, confirmed PoseBatch slices (stages/track/confirm.py), per video. Every batch
    of a video goes to the same TrackWorker and Ray runs one caller's actor calls in order, so each
    video's tracker sees its frames in order; videos spread over TrackWorkers are tracked in parallel.
    Only people rows pass through it (no maps, no frames): the hop costs a small copy."""

    def __init__(self, track: TrackParams):
        super().__init__()
        _load_hungarian()
        self.track = track
        self.outputs: dict[str, TrackOutput] = {}

    def open(self, video_id: str) -> None:
        self.outputs[video_id] = TrackOutput(Tracker(self.track))  # state per video, new for each run of it

    def push(self, batch: PoseBatch) -> tuple[tuple[int, int, np.ndarray], list[PoseBatch]]:
        """(info, slices now decided): info = (frames, people rows released now, people detected per
        frame), for progress and the auto-mode switch; called with num_returns=2 so the driver waits
        on info while the slices go to the sink (and the mesh stage)."""
        with self.timed():
            ready = self.outputs[batch.video_id].push(batch)
            return (len(batch.frames), sum(len(piece) for piece in ready), people_per_frame(batch)), ready

    def finish(self, video_id: str) -> tuple[list[PoseBatch], dict]:
        """At a video's end: (the slices still held that are now decided, the videos row's tracking
        fields); called with num_returns=2."""
        with self.timed():
            output = self.outputs.pop(video_id)
            return output.flush(), {"tracks": output.tracks, "flips_corrected": output.tracker.flips_corrected}

    def drop(self, video_id: str) -> None:
        self.outputs.pop(video_id, None)


class SinkWorker(_Busy):
    """Parquet for the videos given to it: a video always goes to the same SinkWorker (one writer per
    video), its writes in frame order."""

    def __init__(self, out_dir: str, row_group_size: int):
        super().__init__()
        self.sink = ParquetSink(out_dir, row_group_size)

    def open(self, video_id: str) -> None:
        self.sink.open(video_id)

    def write(self, video_id: str, pieces: list[PoseBatch], info, bodies: pa.Table | None = None,
              dense: pa.Table | None = None):
        """Write tracked slices (and the bodies rows fitted from earlier ones, and their dense rows); info
        passes through, so the driver's wait on this call covers every row of its batch."""
        with self.timed():
            for piece in pieces:
                self.sink.write(piece)
            for name, table in (("bodies", bodies), ("dense", dense)):
                if table is not None and table.num_rows:
                    self.sink.write_table(video_id, name, table)
            return info

    def finish(self, video_id: str, row: dict, pieces: list[PoseBatch], tracking: dict,
               bodies_end: tuple | None = None, dense_end: pa.Table | None = None) -> dict:
        """pieces, tracking: the tracker's last slices and its videos-row fields; bodies_end: the mesh
        stage's (last bodies rows, body_tracks rows, skip counts, floor columns), when it ran; dense_end: the
        dense stage's last rows (a table, maybe empty), when it ran."""
        with self.timed():
            for piece in pieces:
                self.sink.write(piece)
            row = {**row, **tracking}
            if bodies_end is not None:
                last, tracks, skipped, scene = bodies_end
                if last is not None:
                    self.sink.write_table(video_id, "bodies", last)
                self.sink.write_table(video_id, "body_tracks", tracks)
                row.update(body_summary(tracks, skipped), **scene)
                if dense_end is not None:
                    if dense_end.num_rows:
                        self.sink.write_table(video_id, "dense", dense_end)
                    # Plausibility is a track's whole-video verdict: known now, so the dense rows get it now.
                    row["dense_rows"] = self.sink.rewrite_table(video_id, "dense",
                                                                partial(flag_plausibility, tracks=tracks))
            return self.sink.finish(video_id, row)

    def fail(self, video_id: str, row: dict) -> dict:
        return self.sink.fail(video_id, row)


class MeshWorker(_Busy):
    """Tracked rows -> bodies rows (stages/body/stream.py) on this actor's device. A video's calls all
    go to the same MeshWorker, in order (warm start and the frozen shape of each track live here)."""

    def __init__(self, config: Config):
        super().__init__()
        import torch

        from stages.body.fit import BodyFitter
        from stages.body.load import load_body_model
        from stages.body.stream import BodyStream  # here, not at the top: its scipy.optimize costs every
        # other actor's process 0.7 s of start-up (decode, pose, group, sink never fit a body)

        device = "cuda" if torch.cuda.is_available() and config.mesh.resources.num_gpus > 0 else "cpu"
        torch.set_num_threads(config.mesh.threads)
        model = load_body_model(config.mesh.body_model, config.mesh.body_model_path, device)
        self.stream = BodyStream(BodyFitter(model, config.mesh.fit), config.mesh.chunk_frames,
                             config.mesh.floor_wait_frames)

    def open(self, video_id: str) -> None:
        self.stream.open(video_id)

    def fit(self, video_id: str, pieces: list[PoseBatch], image_size: tuple[int, int]):
        """Tracked slices in; the bodies rows of the chunks now complete (or None)."""
        with self.timed():
            return self.stream.push(TrackedRows.concat(video_id, pieces), image_size)

    def finish(self, video_id: str, pieces: list[PoseBatch], image_size: tuple[int, int]) -> tuple:
        """The tracker's last slices; (last bodies rows, body_tracks rows, skip counts)."""
        with self.timed():
            return self.stream.finish(TrackedRows.concat(video_id, pieces), image_size)

    def drop(self, video_id: str) -> None:
        self.stream.drop(video_id)

    def shapes(self, video_id: str) -> dict[int, np.ndarray]:
        """track id -> shape of the video's tracks fitted so far; a fitted track's shape is frozen, so these
        are the shapes of every bodies row fit() has returned (the dense stage poses them)."""
        return self.stream.fitter.shapes(video_id)

    def mocap(self, rows: TrackedRows, image_size: tuple[int, int]) -> Iterator[int | tuple]:
        """Offline: a video's tracks fitted whole (stream.fit_whole_steps). A Ray streaming generator: the
        driver gets each group's person-frames as it is fitted (its progress bar), then the result."""
        with self.timed():
            yield from self.stream.fit_whole_steps(rows, image_size)


class DenseWorker(_Busy):
    """Bodies rows -> dense rows (stages/dense/video.py), with one raster and one rest-shape cache for the
    actor's life. Nothing a video needs is kept but where its frames were read up to (FrameSources: the
    silhouettes read the input video again, forward), so the graph hands each chunk to the next dense actor
    in turn (the sink, which waits on them, keeps the order) and a restarted one just takes the next call."""

    def __init__(self, config: Config, segment_model: bytes | None = None):
        super().__init__()
        import torch

        from stages.dense.video import DenseRenderer

        torch.set_num_threads(1)  # stages/dense/bodies.py: two spinning OpenMP threads starve the raster's
        self.renderer = DenseRenderer.load(config.dense.raster, config.dense.grow_cm / 100, segment_model,
                                           config.dense.threads)
        self.frames = FrameSources(config.decode.max_side)

    def _source(self, path: str, bodies: pa.Table) -> FrameSource | None:
        """The input video's frames for the silhouettes (None without a segmenter or a path)."""
        return self.frames.get(path, bodies["video_id"][0].as_py()) if path and self.renderer.segmenter else None

    def render(self, bodies: pa.Table | None, shapes: dict[int, np.ndarray],
               image_size: tuple[int, int], path: str = "") -> pa.Table | None:
        """A chunk's bodies rows (None while the mesh stage fills one) and its tracks' shapes -> dense rows;
        path: the input video, for the silhouettes ("": the bodies alone)."""
        if bodies is None:
            return None
        with self.timed():
            return self.renderer.rows(bodies, shapes, image_size, self._source(path, bodies))

    def finish(self, bodies_end: tuple, image_size: tuple[int, int], path: str = "") -> pa.Table:
        """The mesh stage's finish() -> the dense rows of its last bodies rows (an empty table when none)."""
        last, tracks = bodies_end[:2]
        with self.timed():
            out = DENSE_SCHEMA.empty_table() if last is None else \
                self.renderer.rows(last, track_shapes(tracks), image_size, self._source(path, last))
        self.frames.close(path)
        return out
