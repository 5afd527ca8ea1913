"""summary and COCO/CSV export of a real output: the pipeline's pose stages on crowd_synth p05 frames,
written by the real sink (in this process, no Ray), then read back the way a user would."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.config import load_config, mode_file
from pipeline.evaluate import coco_results
from pipeline.models import Grouping, build_pose_models, choose_models, model_blobs, model_label
from stages.coco17 import NAMES as COCO17_NAMES
from stages.eval.metrics import coco_keypoint_eval
from stages.io.decode import VideoReader, video_id_for
from stages.io.export_table import csv_columns, export_coco, export_csv
from stages.io.sink import ParquetSink, read_video_rows, write_json
from stages.io.summary import OutputReadError, summary, summary_json, summary_lines
from stages.track.confirm import TrackOutput
from stages.track.track import Tracker

FRAMES = 16  # two decode batches: enough for tracks to confirm (min_hits 3), ~3 s of CPU inference
FAILED_ID = "broken-0badc0de"
FAILED_REASON = "moov atom not found"
# Shaped like pipeline/graph.stage_stats(), which needs Ray to produce for real.
STAGES = {"decode": {"actors": 1, "busy_s": 1.2, "calls": 2, "busy_fraction": 0.21},
          "pose": {"actors": 1, "busy_s": 4.4, "calls": 2, "busy_fraction": 0.93},
          "group": {"actors": 1, "busy_s": 0.5, "calls": 2, "busy_fraction": 0.12},
          "sink": {"actors": 1, "busy_s": 0.1, "calls": 4, "busy_fraction": 0.02, "track_s": 0.05}}


@pytest.fixture(scope="module")
def run(eval_dir, weights_dir, tmp_path_factory):
    """OUT with one ok video (the first FRAMES frames of p05, bottom-up, tracked as the sink actor
    does) and one failed one; plus the predictions the sink wrote, as project COCO results."""
    tmp = tmp_path_factory.mktemp("summary")
    out = tmp / "out"
    seq = eval_dir / "crowd_synth" / "p05"
    config = load_config(mode_file("bottomup"))
    models = choose_models(config)
    pose = build_pose_models(config, model_blobs(models), "cpu")
    grouping = Grouping(config)
    sink = ParquetSink(out)
    track = TrackOutput(Tracker(config.track))
    label = model_label(models, "bottomup")
    written = []  # exactly the batches the sink received, for the in-memory evaluation
    with VideoReader(seq / "video.mp4", batch_size=8, max_side=config.decode.max_side) as reader:
        meta = reader.meta
        sink.open(meta.video_id)
        for batch in reader:
            written += track.push(grouping(pose(batch, "bottomup", label)))
            if batch.frame_index[-1] + 1 >= FRAMES:
                break
    written += track.flush()
    for piece in written:
        sink.write(piece)
    sink.finish(meta.video_id, {"path": str(seq / "video.mp4"), "status": "ok", "width": meta.width,
                                "height": meta.height, "fps": meta.fps, "mode": "bottomup", "model": label,
                                "tracks": track.tracks})
    sink.fail(FAILED_ID, {"path": str(tmp / "broken.mp4"), "error": FAILED_REASON})
    write_json(out, "job.json", {"stages": STAGES, "videos": {}})
    # image_id = frame_index + 1: the export's one-video rule and how p05's gt numbers its frames.
    predictions = [r for piece in written for r in coco_results(piece, image_id_offset=1)]

    gt = json.loads((seq / "gt_coco.json").read_text())
    assert all(im["id"] == im["frame_index"] + 1 for im in gt["images"])
    frames = int(max(piece.frames.max() for piece in written if len(piece.frames))) + 1
    keep = {im["id"] for im in gt["images"] if im["frame_index"] < frames}
    small = {**gt, "images": [im for im in gt["images"] if im["id"] in keep],
             "annotations": [a for a in gt["annotations"] if a["image_id"] in keep]}
    gt_path = tmp / "gt_small.json"
    gt_path.write_text(json.dumps(small))
    return {"out": str(out), "video_id": meta.video_id, "predictions": predictions, "written": written, "gt": gt_path,
            "frames": frames, "tmp": tmp}


def _pycocotools_ap(gt_path, results_path) -> tuple[float, COCOeval]:
    """What a user does with the file: loadRes + COCOeval('keypoints') + summarize(), stock settings."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(str(results_path)), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0]), ev


