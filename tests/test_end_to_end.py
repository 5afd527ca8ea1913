"""End to end on a local Ray (2 CPUs): real clip + the four bad inputs through `posepipe run`."""
from __future__ import annotations

import duckdb
import numpy as np
import pyarrow.dataset as ds
import pytest
import ray
from conftest import EVAL
from media import black_video, cut, first_frames, remux
from outputs import config_with, people

from pipeline.cli import main
from pipeline.runner import Runner, prepare
from stages.io.decode import count_frames, video_id_for

CLIP = EVAL / "videos" / "mmhuman3d_multi_person_demo.mp4"  # 40 frames, 2 people, portrait


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def batch_run(local_ray, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    missing = tmp / "missing.mp4"
    empty = tmp / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp / "notes.mp4"
    text.write_text("these are meeting notes, not a video\n" * 50)
    fast = remux(CLIP, tmp / "fast.mp4", options={"movflags": "faststart"})
    truncated = cut(fast, tmp / "truncated.mp4", 0.5)
    inputs = [str(CLIP), str(missing), str(empty), str(text), str(truncated)]
    out = tmp / "out"
    status = main(["run", *inputs, "--out", str(out), "--no-progress"])
    return status, out, inputs


def _video_rows(out):
    return {r["path"]: r for r in ds.dataset(out / "videos").to_table().to_pylist()}


def test_good_video_complete_and_in_order(batch_run):
    _, out, _ = batch_run
    vid = video_id_for(CLIP)
    frames = ds.dataset(out / "frames", partitioning="hive").to_table(filter=ds.field("video_id") == vid)
    # every frame PyAV decodes is in the output, once, in order, with time = pts * time_base
    assert frames.num_rows == count_frames(CLIP) == 40
    idx = frames.column("frame_index").to_numpy()
    np.testing.assert_array_equal(idx, np.arange(40))
    t = frames.column("time_s").to_numpy()
    np.testing.assert_allclose(t, np.arange(40) / 12.0, atol=1e-6)  # this clip is constant 12 fps

    people = ds.dataset(out / "people", partitioning="hive").to_table(filter=ds.field("video_id") == vid)
    assert people.num_rows >= 70  # two people in (nearly) every frame
    per_frame = np.bincount(people.column("frame_index").to_numpy(), minlength=40)
    assert np.median(per_frame) == 2
    kp_x = np.stack(people.column("kp_x").to_numpy(zero_copy_only=False))
    kp_s = np.stack(people.column("kp_score").to_numpy(zero_copy_only=False))
    found = kp_s > 0
    assert np.isnan(kp_x[~found]).all() and not np.isnan(kp_x[found]).any()
    assert (kp_x[found] > -5).all() and (kp_x[found] < 1085).all()  # in the 1080-wide frame
    # every row is tracked; ids are unique within a frame; two people -> a few long tracks
    tracks = people.column("track_id").to_numpy()
    assert people.column("track_id").null_count == 0 and (tracks >= 0).all()
    frame_track = people.column("frame_index").to_numpy() * 1000 + tracks
    assert len(np.unique(frame_track)) == len(frame_track)
    lengths = np.bincount(tracks)
    assert np.sort(lengths)[-2:].min() >= 30  # the two people keep their ids through most frames


def test_duckdb_reads_the_same_rows(batch_run):
    _, out, _ = batch_run
    vid = video_id_for(CLIP)
    n_arrow = ds.dataset(out / "people", partitioning="hive").count_rows(filter=ds.field("video_id") == vid)
    n_duck = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{out}/people/*/*.parquet', hive_partitioning=true) "
        f"WHERE video_id = '{vid}'").fetchall()[0][0]
    assert n_duck == n_arrow > 0


def test_bad_inputs_get_rows_and_exit_status(batch_run):
    status, out, inputs = batch_run
    assert status == 1  # some videos failed
    rows = _video_rows(out)
    assert len(rows) == 5
    good, missing, empty, text, truncated = (rows[str(p)] for p in inputs)
    assert good["status"] == "ok" and good["error"] is None and good["frames"] == 40
    assert missing["status"] == "failed" and "not found" in missing["error"]
    assert empty["status"] == "failed" and "empty" in empty["error"]
    assert text["status"] == "failed" and "not a video" in text["error"]
    assert truncated["status"] == "truncated" and 0 < truncated["frames"] < 40
    assert "truncat" in truncated["error"] or "decoded" in truncated["error"]
    # failed videos publish no people or frames; the truncated one keeps what decoded
    published = {p.name for p in (out / "people").iterdir()}
    assert published == {f"video_id={video_id_for(CLIP)}", f"video_id={video_id_for(inputs[4])}"}
    assert not any((out / "_staging").glob("*"))


CROWD = EVAL / "crowd_synth" / "p05" / "video.mp4"  # 50 frames, 5 real people


@pytest.fixture(scope="module")
def crowd(tmp_path_factory):
    """CROWD's first 16 frames (the same 5 people; a third of the time per mode)."""
    return first_frames(CROWD, tmp_path_factory.mktemp("crowd") / "p05.mp4", 16)


@pytest.mark.parametrize("mode", ["topdown", "auto", "hybrid"])
def test_other_modes_same_schema_real_clip(local_ray, batch_run, tmp_path, mode, crowd):
    _, bottomup_out, _ = batch_run
    empty = black_video(tmp_path / "black.mp4")
    out = tmp_path / "out"
    status = main(["run", str(crowd), str(empty), "--out", str(out), "--mode", mode, "--no-progress"])
    assert status == 0
    people = ds.dataset(out / "people", partitioning="hive")
    assert people.schema == ds.dataset(bottomup_out / "people", partitioning="hive").schema
    table = people.to_table()
    modes = set(table.column("mode").to_pylist())
    assert modes == ({"hybrid"} if mode == "hybrid" else {"topdown"})  # 5 people: auto stays top-down
    frames = ds.dataset(out / "frames", partitioning="hive").to_table()
    by_video = {v: frames.filter(ds.field("video_id") == v) for v in set(frames.column("video_id").to_pylist())}
    busy, black = by_video[video_id_for(crowd)], by_video[video_id_for(empty)]
    assert busy.num_rows == 16 and black.num_rows == 6
    # nobody in the black clip: its frames are there, with zero people and zero rows
    assert set(black.column("num_people").to_pylist()) == {0}
    assert video_id_for(empty) not in set(table.column("video_id").to_pylist())
    per_frame = np.array(busy.column("num_people").to_pylist())
    assert 3 <= np.median(per_frame) <= 6
    if mode != "hybrid":
        assert table.column("det_score").null_count == 0  # every top-down person has its detector box


def test_eval_track_on_a_run_output(batch_run, tmp_path, capsys):
    # the people table of a run turns into MOTChallenge rows; against itself the tracking is perfect
    from pipeline.evaluate import mot_rows_from_output

    _, out, _ = batch_run
    rows = mot_rows_from_output(out, video_id_for(CLIP))
    assert len(rows) >= 70 and (rows[:, 0] >= 1).all()
    gt = tmp_path / "gt.txt"
    np.savetxt(gt, np.c_[rows, np.ones(len(rows)), -np.ones((len(rows), 3))], delimiter=",", fmt="%.3f")
    assert main(["eval-track", "--gt", str(gt), "--out", str(out), "--video", video_id_for(CLIP)]) == 0
    assert "MOTA 1.000  IDF1 1.000  ID switches 0" in capsys.readouterr().out


def test_grouping_on_the_pose_actors_device_finds_the_same_people(local_ray, tmp_path):
    # [pose] group_on_device = "on": the pose actor runs peaks and PAF scores in torch on its device
    # (CPU tensors here, as on a GPU) and hands people, not maps, on. Against the same torch network
    # grouped by the CPU path (numpy, a grouping actor): the same rows, and keypoints within 1.5 video
    # px = 0.05 of a map pixel (one is 28 px of this 720x1280 decode): the CPU path reads float16 maps,
    # the device path the network's float32 output (measured: 0.84 px at most, on 1 of 1326). The clip's
    # first 16 frames: two runs of the torch network are the cost here.
    clip, runs = first_frames(CLIP, tmp_path / "clip16.mp4", 16), {}
    for where in ("off", "on"):
        config = config_with(tmp_path, "bottomup", f'[pose]\nbackend = "torch"\ngroup_on_device = "{where}"\n')
        runner = Runner(prepare(config, tmp_path / where), progress=False)
        assert runner.run([str(clip)])[0]["status"] == "ok"
        runs[where] = people(tmp_path / where)
    off, on = runs["off"], runs["on"]
    assert on["frame_index"] == off["frame_index"] and len(on["frame_index"]) >= 28
    assert on["track_id"] == off["track_id"]
    for key in ("kp_x", "kp_y"):
        a, b = np.array(on[key], np.float64), np.array(off[key], np.float64)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, atol=1.5, equal_nan=True)
