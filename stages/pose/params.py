"""Parameters of the pose stages, one frozen dataclass per config section.

`pipeline/config.py` loads TOML into these; they live apart from the stages that use them so that
loading a config imports no model runtime (onnx, onnxruntime) and no evaluation library.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class GroupingParams:
    """Thresholds of the PAF grouping (values of the OpenPose / tf-pose-estimation papers' code)."""

    num_samples: int = 10  # points on each candidate segment for the line integral
    sample_threshold: float = 0.05  # a sample "agrees" when its PAF projection exceeds this
    min_agree_fraction: float = 0.8  # ...and at least this share of samples must agree
    min_parts: int = 4  # people with fewer assigned parts are dropped
    min_mean_score: float = 0.2  # ...and so are people whose mean part+limb score is lower


@dataclass(frozen=True)
class BottomUpParams:
    net_height: int = 368  # network input height; width follows the frame's aspect ratio
    # A second network pass at this input height ("frame": the frame's own), its maps averaged with
    # the first's at the finer pass's map size; 0 = one pass. docs/accuracy.md "Crowd accuracy" measures it.
    second_height: int | Literal["frame"] = 0
    size_multiple: int = 16  # input sides are rounded to this (two stride-2 stages below stride 8)
    upsample: int = 4  # heatmaps are upsampled by this before peak finding (stride 8 -> 2)
    blur_sigma: float = 1.5  # Gaussian blur (upsampled pixels) that merges split maxima
    peak_threshold: float = 0.05
    grouping: GroupingParams = field(default_factory=GroupingParams)


@dataclass(frozen=True)
class DetectorParams:
    # stages/pose/zoo.py: which file each loads; docs/accuracy.md "Top-down models" measures the choice
    model: Literal["rtmdet", "yolox", "picodet"] = "picodet"
    # MANIFEST: 12/12 COCO test people for RTMDet at 0.3 (PicoDet 13/14); RTMDet's graph drops < 0.05
    score_threshold: float = 0.3
    nms_iou: float = 0.45  # YOLOX only (PicoDet: 0.6, its own config; RTMDet: IoU 0.6 inside its graph)
    max_people: int = 100  # RTMDet's graph returns at most 100 boxes anyway
    min_box_size: float = 4.0  # px in the image; smaller boxes (after clipping) are slivers, no pose fits
    # The frame's longer side in px in RTMDet's second, finer pass, run on frames longer than
    # FINE_PASS_FROM x its 320 px input; after PicoDet or YOLOX (static inputs, no larger pass of
    # their own) RTMDet runs it too (rtmdet.FinePass). 0 = one pass of the chosen detector.
    fine_side: int = 640
    fine_overlap_iou: float = 0.5  # a fine-pass box overlapping a first-pass box this much is that person
    # The fine pass runs on the frames where the first may have missed someone: it found nobody, two
    # people whose boxes touch (a group hides its members), or a person under this many px tall in
    # its 320 px input (a quarter of it: a 960x540 frame's 240 px).
    fine_below: float = 80.0


@dataclass(frozen=True)
class TopDownParams:
    keypoint_model: Literal["lightning", "thunder", "tinypose"] = "tinypose"  # zoo.py; configs/fast.toml: lightning
    decoder: Literal["argmax", "parabola", "soft_argmax", "dark"] = "dark"  # heatmap models (tinypose) only
    crop_margin: float = 1.25  # crop side / longer box side after matching the model's aspect (both models' recipe)
    min_keypoints: int = 3  # confident keypoints needed to keep a person
    duplicate_oks: float = 0.8  # two poses in a frame with OKS above this are one person: keep the better
    outside_box_fraction: float = 0.5  # drop when more than this share of confident keypoints is outside
    outside_box_expand: float = 0.15  # ... the detector box grown by this fraction of its size per side
    # Crops per model call. On a 1-thread CPU actor (the default) a big call is slower per crop:
    # its activations leave the cache. ms per crop at 1 / 4 / 8 / 32 crops per call, 1 thread,
    # this 2-core CPU: TinyPose 24.4 / 23.1 / 24.2 / 32.4, Lightning 13.1 / 12.6 / 13.1 / 16.0. With
    # 2 threads 20 crops in one call took 0.72x the time of 20 calls (benchmarks/topdown_batching.py);
    # a GPU wants whole frames of crops (configs/crowd.toml: 256).
    max_crops_per_call: int = 8
    # Average each crop's pose with its mirror image's (the usual top-down test-time flip), at twice
    # the keypoint-model cost. Off by default: measured AP +0.013 on eval/coco, -0.019 on OCHuman
    # and -0.012 on CrowdPose, since in a crowded crop the mirror pass can centre another person.
    flip_test: bool = False


@dataclass(frozen=True)
class AutoParams:
    # people per frame (recent mean) at or above which bottom-up is used: just above where top-down
    # (TinyPose on PicoDet's boxes) gets slower than bottom-up on a CPU, 2.7 people (docs/speed.md)
    to_bottomup_at: float = 3.0
    to_topdown_at: float = 2.0  # ...and at or below which top-down comes back
    window: int = 16  # frames in the recent mean
    min_dwell: int = 32  # frames to stay in a mode before switching again


@dataclass(frozen=True)
class HybridParams:
    max_oks: float = 0.5  # a bottom-up person with OKS >= this against a top-down person is that person
