"""Parquet sink: schema, atomic publication, failure rows, crash cleanup, and readers (pyarrow, DuckDB,
pandas), writing to a plain path and to a file:// URI (the pyarrow.fs path every store takes)."""
import os

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from stages.batches import PoseBatch
from stages.io.sink import (
    PEOPLE_SCHEMA,
    VIDEOS_SCHEMA,
    ParquetSink,
    read_json,
    read_video_rows,
    remove_unfinished,
    resolve_output,
    write_json,
)


def _batch(video_id: str, frames: list[int], people_per_frame: list[int]) -> PoseBatch:
    idx = np.repeat(np.array(frames, np.int64), people_per_frame)
    p = len(idx)
    kp = np.random.default_rng(0).uniform(0, 100, size=(p, 17, 3)).astype(np.float32)
    kp[:, 3, :2] = np.nan  # an ear not found
    kp[:, 3, 2] = 0
    return PoseBatch(
        video_id=video_id, frames=np.array(frames, np.int64), frame_time_s=np.array(frames) / 25.0,
        frame_index=idx, time_s=idx / 25.0, keypoints=kp,
        bbox=np.tile(np.array([1, 2, 3, 4], np.float32), (p, 1)), score=np.linspace(1, 0.5, p).astype(np.float32),
        model="net",
    )


@pytest.fixture(params=["path", "uri"])
def out(request, tmp_path):
    """(what the sink is given, where that is on disk): a local path, or the same place as file://."""
    local = tmp_path / "out"
    return (str(local) if request.param == "path" else local.as_uri()), local


def _finished(out_arg, video_id, people, row=None):
    sink = ParquetSink(out_arg)
    sink.open(video_id)
    sink.write(_batch(video_id, list(range(len(people))), people))
    return sink.finish(video_id, {"path": f"{video_id}.mp4", "status": "ok", **(row or {})})


def test_resolve_output_paths_and_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, path = resolve_output("rel/out")  # relative: pinned to the cwd now, not where a worker runs
    assert isinstance(fs, pafs.LocalFileSystem) and path == (tmp_path / "rel" / "out").as_posix()
    assert resolve_output(tmp_path / "x")[1] == (tmp_path / "x").as_posix()
    fs, path = resolve_output((tmp_path / "x").as_uri() + "/")
    assert isinstance(fs, pafs.LocalFileSystem) and path == (tmp_path / "x").as_posix()


def test_video_is_invisible_until_finished_then_readable(out):
    out_arg, tmp_path = out
    sink = ParquetSink(out_arg)
    sink.open("clip-1")
    sink.write(_batch("clip-1", [0, 1, 2], [2, 0, 1]))
    # nothing published yet: a reader sees no people rows and no video row
    assert not (tmp_path / "people").exists() and not (tmp_path / "videos").exists()
    sink.write(_batch("clip-1", [3, 4], [1, 3]))
    row = sink.finish("clip-1", {"path": "/x/clip.mp4", "status": "ok", "fps": 25.0})
    assert row["frames"] == 5 and row["people_rows"] == 7
    assert not (tmp_path / "_staging" / "clip-1").exists()

    people = ds.dataset(f"{out_arg}/people", partitioning="hive").to_table()  # URI or path alike
    assert people.num_rows == 7 and people.column("video_id").to_pylist() == ["clip-1"] * 7
    assert people.schema.field("kp_x").type == PEOPLE_SCHEMA.field("kp_x").type
    assert people.column("person_index").to_pylist() == [0, 1, 0, 0, 0, 1, 2]
    assert people.column("track_id").null_count == 7  # no tracking yet: null, not -1
    frames = pq.read_table(tmp_path / "frames" / "video_id=clip-1" / "part-0.parquet")
    assert frames.column("num_people").to_pylist() == [2, 0, 1, 1, 3]

    q = duckdb.sql(
        f"SELECT frame_index, count(*) AS n, any_value(kp_x[4]) AS ear_x "
        f"FROM read_parquet('{tmp_path}/people/*/*.parquet', hive_partitioning=true) "
        f"GROUP BY frame_index ORDER BY frame_index").fetchall()
    assert [(f, n) for f, n, _ in q] == [(0, 2), (2, 1), (3, 1), (4, 3)]
    assert all(np.isnan(x) for *_, x in q)  # not found stays NaN, never invented
    videos = pq.read_table(tmp_path / "videos" / "clip-1.parquet").to_pandas()
    assert videos.loc[0, "status"] == "ok" and videos.loc[0, "frames"] == 5


def test_out_of_order_batch_is_refused(tmp_path):
    sink = ParquetSink(tmp_path)
    sink.open("v")
    sink.write(_batch("v", [4, 5], [1, 1]))
    with pytest.raises(ValueError, match="after frame 5"):
        sink.write(_batch("v", [2, 3], [1, 1]))


