"""The CLI around a job: bad arguments fail at once, one job per OUT (README's Python example: test_docs.py)."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import pytest
import ray
from conftest import EVAL, REPO
from outputs import assert_same_people, people

from pipeline.cli import main
from pipeline.inputs import InputError, expand_inputs
from stages.io.decode import video_id_for
from stages.io.lock import NAME, LockedError, OutputLock

SHORT = EVAL / "videos" / "mmtracking_demo.mp4"  # 8 frames
LONG = EVAL / "videos" / "mmhuman3d_multi_person_demo.mp4"  # 40 frames


def _one_line_exit_2(argv, capsys):
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not ray.is_initialized()  # refused before Ray starts
    return err


def test_bad_arguments_are_one_line_before_ray(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    clip = str(SHORT)
    assert "not a folder" in _one_line_exit_2(["run", clip, "--out", str(a_file)], capsys)
    assert "cannot write" in _one_line_exit_2(["run", clip, "--out", "/proc/posepipe/x"], capsys)
    assert "not a folder" in _one_line_exit_2(["run", clip, "--out", str(a_file / "o")], capsys)  # under a file
    assert "no input exists" in _one_line_exit_2(["run", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o")],
                                                 capsys)
    assert "holds no video" in _one_line_exit_2(["run", str(empty_dir), "--out", str(tmp_path / "o")], capsys)
    assert "invalid choice" in _one_line_exit_2(["run", clip, "--out", str(tmp_path / "o"), "--mode", "fast"], capsys)
    assert "smpl" in _one_line_exit_2(["run", clip, "--out", str(tmp_path / "o"), "--mesh", "--body-model", "smpl"],
                                      capsys)
    assert not (tmp_path / "o").exists()  # every refusal above leaves no OUT behind


@pytest.mark.parametrize("model, detector", [("tinypose", "picodet"), ("thunder", "rtmdet")])
def test_a_missing_or_corrupt_model_file_is_one_line_before_ray(tmp_path, capsys, monkeypatch, weights_dir,
                                                                model, detector):
    """The top-down files each config can choose are resolved, sha256-checked, before Ray starts."""
    from stages.pose.zoo import DETECTOR_FILES, KEYPOINT_MODELS

    config = tmp_path / "models.toml"
    config.write_text(f'[topdown]\nkeypoint_model = "{model}"\n[detect]\nmodel = "{detector}"\n')
    folder = tmp_path / "weights"
    folder.mkdir()
    keypoints = KEYPOINT_MODELS[model][0]
    for boxes in {DETECTOR_FILES[detector], DETECTOR_FILES["rtmdet"]}:  # RTMDet's fine pass follows PicoDet
        (folder / boxes).symlink_to(weights_dir / boxes)
    monkeypatch.setenv("POSEPIPE_WEIGHTS", str(folder))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no user cache to fall back on
    out = tmp_path / "o"
    argv = ["run", str(SHORT), "--out", str(out), "--mode", "topdown", "--config", str(config)]
    assert keypoints in _one_line_exit_2(argv, capsys)  # missing: named, with the folder to set
    (folder / keypoints).write_bytes((weights_dir / keypoints).read_bytes()[:-1] + b"x")
    err = _one_line_exit_2(argv, capsys)
    assert keypoints in err and "sha256" in err, err
    assert not out.exists()  # OUT is made only once the weights are found (it was left empty)


def test_a_folder_expands_to_the_videos_under_it(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/one.mp4", "a/b/two.MOV", "a/notes.txt", "a/b/frame.jpg"):
        (tmp_path / name).write_bytes(b"x")
    found = expand_inputs([str(tmp_path / "a")])
    assert [os.path.relpath(p, tmp_path) for p in found] == ["a/b/two.MOV", "a/one.mp4"]
    # A path through ".." is recorded as the file it names (and is the same input as the plain path).
    assert expand_inputs([str(tmp_path / "a" / "b" / ".." / "one.mp4"), str(tmp_path / "a" / "one.mp4")]) == \
        [str(tmp_path / "a" / "one.mp4")]
    (tmp_path / "a" / "list.txt").write_text("../a/b/../one.mp4\n")
    assert expand_inputs([f"@{tmp_path / 'a' / 'list.txt'}"]) == [str(tmp_path / "a" / "one.mp4")]
    with pytest.raises(InputError, match="no file matches"):
        expand_inputs([str(tmp_path / "*.mkv")])


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    out = tmp_path / "out"
    with OutputLock(str(out)):
        with pytest.raises(LockedError, match=rf"pid {os.getpid()}"):
            OutputLock(str(out)).acquire()
    assert not (out / NAME).exists()  # released
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / NAME).write_text(f'{{"host": "{socket.gethostname()}", "pid": {dead.pid}, "pid_started": 0, '
                            f'"started": 0, "heartbeat": 0}}')
    with OutputLock(str(out)) as lock:  # a killed job's lock does not block the next one
        assert lock.held
    (out / NAME).write_text('{"host": "elsewhere", "pid": 1, "started": 0, "heartbeat": %f}' % time.time())
    with pytest.raises(LockedError, match="host elsewhere"):
        OutputLock(str(out)).acquire()  # another host's live heartbeat
    (out / NAME).write_text('{"host": "elsewhere", "pid": 1, "started": 0, "heartbeat": 0}')
    with OutputLock(str(out)):  # ... gone quiet for longer than stale_s
        pass


def _job(out, *videos):
    cmd = [sys.executable, "-m", "pipeline.cli", "run", *map(str, videos), "--out", str(out), "--no-progress",
           "--num-cpus", "2"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_second_job_on_the_same_out_is_refused_and_the_first_completes(tmp_path):
    out, clean = tmp_path / "out", tmp_path / "clean"
    first = _job(out, LONG)
    reference = _job(clean, LONG)  # alongside, in an OUT of its own: Ray start-up is mostly waiting
    deadline = time.monotonic() + 60
    while not (out / NAME).exists() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    second = _job(out, LONG)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2, err
    assert re.search(r"in use by another posepipe job \(host .+, pid \d+, started ", err), err
    assert first.communicate(timeout=300)[0] and first.returncode == 0
    assert reference.communicate(timeout=300) and reference.returncode == 0
    assert_same_people(people(out, video_id_for(LONG)), people(clean, video_id_for(LONG)))
    assert not (out / NAME).exists() and not (out / "_staging").exists()


def test_a_rerun_keeps_the_earlier_runs_statistics(tmp_path):
    from pipeline.config import load_config
    from pipeline.jobfile import JobFile

    out = str(tmp_path / "out")
    first = JobFile(out, ["a.mp4"], load_config(), "sha256:x")
    first.video("a", status="ok", frames=8)
    first.save(force=True, stages={"pose": {"busy_s": 3.0}}, finished_at=1.0)
    second = JobFile(out, ["a.mp4"], load_config(), "sha256:x")  # a no-op re-run
    second.save(force=True, stages={}, finished_at=2.0)
    job = __import__("json").loads((tmp_path / "out" / "job.json").read_text())
    assert job["stages"] == {} and job["history"][-1]["stages"] == {"pose": {"busy_s": 3.0}}
    assert job["history"][-1]["videos"] == {"a": {"status": "ok", "frames": 8}}
