"""Where output goes: a local path or any pyarrow.fs URI, and the few file operations the sink needs.

Everything goes through a pyarrow FileSystem so one code path serves a local disk, file://, s3://
and gs://. Paths handed around are the filesystem's own: '/'-separated, no scheme.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pyarrow.fs as pafs


def resolve_output(out: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) of an output location.

    A plain path (relative or absolute, '~' allowed) -> LocalFileSystem and its absolute path, so
    the sink does not depend on the working directory of the process that runs it; anything with
    '://' -> FileSystem.from_uri (file:///..., s3://bucket/prefix, gs://...).
    """
    text = os.fspath(out)
    if "://" in text:
        fs, path = pafs.FileSystem.from_uri(text)
        return fs, path.rstrip("/") or "/"
    return pafs.LocalFileSystem(), Path(os.path.abspath(os.path.expanduser(text))).as_posix()


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if base != "/" else "/" + "/".join(parts)


def ensure_dir(fs: pafs.FileSystem, path: str) -> None:
    # Local files need their parent directory; on object stores this only writes a marker object.
    fs.create_dir(path, recursive=True)


def delete_dir(fs: pafs.FileSystem, path: str) -> None:
    """Recursive delete; a missing directory is fine (nothing to clean)."""
    with contextlib.suppress(FileNotFoundError):
        fs.delete_dir(path)


def delete_file(fs: pafs.FileSystem, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        fs.delete_file(path)


def rmdir_if_empty(fs: pafs.FileSystem, path: str) -> None:
    """Remove an empty local directory; never touches a non-empty one.

    os.rmdir checks emptiness and removes in one step, so another process that has just staged a
    file there keeps it. pyarrow has no such call (delete_dir is recursive), and on object stores
    an empty "directory" is invisible anyway, so elsewhere this does nothing.
    """
    if isinstance(fs, pafs.LocalFileSystem):
        with contextlib.suppress(OSError):
            os.rmdir(path)


def move(fs: pafs.FileSystem, src: str, dst: str) -> None:
    """Move a file, replacing dst: a rename on local disks, copy + delete on S3/GCS.

    Some stores (Azure without a hierarchical namespace) refuse move; copy + delete is what S3
    does internally anyway.
    """
    try:
        fs.move(src, dst)
    except NotImplementedError:
        fs.copy_file(src, dst)
        fs.delete_file(src)


def put_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write a small file under a hidden temp name, then move it into place, so readers see the
    old file or the new one, never half of one (readers skip names starting with '.')."""
    parent, _, name = path.rpartition("/")
    ensure_dir(fs, parent or "/")
    tmp = join(parent, f".{name}.tmp")
    with fs.open_output_stream(tmp) as stream:
        stream.write(data)
    move(fs, tmp, path)


def write_json(out: str | os.PathLike, name: str, obj) -> None:
    """OUT/name <- obj as JSON (values JSON cannot hold, e.g. datetimes, are written as str)."""
    fs, root = resolve_output(out)
    put_atomic(fs, join(root, name), json.dumps(obj, indent=1, default=str).encode())


def read_json(out: str | os.PathLike, name: str) -> dict | None:
    """OUT/name parsed, or None when there is no such file."""
    fs, root = resolve_output(out)
    path = join(root, name)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        return json.loads(stream.read())
