"""`posepipe run --mesh --dense` on a real clip, then `posepipe export` of a track, read back by bvhio, and
the dense rows the graph wrote beside the bodies."""
from __future__ import annotations

import os
import subprocess
import sys

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
import ray
import torch
from conftest import EVAL, REPO, WEIGHTS
from gltf_check import check_strict_rules, khronos_report
from segment_double import installed_stand_in

from pipeline.cli import main
from stages.body.anny_body import AnnyBody
from stages.io.read_bodies import read_track, tracked_people
from stages.body.rig import pose_full
from stages.io.decode import video_id_for

CLIP = EVAL / "videos" / "mmhuman3d_multi_person_demo.mp4"  # 40 frames, 2 people, portrait
CAM_TO_EXPORT = np.diag([1.0, -1.0, -1.0])  # stages/body/export.py: 180 degrees about x, y up


@pytest.fixture(scope="module")
def mesh_run(tmp_path_factory):
    """The run, with the silhouettes' stand-in model installed (tests/segment_double.py) for the module."""
    # 4 logical CPUs: decode, grouping, tracking and the sink take 1, mesh and dense 1 each, one pose actor the last.
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    out = tmp_path_factory.mktemp("mesh") / "out"
    with installed_stand_in(tmp_path_factory.mktemp("weights")):
        status = main(["run", str(CLIP), "--out", str(out), "--mesh", "--dense", "--no-progress"])
        yield status, out
    ray.shutdown()


def test_every_tracked_person_frame_has_a_body(mesh_run):
    status, out = mesh_run
    assert status == 0
    q = lambda sql: duckdb.sql(sql.replace("OUT", str(out))).fetchall()  # noqa: E731
    tracked = q("SELECT frame_index, track_id FROM read_parquet('OUT/people/*/*.parquet') WHERE track_id IS NOT NULL")
    bodies = q("SELECT frame_index, track_id FROM read_parquet('OUT/bodies/*/*.parquet')")
    (row,) = q("SELECT body_rows, body_tracks, body_skipped, tracks, body_skipped_reasons "
               "FROM read_parquet('OUT/videos/*.parquet')")
    assert len(tracked) > 60  # two people over most of the 40 frames
    skipped = row[2]  # a count, 0 when every tracked person-frame got a body; the reasons beside it
    assert isinstance(skipped, int) and (row[4] is None) == (skipped == 0)
    assert skipped == sum(int(kv.split("=")[1]) for kv in (row[4] or "").split(",") if kv)
    assert sorted(bodies) == sorted(set(bodies)) and set(bodies) <= set(tracked)
    assert len(bodies) + skipped == len(tracked) == row[0] + skipped
    assert row[1] == row[3]  # a shape for every track
    table = ds.dataset(out / "bodies", partitioning="hive").to_table()
    for name in ("bone_rotvec", "root_rotvec", "translation", "joint_x", "joint_y", "joint_z"):
        assert np.isfinite(table[name].combine_chunks().flatten().to_numpy()).all(), name
    z = table["translation"].combine_chunks().flatten().to_numpy().reshape(-1, 3)[:, 2]
    assert (z > 0.5).all() and (z < 30).all()  # in front of the camera, at a plausible distance
    assert np.median(table["reproj_px"].to_numpy()) < 15.0  # 1080x1920 frames, people ~1000 px tall


def test_bvh_of_a_track_reads_back_with_one_frame_per_frame(mesh_run, tmp_path):
    import bvhio

    _, out = mesh_run
    vid = video_id_for(CLIP)
    path = tmp_path / "t0.bvh"
    assert main(["export", str(out), "--video", vid, "--track", "0", "--format", "bvh", "-o", str(path)]) == 0
    motion = read_track(str(out), vid, 0)
    raw = bvhio.readAsBvh(str(path))
    assert raw.FrameCount == motion.frame_index[-1] - motion.frame_index[0] + 1
    root = bvhio.readAsHierarchy(str(path))
    joints = [joint for joint, _, _ in root.layout()]
    model = AnnyBody()
    as_t = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        _, frames, _ = pose_full(model, as_t(motion.shape), as_t(motion.bone_rotvec), as_t(motion.root_rotvec),
                                 as_t(motion.translation))
    heads = frames[..., :3, 3].double().numpy() @ CAM_TO_EXPORT.T * 100  # cm, as the BVH
    worst = 0.0
    for k, f in enumerate(motion.frame_index):
        root.loadPose(int(f - motion.frame_index[0]))
        fk = np.array([list(jt.PositionWorld) for jt in joints])
        worst = max(worst, float(np.linalg.norm(fk - heads[k], axis=1).max()))
    assert worst < 1.0, worst  # cm
    for fmt in ("glb", "obj"):
        assert main(["export", str(out), "--video", vid, "--track", "0", "--format", fmt,
                     "-o", str(tmp_path / f"t0.{fmt}")]) == 0
    assert main(["export", str(out), "--video", vid, "--track", "99", "--format", "bvh",
                 "-o", str(tmp_path / "x.bvh")]) == 2