def test_coco_export_scores_the_same_ap_as_the_projects_evaluation(run):
    path = run["tmp"] / "results.json"
    n = export_coco(run["out"], path)
    preds = run["predictions"]
    assert n == len(preds) > 0
    exported = json.loads(path.read_text())
    assert {r["image_id"] for r in exported} <= {p["image_id"] for p in preds}
    assert all(r["image_id"] == r["frame_index"] + 1 and r["video_id"] == run["video_id"] for r in exported)
    assert all(isinstance(r["track_id"], int) for r in exported)  # tracked: only confirmed tracks written

    ap_file, ev = _pycocotools_ap(run["gt"], path)
    # pipeline/evaluate.evaluate() scores with max_dets = max(20, predictions); the stock summarize()
    # keeps 20 per image, the same thing while no frame has more than 20 people.
    per_image = np.bincount([p["image_id"] for p in preds])
    assert per_image.max() <= 20
    ap_project = coco_keypoint_eval(run["gt"], preds, max_dets=max(20, len(preds)))["AP"]
    print(f"\n{run['frames']} frames, {n} results: pycocotools on the export AP {ap_file:.6f}, "
          f"coco_keypoint_eval on the predictions AP {ap_project:.6f}")
    assert ap_file == pytest.approx(ap_project, abs=1e-12)
    assert ap_file > 0.3  # the people were found; an id or coordinate mix-up scores near 0
    assert ev.params.imgIds == sorted(range(1, run["frames"] + 1))


def test_coco_export_of_one_named_video_and_refusals(run):
    path = run["tmp"] / "one.json"
    assert export_coco(run["out"], path, run["video_id"]) == len(run["predictions"])
    with pytest.raises(OutputReadError, match=FAILED_REASON):
        export_coco(run["out"], run["tmp"] / "failed.json", FAILED_ID)
    with pytest.raises(OutputReadError, match="no video 'nope'"):
        export_coco(run["out"], run["tmp"] / "nope.json", "nope")
    assert not (run["tmp"] / "failed.json").exists() and not (run["tmp"] / "nope.json").exists()


def _text(rows: list[dict], width: int = 80) -> str:
    return "\n".join(line for line, _ in summary_lines(rows, width))


def _blocks(text: str) -> dict[str, list[str]]:
    """video id -> its block's lines (a block starts at an unindented line naming the video)."""
    blocks, current = {}, None
    for line in text.splitlines():
        if line[:1] not in ("", " ") and len(line.split()) == 2:
            current = blocks.setdefault(line.split()[1], [])
        elif not line.startswith(" "):
            current = None
        if current is not None:
            current.append(line)
    return blocks


def test_coco_export_of_several_videos_numbers_images_per_video(run, tmp_path):
    """Two videos: image ids n * 10**6 + frame + 1, n in video-id order."""
    out = tmp_path / "out"
    sink = ParquetSink(out)
    for vid in ("a-00000000", "b-00000000"):
        sink.open(vid)
        for piece in run["written"]:
            sink.write(dataclasses.replace(piece, video_id=vid, model="m"))
        sink.finish(vid, {"path": vid, "status": "ok"})
    path = tmp_path / "both.json"
    n = len(run["predictions"])
    assert export_coco(str(out), path) == 2 * n
    results = json.loads(path.read_text())
    assert [r["video_id"] for r in results] == ["a-00000000"] * n + ["b-00000000"] * n
    assert all(r["image_id"] == (r["video_id"] == "b-00000000") * 10 ** 6 + r["frame_index"] + 1 for r in results)
    assert export_coco(str(out), path, "b-00000000") == n  # alone: frame + 1 again
    assert {r["image_id"] for r in json.loads(path.read_text())} == {p["image_id"] for p in run["predictions"]}


