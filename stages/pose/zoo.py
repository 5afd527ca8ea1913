"""Which class runs which model: the config names a model, these build it from its file.

Plain branches, one per model posepipe knows (each class in its own module: `rtmdet.py`,
`yolox.py`, `picodet.py`, `movenet.py`, `tinypose.py`), so a reader finds every choice here and an
unknown name is one clear error.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stages.pose.movenet import LIGHTNING_FILE, THUNDER_FILE, MoveNet
from stages.pose.params import DetectorParams, TopDownParams
from stages.pose.picodet import PICODET_FILE, PicoDetPedestrian
from stages.pose.rtmdet import RTMDET_FILE, FinePass, RTMDetPerson
from stages.pose.tinypose import TINYPOSE_FILE, TinyPose
from stages.pose.yolox import YOLOX_FILE, YoloxNano

# The config's model names ([detect] model, [topdown] keypoint_model) and the file each loads.
DETECTOR_FILES = {"rtmdet": RTMDET_FILE, "yolox": YOLOX_FILE, "picodet": PICODET_FILE}
# Keypoint models: (file, raw confident-joint threshold). The threshold is the one place a model's
# score calibration lives (stages/scores.py maps it onto the house 0.3), derived for every model
# by the same rule in benchmarks/joint_scores.py; Lightning's scores are the house scale.
KEYPOINT_MODELS = {
    "lightning": (LIGHTNING_FILE, 0.3),
    "thunder": (THUNDER_FILE, 0.39),
    "tinypose": (TINYPOSE_FILE, 0.68),
}

Detector = RTMDetPerson | YoloxNano | PicoDetPedestrian | FinePass
KeypointModel = MoveNet | TinyPose


def needs_fine_detector(params: DetectorParams) -> bool:
    """Whether the detector's fine pass needs RTMDet's file besides the chosen detector's."""
    return params.model != "rtmdet" and params.fine_side > 0


def build_detector(name: str, path: str | Path, params: DetectorParams = DetectorParams(), num_threads: int = 1,
                   providers: Sequence[str] | None = None, fine_path: str | Path | None = None) -> Detector:
    """The detector `name` ([detect] model) loaded from `path`; with `fine_path` (RTMDet's file, where
    `needs_fine_detector`) followed by RTMDet's finer pass."""
    if name == "rtmdet":
        return RTMDetPerson(path, params, num_threads, providers)
    if name == "yolox":
        first = YoloxNano(path, params, num_threads, providers)
    elif name == "picodet":
        first = PicoDetPedestrian(path, params, num_threads, providers)
    else:
        raise ValueError(f"unknown person detector {name!r}; known: {', '.join(DETECTOR_FILES)}")
    return first if fine_path is None else FinePass(first, RTMDetPerson(fine_path, params, num_threads, providers))


def build_keypoint_model(params: TopDownParams, data: bytes, num_threads: int = 1,
                         providers: Sequence[str] | None = None) -> KeypointModel:
    """The keypoint model `params.keypoint_model` from its file's bytes, carrying its raw
    confident-joint threshold (the table above) for `TopDownKeypoints` to map its scores."""
    name = params.keypoint_model
    if name not in KEYPOINT_MODELS:
        raise ValueError(f"unknown keypoint model {name!r}; known: {', '.join(KEYPOINT_MODELS)}")
    threshold = KEYPOINT_MODELS[name][1]
    if name == "tinypose":
        return TinyPose(data, num_threads, providers, max_batch=params.max_crops_per_call, decoder=params.decoder,
                        raw_threshold=threshold)
    return MoveNet(data, num_threads, providers, max_batch=params.max_crops_per_call, raw_threshold=threshold)