def test_rerun_with_mesh_skips_the_finished_video(mesh_run, capsys):
    _, out = mesh_run
    before = sorted(p.stat().st_mtime_ns for p in (out / "bodies").rglob("*.parquet"))
    assert main(["run", str(CLIP), "--out", str(out), "--mesh", "--dense", "--no-progress"]) == 0
    assert "(done earlier)" in capsys.readouterr().out
    assert sorted(p.stat().st_mtime_ns for p in (out / "bodies").rglob("*.parquet")) == before


def _posepipe(*args: str) -> tuple[str, str]:
    """(stdout, stderr) of `python -m pipeline.cli ARGS` in its own process, which must succeed."""
    run = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, capture_output=True, text=True,
                         timeout=600, check=False, env={**os.environ, "POSEPIPE_WEIGHTS": str(WEIGHTS)})
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout, run.stderr


def _warp_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "Warp" in line or "CUDA driver" in line or " took " in line]


def test_body_commands_print_only_their_own_lines(mesh_run, tmp_path):
    """Each in its own process, as a user runs them: NVIDIA Warp (anny skins with it) prints a banner, a
    CUDA-driver warning on CPU machines and "Module ... took N ms" per kernel load unless silenced
    (anny_body.quiet_warp). A --mesh re-run loads anny in the driver (its cache check) before it skips."""
    _, out = mesh_run
    stdout, stderr = _posepipe("run", str(CLIP), "--out", str(out), "--mesh", "--dense", "--no-progress")
    assert _warp_lines(stdout + stderr) == [] and "(done earlier)" in stdout, stdout + stderr
    vid = video_id_for(CLIP)
    glb = tmp_path / "track.glb"
    stdout, stderr = _posepipe("export", str(out), "--video", vid, "--track", "0", "--format", "glb", "-o", str(glb))
    assert stderr == "" and len(stdout.splitlines()) == 1 and stdout.startswith(f"wrote {glb}: track 0"), \
        stdout + stderr
    stdout, stderr = _posepipe("render", str(out), "--video", vid, "--png", "-o", str(tmp_path / "sheet.png"))
    assert stderr == "" and stdout.splitlines() == [f"wrote {tmp_path / 'sheet.png'}"], stdout + stderr
    # The GLB of a real fitted track, to a strict reader (tests/test_export.py does a synthetic track).
    check_strict_rules(glb)
    report = khronos_report(glb)
    if report is not None:
        assert report["numErrors"] == 0 and report["numWarnings"] == 0, report["codes"]


