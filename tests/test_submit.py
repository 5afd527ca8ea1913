"""`posepipe submit --address http://...` against a `ray start --head` of this module's own (free ports,
its own temp dir and token; tests/ray_head.py), and a run that joins that running Ray instead of starting
one (issue 21, items 1 and 7). The commands run in processes of their own, from a folder of their own,
with relative paths, as the cluster example in docs/cluster.md is typed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EVAL, REPO
from ray_head import local_head

from stages.io.sink import read_video_rows

SHORT = EVAL / "videos" / "mmtracking_demo.mp4"  # 8 frames


@pytest.fixture(scope="module")
def head():
    with local_head() as running:
        yield running


def _env(head, **extra: str) -> dict:
    """A user's shell after docs/cluster.md's `export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=...`; this checkout's code."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, **head.env, "PYTHONPATH": str(REPO), **extra}


def _submit(head, cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "submit", "--address", head.dashboard, *args],
                            cwd=cwd, env=_env(head), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_submit_with_relative_paths(head, tmp_path, weights_dir):
    """A good job and one whose input is missing, submitted at once (the second fails before it needs
    the cluster's CPUs): the first is said to have started and writes a valid OUT where the submitter's
    relative path put it; the second's one-line refusal and exit status 2 come back to the submitter."""
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir(), bad.mkdir()
    ok = _submit(head, good, os.path.relpath(SHORT, good), "--out", "out",
                 "--weights", os.path.relpath(weights_dir, good))
    refused = _submit(head, bad, "missing.mp4", "--out", "out")
    stdout, stderr = refused.communicate(timeout=300)
    assert refused.returncode == 2 and stdout == "", stdout + stderr
    waiting, line = stderr.splitlines()
    job_id = waiting.split()[2].rstrip(";")
    missing = bad / "missing.mp4"
    assert line == f"posepipe submit: {job_id} failed on the cluster (exit 2): no input exists: {missing}", stderr
    assert "Traceback" not in stderr and not (bad / "out").exists()

    stdout, stderr = ok.communicate(timeout=300)
    assert ok.returncode == 0, stdout + stderr
    started, follow, progress = stdout.splitlines()
    job_id = started.split()[1]
    assert started == f"started {job_id} on {head.dashboard}; output: {good / 'out'}", stdout
    assert follow.endswith(f"ray job logs --address {head.dashboard} --follow {job_id}")
    assert progress.endswith(f"posepipe status {good / 'out'}")
    assert stderr.splitlines() == [f"posepipe: submitted {job_id}; waiting for it to start..."], stderr

    job = head.wait_job(job_id)
    assert job["status"] == "SUCCEEDED" and job["driver_exit_code"] == 0, job
    # `--address auto` in the job joined the cluster's Ray (a Ray of its own would say "starting Ray").
    assert "posepipe: connecting to Ray at auto..." in head.get(f"/api/jobs/{job_id}/logs")["logs"]
    status = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", "out"], cwd=good, env=_env(head),
                            capture_output=True, text=True, timeout=60, check=False)
    assert status.returncode == 0 and status.stdout.splitlines()[-1] == "1 videos: 1 ok; job finished", status
    (row,) = read_video_rows(str(good / "out"))
    assert row["status"] == "ok" and row["frames"] == 8 and row["people_rows"] > 0, row
    assert os.path.samefile(row["path"], SHORT)  # the submitter's relative path, as the job read it


def test_ray_address_joins_the_running_ray(head):
    """RAY_ADDRESS (read as ray.init reads it) and no --address: a run's first step (pipeline/api.py
    start_ray, what `posepipe run` calls once its checks pass) joins the running head and says so, instead
    of starting a Ray of its own. The whole `run` through the head is the submitted job above."""
    code = ("import ray; from pipeline.api import start_ray; from pipeline.config import load_config, mode_file; "
            "from pipeline.say import to_stderr; start_ray(load_config(mode_file('bottomup')), say=to_stderr); "
            "print(ray.get_runtime_context().gcs_address)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(head, RAY_ADDRESS=head.gcs),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines() == [f"posepipe: connecting to Ray at {head.gcs}..."], done.stderr
    assert done.stdout.strip().rpartition(":")[2] == head.gcs.rpartition(":")[2], done.stdout  # the head's GCS


def test_ctrl_c_while_the_cluster_does_not_answer_is_one_line(tmp_path):
    """A dashboard address that accepts the connection and never answers (a cluster behind a stuck proxy):
    Ctrl-C then is one line and exit 130, not the HTTP client's traceback."""
    import signal
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        server.settimeout(120)
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "submit", str(SHORT), "--out", str(tmp_path / "out"),
             "--address", f"http://127.0.0.1:{server.getsockname()[1]}"], cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal's Ctrl-C
        conn, _ = server.accept()  # submit is now waiting on the cluster
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        conn.close()
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == "posepipe: interrupted" and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
