"""Which model files a run needs, resolved once by the driver, and how a pose actor builds them.

The driver resolves every file (sha256-checked) before any actor starts, so a missing file fails
the run at once; actors receive the bytes and never touch the resolver or the network.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.config import Config, ConfigError
from stages.track.appearance import appearance, thumbnails
from stages.batches import FrameBatch, MapBatch, PoseBatch, PoseOutput
from stages.dense.segment import SEGMENT_FILE
from stages.pose.bottomup import BottomUpGrouper, BottomUpNet, TorchForward
from stages.pose.mode_table import MODES, branch_mode
from stages.pose.modes import merge_hybrid
from stages.pose.topdown import TopDownKeypoints
from stages.pose.rtmdet import RTMDET_FILE
from stages.pose.zoo import DETECTOR_FILES, KEYPOINT_MODELS, Detector, build_detector, build_keypoint_model, \
    needs_fine_detector
from stages.weights import WeightsError, WeightsMissing, resolve

if TYPE_CHECKING:  # torch: imported by the pose actors that group on their device only
    from stages.pose.bottomup_torch import DeviceBottomUp

@dataclass(frozen=True)
class ModelChoice:
    backend: str  # "torch" or "onnxruntime"
    filename: str
    path: Path


def choose_bottomup_model(config: Config) -> ModelChoice:
    """Resolve the bottom-up network for `[pose] backend`.

    auto: torch when the pose stage has GPUs; on a CPU onnxruntime (2x faster than the torch
    port at one thread on this network) when its file resolves, else torch from the .pb, which the
    resolver can download.
    """
    pose = config.pose
    backend = pose.backend
    if groups_on_device(config):
        if backend == "onnxruntime":
            raise ConfigError("[pose] group_on_device runs the torch network: set backend = \"torch\" or \"auto\"")
        backend = "torch"
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


def groups_on_device(config: Config) -> bool:
    """Whether pose actors group bottom-up people themselves (`[pose] group_on_device`)."""
    choice = config.pose.group_on_device
    return choice == "on" or (choice == "auto" and config.pose.resources.num_gpus > 0)


def choose_models(config: Config) -> dict[str, ModelChoice]:
    """role -> resolved file, for the roles the run's mode needs."""
    roles = MODES[config.run.mode].roles
    out = {}
    if "bottomup" in roles:
        out["bottomup"] = choose_bottomup_model(config)
    if "detector" in roles:
        filename = DETECTOR_FILES[config.detect.model]
        out["detector"] = ModelChoice("onnxruntime", filename, resolve(filename))
    if "fine_detector" in roles and needs_fine_detector(config.detect):  # RTMDet's pass after another detector
        out["fine_detector"] = ModelChoice("onnxruntime", RTMDET_FILE, resolve(RTMDET_FILE))
    if "topdown" in roles:
        filename = KEYPOINT_MODELS[config.topdown.keypoint_model][0]
        out["topdown"] = ModelChoice("onnxruntime", filename, resolve(filename))
    return out


def model_blobs(models: dict[str, ModelChoice]) -> dict[str, tuple[str, bytes]]:
    """role -> (backend, file bytes): what pose actors are built from (`build_pose_models`)."""
    return {role: (m.backend, m.path.read_bytes()) for role, m in models.items()}


def choose_segment_model(config: Config) -> Path | None:
    """The dense stage's segmentation model (stages/dense/segment.py), resolved; None for the bodies alone.

    `[dense] silhouettes`: off -> None; on -> the file (downloaded once when missing), a missing one a
    WeightsError; auto -> the file where it is installed or can be downloaded, else None (offline, or the
    download failed). A corrupt file fails under auto too: only its absence means "not installed".
    """
    if config.dense.silhouettes == "off":
        return None
    try:
        return resolve(SEGMENT_FILE)
    except WeightsMissing:
        if config.dense.silhouettes == "on":
            raise
        return None


def segment_note(config: Config, segment: Path | None) -> str | None:
    """The line a run with --dense (or `posepipe dense`) says when "auto" found no segmentation model."""
    if segment is None and config.dense.silhouettes == "auto":
        return (f"dense masks from the bodies alone: {SEGMENT_FILE} is not installed and was not downloaded "
                "([dense] silhouettes; docs/bodies.md)")
    return None


def model_label(models: dict[str, ModelChoice], mode: str) -> str:
    """The `model` column for people found in `mode` (for auto: every file it may use): the files
    that produced them."""
    return "+".join(models[r].filename for r in MODES[mode].roles if r in models)


def _providers(device: str) -> list[str]:
    return (["CUDAExecutionProvider"] if device.startswith("cuda") else []) + ["CPUExecutionProvider"]


def build_bottomup_forward(config: Config, backend: str, model_bytes: bytes, device: str):
    """The network runner: torch module from the GraphDef, or onnxruntime."""
    if backend == "onnxruntime":
        from stages.pose.tfpose_onnx import TfPoseOnnx

        # onnxruntime wants a file; the bytes came from the resolver, so write them once here.
        path = Path(tempfile.mkdtemp(prefix="posepipe-")) / config.pose.bottomup_onnx_model
        path.write_bytes(model_bytes)
        return TfPoseOnnx(path, num_threads=config.pose.threads, providers=_providers(device))
    return TorchForward(_torch_net(config, model_bytes), device=device, half=config.pose.half)


