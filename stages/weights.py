"""Model file resolver: file name -> verified local path.

Order: the folder in `POSEPIPE_WEIGHTS`, then the user cache (`~/.cache/posepipe`, or
`$XDG_CACHE_HOME/posepipe`), then a download from the file's upstream URL into the cache.
Every file is checked against its sha256 wherever it came from, so a corrupt or substituted file
is refused instead of loaded. Resolution is an explicit step (the driver calls it once); model
constructors take a path or bytes and never download.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelFile:
    filename: str
    sha256: str
    url: str  # upstream file at a pinned commit
    license: str


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
        _verified(Path(tmp), model)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


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
        raise WeightsError(
            f"{filename}: not found ({where}not in {cache_dir()}) and it has no upstream download; "
            "set POSEPIPE_WEIGHTS to a folder that holds it"
        )
    try:
        return _download(model, cached, timeout_s)
    except (urllib.error.URLError, OSError) as exc:
        raise WeightsError(
            f"{filename}: not found ({where}not in {cache_dir()}) and the download from {model.url} "
            f"failed ({exc}); with no network, set POSEPIPE_WEIGHTS to a folder that holds the file "
            f"(e.g. export POSEPIPE_WEIGHTS=/path/to/weights)"
        ) from exc
