"""Refusals a new user meets (issue 21, items 4 and 9): each is one line on stderr and exit status 2, in a
process of its own as a user runs it, with nothing left behind; and the help says what the commands take.

The output these run on is two finished videos rows and nothing else: every refusal here happens before
any table is read, so no model needs to run (tests/test_render.py covers a real output's PNG sheet).
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import traceback

import pytest
import ray
from conftest import EVAL, REPO

from stages.io.sink import put_video_row, resolve_output

SHORT = EVAL / "videos" / "mmtracking_demo.mp4"  # 8 frames
IDS = ("clip-a", "clip-b")


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False, env=env)


def _one_line_exit_2(*args: str, env: dict | None = None) -> str:
    run = _cli(*args, env=env)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stdout == "" and len(run.stderr.splitlines()) == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    return run.stderr


@pytest.fixture(scope="module")
def two_videos(tmp_path_factory):
    """An output of two finished videos, run without --mesh (no body counts in their rows)."""
    out = tmp_path_factory.mktemp("two") / "out"
    fs, root = resolve_output(str(out))
    for vid in IDS:
        put_video_row(fs, root, {"video_id": vid, "path": str(SHORT), "status": "ok", "frames": 8})
    return out


def test_export_to_a_place_it_cannot_write(two_videos, tmp_path):
    err = _one_line_exit_2("export", two_videos, "--format", "coco", "-o", tmp_path / "missing" / "dir" / "x.json")
    assert "no folder" in err and "missing" in err, err
    assert "is a folder" in _one_line_exit_2("export", two_videos, "--format", "csv", "-o", tmp_path)
    # A track's export is refused before its rows are read or the body model loaded.
    err = _one_line_exit_2("export", two_videos, "--video", IDS[0], "--track", "0", "--format", "bvh",
                           "-o", tmp_path / "missing" / "x.bvh")
    assert "no folder" in err, err
    assert list(tmp_path.iterdir()) == []  # no temporary file either


def test_eval_with_a_ground_truth_it_cannot_read(tmp_path):
    err = _one_line_exit_2("eval", "--gt", tmp_path / "missing.json")
    assert "missing.json: cannot read COCO keypoints json" in err, err


def test_eval_track_refusals(two_videos, tmp_path):
    gt = tmp_path / "gt.txt"
    gt.write_text("1,1,10,10,50,100,1,1,1\n2,1,12,10,50,100,1,1,1\n")
    missing = tmp_path / "missing.txt"
    assert f"{missing}: cannot read" in _one_line_exit_2("eval-track", "--gt", missing, "--out", two_videos,
                                                         "--video", IDS[0])
    (tmp_path / "notes.txt").write_text("frame id x y\n")
    assert "not MOTChallenge rows" in _one_line_exit_2("eval-track", "--gt", tmp_path / "notes.txt", "--hyp", gt)
    err = _one_line_exit_2("eval-track", "--gt", gt, "--out", two_videos)  # which of the two?
    assert "2 finished videos" in err and "--video" in err and all(v in err for v in IDS), err
    assert "no finished video 'nope'" in _one_line_exit_2("eval-track", "--gt", gt, "--out", two_videos,
                                                          "--video", "nope")
    assert "not a posepipe output" in _one_line_exit_2("eval-track", "--gt", gt, "--out", tmp_path)


def test_mocap_without_bodies_needs_all(two_videos):
    """An output run without --mesh has nothing to refit: fitting every track from scratch is as long as the
    mesh stage of a whole run, so it is asked for (--all), not started by surprise."""
    from pipeline.mocap import plan
    from stages.io.errors import OutputError

    err = _one_line_exit_2("mocap", two_videos)
    assert "none of its 2 videos has bodies" in err and "--mesh" in err and "--all" in err, err
    assert not (two_videos / ".posepipe.lock").exists()
    with pytest.raises(OutputError, match=f"video '{IDS[1]}' has no bodies"):
        plan(str(two_videos), IDS[1])
    # What --all hands to the fit (the fit itself is the one tests/test_mesh_pipeline.py's mocap test runs).
    assert plan(str(two_videos), unfitted=True) == list(IDS)
    assert plan(str(two_videos), IDS[1], unfitted=True) == [IDS[1]]


def test_dense_without_bodies(two_videos, capsys):
    """`posepipe dense` renders fitted bodies: an output without any says so (and how to get them), before
    the body model loads or OUT is locked."""
    from pipeline.cli import main

    err = _one_line_exit_2("dense", two_videos)
    assert "no bodies to render" in err and "--mesh" in err, err
    capsys.readouterr()
    for args, words in (([IDS[0]], f"video '{IDS[0]}' has no bodies"), (["nope"], "no finished video 'nope'")):
        assert main(["dense", str(two_videos), "--video", *args]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.splitlines()) == 1, err
    assert not (two_videos / ".posepipe.lock").exists() and not (two_videos / "dense").exists()


def test_run_dense_needs_mesh(tmp_path, capsys):
    """The dense stage renders the mesh stage's bodies: `run --dense` alone is refused before Ray starts."""
    from pipeline.cli import main

    out = tmp_path / "out"
    assert main(["run", str(SHORT), "--out", str(out), "--dense", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "give --mesh too" in err and len(err.splitlines()) == 1, err
    assert not out.exists() and not ray.is_initialized()


def test_missing_weights_leave_no_output_folder(tmp_path):
    """The converted top-down files have no download, so this fails the same with or without a network."""
    env = {**os.environ, "POSEPIPE_WEIGHTS": str(tmp_path / "weights"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    (tmp_path / "weights").mkdir()
    out = tmp_path / "new" / "out"
    err = _one_line_exit_2("run", SHORT, "--out", out, "--mode", "topdown", "--no-progress", env=env)
    assert "POSEPIPE_WEIGHTS" in err and ".onnx" in err, err
    assert not (tmp_path / "new").exists()


def test_api_missing_weights_is_one_exception(tmp_path, monkeypatch):
    """posepipe.run with no weights anywhere and the download failing (a file:// address that does not exist
    stands in for no network): one WeightsError, no chain of socket and urllib errors under it."""
    import posepipe
    from stages import weights

    pb = "tfpose_mobilenet_v2_small_graph_opt.pb"
    monkeypatch.setitem(weights.MODEL_FILES, pb, dataclasses.replace(weights.MODEL_FILES[pb],
                                                                     url="file:///nonexistent/graph_opt.pb"))
    monkeypatch.setenv("POSEPIPE_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "out"
    with pytest.raises(posepipe.WeightsError) as caught:
        posepipe.run([str(SHORT)], out)
    exc = caught.value
    assert pb in str(exc) and "POSEPIPE_WEIGHTS" in str(exc), exc
    assert "".join(traceback.format_exception(exc)).count("Traceback") == 1
    assert not out.exists() and not ray.is_initialized()


def test_help_says_it_whole():
    top = _cli("--help")
    assert top.returncode == 0
    text = " ".join(top.stdout.split())
    assert "or score it against ground truth." in text and "Exit status: 0" in text, top.stdout
    run = _cli("run", "--help")
    assert run.returncode == 0 and "folders" in run.stdout, run.stdout
