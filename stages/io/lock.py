"""One job per output folder: a lock file OUT/.posepipe.lock held for the whole job.

The lock says who holds it (host, pid, process start time, job start) and is refreshed as the job
runs (heartbeat). A second job on the same OUT is refused at once with that holder. A lock whose
holder is gone is taken over: on the same host a dead pid (or a pid reused by another process,
told apart by its start time) is gone; from another host only the heartbeat can tell, so a lock
not refreshed for `stale_s` seconds is gone.

Local folders: the lock is created with O_CREAT | O_EXCL (one creator wins) and a stale one is
first renamed away (one renamer wins), so two jobs can never both hold it. Object stores (s3://,
gs://) have no exclusive create: there the lock is written and read back, which narrows the race
to a window of a request, but two jobs started within it can both proceed (docs/commands.md).
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass

import psutil

from stages.io.sink_fs import delete_file, join, put_atomic, read_json, resolve_output

NAME = ".posepipe.lock"  # dot-prefixed: readers of OUT skip it


class LockedError(RuntimeError):
    """Another live job holds OUT; the message names it (one line)."""


def _me() -> dict:
    proc = psutil.Process()
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_started": proc.create_time(),
            "started": time.time(), "heartbeat": time.time()}


def _alive(holder: dict, stale_s: float) -> bool:
    if holder.get("host") == socket.gethostname():
        try:
            return abs(psutil.Process(int(holder["pid"])).create_time() - float(holder.get("pid_started", 0))) < 1.0
        except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
            return False
    return time.time() - float(holder.get("heartbeat", 0)) < stale_s


def describe(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
    return f"host {holder.get('host')}, pid {holder.get('pid')}, started {started}"


@dataclass
class OutputLock:
    """with OutputLock(out): ... holds OUT for one job; refresh() from the job's loop keeps it live."""

    out: str
    stale_s: float = 120.0
    refresh_every_s: float = 10.0

    def __post_init__(self) -> None:
        self.fs, self.root = resolve_output(self.out)
        self.local = not ("://" in str(self.out) and not str(self.out).startswith("file://"))
        self.path = join(self.root, NAME)
        self.held = False
        self._last = 0.0

    def _holder(self) -> dict | None:
        try:
            return read_json(self.out, NAME)
        except (json.JSONDecodeError, UnicodeDecodeError):
            # Empty or half-written: a job between creating the file and writing it (alive: give it a
            # few seconds) or one killed right there (then the file's age tells).
            info = self.fs.get_file_info(self.path)
            young = info.mtime is not None and time.time() - info.mtime.timestamp() < 5.0
            return {"heartbeat": time.time()} if young else {}

    def acquire(self) -> None:
        for _ in range(3):  # a racing taker may win a round; try again, then report who holds it
            holder = self._holder()
            if holder is not None:
                if _alive(holder, self.stale_s):
                    raise LockedError(f"{self.out} is in use by another posepipe job ({describe(holder)}); "
                                      "wait for it, or use another --out")
                if not self._take_over():
                    continue
            if self._create():
                self.held = True
                self._last = time.monotonic()
                return
        holder = self._holder() or {}
        raise LockedError(f"{self.out} is in use by another posepipe job ({describe(holder)}); use another --out")

    def _create(self) -> bool:
        me = json.dumps(_me()).encode()
        if self.local:
            os.makedirs(self.root, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(me)
            return True
        put_atomic(self.fs, self.path, me)
        return (self._holder() or {}).get("pid") == os.getpid()

    def _take_over(self) -> bool:
        """Remove a dead holder's lock; False when another taker got there first."""
        if self.local:
            try:
                os.rename(self.path, f"{self.path}.stale.{os.getpid()}")
            except FileNotFoundError:
                return False
            os.remove(f"{self.path}.stale.{os.getpid()}")
            return True
        delete_file(self.fs, self.path)
        return True

    def refresh(self) -> None:
        """Rewrite the heartbeat, at most every refresh_every_s (cheap to call from a loop)."""
        if not self.held or time.monotonic() - self._last < self.refresh_every_s:
            return
        self._last = time.monotonic()
        holder = self._holder() or {}
        holder["heartbeat"] = time.time()
        put_atomic(self.fs, self.path, json.dumps(holder).encode())

    def release(self) -> None:
        if self.held:
            delete_file(self.fs, self.path)
            self.held = False

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
