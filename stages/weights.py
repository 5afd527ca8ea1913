"""Model file resolver: file name -> verified local path.

Order: the folder in `POSEPIPE_WEIGHTS`, then the user cache (`~/.cache/posepipe`, or
`$XDG_CACHE_HOME/posepipe`), then a download from the file's upstream URL into the cache (a file
inside an upstream .tgz, such as an npm package, is taken out of it). `POSEPIPE_OFFLINE=1` never
downloads: a machine without the network (a cluster node, the test suite) fails at once, not after a
timeout.
Every file is checked against its sha256 wherever it came from, so a corrupt or substituted file
is refused instead of loaded. Resolution is an explicit step (the driver calls it once); model
constructors take a path or bytes and never download.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelFile:
    filename: str
    sha256: str
    url: str  # upstream file at a pinned commit (or a pinned package's .tgz, with member)
    license: str
    member: str = ""  # the file's path inside the .tgz at url ("": url is the file itself)


_GH = "https://raw.githubusercontent.com"

# One entry per file posepipe can load (see ../shared/weights/MANIFEST.toml for their facts).
MODEL_FILES: dict[str, ModelFile] = {
    m.filename: m
    for m in (
        ModelFile(
            "tfpose_mobilenet_v2_small_graph_opt.pb",
            "428a9d6e7bfc0319e1ce4de8c0191a9111cd281bea6ae2b496fd42c92d574160",
            f"{_GH}/ildoonet/tf-pose-estimation/9aaf34708e9863eeab9685a7ec52a45f3b576e2d/"
            "models/graph/mobilenet_v2_small/graph_opt.pb",
            "Apache-2.0",
        ),
        ModelFile(
            "rtmdet_nano_320_person_end2end.onnx",
            "b8585adb6d1352796f6e86337e09c3459b830645a7e7192d9381670bea2facbd",
            f"{_GH}/HW140701/RTMPose-Deploy/174a7dd52ad367a55a1105445388dc16bbac7eee/"
            "Windows/OnnxRumtime-CPU/resource/model/rtmpose-cpu/rtmpose-ort/rtmdet-nano/end2end.onnx",
            "Apache-2.0",
        ),
        ModelFile(
            "yolox_nano_416x416.onnx",
            "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14",
            f"{_GH}/Kazuhito00/Detection-PoseEstimation-Pipeline/7121ff80014612e72c5ebb950e698bd5b1ac53f2/"
            "Detector/yolox/model/yolox_nano_416x416.onnx",
            "Apache-2.0",
        ),
        ModelFile(
            # tf2onnx --dequantize conversion of the upstream int8 TFLite file (Kazuhito00/
            # MoveNet-Python-Example, tflite/lite-model_movenet_singlepose_lightning_tflite_int8_4.tflite):
            # no upstream ONNX exists and converting TFLite needs TensorFlow, so it needs the folder.
            "movenet_singlepose_lightning_4_dequant_fp32.onnx",
            "bf32acdd272b42117091af322c41a4b3fac7492d70ee198aa8fdb398b8e95a38",
            "",
            "Apache-2.0",
        ),
        ModelFile(
            # Conversions made for ../shared/weights (MANIFEST.toml gives each one's steps and checks
            # against its original runtime); no upstream ONNX exists, so they need the folder.
            "movenet_singlepose_thunder_4_tfjs_fp32.onnx",  # from Google's TFJS MoveNet Thunder 4
            "160396137a0dd0960f45c13284cb0ecff74b7c3f392358e911902a79cc0ec1aa",
            "",
            "Apache-2.0",
        ),
        ModelFile(
            # MediaPipe's BlazePose GHUM lite (the silhouettes, stages/dense/segment.py), as Google publishes
            # it: in its npm package @mediapipe/pose (a 41 MB .tgz on the npm registry; the .tflite is 2.8 MB).
            "pose_landmark_lite.tflite",
            "f17bfbecadb61c3be1baa8b8d851cc6619c870a87167b32848ad20db306b9d61",
            "https://registry.npmjs.org/@mediapipe/pose/-/pose-0.5.1675469404.tgz",
            "Apache-2.0",
            "package/pose_landmark_lite.tflite",
        ),
        ModelFile(
            "pp_tinypose_256x192_ov_fp32.onnx",  # from PaddleDetection's PP-TinyPose via OpenVINO IR
            "0dcaa0b072954b27e27ce47331a3929a32bf530d921f0b6340ff75116c5824d4",
            "",
            "Apache-2.0",
        ),
        ModelFile(
            "picodet_s_320_lcnet_pedestrian_ov_fp32.onnx",  # from PaddleDetection's PicoDet-S pedestrian
            "b0db6aa554d2e941f4f34c64f5e931ee394e8c0ed7ee02bdd299294913ec4382",
            "",
            "Apache-2.0",
        ),
        ModelFile(
            # tf2onnx conversion of the .pb above; no upstream copy exists, so a user without a
            # weights folder uses the .pb (the default backend) instead.
            "tfpose_mobilenet_v2_small.onnx",
            "1efa5431f1a7ce4e71d10925dd0e2b1e82a5a87fcc3d7027d488ced841ffb236",
            "",
            "Apache-2.0",
        ),
    )
}


class WeightsError(RuntimeError):
    """A model file could not be found, downloaded or verified."""


class WeightsMissing(WeightsError):
    """A model file is in neither folder and could not be downloaded (none upstream, offline, or the
    download failed): not installed, as opposed to corrupt (an optional model's user falls back on
    this one only)."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "posepipe"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verified(path: Path, model: ModelFile) -> Path:
    actual = sha256_of(path)
    if actual != model.sha256:
        raise WeightsError(
            f"{path}: sha256 {actual} does not match the expected {model.sha256}; "
            "the file is corrupt or a different model: delete it or point POSEPIPE_WEIGHTS elsewhere"
        )
    return path


