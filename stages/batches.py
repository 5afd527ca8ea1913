"""Batches passed between stages: frozen dataclasses of parallel numpy arrays (columns).

Shapes are checked once, at construction; stages trust the types after that. One array per
future Parquet column where possible, so the sink writes columns without reshaping rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from stages.coco17 import NUM_KEYPOINTS  # every keypoint array that leaves a pose stage is COCO-17


def _check(name: str, arr: np.ndarray, dtype: type, shape: tuple[int | None, ...]) -> None:
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name}: expected numpy array, got {type(arr).__name__}")
    if arr.dtype != np.dtype(dtype):
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)}, got {arr.dtype}")
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")


@dataclass(frozen=True)
class VideoMeta:
    """What the container says about one video, read before decoding frames."""

    video_id: str
    path: str
    size_bytes: int
    width: int  # upright (display) size in pixels, after rotation
    height: int
    fps: float  # average frame rate from the stream header; time stamps come from pts, not from this
    frame_count: int  # header's count, 0 when the container does not say
    duration_s: float  # header's duration, nan when unknown
    # Display rotation, counter-clockwise degrees mod 360 (FFmpeg display-matrix convention: a
    # phone's rotate=90 tag reads 270); frames are returned upright (already rotated).
    rotation: int
    codec: str


@dataclass(frozen=True)
class FrameBatch:
    """Consecutive decoded frames of one video.

    images: uint8[N, H, W, 3] in RGB order (PyAV 'rgb24'), upright.
    frame_index: int64[N], 0-based presentation order; time_s: float64[N] = pts * time_base.
    scale: video pixels per image pixel (> 1 when decode shrank the frames to save memory and
      transfer); pose stages multiply their coordinates by it so outputs are in video pixels.
    """

    video_id: str
    frame_index: np.ndarray
    time_s: np.ndarray
    images: np.ndarray
    scale: float = 1.0

    def __post_init__(self) -> None:
        n = len(self.frame_index)
        _check("frame_index", self.frame_index, np.int64, (n,))
        _check("time_s", self.time_s, np.float64, (n,))
        _check("images", self.images, np.uint8, (n, None, None, 3))

    def __len__(self) -> int:
        return len(self.frame_index)


@dataclass(frozen=True)
class PoseBatch:
    """People found in a run of frames of one video, one entry per person (P people in all).

    frames: int64[F], every frame index this batch covers (a frame with nobody in it is still
      listed, so "no people" is distinct from "not processed"); frame_time_s: float64[F].
    frame_index: int64[P], the frame of each person; time_s: float64[P].
    keypoints: float32[P, 17, 3] = (x, y, score) in image pixels, COCO-17 order; a keypoint the
      model did not find has score 0 and x = y = nan (never invented).
    bbox: float32[P, 4] = (x1, y1, x2, y2) in image pixels; score: float32[P] person score.
    track_id: int64[P], -1 until tracking assigns one.
    det_bbox: float32[P, 4] detector box (x1, y1, x2, y2) of a top-down person, NaN for bottom-up;
    det_score: float32[P] its detector score, NaN for bottom-up.
    mode: how these people were found, one value per batch: the branch mode that ran
      (stages/pose/mode_table.py: "bottomup", "topdown" or "hybrid").
    model: the model files that found them (the people table's `model` column), set with the mode.
    appearance: float16[P, D] colour descriptor for re-identification (stages/track/appearance.py), D = 0
      when none was computed; used by the tracker, not written to Parquet.
    """

    video_id: str
    frames: np.ndarray
    frame_time_s: np.ndarray
    frame_index: np.ndarray
    time_s: np.ndarray
    keypoints: np.ndarray
    bbox: np.ndarray
    score: np.ndarray
    track_id: np.ndarray = field(default=None)  # type: ignore[assignment]
    det_bbox: np.ndarray = field(default=None)  # type: ignore[assignment]
    det_score: np.ndarray = field(default=None)  # type: ignore[assignment]
    mode: str = "bottomup"
    appearance: np.ndarray = field(default=None)  # type: ignore[assignment]
    model: str = ""

    # The per-person columns (one entry per person); `frames` and `frame_time_s` are per frame.
    PERSON_COLUMNS = ("frame_index", "time_s", "keypoints", "bbox", "score", "track_id", "det_bbox", "det_score",
                      "appearance")

    def __post_init__(self) -> None:
        f = len(self.frames)
        p = len(self.frame_index)
        defaults = {"track_id": np.full(p, -1, np.int64), "det_bbox": np.full((p, 4), np.nan, np.float32),
                    "det_score": np.full(p, np.nan, np.float32), "appearance": np.zeros((p, 0), np.float16)}
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        _check("frames", self.frames, np.int64, (f,))
        _check("frame_time_s", self.frame_time_s, np.float64, (f,))
        _check("frame_index", self.frame_index, np.int64, (p,))
        _check("time_s", self.time_s, np.float64, (p,))
        _check("keypoints", self.keypoints, np.float32, (p, NUM_KEYPOINTS, 3))
        _check("bbox", self.bbox, np.float32, (p, 4))
        _check("score", self.score, np.float32, (p,))
        _check("track_id", self.track_id, np.int64, (p,))
        _check("det_bbox", self.det_bbox, np.float32, (p, 4))
        _check("det_score", self.det_score, np.float32, (p,))
        _check("appearance", self.appearance, np.float16, (p, None))

    def __len__(self) -> int:
        return len(self.frame_index)

    def people(self) -> dict[str, np.ndarray]:
        """name -> array of every per-person column."""
        return {name: getattr(self, name) for name in self.PERSON_COLUMNS}

    def take(self, rows: np.ndarray, frames: np.ndarray | None = None) -> PoseBatch:
        """The people `rows` (bool[P] or indices, in the order given) of the frames kept by `frames`
        (bool[F]; all when None). Rows must lie in the kept frames."""
        kept = {} if frames is None else {"frames": self.frames[frames], "frame_time_s": self.frame_time_s[frames]}
        return replace(self, **kept, **{name: col[rows] for name, col in self.people().items()})

    def with_people(self, batches: list[PoseBatch]) -> PoseBatch:
        """This batch's frames (and mode, model) with the people of `batches` (in order) as its rows."""
        return replace(self, **{name: np.concatenate([getattr(b, name) for b in batches])
                                for name in self.PERSON_COLUMNS})


@dataclass(frozen=True)
class TrackedRows:
    """People rows with their track ids, what the body stage fits: frame_index, track_id int64[P];
    time_s float64[P]; keypoints float32[P, 17, 3] (x, y, score in video pixels)."""

    video_id: str
    frame_index: np.ndarray
    time_s: np.ndarray
    track_id: np.ndarray
    keypoints: np.ndarray

    COLUMNS = ("frame_index", "time_s", "track_id", "keypoints")

    def __len__(self) -> int:
        return len(self.frame_index)

    def take(self, rows: np.ndarray) -> TrackedRows:
        """The rows `rows` (bool[P] or indices)."""
        return replace(self, **{name: getattr(self, name)[rows] for name in self.COLUMNS})

    @staticmethod
    def concat(video_id: str, parts: list[TrackedRows | PoseBatch]) -> TrackedRows:
        """The rows of `parts` in order (tracked PoseBatch slices give their rows with a track id)."""
        if not parts:
            return TrackedRows(video_id, np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64),
                               np.zeros((0, NUM_KEYPOINTS, 3), np.float32))
        # Only these columns of a PoseBatch slice: PoseBatch.take would copy all of them (appearance too).
        keep = [p.track_id >= 0 if isinstance(p, PoseBatch) else slice(None) for p in parts]
        return TrackedRows(video_id, **{name: np.concatenate([getattr(p, name)[k] for p, k in zip(parts, keep)])
                                        for name in TrackedRows.COLUMNS})


