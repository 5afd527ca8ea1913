"""Tracking evaluation: MOTA / IDF1 / ID switches (py-motmetrics, IoU >= 0.5), no video decoding.

    python benchmarks/tracking_eval.py [--seeds 0,1,2]

(a) the published tracker's MOT15 results on TUD-Campus / TUD-Stadtmitte (the mmtracking test
    numbers in shared/eval/expected/mot15_tud_clear_mot.json: MOTA 0.555, IDF1 0.624, 14 IDs);
(b) posepipe's Tracker (stages.track.track.track_boxes, default TrackParams, boxes only) on the TUD ground
    truth degraded by stages.eval.mot.degrade_detections (misses in runs, occlusion misses, jitter, false
    positives), one run per seed. Not comparable with (a) head to head: (a) tracked a real detector's
    boxes, (b) tracks synthetic detections whose failures follow our model;
(c) the same on crowd_synth/track_a (visible-mask boxes, a pillar, re-entries);
(d) track_a with poses: each detection carries its GT person's keypoints (visible ones jittered,
    occluded ones low-confidence or missing) and 5% of them mirrored left/right, tracked with OKS + IoU
    (flip correction on and off) next to boxes only on the same detections; flips counted against the
    injected ones.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from stages.batches import PoseBatch
from stages.coco17 import FLIP_PAIRS, NUM_KEYPOINTS
from stages.eval.mot import clear_mot_many, degrade_detections, load_mot
from stages.track.track import Tracker, TrackParams, track_boxes

REPO = Path(__file__).resolve().parents[1]
EVAL = Path(os.environ.get("POSEPIPE_EVAL", REPO.parent / "shared" / "eval"))
TUD = ("TUD-Campus", "TUD-Stadtmitte")
COLS = ("MOTA", "IDF1", "IDs", "FP", "FN", "Rcll")
FLIP_RATE = 0.05


def show(label: str, metrics: dict[str, dict[str, float]], extra: str = "") -> None:
    for seq, m in metrics.items():
        if len(metrics) == 2 and seq == "OVERALL":  # one sequence: its own row says it all
            continue
        vals = "  ".join(f"{k} {m[k]:.3f}" if k in ("MOTA", "IDF1", "Rcll") else f"{k} {int(m[k]):4d}" for k in COLS)
        print(f"{label:38s} {seq:15s} {vals}{extra if seq == 'OVERALL' or len(metrics) == 2 else ''}")


def missed_share(gt: np.ndarray, dets: dict) -> float:
    return 1 - sum(int((d[2] >= 0).sum()) for d in dets.values()) / len(gt)


def pose_batches(gt: np.ndarray, coco: dict, dets: dict, rng: np.random.Generator, chunk: int = 16):
    """Degraded detections -> (PoseBatches of `chunk` frames, injected bool per row in batch order)."""
    ann = {(a["frame_index"] + 1, a["track_id"]): a for a in coco["annotations"]}
    anns = coco["annotations"]
    frames = sorted(dets)
    out, injected = [], []
    for s in range(0, len(frames), chunk):
        fs = frames[s:s + chunk]
        kps, boxes, scores, fidx, inj = [], [], [], [], []
        for f in fs:
            for box, score, src in zip(*dets[f]):
                if src >= 0:  # a true detection: its person's GT pose
                    a, k = ann[(int(gt[src, 0]), int(gt[src, 1]))], None
                else:  # a false positive: a random person's pose squeezed into the box (what top-down gives)
                    a, k = anns[rng.integers(len(anns))], None
                g = np.asarray(a["keypoints"], np.float64).reshape(NUM_KEYPOINTS, 3)
                x, y, w, h = a["bbox"]
                if src < 0:
                    g[:, 0] = box[0] + (g[:, 0] - x) / max(w, 1) * (box[2] - box[0])
                    g[:, 1] = box[1] + (g[:, 1] - y) / max(h, 1) * (box[3] - box[1])
                sd = 0.02 * max(h, 1)  # keypoint noise ~ 2% of the person's (visible) height
                k = np.full((NUM_KEYPOINTS, 3), np.nan, np.float32)
                k[:, 2] = 0
                vis, occ = g[:, 2] == 2, (g[:, 2] == 1) & (rng.random(NUM_KEYPOINTS) < 0.5)
                k[vis, :2] = g[vis, :2] + rng.normal(0, sd, (vis.sum(), 2))
                k[vis, 2] = rng.uniform(0.5, 1.0, vis.sum())
                k[occ, :2] = g[occ, :2] + rng.normal(0, 2.5 * sd, (occ.sum(), 2))
                k[occ, 2] = rng.uniform(0.05, 0.3, occ.sum())
                flip = rng.random() < FLIP_RATE
                kps.append(k[FLIP_PAIRS] if flip else k)
                inj.append(flip)
                boxes.append(box)
                scores.append(score)
                fidx.append(f)
        n = len(fidx)
        fi = np.asarray(fidx, np.int64)
        out.append(PoseBatch(video_id="track_a", frames=np.asarray(fs, np.int64), frame_time_s=np.asarray(fs) / 25.0,
                             frame_index=fi, time_s=fi / 25.0,
                             keypoints=np.asarray(kps, np.float32).reshape(n, NUM_KEYPOINTS, 3),
                             bbox=np.asarray(boxes, np.float32).reshape(n, 4), score=np.asarray(scores, np.float32)))
        injected.extend(inj)
    return out, np.asarray(injected, bool)


def track_poses(batches: list[PoseBatch], params: TrackParams):
    """-> (MOT rows of confirmed tracks, output keypoints [P, 17, 3], flips_corrected)."""
    tracker = Tracker(params)
    outs = [tracker(b) for b in batches]
    rows = [(int(f), int(i), *map(float, (b[0], b[1], b[2] - b[0], b[3] - b[1])))
            for o in outs for f, i, b in zip(o.frame_index, o.track_id, o.bbox) if int(i) in tracker.confirmed_ids]
    return rows, np.concatenate([o.keypoints for o in outs]), tracker.flips_corrected


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    seeds = [int(s) for s in ap.parse_args().seeds.split(",")]
    gts = {s: load_mot(EVAL / "mot15_tud" / s / "gt" / "gt.txt") for s in TUD}
    print(f"{'(a) published results (mmtracking test)':38s}")
    show("", clear_mot_many({s: (gts[s], load_mot(EVAL / "mot15_tud" / "results" / f"{s}.txt")) for s in TUD}))
    print("(b) posepipe Tracker, boxes only, TUD GT degraded")
    for seed in seeds:
        dets = {s: degrade_detections(g, seed, with_source=True) for s, g in gts.items()}
        miss = np.mean([missed_share(gts[s], dets[s]) for s in TUD])
        show(f"    seed {seed}", clear_mot_many({s: (gts[s], track_boxes(dets[s])) for s in TUD}),
             f"   (GT boxes missed {miss:.2f})")
    track_a = EVAL / "crowd_synth" / "track_a"
    gt = load_mot(track_a / "gt_mot.txt")
    print("(c) posepipe Tracker, boxes only, crowd_synth/track_a GT degraded")
    perfect = degrade_detections(gt, 0, drop_fraction=0, occluded_miss=0, jitter=0, fp_per_frame=0)
    show("    undegraded GT boxes", clear_mot_many({"track_a": (gt, track_boxes(perfect))}))
    for seed in seeds:
        d = degrade_detections(gt, seed, with_source=True)
        show(f"    seed {seed}", clear_mot_many({"track_a": (gt, track_boxes(d))}),
             f"   (GT boxes missed {missed_share(gt, d):.2f})")
    print(f"(d) track_a with poses ({FLIP_RATE:.0%} mirrored), OKS + IoU vs boxes only on the same detections")
    coco = json.loads((track_a / "gt_coco.json").read_text())
    for seed in seeds:
        d = degrade_detections(gt, seed, with_source=True)
        batches, injected = pose_batches(gt, coco, d, np.random.default_rng(seed))
        raw = np.concatenate([b.keypoints for b in batches])
        for label, params in (("poses, flip correction", TrackParams()),
                              ("poses, no flip correction", TrackParams(flip_correction=False))):
            rows, kps, n_flips = track_poses(batches, params)
            swapped = ~np.all((kps == raw) | (np.isnan(kps) & np.isnan(raw)), axis=(1, 2))
            extra = (f"   flips: {n_flips} corrected, {int((swapped & injected).sum())}/{int(injected.sum())} "
                     f"injected fixed, {int((swapped & ~injected).sum())} wrong") if params.flip_correction else ""
            show(f"    seed {seed} {label}", clear_mot_many({"track_a": (gt, rows)}), extra)
        boxes_only = track_boxes({f: v[:2] for f, v in d.items()})
        show(f"    seed {seed} boxes only", clear_mot_many({"track_a": (gt, boxes_only)}))


if __name__ == "__main__":
    main()
