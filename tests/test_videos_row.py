"""The videos row as users read it: body_skipped a count with its reasons apart (old text rows still read),
and the input's path on every per-video line of `run` and `status` (ids of same-named files differ only by a
hash). No pose model, no Ray: rows are written with the sink's own put_video_row."""
from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from conftest import REPO

from pipeline.jobfile import status_lines, video_line
from stages.body.table import BODY_TRACKS_SCHEMA, body_summary
from stages.io.decode import video_id_for
from stages.io.sink import VIDEOS_SCHEMA, put_video_row, read_video_rows, write_json

# Two inputs with one file name, as in crowd_synth/*/video.mp4.
PATHS = ["/data/crowd_synth/p01/video.mp4", "/data/crowd_synth/p05/video.mp4"]


def _tracks(frames: list[int]) -> pa.Table:
    return pa.Table.from_pylist([{"track_id": t, "frames": f} for t, f in enumerate(frames)], schema=BODY_TRACKS_SCHEMA)


def test_body_summary_counts_skips_and_keeps_the_reasons_apart():
    assert body_summary(_tracks([30, 12]), {"few_confident_joints": 5, "no_torso": 2}) == {
        "body_tracks": 2, "body_rows": 42, "body_skipped": 7, "body_skipped_reasons": "few_confident_joints=5,no_torso=2"}
    nothing = body_summary(_tracks([30]), {})
    assert nothing["body_skipped"] == 0 and nothing["body_skipped_reasons"] is None  # 0, not null: it ran
    unknown = body_summary(_tracks([30]), None)  # a one-track mocap: the video's count is not known
    assert unknown["body_skipped"] is None and unknown["body_skipped_reasons"] is None
    assert VIDEOS_SCHEMA.field("body_skipped").type == pa.int64()


def _old_row(root, video_id: str, skipped: str | None) -> None:
    """A row as written before body_skipped was a count: text, and no body_skipped_reasons column."""
    schema = pa.schema([f if f.name != "body_skipped" else pa.field("body_skipped", pa.string())
                        for f in VIDEOS_SCHEMA if f.name != "body_skipped_reasons"])
    row = {name: None for name in schema.names} | {"video_id": video_id, "status": "ok", "body_rows": 40,
                                                   "body_skipped": skipped}
    pq.write_table(pa.Table.from_pylist([row], schema=schema), root / "videos" / f"{video_id}.parquet")


def test_old_text_body_skipped_reads_as_a_count_beside_new_rows(tmp_path):
    (tmp_path / "videos").mkdir()
    _old_row(tmp_path, "a-00000000", "few_confident_joints=73,no_torso=4")
    _old_row(tmp_path, "b-00000000", None)
    put_video_row(pafs.LocalFileSystem(), str(tmp_path), {"video_id": "c-00000000", "status": "ok", "body_rows": 9,
                                                          **body_summary(_tracks([9]), {"few_confident_joints": 2})})
    rows = {r["video_id"]: r for r in read_video_rows(tmp_path)}
    assert (rows["a-00000000"]["body_skipped"], rows["a-00000000"]["body_skipped_reasons"]) == \
        (77, "few_confident_joints=73,no_torso=4")
    assert (rows["b-00000000"]["body_skipped"], rows["b-00000000"]["body_skipped_reasons"]) == (None, None)
    assert (rows["c-00000000"]["body_skipped"], rows["c-00000000"]["body_skipped_reasons"]) == \
        (2, "few_confident_joints=2")
    (tmp_path / "videos" / "a-00000000.parquet").unlink()  # no text left: the plain read
    assert read_video_rows(tmp_path)[1]["body_skipped"] == 2


def test_video_line_names_the_input():
    assert video_line("ok", "video-c7dc46b8", PATHS[0], "frames=50", "people_rows=50", note="(done earlier)") == \
        f"ok        video-c7dc46b8  frames=50  people_rows=50  {PATHS[0]}  (done earlier)"
    assert video_line("failed", "text-9fdb4907", "/x/text.mp4", "frames=0", error="not a video") == \
        "failed    text-9fdb4907  frames=0  /x/text.mp4  error: not a video"
    assert video_line("queued", "v-00000000", None, "frames=0") == "queued    v-00000000  frames=0"


def _output(tmp_path) -> tuple[str, list[str]]:
    """OUT after a run of both same-named videos (one ok, one failed), then a re-run given only the first:
    job.json names only it, the other's row is from the earlier run."""
    out, fs = str(tmp_path / "out"), pafs.LocalFileSystem()
    ids = [video_id_for(p) for p in PATHS]
    put_video_row(fs, out, {"video_id": ids[0], "path": PATHS[0], "status": "ok", "frames": 50})
    put_video_row(fs, out, {"video_id": ids[1], "path": PATHS[1], "status": "failed", "frames": 0,
                            "error": "decode failed at frame 3"})
    write_json(out, "job.json", {"videos": {ids[0]: {"path": PATHS[0], "status": "skipped"}}, "finished_at": 1.0})
    return out, ids


def test_status_shows_each_videos_path_and_an_earlier_runs_video_as_final(tmp_path):
    out, ids = _output(tmp_path)
    assert ids[0].startswith("video-") and ids[1].startswith("video-") and ids[0] != ids[1]
    lines, finished = status_lines(out)
    assert lines == [f"ok        {ids[0]}  frames=50  {PATHS[0]}",
                     f"failed    {ids[1]}  frames=0  {PATHS[1]}  error: decode failed at frame 3",
                     "2 videos: 1 failed, 1 ok; job finished"]
    assert finished  # the video the re-run was not given is not "queued" forever


def test_status_command_prints_the_paths(tmp_path):
    out, _ = _output(tmp_path)
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "status", out], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 1 and done.stderr == "", done.stdout + done.stderr  # a failed video
    lines = done.stdout.splitlines()
    assert lines[0].endswith(f"  {PATHS[0]}") and f"  {PATHS[1]}  error: " in lines[1]
