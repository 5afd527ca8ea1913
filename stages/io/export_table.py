"""Handing a finished output's people on: COCO keypoint results JSON and a spreadsheet-friendly CSV.

    export_coco(out, "results.json")             # every finished video
    export_coco(out, "results.json", video_id)   # one video
    export_csv(out, "people.csv", video_id)

Both read OUT's people table (any pyarrow.fs URI) one video at a time, videos in id order, rows in
(frame_index, person_index) order, and write a local file; both return the rows written. Only
videos whose row says ok or truncated are exported (a failed video has no people); naming a video
that failed or is not in OUT is an OutputReadError.

COCO image ids (the results must name the ground truth's images):
- one video in the export (video_id given, or OUT holds one finished video):
  image_id = frame_index + 1, so frame 0 is image 1, matching a COCO ground truth whose images
  are the video's frames in order with ids from 1 (as crowd_synth's gt_coco.json);
- several videos: image_id = n * 10**6 + frame_index + 1, n = 0, 1, ... the video's position
  among the exported videos in id order (the first video's ids are those of a one-video export).
  A frame index past 10**6 - 2 would collide with the next video, so it is refused.
Each result also carries video_id, frame_index and track_id (null when untracked), which
pycocotools ignores, so the ids can always be mapped back.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from stages.coco17 import NAMES, NUM_KEYPOINTS
from stages.io.errors import OutputError
from stages.io.output import check_file_target
from stages.io.sink import DONE_STATUSES, read_video_rows
from stages.io.summary import OutputReadError, read_partition

__all__ = ["VIDEO_STRIDE", "csv_columns", "export_coco", "export_csv", "image_id_base"]

VIDEO_STRIDE = 10 ** 6  # image ids per video in a several-video COCO export
_PEOPLE_COLUMNS = ["video_id", "frame_index", "time_s", "person_index", "track_id", "kp_x", "kp_y",
                   "kp_score", "score"]


@contextlib.contextmanager
def _replacing(path: str | os.PathLike) -> Iterator[str]:
    """A temp name beside path, moved onto it only when the block finishes: an export that fails
    half-way leaves no half file that looks like a result (nor clobbers an earlier good one). A place
    that cannot be written is an OutputError before the block runs."""
    path = os.fspath(path)
    check_file_target(path)
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.tmp")
    try:
        # Made here, before any row is read, so an unwritable place is one line rather than a traceback.
        open(tmp, "wb").close()
    except OSError as exc:
        raise OutputError(f"{path}: cannot write there ({exc.strerror or exc})") from None
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def _videos(out: str, video_id: str | None) -> list[str]:
    """The ids to export, in id order: the named one (which must be finished) or every finished one."""
    rows = read_video_rows(out)
    if video_id is not None:
        row = next((r for r in rows if r["video_id"] == video_id), None)
        if row is None:
            have = ", ".join(r["video_id"] for r in rows) or "none"
            raise OutputReadError(f"{out}: no video {video_id!r} (videos: {have})")
        if row["status"] not in DONE_STATUSES:
            raise OutputReadError(f"{out}: video {video_id!r} {row['status']} ({row['error']}): no people to export")
        return [video_id]
    done = [r["video_id"] for r in rows if r["status"] in DONE_STATUSES]
    if not done:
        raise OutputReadError(f"{out}: no finished video to export ({len(rows)} videos rows)")
    return done


def _people(out: str, video_id: str):
    people = read_partition(out, "people", video_id, _PEOPLE_COLUMNS)
    return people.sort_by([("frame_index", "ascending"), ("person_index", "ascending")])


def _keypoints(people) -> np.ndarray:
    """float32[N, 17, 3] (x, y, score) of a people table; NaN where a keypoint was not found."""
    n = people.num_rows
    cols = [people[c].combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(n, NUM_KEYPOINTS)
            for c in ("kp_x", "kp_y", "kp_score")]
    return np.stack(cols, -1) if n else np.zeros((0, NUM_KEYPOINTS, 3), np.float32)


def image_id_base(position: int, videos: int) -> int:
    """What frame_index is added to for the video at `position` of `videos` exported (see module doc)."""
    return 1 if videos == 1 else position * VIDEO_STRIDE + 1


def export_coco(out: str, path: str | os.PathLike, video_id: str | None = None) -> int:
    """COCO keypoint results (pycocotools' COCO.loadRes format) of OUT's people, one per row.

    [{"image_id", "category_id": 1, "keypoints": [x, y, s] * 17, "score", "video_id",
    "frame_index", "track_id"}]; a keypoint not found (NaN) is written 0, 0, 0 (COCO has no missing
    value; its score is 0 already), "score" is the person score. Image ids: module docstring.
    Returns the results written. An export with no people is "[]", which loadRes refuses: there is
    nothing to score.
    """
    ids = _videos(out, video_id)
    written = 0
    # Written one video at a time, so memory is one video's people, whatever the output's size.
    with _replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("[")
        for position, vid in enumerate(ids):
            people = _people(out, vid)
            frames = people["frame_index"].to_numpy()
            if len(ids) > 1 and len(frames) and frames.max() >= VIDEO_STRIDE - 1:
                raise OutputReadError(f"{out}: video {vid!r} has frame {frames.max()}: too many frames for "
                                      f"image ids n * {VIDEO_STRIDE} + frame + 1; export it alone (video_id=)")
            image_ids = frames + image_id_base(position, len(ids))
            kp = np.nan_to_num(_keypoints(people), nan=0.0).reshape(-1, NUM_KEYPOINTS * 3)
            scores = people["score"].to_numpy(zero_copy_only=False)
            tracks = people["track_id"].to_pylist()
            for i in range(people.num_rows):
                result = {"image_id": int(image_ids[i]), "category_id": 1, "keypoints": kp[i].tolist(),
                          "score": float(scores[i]), "video_id": vid, "frame_index": int(frames[i]),
                          "track_id": tracks[i]}
                # allow_nan=False: a NaN score would make the file unreadable by strict JSON parsers.
                f.write(("," if written else "") + "\n" + json.dumps(result, allow_nan=False))
                written += 1
        f.write("\n]\n")
    return written


def csv_columns() -> list[str]:
    """Header of export_csv: video_id, frame_index, time_s, track_id, score, then per COCO-17 joint
    <joint>_x, <joint>_y, <joint>_score."""
    joints = [f"{name}_{part}" for name in NAMES for part in ("x", "y", "score")]
    return ["video_id", "frame_index", "time_s", "track_id", "score", *joints]


def _nan_to_null(values: np.ndarray) -> pa.Array:
    """NaN -> null, which the CSV writer leaves as an empty cell (a spreadsheet's blank, not 'nan')."""
    return pa.array(values, mask=np.isnan(values))


def _csv_table(people) -> pa.Table:
    kp = _keypoints(people)
    columns = {"video_id": people["video_id"], "frame_index": people["frame_index"], "time_s": people["time_s"],
               "track_id": people["track_id"],
               "score": _nan_to_null(people["score"].to_numpy(zero_copy_only=False))}
    for j, name in enumerate(NAMES):
        for c, part in enumerate(("x", "y", "score")):
            columns[f"{name}_{part}"] = _nan_to_null(kp[:, j, c])
    return pa.table(columns)


def export_csv(out: str, path: str | os.PathLike, video_id: str | None = None) -> int:
    """One CSV row per person per frame of OUT's finished videos (or one video); returns rows written.

    Columns: csv_columns(). Keypoints in video pixels as in the people table; empty cells where a
    keypoint was not found (NaN) and where a row has no track id. A keypoint not found scores 0.
    """
    ids = _videos(out, video_id)
    written = 0
    writer = None
    with _replacing(path) as tmp:
        try:
            for vid in ids:  # one video's people in memory at a time
                table = _csv_table(_people(out, vid))
                if writer is None:
                    # "needed": quote strings only (video ids), numbers stay numbers in a spreadsheet.
                    writer = pacsv.CSVWriter(tmp, table.schema,
                                             write_options=pacsv.WriteOptions(quoting_style="needed"))
                writer.write_table(table)
                written += table.num_rows
        finally:
            if writer is not None:
                writer.close()
    return written
