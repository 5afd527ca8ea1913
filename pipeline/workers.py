"""Actor bodies: thin plain classes around the stages, each loading what it needs once.

They hold no Ray code (graph.py makes them remote in one place), so a test can run the whole chain
in one process. Constructors receive model bytes, never paths to download: the driver resolves
weights once and ships the bytes, so workers on other nodes need no weights folder.
"""
from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.config import Config
from stages.batches import FrameBatch, MapBatch, PoseBatch
from stages.bottomup import BottomUpGrouper, BottomUpNet, TorchForward
from stages.decode import DecodeError, VideoReader
from stages.sink import ParquetSink
from stages.tfpose_net import TfPoseNet, TfPoseOnnx
from stages.weights import WeightsError, resolve


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
        reader = self.readers.pop(video_id, None)
        self.iterators.pop(video_id, None)
        truncated = None
        if reader is not None:
            truncated = reader.truncation_reason if reader.truncated else None
            reader.close()
        return {"frames": 0, "done": True, "truncated": truncated}, None


@dataclass(frozen=True)
class ModelChoice:
    backend: str  # "torch" or "onnxruntime"
    filename: str
    path: Path


def choose_bottomup_model(config: Config) -> ModelChoice:
    """Resolve the network file for `[pose] backend` (the driver does this once, before any actor).

    auto: torch when the pose stage has GPUs; on a CPU onnxruntime (2x faster than the torch
    port at one thread on this network) when its file resolves, else torch from the .pb, which the
    resolver can download.
    """
    pose = config.pose
    backend = pose.backend
    if backend == "auto":
        if pose.resources.num_gpus > 0:
            backend = "torch"
        else:
            try:
                return ModelChoice("onnxruntime", pose.bottomup_onnx_model, resolve(pose.bottomup_onnx_model))
            except WeightsError:
                backend = "torch"
    filename = pose.bottomup_onnx_model if backend == "onnxruntime" else pose.bottomup_model
    return ModelChoice(backend, filename, resolve(filename))


def build_bottomup_forward(config: Config, backend: str, model_bytes: bytes, device: str):
    """The network runner: torch module from the GraphDef, or onnxruntime."""
    pose = config.pose
    if backend == "onnxruntime":
        # onnxruntime wants a file; the bytes came from the resolver, so write them once here.
        path = Path(tempfile.mkdtemp(prefix="posepipe-")) / pose.bottomup_onnx_model
        path.write_bytes(model_bytes)
        providers = ["CUDAExecutionProvider"] if device.startswith("cuda") else []
        return TfPoseOnnx(path, num_threads=pose.threads, providers=providers + ["CPUExecutionProvider"])
    return TorchForward(TfPoseNet.from_bytes(model_bytes), device=device, half=pose.half)


class PoseWorker(_Busy):
    """FrameBatch -> MapBatch on this actor's device (CUDA when Ray gave it a GPU)."""

    def __init__(self, config: Config, backend: str, model_bytes: bytes):
        super().__init__()
        device = "cuda" if torch.cuda.is_available() and config.pose.resources.num_gpus > 0 else "cpu"
        torch.set_num_threads(config.pose.threads)
        self.net = BottomUpNet(build_bottomup_forward(config, backend, model_bytes, device), config.bottomup)

    def process(self, batch: FrameBatch) -> MapBatch:
        with self.timed():
            return self.net(batch)


class GroupWorker(_Busy):
    """MapBatch -> PoseBatch (PAF grouping, CPU)."""

    def __init__(self, config: Config):
        super().__init__()
        self.grouper = BottomUpGrouper(config.bottomup)

    def process(self, batch: MapBatch) -> PoseBatch:
        with self.timed():
            return self.grouper(batch)


class SinkWorker(_Busy):
    """One ParquetSink; every batch of a given video goes to the same SinkWorker, in order."""

    def __init__(self, out_dir: str, row_group_size: int):
        super().__init__()
        self.sink = ParquetSink(out_dir, row_group_size)

    def open(self, video_id: str) -> None:
        self.sink.open(video_id)

    def write(self, batch: PoseBatch, mode: str, model: str) -> tuple[int, int]:
        """Returns (frames, people) written, for progress."""
        with self.timed():
            return len(batch.frames), self.sink.write(batch, mode, model)

    def finish(self, video_id: str, row: dict) -> dict:
        return self.sink.finish(video_id, row)

    def fail(self, video_id: str, row: dict) -> dict:
        return self.sink.fail(video_id, row)

