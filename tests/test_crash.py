"""A job killed mid-batch (driver and its local Ray, SIGKILL) and run again gives the output of one
clean run: finished videos are skipped, the interrupted one is redone, nothing partial stays visible."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
from conftest import EVAL, REPO
from media import first_frames
from outputs import assert_same_people, people

from stages.io.decode import video_id_for
from stages.io.sink import read_video_rows

LONG = EVAL / "videos" / "mmhuman3d_multi_person_demo.mp4"  # 40 frames: interrupted


def _run(out: Path, env: dict, short: Path, **kw) -> subprocess.Popen:
    """short: done before the kill."""
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(short), str(LONG), "--out", str(out),
           "--mode", "topdown", "--no-progress", "--num-cpus", "2"]
    # A session of its own: killing its process group takes the driver and its Ray with it, as a
    # lost machine would.
    return subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def test_killed_job_rerun_equals_clean_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a Ray of its own
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    short = first_frames(LONG, tmp_path / "short.mp4", 8)
    reference = _run(clean, env, short)  # the clean run, alongside: Ray start-up is mostly waiting
    proc = _run(crashed, env, short)
    staging = crashed / "_staging" / video_id_for(LONG) / "people.parquet"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        short_done = any(r["video_id"] == video_id_for(short) for r in read_video_rows(crashed))
        if short_done and staging.exists() and staging.stat().st_size > 0:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the job ended before it could be killed:\n{proc.stdout.read()}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert staging.exists()  # killed mid-video: its rows were being written
    assert {r["video_id"] for r in read_video_rows(crashed)} == {video_id_for(short)}

    rerun = _run(crashed, env, short)
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out
    assert "1 done earlier" in out
    out, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, out

    assert not (crashed / "_staging").exists()
    for v in (short, LONG):
        assert_same_people(people(crashed, video_id_for(v)), people(clean, video_id_for(v)))
    # one file per video and table: no duplicate rows from the two attempts
    files = sorted(p.relative_to(crashed).as_posix() for p in crashed.rglob("*.parquet"))
    assert len(files) == 6, files
    assert ds.dataset(crashed / "people", partitioning="hive").count_rows() == \
        ds.dataset(clean / "people", partitioning="hive").count_rows()