def test_failed_video_leaves_only_its_status_row(out):
    out_arg, tmp_path = out
    _finished(out_arg, "bad", [1, 1])  # an earlier run's output of the video that now fails
    sink = ParquetSink(out_arg)
    sink.open("good")
    sink.open("bad")
    sink.write(_batch("good", [0], [1]))
    sink.write(_batch("bad", [0], [2]))
    sink.fail("bad", {"path": "bad.mp4", "error": "boom"})
    sink.finish("good", {"path": "good.mp4", "status": "ok"})
    for table in ("people", "frames"):
        assert not (tmp_path / table / "video_id=bad").exists()
    assert not (tmp_path / "_staging").exists()
    assert set(ds.dataset(f"{out_arg}/people", partitioning="hive").to_table()["video_id"].to_pylist()) == {"good"}
    rows = ds.dataset(tmp_path / "videos").to_table().to_pylist()
    by_id = {r["video_id"]: r for r in rows}
    assert by_id["bad"]["status"] == "failed" and by_id["bad"]["error"] == "boom"
    assert by_id["good"]["status"] == "ok" and by_id["good"]["people_rows"] == 1


def test_rerun_replaces_a_videos_output(out):
    out_arg, tmp_path = out
    for people in ([1, 1], [3, 0]):
        _finished(out_arg, "v", people)
    table = ds.dataset(tmp_path / "people", partitioning="hive").to_table()
    assert table.num_rows == 3  # second run's rows only, no duplicates


def test_read_video_rows_returns_fingerprint_and_config_hash(out):
    out_arg, local = out
    assert read_video_rows(out_arg) == []  # OUT does not exist yet
    _finished(out_arg, "a", [1], {"fingerprint": "size=10,mtime=5", "config_hash": "c0ffee"})
    ParquetSink(out_arg).fail("b", {"path": "b.mp4", "error": "unreadable"})  # no fingerprint given
    # a row written before the two columns existed
    old = VIDEOS_SCHEMA.remove(VIDEOS_SCHEMA.get_field_index("fingerprint"))
    old = old.remove(old.get_field_index("config_hash"))
    pq.write_table(pa.Table.from_pylist([{"video_id": "c", "status": "ok"}], schema=old), local / "videos" / "c.parquet")

    rows = read_video_rows(out_arg)
    assert [(r["video_id"], r["status"], r["fingerprint"], r["config_hash"]) for r in rows] == [
        ("a", "ok", "size=10,mtime=5", "c0ffee"), ("b", "failed", None, None), ("c", "ok", None, None)]
    assert rows[0]["frames"] == 1 and rows[0]["people_rows"] == 1 and rows[0]["finished_at"] is not None


def test_remove_unfinished_drops_partitions_without_a_done_row(out, monkeypatch):
    out_arg, tmp_path = out
    _finished(out_arg, "done", [2, 1])
    _finished(out_arg, "rerun", [1])  # finished once; its re-run is killed below
    _finished(out_arg, "failed", [1])
    ParquetSink(out_arg).fail("failed", {"path": "failed.mp4", "error": "boom"})

    def killed(row):  # the process dies after publishing people and frames, before the videos row
        raise KeyboardInterrupt

    for video_id in ("crashed", "rerun"):
        sink = ParquetSink(out_arg)
        monkeypatch.setattr(sink, "_write_video_row", killed)
        sink.open(video_id)
        sink.write(_batch(video_id, [0, 1], [1, 2]))
        with pytest.raises(KeyboardInterrupt):
            sink.finish(video_id, {"path": f"{video_id}.mp4", "status": "ok"})
    staged = ParquetSink(out_arg)  # killed while still staging
    staged.open("staged")
    staged.write(_batch("staged", [0], [1]))
    staged.open_videos["staged"].people.close()
    staged.open_videos["staged"].frames.close()
    assert (tmp_path / "people" / "video_id=crashed").exists() and (tmp_path / "_staging" / "staged").exists()

    rows = read_video_rows(out_arg)
    assert {r["video_id"]: r["status"] for r in rows} == {"done": "ok", "failed": "failed"}  # rerun's old row withdrawn
    done = {r["video_id"] for r in rows if r["status"] in ("ok", "truncated")}
    assert remove_unfinished(out_arg, done) == ["crashed", "rerun"]
    assert sorted(os.listdir(tmp_path / "people")) == sorted(os.listdir(tmp_path / "frames")) == ["video_id=done"]
    assert not (tmp_path / "_staging").exists() and not any(p.name.startswith(".") for p in tmp_path.rglob("*"))
    people = ds.dataset(f"{out_arg}/people", partitioning="hive").to_table()
    assert people.num_rows == 3 and set(people["video_id"].to_pylist()) == {"done"}
    assert remove_unfinished(out_arg) == []  # default: done ids read from OUT; nothing left to remove


def test_json_round_trip(out):
    out_arg, tmp_path = out
    assert read_json(out_arg, "job.json") is None
    write_json(out_arg, "job.json", {"inputs": ["a.mp4"], "videos": None})
    job = {"inputs": ["a.mp4", "b.mp4"], "config": {"mode": "auto", "fps": 12.5}, "videos": [{"id": "a"}]}
    write_json(out_arg, "job.json", job)  # replaces the first
    assert read_json(out_arg, "job.json") == job
    assert os.listdir(tmp_path) == ["job.json"]  # no temp file left behind