def test_summary_shows_the_failure_and_sensible_numbers(run):
    rows = {r["video_id"]: r for r in summary(run["out"])}
    assert list(rows) == sorted([run["video_id"], FAILED_ID])
    bad, ok = rows[FAILED_ID], rows[run["video_id"]]
    assert bad["status"] == "failed" and bad["error"] == FAILED_REASON
    assert all(bad[k] is None for k in ("frames", "fps", "people_median", "tracks", "track_len_median", "wall_s"))

    videos_row = next(r for r in read_video_rows(run["out"]) if r["video_id"] == run["video_id"])
    assert ok["status"] == "ok" and ok["error"] is None
    assert ok["frames"] == run["frames"] and ok["fps"] == 25.0
    # p05 has 5 people a frame; bottom-up finds most of them, the tracker keeps confirmed ones.
    assert 0 <= ok["people_min"] <= ok["people_median"] <= ok["people_max"] <= 10 and ok["people_median"] >= 2
    assert ok["tracks"] == videos_row["tracks"] >= 2
    assert 3 <= ok["track_len_median"] <= run["frames"]  # confirmed tracks: >= min_hits frames
    assert ok["wall_s"] == videos_row["wall_s"] > 0
    assert ok["frames_per_s"] == pytest.approx(run["frames"] / videos_row["wall_s"])
    assert ok["body_rows"] is None  # no mesh stage
    assert ok["stages"]["pose"] == {"busy_fraction": 0.93, "actors": 1}

    text = _text(list(rows.values()))
    blocks = _blocks(text)
    assert blocks[FAILED_ID][0].split() == ["failed", FAILED_ID] and f"error: {FAILED_REASON}" in blocks[FAILED_ID][2]
    # The input's path under the id: same-named files (crowd_synth/*/video.mp4) get ids that differ by a hash only.
    assert ok["path"].endswith("p05/video.mp4") and blocks[run["video_id"]][1] == " " * 10 + ok["path"]
    assert blocks[FAILED_ID][1].strip() == bad["path"]
    ok_block = " ".join(blocks[run["video_id"]])
    people = f"min {ok['people_min']}, median {ok['people_median']:g}, max {ok['people_max']}"
    assert ok_block.startswith("ok ") and f"{run['frames']} frames at 25.00 fps" in ok_block and people in ok_block
    assert "pose 0.93 x1" in text and "decode 0.21 x1" in text and "(last run)" in text  # the job's stages, once
    assert text.count("pose 0.93") == 1
    assert "bodies" not in text  # only for outputs with a mesh stage
    assert "40 bodies" in _text([{**ok, "body_rows": 40}])
    bodies = " ".join(_text([{**ok, "body_rows": 40, "body_tracks": 2, "body_skipped": 5,
                              "body_skipped_reasons": "few_confident_joints=5"}]).split())
    assert "40 bodies (2 tracks); 5 person-frames without a body: few_confident_joints=5" in bodies
    assert "without a body" not in _text([{**ok, "body_rows": 40, "body_tracks": 2, "body_skipped": 0}])

    doc = json.loads(summary_json(list(rows.values())))
    assert doc["stages"]["sink"]["busy_fraction"] == 0.02 and doc["stages_note"] == "last run"
    assert [v["video_id"] for v in doc["videos"]] == list(rows) and "stages" not in doc["videos"][0]


def test_summary_of_a_folder_that_is_no_output(tmp_path):
    with pytest.raises(OutputReadError, match="not a posepipe output"):
        summary(str(tmp_path))


def test_csv_reads_back_one_row_per_person_with_empty_cells_for_nan(run):
    path = run["tmp"] / "people.csv"
    n = export_csv(run["out"], path)
    assert n == len(run["predictions"])
    df = pd.read_csv(path)
    assert list(df.columns) == csv_columns() and len(df) == n
    assert df.columns[5:8].tolist() == [f"{COCO17_NAMES[0]}_{p}" for p in ("x", "y", "score")]
    assert (df["video_id"] == run["video_id"]).all() and df["frame_index"].between(0, run["frames"] - 1).all()

    # Not-found keypoints: an empty cell (read as NaN) for x and y, a 0 score; nothing else empty.
    preds = np.array([p["keypoints"] for p in run["predictions"]]).reshape(n, 17, 3)
    not_found = preds[:, :, 2] == 0
    assert not_found.any()  # the test means something only if some keypoints were missed
    xs = df[[f"{j}_x" for j in COCO17_NAMES]].to_numpy()
    scores = df[[f"{j}_score" for j in COCO17_NAMES]].to_numpy()
    np.testing.assert_array_equal(np.isnan(xs), not_found)
    assert not np.isnan(scores).any() and (scores[not_found] == 0).all()
    raw = path.read_text().splitlines()
    assert "nan" not in path.read_text().lower() and ",," in raw[1 + int(np.argmax(not_found.any(1)))]
    # Same rows as the COCO export, same order (frame, person): coordinates agree to float32.
    np.testing.assert_allclose(np.nan_to_num(xs), preds[:, :, 0], rtol=1e-6)


