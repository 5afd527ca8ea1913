"""Ctrl-C during a run, as a terminal sends it (SIGINT to the whole process group, Ray's workers
included): one line, exit 130, the lock released, OUT reported as interrupted; a second Ctrl-C during the
shutdown changes nothing."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

from conftest import EVAL, REPO

from stages.io.lock import NAME as LOCK_NAME

VIDEO = EVAL / "videos" / "vtest.mp4"  # 795 frames: still running when the signal comes


def _interrupt(out, second_after_s: float | None) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(VIDEO), "--out", str(out), "--no-progress"], cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},  # a Ray of its own: "starting Ray"
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        # pytest may run with SIGINT ignored (a background job): a terminal's Ctrl-C is not ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    job = out / "job.json"
    while time.monotonic() < deadline and proc.poll() is None:  # interrupt once frames are flowing
        if job.exists() and json.loads(job.read_text() or "{}").get("first_batch_at"):
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    if second_after_s is not None:
        time.sleep(second_after_s)
        os.killpg(proc.pid, signal.SIGINT)
    out_text, err_text = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out_text, err_text)


def test_ctrl_c_prints_one_line_exits_130_and_leaves_out_resumable(tmp_path):
    """Ctrl-C twice, 0.3 s apart (an impatient user): the first stops the job, the second lands in the
    shutdown and must change nothing (once alone was checked too; the second adds ~20 s to the suite)."""
    out = tmp_path / "out"
    run = _interrupt(out, 0.3)
    assert run.returncode == 130, run.stderr
    # The start-up lines (Ray's start, the model loads: as many actors as the cores allow), then the one line
    # of the Ctrl-C.
    starting, loading, interrupted = run.stderr.splitlines()
    assert starting == "posepipe: starting Ray..." and re.fullmatch(r"posepipe: loading models \(\d+ actors\)\.\.\.",
                                                                      loading), run.stderr
    assert interrupted == "posepipe: interrupted; 0 of 1 videos done, re-run to resume", run.stderr
    assert "Traceback" not in run.stdout + run.stderr and "atexit" not in run.stderr
    assert not (out / LOCK_NAME).exists()  # released: a re-run can start at once
    status = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", str(out)], cwd=REPO,
                            capture_output=True, text=True, check=False)
    assert "interrupted" in status.stdout.splitlines()[0] and "re-run to resume" in status.stdout.splitlines()[-1]
