"""A `ray start --head` of a test's (or a benchmark's) own: free ports, its own temp dir and token, and
stopped by killing the processes it started, never with `ray stop` (that stops every Ray on the machine,
other jobs' included).

    with local_head() as head:
        env = {**os.environ, **head.env}   # what a user's shell has after docs/cluster.md's `export` line
        subprocess.run(["posepipe", "submit", "--address", head.dashboard, ...], env=env)
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

RAY = Path(sys.executable).with_name("ray")


@dataclass(frozen=True)
class Head:
    gcs: str  # HOST:PORT, for `--address` and RAY_ADDRESS
    dashboard: str  # http://HOST:PORT, the Jobs API
    env: dict[str, str]  # the token settings a client needs (docs/cluster.md: RAY_AUTH_MODE, RAY_AUTH_TOKEN)

    def get(self, path: str) -> object:
        """GET the dashboard's JSON API (e.g. /api/jobs/) with the head's token."""
        request = urllib.request.Request(self.dashboard + path,
                                         headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())

    def wait_job(self, job_id: str, timeout_s: float = 300) -> dict:
        """The submitted job's details once it has ended (SUCCEEDED, FAILED or STOPPED)."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.get(f"/api/jobs/{job_id}")
            if job["status"] in ("SUCCEEDED", "FAILED", "STOPPED") or time.monotonic() > deadline:
                return job
            time.sleep(0.5)


def free_ports(n: int) -> list[int]:
    """n ports nothing listens on now (held open together, so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _processes(root: int) -> list[psutil.Process]:
    """Everything the head started: its process tree, and anything in its session (start_new_session)
    that was re-parented away from the tree."""
    found = {}
    with contextlib.suppress(psutil.NoSuchProcess):
        top = psutil.Process(root)
        found = {p.pid: p for p in [top, *top.children(recursive=True)]}
    for p in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getsid(p.pid) == root:
                found.setdefault(p.pid, p)
    return list(found.values())


def _stop(proc: subprocess.Popen) -> None:
    """SIGKILL, not a polite stop: nothing of a test's head is kept (its temp dir is removed next), and
    SIGTERM leaves some of Ray's processes 10 s to exit."""
    procs = _processes(proc.pid)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=10)
    proc.wait(timeout=5)


@contextlib.contextmanager
def local_head(num_cpus: int = 2, timeout_s: float = 120) -> Iterator[Head]:
    """A Ray head with a dashboard (the Jobs API lives there) on free ports, token authentication on (what
    `ray start` does by default since Ray 2.59) with a token of its own."""
    gcs, dash, client, node, objects, agent, agent_grpc, runtime_env, metrics = free_ports(9)
    # Short: Ray's socket paths under it must stay within the 107 characters of a unix socket name.
    temp_dir = tempfile.mkdtemp(prefix="rh-", dir="/tmp")
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    cmd = [str(RAY), "start", "--head", "--block", "--disable-usage-stats", "--temp-dir", temp_dir,
           "--num-cpus", str(num_cpus), "--node-ip-address", "127.0.0.1", "--port", str(gcs),
           "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
           "--ray-client-server-port", str(client), "--node-manager-port", str(node),
           "--object-manager-port", str(objects), "--dashboard-agent-listen-port", str(agent),
           "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(runtime_env),
           "--metrics-export-port", str(metrics)]
    # The head knows nothing of this shell's posepipe settings (a job gets them from `submit`), and its
    # jobs' `python` is this one (the cluster's Python, with Ray and posepipe's dependencies).
    clean = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "POSEPIPE_WEIGHTS")}
    clean["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), clean.get("PATH", "")])
    log = open(Path(temp_dir) / "head.log", "w")  # noqa: SIM115 - closed below, after the head stops
    proc = subprocess.Popen(cmd, env={**clean, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    head = Head(gcs=f"127.0.0.1:{gcs}", dashboard=f"http://127.0.0.1:{dash}", env=env)
    try:
        deadline = time.monotonic() + timeout_s
        while True:  # the Jobs API answers once the dashboard's job module is up
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start --head did not come up:\n{(Path(temp_dir) / 'head.log').read_text()}")
            try:
                head.get("/api/jobs/")
                break
            except (OSError, urllib.error.URLError, ValueError):
                time.sleep(0.5)
        yield head
    finally:
        _stop(proc)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