# A 73-character id (the longest video_id_for makes) and a failure reason of several hundred characters
# with a path in it: what an 80-column table cut to "s…" or folded over ~24 lines.
LONG_PATH = "/data/recordings/2024/site_b/camera_03/" + "long_descriptive_clip_name_" * 3 + "final.mp4"
LONG_ID = video_id_for(LONG_PATH)
LONG_ERROR = (f"{LONG_PATH}: decode failed at frame 1207 (pts 48.28 s): Invalid data found when processing "
              "input; " + "the container's index points past the end of the file, " * 6).strip()


def _with_long_failure(run, tmp_path) -> str:
    out = tmp_path / "out"
    shutil.copytree(run["out"], out)
    ParquetSink(out).fail(LONG_ID, {"path": LONG_PATH, "error": LONG_ERROR})
    return str(out)


def test_summary_lines_fit_the_width_and_keep_ids_and_reasons_whole(run, tmp_path):
    assert len(LONG_ID) == 73
    rows = summary(_with_long_failure(run, tmp_path))
    rows.append({**rows[0], "video_id": "cut-00000000", "status": "truncated",
                 "error": "decode error after frame 12: moov atom not found"})
    for width in (80, 60, 40):
        text = _text(rows, width)
        assert max(len(line) for line in text.splitlines()) <= width, text
        assert "…" not in text
        if width >= 75:  # the id fits a line: whole, on its own under the status
            assert f"  {LONG_ID}" in text.splitlines() and "failed" in text.splitlines()
        # Wrapped at spaces, the path (longer than a line) cut in pieces: every character is there, in order.
        assert "".join(LONG_ERROR.split()) in "".join(text.split())
    text = _text(rows, 80)
    assert "reason: decode error after frame 12: moov atom not found" in text
    assert "1 truncated" in text.splitlines()[0]


def _job(stages, finished: bool, history: list[dict]) -> dict:
    return {"stages": stages, "finished_at": 2.0e9 if finished else None, "videos": {}, "history": history}


def test_summary_keeps_the_last_real_runs_stage_statistics(run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(run["out"], out)
    real = {"started_at": 1.7e9, "finished_at": 1.7e9 + 60, "config_hash": "c", "stages": STAGES, "videos": {}}
    skipped = {**real, "started_at": 1.8e9, "stages": {}}  # a re-run with nothing to do: graph never built
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(1.7e9))
    for job, note in ((_job({}, True, [real, skipped]), f"run of {when}; the last run processed no video"),
                      (_job(None, False, [real]), f"run of {when}; the last run has not finished")):
        write_json(str(out), "job.json", job)
        rows = summary(str(out))
        assert rows[0]["stages"]["pose"] == {"busy_fraction": 0.93, "actors": 1} and rows[0]["stages_note"] == note
        assert "pose 0.93 x1" in _text(rows) and "none in job.json" not in _text(rows)
        assert json.loads(summary_json(rows))["stages_note"] == note
    write_json(str(out), "job.json", _job({}, True, [skipped]))
    assert summary(str(out))[0]["stages"] == {} and "none in job.json" in _text(summary(str(out)))


def test_summary_command_piped_is_plain_and_fits_80_columns(run, tmp_path):
    out = _with_long_failure(run, tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR")}
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "summary", out], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stdout + done.stderr  # failed videos
    lines = done.stdout.splitlines()
    assert done.stderr == "" and max(len(line) for line in lines) <= 80, done.stdout
    assert "…" not in done.stdout and "\x1b" not in done.stdout  # nothing cut, no colour codes in a pipe
    assert f"failed    {FAILED_ID}" in lines and f"  {LONG_ID}" in lines and f"ok        {run['video_id']}" in lines
    path = lines[lines.index(f"  {LONG_ID}") + 1:][:2]  # 129 characters: two pieces under the id
    assert [len(p) for p in path] == [80, 10 + len(LONG_PATH) - 70] and "".join(p[10:] for p in path) == LONG_PATH
    assert "pose 0.93 x1" in done.stdout
    doc = json.loads(subprocess.run([sys.executable, "-m", "pipeline.cli", "summary", out, "--json"], cwd=REPO,
                                    env=env, capture_output=True, text=True, timeout=120, check=False).stdout)
    assert {v["video_id"] for v in doc["videos"]} == {FAILED_ID, LONG_ID, run["video_id"]}
    assert next(v for v in doc["videos"] if v["video_id"] == LONG_ID)["error"] == LONG_ERROR
