"""Parquet sink: schema, atomic publication, failure rows, and readers (pyarrow, DuckDB, pandas)."""
import duckdb
import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from stages.batches import PoseBatch
from stages.sink import PEOPLE_SCHEMA, ParquetSink


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
    )


def test_video_is_invisible_until_finished_then_readable(tmp_path):
    sink = ParquetSink(tmp_path)
    sink.open("clip-1")
    sink.write(_batch("clip-1", [0, 1, 2], [2, 0, 1]), "net")
    # nothing published yet: a reader sees no people rows and no video row
    assert not (tmp_path / "people").exists() and not (tmp_path / "videos").exists()
    sink.write(_batch("clip-1", [3, 4], [1, 3]), "net")
    row = sink.finish("clip-1", {"path": "/x/clip.mp4", "status": "ok", "fps": 25.0})
    assert row["frames"] == 5 and row["people_rows"] == 7
    assert not (tmp_path / "_staging" / "clip-1").exists()

    people = ds.dataset(tmp_path / "people", partitioning="hive").to_table()
    assert people.num_rows == 7
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
    sink.write(_batch("v", [4, 5], [1, 1]), "net")
    with pytest.raises(ValueError, match="after frame 5"):
        sink.write(_batch("v", [2, 3], [1, 1]), "net")


def test_failed_video_leaves_only_its_status_row(tmp_path):
    sink = ParquetSink(tmp_path)
    sink.open("good")
    sink.open("bad")
    sink.write(_batch("good", [0], [1]), "net")
    sink.write(_batch("bad", [0], [2]), "net")
    sink.fail("bad", {"path": "bad.mp4", "error": "boom"})
    sink.finish("good", {"path": "good.mp4", "status": "ok"})
    assert not (tmp_path / "people" / "video_id=bad").exists()
    rows = ds.dataset(tmp_path / "videos").to_table().to_pylist()
    by_id = {r["video_id"]: r for r in rows}
    assert by_id["bad"]["status"] == "failed" and by_id["bad"]["error"] == "boom"
    assert by_id["good"]["status"] == "ok" and by_id["good"]["people_rows"] == 1


def test_rerun_replaces_a_videos_output(tmp_path):
    for people in ([1, 1], [3, 0]):
        sink = ParquetSink(tmp_path)
        sink.open("v")
        sink.write(_batch("v", [0, 1], people), "net")
        sink.finish("v", {"path": "v.mp4", "status": "ok"})
    table = ds.dataset(tmp_path / "people", partitioning="hive").to_table()
    assert table.num_rows == 3  # second run's rows only, no duplicates