def _download(model: ModelFile, dest: Path, timeout_s: float) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Download next to the destination and rename after the hash check, so an interrupted or
    # corrupt download never sits in the cache under the real name.
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{model.filename}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(model.url, timeout=timeout_s) as resp:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
        if model.member:
            _take_member(Path(tmp), model.member)
        _verified(Path(tmp), model)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _take_member(path: Path, member: str) -> None:
    """Replace the .tgz at path with its file `member` (tarfile reads it; nothing else is extracted)."""
    try:
        with tarfile.open(path, "r:gz") as archive:
            data = archive.extractfile(member)
            if data is None:
                raise KeyError(member)
            content = data.read()
    except (KeyError, tarfile.TarError) as exc:
        raise WeightsError(f"{path.name}: the download has no {member} ({type(exc).__name__})") from None
    path.write_bytes(content)


def resolve(filename: str, timeout_s: float = 60.0) -> Path:
    """Local, sha256-verified path of a known model file (see module docstring for the order)."""
    if filename not in MODEL_FILES:
        raise WeightsError(f"unknown model file {filename!r}; known: {', '.join(sorted(MODEL_FILES))}")
    model = MODEL_FILES[filename]
    folder = os.environ.get("POSEPIPE_WEIGHTS")
    if folder and (Path(folder) / filename).is_file():
        return _verified(Path(folder) / filename, model)
    cached = cache_dir() / filename
    if cached.is_file():
        return _verified(cached, model)
    where = f"POSEPIPE_WEIGHTS={folder} (no such file there), " if folder else "POSEPIPE_WEIGHTS unset, "
    if not model.url:
        raise WeightsMissing(
            f"{filename}: not found ({where}not in {cache_dir()}) and it has no upstream download; "
            "set POSEPIPE_WEIGHTS to a folder that holds it"
        )
    if os.environ.get("POSEPIPE_OFFLINE", "") not in ("", "0"):
        raise WeightsMissing(
            f"{filename}: not found ({where}not in {cache_dir()}) and POSEPIPE_OFFLINE is set, so it is not "
            f"downloaded from {model.url}; set POSEPIPE_WEIGHTS to a folder that holds it"
        )
    try:
        return _download(model, cached, timeout_s)
    except (urllib.error.URLError, OSError) as exc:
        raise WeightsMissing(
            f"{filename}: not found ({where}not in {cache_dir()}) and the download from {model.url} "
            f"failed ({exc}); with no network, set POSEPIPE_WEIGHTS to a folder that holds the file "
            f"(e.g. export POSEPIPE_WEIGHTS=/path/to/weights)"
        ) from None  # the message carries the download's error; its chain (socket, urllib) only buries it