def build_device_bottomup(config: Config, model_bytes: bytes, device: str) -> DeviceBottomUp:
    """The torch network with peaks and PAF scores on the same device (`[pose] group_on_device`)."""
    from stages.pose.bottomup_torch import DeviceBottomUp

    return DeviceBottomUp(_torch_net(config, model_bytes), config.bottomup, device=device, half=config.pose.half)


def _torch_net(config: Config, model_bytes: bytes):
    """TfPoseNet from the GraphDef bytes, torch's CPU threads set for this actor."""
    # Imported here: torch costs seconds to import, and only the torch backend needs it.
    import torch

    from stages.pose.tfpose_net import TfPoseNet

    torch.set_num_threads(config.pose.threads)  # on a CPU; one stream per actor on a GPU
    return TfPoseNet.from_bytes(model_bytes)


@dataclass
class PoseModels:
    """The built networks of one pose actor (None where the mode does not need one)."""

    bottomup: BottomUpNet | DeviceBottomUp | None  # maps for a grouping actor, or people grouped here
    detector: Detector | None  # frames -> per-frame (boxes, scores)
    topdown: TopDownKeypoints | None
    thumb_side: int = 0  # thumbnails for the tracker's appearance descriptor; 0 = none

    def __call__(self, batch: FrameBatch, mode: str, model: str = "") -> PoseOutput:
        """The branches of `mode` (stages/pose/mode_table.py; never auto): bottom-up gives the network's
        maps (grouped later, on CPU) or people grouped on this device; top-down runs the detector, then
        every crop through the keypoint model. Plus frame thumbnails when appearance is on.
        model: the label the people rows will carry."""
        branches = branch_mode(mode)
        bottomup = self.bottomup(batch) if branches.bottomup else None
        maps, grouped = (bottomup, None) if isinstance(bottomup, MapBatch) else (None, bottomup)
        people = self.topdown(batch, self.detector(batch.images)) if branches.topdown else None
        thumbs, scale = thumbnails(batch.images, self.thumb_side) if self.thumb_side else (None, 1.0)
        return PoseOutput(mode=mode, maps=maps, people=people, grouped=grouped, thumbs=thumbs,
                          thumb_scale=scale * batch.scale, model=model)


class Grouping:
    """PoseOutput -> PoseBatch: PAF grouping of bottom-up maps, the hybrid merge; top-down people
    pass through."""

    def __init__(self, config: Config):
        self.grouper = BottomUpGrouper(config.bottomup)
        self.hybrid = config.hybrid

    def __call__(self, out: PoseOutput) -> PoseBatch:
        branches = branch_mode(out.mode)
        # Bottom-up people: grouped here from the maps, or already on the pose actor's device.
        bottomup = (self.grouper(out.maps) if out.maps is not None else out.grouped) if branches.bottomup else None
        if branches.bottomup and branches.topdown:
            people = merge_hybrid(out.people, bottomup, self.hybrid.max_oks)
        else:
            people = bottomup if branches.bottomup else out.people
        people = replace(people, model=out.model)
        if out.thumbs is None:
            return people
        # The detector's box where there is one: it covers the person, not just the found joints.
        boxes = np.where(np.isfinite(people.det_bbox), people.det_bbox, people.bbox)
        thumb_of = np.searchsorted(people.frames, people.frame_index)
        return replace(people, appearance=appearance(out.thumbs, thumb_of, boxes, out.thumb_scale))


def build_pose_models(config: Config, blobs: dict[str, tuple[str, bytes]], device: str) -> PoseModels:
    """blobs: role -> (backend, file bytes) as shipped by the driver."""
    bottomup = detector = topdown = None
    if "bottomup" in blobs and groups_on_device(config):
        bottomup = build_device_bottomup(config, blobs["bottomup"][1], device)
    elif "bottomup" in blobs:
        backend, data = blobs["bottomup"]
        bottomup = BottomUpNet(build_bottomup_forward(config, backend, data, device), config.bottomup)
    if "detector" in blobs:
        folder = Path(tempfile.mkdtemp(prefix="posepipe-"))
        path, fine_path = folder / DETECTOR_FILES[config.detect.model], None
        path.write_bytes(blobs["detector"][1])
        if "fine_detector" in blobs:
            fine_path = folder / RTMDET_FILE
            fine_path.write_bytes(blobs["fine_detector"][1])
        detector = build_detector(config.detect.model, path, config.detect, fine_path=fine_path,
                                  num_threads=config.pose.threads, providers=_providers(device))
    if "topdown" in blobs:
        model = build_keypoint_model(config.topdown, blobs["topdown"][1], config.pose.threads, _providers(device))
        topdown = TopDownKeypoints(model, config.topdown)
    return PoseModels(bottomup, detector, topdown, config.track.appearance_side if config.track.reid else 0)
