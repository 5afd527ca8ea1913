"""What a job is made of: input lists expanded to video paths, and fingerprints that decide on a
re-run whether a video's existing output can be kept.

A video is done when OUT/videos holds a row for it with status ok or truncated, the same path, the
same content fingerprint and the same config hash. Anything else (failed, missing, changed file,
changed settings) is redone; the sink replaces its old output whole.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import tempfile
from pathlib import Path

from pipeline.config import Config
from stages.io.sink import DONE_STATUSES

_CHUNK = 1 << 20  # hashed at each end of a file: enough to tell re-encodes and truncations apart
# What a folder given as input expands to (recursively, sorted): the containers PyAV reads that
# cameras and tools write; anything else in the folder (images, sidecars, notes) is left out.
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".wmv", ".flv")


class InputError(ValueError):
    """An input argument matched no file, or a list file could not be read."""


def expand_inputs(items: list[str]) -> list[str]:
    """Paths, globs ('clips/*.mp4', '**' recursive) and text files of paths ('@list.txt' or a
    .txt/.lst file: one path or glob per line, '#' comments; relative to the list's folder) ->
    absolute paths in the order given, duplicates dropped. A folder expands to the videos under it
    (VIDEO_SUFFIXES, recursive, sorted). A path that does not exist is kept (it gets a failed row,
    like any bad video) unless no input exists at all; a glob that matches nothing, or a folder
    with no video, is an error (a typo would otherwise run an empty job)."""
    out: list[str] = []
    for item in items:
        out += _expand(item, Path.cwd())
    out = list(dict.fromkeys(out))
    if out and not any(os.path.exists(p) for p in out):
        raise InputError(f"no input exists: {out[0]}" + (f" (and {len(out) - 1} more)" if len(out) > 1 else ""))
    return out


def absolute(item: str | os.PathLike) -> str:
    """A local path (or glob, or @list) made absolute against this process's folder; URIs as given. For
    arguments that another process, elsewhere, will read (actors, a Ray job's copied working folder)."""
    item = str(item)
    if "://" in item:
        return item
    at = "@" if item.startswith("@") else ""
    return at + os.path.abspath(item.removeprefix(at))


def check_output(out: str) -> None:
    """A local OUT must be a folder this process can write, or one it can create; nothing is made here
    (the job's lock makes OUT once every check has passed, so a refused job leaves no empty folder).
    URIs are checked by their filesystem when the job writes. Raises InputError with one line."""
    if "://" in out and not out.startswith("file://"):
        return
    path = Path(out.removeprefix("file://")).absolute()
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    # The nearest folder that exists is where a write is tried: OUT itself, or where it would be made.
    # A real write, because access() says yes to root even on read-only mounts and /proc.
    where = next(p for p in (path, *path.parents) if p.exists())
    if not where.is_dir():
        raise InputError(f"--out {out}: {where} is not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".posepipe-write-test-", dir=where))
    except OSError as exc:
        raise InputError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None


def _expand(item: str, base: Path) -> list[str]:
    is_list = item.startswith("@") or Path(item).suffix.lower() in (".txt", ".lst")
    if is_list:
        list_file = base / item.lstrip("@")
        try:
            lines = list_file.read_text().splitlines()
        except OSError as exc:
            raise InputError(f"cannot read the list of videos {list_file}: {exc.strerror}") from None
        paths = [line.strip() for line in lines]
        return [p for line in paths if line and not line.startswith("#") for p in _expand(line, list_file.parent)]
    if (base / item).is_dir():
        folder = base / item
        videos = sorted(os.path.abspath(p) for p in folder.rglob("*")
                        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if not videos:
            raise InputError(f"folder {item!r} holds no video ({', '.join(VIDEO_SUFFIXES[:4])}, ...)")
        return videos
    if glob.has_magic(item):
        matches = sorted(glob.glob(str(base / item), recursive=True))
        if not matches:
            raise InputError(f"no file matches {item!r}")
        return [os.path.abspath(m) for m in matches if Path(m).is_file()]
    # abspath, not Path.absolute: "../x.mp4" is recorded as the folder it names, without "..", while a
    # symlink keeps the name the user gave it (video_id_for resolves it for the id).
    return [os.path.abspath(base / item)]


def fingerprint(path: str | os.PathLike) -> str | None:
    """sha256 of the size and the first and last MiB: a changed, re-encoded or truncated file gets a
    new one; reading 2 MiB keeps it cheap for long videos. None if the file cannot be read."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            h = hashlib.sha256(str(size).encode())
            h.update(f.read(_CHUNK))
            if size > 2 * _CHUNK:
                f.seek(size - _CHUNK)
            h.update(f.read(_CHUNK))
    except OSError:
        return None
    return f"sha256:{h.hexdigest()[:32]}"


def config_hash(config: Config) -> str:
    """Hash of the settings that change output rows. Placement (actors, CPUs, GPUs, retries) and the
    in-flight bounds do not, so a job resumed on a bigger cluster keeps its finished videos."""
    data = dataclasses.asdict(config)
    data["mode"] = data.pop("run")["mode"]
    for section in data.values():
        if isinstance(section, dict):
            section.pop("resources", None)
    data["pose"].pop("threads", None)
    # The dense stage's settings change rows only where it runs: a job without it keeps its hash (and, on a
    # re-run, its finished videos) whatever they say.
    if not data["dense"].get("enabled"):
        data.pop("dense")
    return "sha256:" + hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def done_ids(rows: list[dict], wanted: dict[str, tuple[str, str | None]], cfg_hash: str) -> set[str]:
    """Video ids whose existing row (rows: OUT's videos table) is complete and current.

    wanted: video_id -> (path, fingerprint) of this job's inputs."""
    done = set()
    for row in rows:
        want = wanted.get(row.get("video_id"))
        if (want and row.get("status") in DONE_STATUSES and want[1] is not None
                and row.get("path") == want[0] and row.get("fingerprint") == want[1]
                and row.get("config_hash") == cfg_hash):
            done.add(row["video_id"])
    return done
