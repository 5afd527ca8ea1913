"""Tracker replay: the pose stages run once per video, their people cached; the tracker then replays
offline in seconds, so a tracking change is measured on real detections without re-running models.

    python benchmarks/tracker_replay.py [--seqs track_a,p10,p20,...] [--mode topdown] [--config FILE]
                                        [--set key=value ...] [--refresh]

Sequences: crowd_synth names (../shared/eval/crowd_synth/<name>), real videos (../shared/eval/videos,
by file name) or any folder holding video.mp4 (+ gt_mot.txt), e.g. crowd sequences made with
shared/tools/composite_crowd.py as held-out data. Per sequence the people the group stage hands the
tracker (PoseBatches with boxes, keypoints, appearance descriptors: what TrackWorker receives) are
computed in this process (decode -> pose models -> grouping, no Ray; the same classes the actors wrap)
and pickled with the frame thumbnails the descriptors came from (to try other descriptors offline) to
out/tracker_cache/<mode>-<config hash without [track]>/<name>.pkl, reused until --refresh.

Replay: Tracker + TrackOutput (confirmed tracks only, as the tracking actor) with the config's
[track] params, `--set` overriding fields of TrackParams (e.g. --set match_threshold=0.6). Scores:
with gt_mot.txt, MOTA / IDF1 / ID switches (py-motmetrics, IoU >= 0.5, the detector's box where there
is one, as `posepipe eval-track`); always, distinct track ids, median track length and tracks of
>= 25 frames (fewer, longer tracks for the same people is better where there is no ground truth).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
from pathlib import Path

import numpy as np

from pipeline.config import load_config, mode_file
from pipeline.inputs import config_hash
from pipeline.models import Grouping, build_pose_models, choose_models, model_blobs, model_label
from stages.batches import PoseBatch
from stages.eval.mot import clear_mot, load_mot
from stages.io.decode import VideoReader
from stages.track.confirm import TrackOutput
from stages.track.track import Tracker, TrackParams

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("POSEPIPE_WEIGHTS", str(REPO.parent / "shared" / "weights"))
EVAL = Path(os.environ.get("POSEPIPE_EVAL", REPO.parent / "shared" / "eval"))
CACHE = REPO / "out" / "tracker_cache"


def sequence_dir(name: str) -> tuple[Path, Path | None]:
    """-> (video path, gt_mot.txt or None) of a crowd_synth name, a video file name or a folder."""
    for folder in (EVAL / "crowd_synth" / name, Path(name)):
        if (folder / "video.mp4").is_file():
            gt = folder / "gt_mot.txt"
            return folder / "video.mp4", gt if gt.is_file() else None
    return EVAL / "videos" / name, None


def detect(config, video: Path) -> list[tuple[PoseBatch, np.ndarray | None, float]]:
    """The pose and group stages on every batch of a video, in order -> per batch (the tracker's input,
    the frame thumbnails its appearance descriptors came from or None, image px per thumbnail px)."""
    models = build_pose_models(config, model_blobs(choose_models(config)), "cpu")
    grouping = Grouping(config)
    label = model_label(choose_models(config), config.run.mode)
    d = config.decode
    with VideoReader(str(video), batch_size=d.batch_size, max_side=d.max_side or None,
                     video_id=video.parent.name if video.name == "video.mp4" else video.stem) as reader:
        outs = (models(batch, config.run.mode, label) for batch in reader)
        return [(grouping(out), out.thumbs, out.thumb_scale) for out in outs]


def cached(config, name: str, refresh: bool) -> list[tuple[PoseBatch, np.ndarray | None, float]]:
    # Tracking settings do not change the detections: one cache serves every --set / [track] variant.
    key = config_hash(dataclasses.replace(config, track=TrackParams())).removeprefix("sha256:")
    path = CACHE / f"{config.run.mode}-{key}" / f"{Path(name).name}.pkl"
    if path.is_file() and not refresh:
        # A pickle is code: this one is safe because only this script writes it (below), under the git-ignored
        # CACHE, keyed by the config's hash; never point CACHE at files from elsewhere.
        return pickle.loads(path.read_bytes())
    batches = detect(config, sequence_dir(name)[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batches))
    return batches


def replay(batches: list[PoseBatch], params: TrackParams) -> tuple[np.ndarray, Tracker]:
    """-> (MOT rows float64[N, 6] of the confirmed output: frame 1-based, id, x, y, w, h; the tracker)."""
    output = TrackOutput(Tracker(params))
    pieces = [p for b in batches for p in output.push(b)] + output.flush()
    rows = []
    for p in pieces:
        box = np.where(np.isfinite(p.det_bbox), p.det_bbox, p.bbox).astype(np.float64)
        rows.append(np.column_stack([p.frame_index + 1, p.track_id, box[:, :2], box[:, 2:] - box[:, :2]]))
    return np.concatenate(rows) if rows else np.zeros((0, 6)), output.tracker


def overrides(pairs: list[str], base: TrackParams) -> TrackParams:
    """["name=value", ...] -> base with those fields replaced (typed as the field's default)."""
    changes = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        old = getattr(base, name)
        changes[name] = value.lower() in ("1", "true", "yes") if isinstance(old, bool) else type(old)(value)
    return dataclasses.replace(base, **changes)


def score(name: str, rows: np.ndarray, tracker: Tracker) -> dict[str, float]:
    _, lengths = np.unique(rows[:, 1], return_counts=True)
    out = {"ids": len(lengths), "median_len": float(np.median(lengths)) if len(lengths) else 0.0,
           "long": int((lengths >= 25).sum()), "reid": tracker.reidentified}
    gt = sequence_dir(name)[1]
    if gt is not None:
        m = clear_mot(load_mot(gt), rows)
        out.update(MOTA=m["MOTA"], IDF1=m["IDF1"], IDs=int(m["IDs"]), FP=int(m["FP"]), FN=int(m["FN"]),
                   FM=int(m["FM"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqs", default="track_a,p10,p20,p50")
    ap.add_argument("--mode", default="topdown")
    ap.add_argument("--config", default=None)
    ap.add_argument("--set", nargs="*", default=[], help="TrackParams overrides, name=value")
    ap.add_argument("--refresh", action="store_true", help="recompute the cached detections")
    args = ap.parse_args()
    config = load_config(mode_file(args.mode), *([args.config] if args.config else []))
    params = overrides(args.set, config.track)
    for name in args.seqs.split(","):
        batches = [b for b, _, _ in cached(config, name, args.refresh)]
        s = score(name, *replay(batches, params))
        mot = f"MOTA {s['MOTA']:.3f}  IDF1 {s['IDF1']:.3f}  IDs {s['IDs']:3d}  FP {s['FP']:4d}  FN {s['FN']:4d}  " \
              f"FM {s['FM']:3d}  " if "IDF1" in s else ""
        print(f"{Path(name).name:18s} {mot}ids {s['ids']:3d}  median length {s['median_len']:5.0f}  "
              f">=25 frames {s['long']:3d}  reid {s['reid']}", flush=True)


if __name__ == "__main__":
    main()
