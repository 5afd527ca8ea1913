"""Configuration: TOML files -> frozen dataclasses, checked key by key.

`configs/default.toml` holds every key; a mode file (e.g. `configs/bottomup.toml`) or a user's file
overrides some of them. Each file is checked against the dataclasses before merging, so an unknown
key or a wrong type is reported with the key's dotted name and the file it is in.
Stage parameter dataclasses (from `stages/`) are used directly as sections, so a threshold has one
definition and one default.
"""
from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stages.body.params import CAMERA_HEIGHT_RANGE_M, FitParams
from stages.pose.mode_table import MODES
from stages.pose.params import AutoParams, BottomUpParams, DetectorParams, HybridParams, TopDownParams
from stages.track.track import TrackParams

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_FILE = CONFIG_DIR / "default.toml"


class ConfigError(ValueError):
    """A configuration file has an unknown key, a wrong type or a bad value."""


@dataclass(frozen=True)
class StageResources:
    """How one Ray stage is placed: actors and their logical resources, bound on batches in flight."""

    actors: int | Literal["auto"] = 1  # "auto" ([pose.resources] only): pipeline/sizing.py
    num_cpus: float = 1.0
    num_gpus: float = 0.0  # fractions share a GPU (Ray's logical units); 0 on a CPU machine
    max_restarts: int = 2  # Ray restarts a dead actor this often and retries its calls


@dataclass(frozen=True)
class RunConfig:
    mode: str = "bottomup"  # a name in stages/pose/mode_table.py's MODES
    max_videos_in_flight: int = 2  # videos decoded at once
    max_batches_in_flight: int = 4  # per video, between decode and sink (the backpressure bound)
    start_timeout_s: float = 600.0  # actors not placed by then: a clear error, not a hang


@dataclass(frozen=True)
class DecodeConfig:
    resources: StageResources = field(default_factory=lambda: StageResources(num_cpus=0.5))
    batch_size: int = 8
    max_side: int = 1280  # frames larger than this are shrunk in decode; 0 keeps full size
    # Refused at open from the header alone, before any decode time is spent; 0 = no limit.
    max_pixels: int = 8294400  # coded width * height; 3840x2160 (4K UHD)
    max_duration_s: float = 14400.0  # 4 h


@dataclass(frozen=True)
class PoseConfig:
    resources: StageResources = field(default_factory=lambda: StageResources(actors="auto"))
    # auto: torch on a GPU; on a CPU onnxruntime when its model file resolves (faster there, see
    # docs/commands.md "Weights"), else torch built from the upstream .pb, which the resolver can download.
    backend: Literal["auto", "torch", "onnxruntime"] = "auto"
    threads: int = 1  # intra-op threads per pose actor on CPU
    half: bool = True  # float16 on CUDA (ignored on CPU)
    # Bottom-up peaks and PAF scores on the pose actor's device (stages/pose/bottomup_torch.py), so only
    # people leave it: auto = on a GPU; on = anywhere (needs the torch backend); off = a grouping actor.
    group_on_device: Literal["auto", "on", "off"] = "auto"
    bottomup_model: str = "tfpose_mobilenet_v2_small_graph_opt.pb"
    bottomup_onnx_model: str = "tfpose_mobilenet_v2_small.onnx"


@dataclass(frozen=True)
class GroupConfig:
    resources: StageResources = field(default_factory=lambda: StageResources(num_cpus=0.25))


@dataclass(frozen=True)
class TrackConfig(TrackParams):
    """[track]: the tracker's settings (stages/track/track.py) and its actors' placement."""

    resources: StageResources = field(default_factory=lambda: StageResources(num_cpus=0.125))


@dataclass(frozen=True)
class SinkConfig:
    resources: StageResources = field(default_factory=lambda: StageResources(num_cpus=0.125))
    row_group_size: int = 65536


@dataclass(frozen=True)
class MeshConfig:
    """The 3D body stage (after tracking): off unless `posepipe run --mesh` or enabled = true."""

    resources: StageResources = field(default_factory=lambda: StageResources(num_cpus=1.0))
    enabled: bool = False
    body_model: Literal["anny", "smpl"] = "anny"
    body_model_path: str = ""  # smpl: the folder holding the user's SMPL_NEUTRAL.npz (never shipped)
    chunk_frames: int = 32  # frames of a video fitted together (one batched optimisation)
    floor_wait_frames: int = 128  # complete chunks wait this long for the video's floor (stages/body/stream.py)
    threads: int = 1  # intra-op threads per mesh actor on CPU
    fit: FitParams = field(default_factory=FitParams)


