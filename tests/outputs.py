"""Outputs for tests: a real one made without Ray (fitted_output), and reading a run's output back:
people rows in a canonical order, and equality of two runs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
from conftest import EVAL

from pipeline.config import load_config, mode_file

CLIP = EVAL / "videos" / "mmhuman3d_multi_person_demo.mp4"  # 40 frames, 2 people, 1080x1920 portrait
FITTED = 8  # frames of CLIP given bodies by fitted_output

ROW_KEY = ["video_id", "frame_index", "person_index"]
COMPARED = ["track_id", "kp_x", "kp_y", "kp_score", "bbox", "score", "mode"]


def config_with(tmp: Path, mode: str, toml: str = ""):
    """The mode's config overlaid with extra TOML text."""
    extra = tmp / f"extra_{abs(hash(toml))}.toml"
    extra.write_text(toml)
    return load_config(mode_file(mode), extra)


def people(out: Path, video_id: str | None = None) -> dict[str, list]:
    """The people table (of one video, or all) as columns, sorted by video, frame, person."""
    data = ds.dataset(Path(out) / "people", partitioning="hive")
    table = data.to_table(filter=ds.field("video_id") == video_id if video_id else None)
    return table.sort_by([(k, "ascending") for k in ROW_KEY]).to_pydict()


def assert_same_people(a: dict, b: dict, same_ids: bool = True) -> None:
    """Same rows, same keypoints (NaN where NaN), same boxes and scores."""
    assert len(a["frame_index"]) == len(b["frame_index"]) > 0
    for key in ROW_KEY[1:] + COMPARED:
        if key == "track_id" and not same_ids:
            continue
        x, y = a[key], b[key]
        if key in ("mode", "video_id"):
            assert x == y, key
        else:
            np.testing.assert_array_equal(np.asarray(x, np.float64), np.asarray(y, np.float64), err_msg=key)


def finished_row(meta, status: str = "ok") -> dict:
    """The videos-row fields a finished video's sink is given, from its VideoMeta."""
    return {"path": meta.path, "width": meta.width, "height": meta.height, "fps": meta.fps,
            "rotation": meta.rotation, "status": status}


def fitted_output(out: str) -> tuple[str, str]:
    """(OUT, video id) of CLIP with people (bottom-up, tracked), and bodies and body_tracks (Anny, whole
    tracks) of its first FITTED frames: the stage code `posepipe run --mesh` runs, in one process without
    Ray (~15 s). The videos row has the body counts but no floor (none is found on these few frames)."""
    import torch

    from pipeline.models import Grouping, build_pose_models, choose_models, model_blobs, model_label
    from stages.batches import TrackedRows
    from stages.body.fit import BodyFitter
    from stages.body.load import load_body_model
    from stages.body.stream import BodyStream
    from stages.body.table import body_summary
    from stages.io.decode import VideoReader, video_id_for
    from stages.io.sink import ParquetSink
    from stages.track.confirm import TrackOutput
    from stages.track.track import Tracker

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    cfg = load_config(mode_file("bottomup"))
    chosen = choose_models(cfg)
    models, grouping = build_pose_models(cfg, model_blobs(chosen), "cpu"), Grouping(cfg)
    label = model_label(chosen, "bottomup")
    vid = video_id_for(CLIP)
    sink, tracks = ParquetSink(out), TrackOutput(Tracker(cfg.track))
    sink.open(vid)
    pieces = []
    with VideoReader(CLIP, batch_size=8, max_side=cfg.decode.max_side, video_id=vid) as reader:
        meta = reader.meta
        for batch in reader:
            pieces += tracks.push(grouping(models(batch, "bottomup", label)))
    pieces += tracks.flush()
    for piece in pieces:
        sink.write(piece)
    # Bodies for the first FITTED frames only: the fit is the slow part (~0.1 s per person-frame on
    # a busy 2-core box) and a few frames show the projection as well as forty.
    rows = TrackedRows.concat(vid, pieces)
    rows = rows.take(rows.frame_index < FITTED)
    fitter = BodyFitter(load_body_model("anny", "", "cpu"), cfg.mesh.fit)
    bodies, body_tracks, skipped, _ = BodyStream(fitter).fit_whole(rows, (meta.width, meta.height))
    sink.write_table(vid, "bodies", bodies)
    sink.write_table(vid, "body_tracks", body_tracks)
    sink.finish(vid, {**finished_row(meta), "tracks": tracks.tracks, **body_summary(body_tracks, skipped)})
    torch.set_num_threads(threads)
    return out, vid