@dataclass(frozen=True)
class PoseOutput:
    """What a pose actor hands to grouping: bottom-up maps, top-down people, or both (hybrid)."""

    mode: str  # the branch mode that ran: "bottomup", "topdown" or "hybrid" (stages/pose/mode_table.py)
    maps: MapBatch | None = None
    people: PoseBatch | None = None  # top-down people
    grouped: PoseBatch | None = None  # bottom-up people already grouped on the pose actor's device (no maps)
    # Small copies of the frames (uint8[N, h, w, 3] RGB) for the appearance descriptor computed with
    # the people, downstream; thumb_scale = video pixels per thumbnail pixel.
    thumbs: np.ndarray | None = None
    thumb_scale: float = 1.0
    model: str = ""  # the model label its people rows carry (PoseBatch.model)


@dataclass(frozen=True)
class MapBatch:
    """Bottom-up network output for consecutive frames of one video, on its way to grouping.

    maps: float16[N, C, h, w] (heatmaps then PAFs, stride `stride` w.r.t. the network input);
    float16 halves what crosses the object store and keeps ~3 significant digits, far finer than
    the peak and PAF thresholds.
    net_size: (W, H) of the network input; image_size: (W, H) of the frames it was resized from;
    scale: video pixels per image pixel (FrameBatch.scale).
    """

    video_id: str
    frame_index: np.ndarray
    time_s: np.ndarray
    maps: np.ndarray
    net_size: tuple[int, int]
    image_size: tuple[int, int]
    scale: float = 1.0
    stride: int = 8

    def __post_init__(self) -> None:
        n = len(self.frame_index)
        _check("frame_index", self.frame_index, np.int64, (n,))
        _check("time_s", self.time_s, np.float64, (n,))
        _check("maps", self.maps, np.float16, (n, None, None, None))

    def __len__(self) -> int:
        return len(self.frame_index)