def test_mocap_refits_whole_tracks_and_keeps_the_rest(mesh_run, tmp_path, capsys):
    import shutil

    _, out = mesh_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    vid = video_id_for(CLIP)
    q = lambda sql: duckdb.sql(sql.replace("OUT", str(copy))).fetchall()  # noqa: E731
    before = q("SELECT track_id, frame_index, reproj_px FROM read_parquet('OUT/bodies/*/*.parquet') ORDER BY ALL")
    assert main(["mocap", str(copy), "--track", "1"]) == 0
    after = q("SELECT track_id, frame_index, reproj_px FROM read_parquet('OUT/bodies/*/*.parquet') ORDER BY ALL")
    assert [r[:2] for r in after] == [r[:2] for r in before]  # same person-frames
    assert [r for r in after if r[0] == 0] == [r for r in before if r[0] == 0]  # track 0 untouched
    assert [r for r in after if r[0] == 1] != [r for r in before if r[0] == 1]  # track 1 refitted
    # The dense rows were drawn from the old bodies: gone, for `posepipe dense` to redo (tests/test_dense_cli.py).
    assert not (copy / "dense" / f"video_id={vid}").exists()
    assert q("SELECT dense_rows, dense_masks FROM read_parquet('OUT/videos/*.parquet')") == [(None, None)]
    capsys.readouterr()
    assert main(["mocap", str(copy)]) == 0
    (row,) = q("SELECT body_rows, body_tracks FROM read_parquet('OUT/videos/*.parquet')")
    assert row == (len(before), 2)
    # What it does before its bar (Ray is up already here), then the bar over every tracked person-frame.
    err, tracked = capsys.readouterr().err, len(tracked_people(str(copy), vid)[0])
    assert err.startswith("posepipe: loading the body model (1 actor)...\n") and f"| {tracked}/{tracked} [" in err, err
    assert not (copy / "_staging").exists()
    assert main(["mocap", str(copy), "--video", "nope"]) == 2
    assert main(["mocap", str(copy), "--video", vid, "--track", "99"]) == 2


def test_dense_rows_are_the_offline_renders_of_the_bodies(mesh_run):
    """The graph's dense stage wrote one row per bodies row, flagged with its track's plausibility, and each is
    what `posepipe dense`'s renderer makes of the same bodies and frames (two different mesh chunks): the cut to
    the silhouettes included (the stand-in model's), which read the input video again in both."""
    from pipeline.config import load_config
    from pipeline.models import choose_segment_model
    from stages.body.table import track_shapes
    from stages.io.frame_source import FrameSource
    from stages.dense.video import DenseRenderer
    from stages.io.dense_table import flag_plausibility
    from stages.io.output import read_video_table, video_row

    _, out = mesh_run
    vid = video_id_for(CLIP)
    q = lambda sql: sorted(duckdb.sql(sql.replace("OUT", str(out))).fetchall())  # noqa: E731
    dense = q("SELECT frame_index, track_id, plausible, implausible_reason FROM read_parquet('OUT/dense/*/*.parquet')")
    bodies = q("SELECT b.frame_index, b.track_id, t.plausible, t.implausible_reason "
               "FROM read_parquet('OUT/bodies/*/*.parquet') b JOIN read_parquet('OUT/body_tracks/*/*.parquet') t "
               "USING (track_id)")
    assert dense == bodies and len(dense) > 60
    row = video_row(str(out), vid)
    assert row["dense_rows"] == len(dense) and row["dense_masks"] == "silhouettes"

    table = read_video_table(str(out), "dense", vid)
    assert table["frame_index"].to_pylist() == sorted(table["frame_index"].to_pylist())  # in frame order
    frames = [f for f in (0, 33) if f in {b[0] for b in bodies}]
    pick = lambda t: t.filter(pc.is_in(t["frame_index"], pa.array(frames))).sort_by(  # noqa: E731
        [("frame_index", "ascending"), ("track_id", "ascending")])
    tracks = read_video_table(str(out), "body_tracks", vid)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = load_config()  # the run's default: silhouettes from the input video read again
    renderer = DenseRenderer.load(grow_m=config.dense.grow_cm / 100, segment_model=choose_segment_model(config))
    source = FrameSource(row["path"], config.decode.max_side)
    bodies_rows = pick(read_video_table(str(out), "bodies", vid))
    try:
        offline = renderer.rows(bodies_rows, track_shapes(tracks), (row["width"], row["height"]), source)
        # the silhouettes run a frame ahead on their own thread: each frame's cut is its own frame's, as one
        # frame at a time gives it
        one_by_one = pa.concat_tables([renderer.rows(bodies_rows.filter(pc.equal(bodies_rows["frame_index"], f)),
                                                     track_shapes(tracks), (row["width"], row["height"]), source)
                                       for f in frames])
        renderer.segmenter = None  # and the bodies alone, which the cut changed
        alone = renderer.rows(bodies_rows, track_shapes(tracks), (row["width"], row["height"]))
    finally:
        renderer.release()
        source.close()
        torch.set_num_threads(threads)
    assert len(frames) == 2 and offline.num_rows >= 3
    assert flag_plausibility(offline, tracks).equals(pick(table)) and offline.equals(one_by_one)
    assert offline["pixels"].to_pylist() != alone["pixels"].to_pylist()