@dataclass(frozen=True)
class DenseConfig:
    """The dense render of the fitted bodies (stages/dense): a stage after the mesh stage, off unless
    `posepipe run --mesh --dense` or enabled = true; `posepipe dense OUT` reads all but enabled and resources."""

    resources: StageResources = field(default_factory=lambda: StageResources(num_cpus=1.0))
    enabled: bool = False
    # gl: OpenGL in an offscreen EGL context (mesa's llvmpipe on a CPU), ~4x faster than rays here;
    # rays: trimesh + embree ray casting; auto: gl where an EGL context can be made, else rays.
    raster: Literal["auto", "gl", "rays"] = "auto"
    # Every body drawn this much larger along its normals: the body model is naked, the people are not.
    # benchmarks/dense_accuracy.py --inflate-cm 0,1,2,3: 1 cm raised the mask IoU on every set and fit
    # (+0.013 to +0.033 with detected keypoints), 2 cm no better, 3 cm worse everywhere. 0: the bare body.
    grow_cm: float = 1.0
    # Each frame's render cut to its people's silhouettes (stages/dense/silhouette.py: a segmentation model
    # per person, the input video decoded again): their clothes and hair in, the bodies' spill out.
    # crowd_synth p10 mask IoU 0.58 -> 0.70 (benchmarks/dense_accuracy.py). auto: its model file where it is
    # installed or can be downloaded (41 MB, once), else the bodies alone, said in one line; on requires it;
    # off: the bodies alone. The videos row's dense_masks records which.
    silhouettes: Literal["auto", "on", "off"] = "auto"
    threads: int = 1  # intra-op threads of the segmentation model per dense actor (the GL raster has its own)


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    bottomup: BottomUpParams = field(default_factory=BottomUpParams)
    detect: DetectorParams = field(default_factory=DetectorParams)
    topdown: TopDownParams = field(default_factory=TopDownParams)
    auto: AutoParams = field(default_factory=AutoParams)
    hybrid: HybridParams = field(default_factory=HybridParams)
    track: TrackConfig = field(default_factory=TrackConfig)
    group: GroupConfig = field(default_factory=GroupConfig)
    sink: SinkConfig = field(default_factory=SinkConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    dense: DenseConfig = field(default_factory=DenseConfig)


def _check_value(name: str, value: Any, hint: Any, source: str) -> None:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            try:
                return _check_value(name, value, option, source)
            except ConfigError as exc:
                errors.append(str(exc).split(": ", 2)[-1])
        raise ConfigError(f"{source}: {name} = {value!r}: {' or '.join(errors)}")
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{source}: {name} = {value!r}: must be one of {typing.get_args(hint)}")
        return
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(hint)
    if ok is None:
        raise ConfigError(f"{source}: {name}: unsupported field type {hint}")
    if not ok:
        raise ConfigError(f"{source}: {name} = {value!r}: expected {hint.__name__}, got {type(value).__name__}")


def _check_section(cls: type, data: dict, source: str, prefix: str = "") -> None:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{source}: unknown key {name!r} (known: {', '.join(sorted(names))})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {name} must be a table [{name}]")
            _check_section(hint, value, source, f"{name}.")
        else:
            _check_value(name, value, hint, source)


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _build(cls: type, data: dict) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {k: _build(hints[k], v) if dataclasses.is_dataclass(hints[k]) else v for k, v in data.items()}
    # TOML integers are accepted for float fields; store them as floats so types are exact.
    kwargs = {k: float(v) if hints[k] is float and isinstance(v, int) else v for k, v in kwargs.items()}
    return cls(**kwargs)


def _check_config(config: Config, source: str) -> Config:
    """Rules across keys, after merging."""
    if config.run.mode not in MODES:
        raise ConfigError(f"{source}: run.mode = {config.run.mode!r}: must be one of {tuple(MODES)}")
    for name in ("decode", "group", "track", "sink", "mesh", "dense"):
        if getattr(config, name).resources.actors == "auto":
            raise ConfigError(f"{source}: {name}.resources.actors = 'auto': only [pose.resources] sizes itself; "
                              "give a number")
    if config.detect.fine_side < 0:
        raise ConfigError(f"{source}: detect.fine_side = {config.detect.fine_side}: "
                          "must be 0 (one pass) or a side in px")
    if not 0 <= config.dense.grow_cm <= 5:  # a shrunken body, or a balloon: a typo, not clothing
        raise ConfigError(f"{source}: dense.grow_cm = {config.dense.grow_cm}: must be 0 (the bare body) to 5 cm")
    for name in ("pose", "mesh", "dense"):
        if getattr(config, name).threads < 1:
            raise ConfigError(f"{source}: {name}.threads = {getattr(config, name).threads}: must be >= 1")
    height, (low, high) = config.mesh.fit.camera_height_m, CAMERA_HEIGHT_RANGE_M
    if not (height == 0 or low <= height <= high):
        raise ConfigError(f"{source}: mesh.fit.camera_height_m = {height}: "
                          f"must be 0 (unknown) or {low:g}-{high:g} metres")
    return config


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    _check_section(Config, data, str(path))
    return data


def load_config(*paths: str | Path) -> Config:
    """Default config overlaid by each file in turn (later files win)."""
    data: dict = {}
    for path in (DEFAULT_FILE, *map(Path, paths)):
        data = _merge(data, read_toml(path))
    return _check_config(_build(Config, data), ", ".join(map(str, paths or (DEFAULT_FILE,))))


def mode_file(mode: str) -> Path:
    """The preset of a mode, e.g. configs/bottomup.toml."""
    return CONFIG_DIR / f"{mode}.toml"
