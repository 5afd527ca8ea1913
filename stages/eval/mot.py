"""Multi-object tracking metrics (CLEAR-MOT, IDF1 via py-motmetrics) and a detector failure model.

Rows: MOTChallenge rows as float64[N, >= 6] = (frame, id, x, y, w, h, ...), (x, y) the top-left
corner in pixels; any sequence of such tuples is accepted (e.g. `stages.track.track.track_boxes` output).

Matching follows py-motmetrics' `utils.compare_to_groundtruth(gt, hyp, 'iou', distth=1 - iou_threshold)`
(per frame over the union of GT and hypothesis frames, distance 1 - IoU, pairs with IoU below the
threshold never match), so the numbers equal mmtracking's MOT15 evaluation; the IoU is computed here
because motmetrics 1.4.0's `iou_matrix` calls `np.asfarray`, which numpy 2 removed.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import motmetrics as mm
import numpy as np

from stages.io.errors import OutputError

# motmetrics name -> the MOTChallenge abbreviation used in results tables (mm.io.motchallenge_metric_names).
_NAMES = {**mm.io.motchallenge_metric_names, "num_objects": "num_objects", "num_predictions": "num_predictions",
          "num_frames": "num_frames"}


def load_mot(path: str | Path) -> np.ndarray:
    """MOTChallenge txt (comma separated, frame 1-based) -> float64[N, columns]; [0, 10] for an empty file.
    A file that cannot be read, or rows that are not numbers of at least 6 columns, are an OutputError
    of one line (the CLI prints it with exit status 2)."""
    try:
        text = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise OutputError(f"{path}: cannot read MOTChallenge rows ({getattr(exc, 'strerror', None) or exc})") \
            from None
    if not text:
        return np.zeros((0, 10))
    try:
        rows = np.loadtxt(text.splitlines(), delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as exc:  # numpy names the line and the value it could not parse
        raise OutputError(f"{path}: not MOTChallenge rows ({str(exc).splitlines()[0]})") from None
    if rows.shape[1] < 6:
        raise OutputError(f"{path}: {rows.shape[1]} columns; MOTChallenge rows have frame, id, x, y, w, h, ...")
    return rows


def _rows(rows: Any) -> np.ndarray:
    a = np.asarray(rows, np.float64)
    return a.reshape(0, 6) if a.size == 0 else a.reshape(len(a), -1)


def _iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float[A, 4], float[B, 4] (x, y, w, h) -> IoU float[A, B], the operations of motmetrics' boxiou."""
    a, b = a[:, None], b[None]
    lo = np.maximum(a[..., :2], b[..., :2])
    hi = np.minimum(a[..., :2] + a[..., 2:], b[..., :2] + b[..., 2:])
    inter = np.prod(np.maximum(hi - lo, 0), axis=-1)
    union = np.prod(np.maximum(a[..., 2:], 0), -1) + np.prod(np.maximum(b[..., 2:], 0), -1) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter == 0, 0.0, inter / union)


def accumulate(gt_rows: Any, hyp_rows: Any, iou_threshold: float = 0.5) -> mm.MOTAccumulator:
    """One sequence -> motmetrics accumulator: per frame (GT or hypothesis frames, ascending), objects
    and hypotheses in row order, distance 1 - IoU, NaN (do not pair) where 1 - IoU > 1 - iou_threshold."""
    gt, hyp = _rows(gt_rows), _rows(hyp_rows)
    acc = mm.MOTAccumulator(auto_id=False)
    for f in np.union1d(gt[:, 0], hyp[:, 0]):
        g, h = gt[gt[:, 0] == f], hyp[hyp[:, 0] == f]
        dist = np.empty((0, 0))
        if len(g) and len(h):
            dist = 1 - _iou_xywh(g[:, 2:6], h[:, 2:6])
            dist = np.where(dist > 1 - iou_threshold, np.nan, dist)
        acc.update(g[:, 1].astype(np.int64), h[:, 1].astype(np.int64), dist, frameid=int(f))
    return acc


def clear_mot_many(sequences: Mapping[str, tuple[Any, Any]], iou_threshold: float = 0.5) -> dict[str, dict[str, float]]:
    """{name: (gt_rows, hyp_rows)} -> {name: metrics, ..., "OVERALL": metrics pooled over all sequences}.

    metrics: MOTA, MOTP (mean 1 - IoU of matches, a distance), IDF1, IDP, IDR, Rcll, Prcn, GT (ids),
    MT, PT, ML, FP, FN, IDs (identity switches), FM, IDt, IDa, IDm, num_objects, num_predictions, num_frames.
    """
    names = list(sequences)
    accs = [accumulate(*sequences[n], iou_threshold=iou_threshold) for n in names]
    mh = mm.metrics.create()
    summary = mh.compute_many(accs, names=names, metrics=list(_NAMES), generate_overall=True)
    return {name: {_NAMES[k]: float(v) for k, v in row.items()} for name, row in summary.to_dict("index").items()}


def clear_mot(gt_rows: Any, hyp_rows: Any, iou_threshold: float = 0.5) -> dict[str, float]:
    """One sequence: gt_rows, hyp_rows (frame, id, x, y, w, h, ...) -> metrics (see clear_mot_many)."""
    return clear_mot_many({"seq": (gt_rows, hyp_rows)}, iou_threshold)["seq"]


def degrade_detections(gt_rows: Any, seed: int, drop_fraction: float = 0.2, mean_miss_run: float = 6.0,
                       occluded_miss: float = 0.5, jitter: float = 0.05, fp_per_frame: float = 0.1,
                       mean_fp_run: float = 3.0, with_source: bool = False) -> dict[int, tuple[np.ndarray, ...]]:
    """GT boxes -> what a decent person detector would return: {frame: (boxes float32[n, 4] xyxy,
    scores float32[n])} for every frame from 1 to the last GT frame (empty arrays where nothing is
    found), track ids dropped. Seeded: the same arguments give the same detections.

    Failure model (each part is a way real detectors fail on pedestrian video):
    - misses in runs: per GT track a two-state Markov chain (seen / missed) whose missed state lasts
      mean_miss_run frames on average and covers drop_fraction of the track's frames in the long run
      (detectors lose a person for a stretch: motion blur, an odd pose, low contrast, not one frame at random);
    - occlusion misses: a box more than half covered by the union of nearer boxes (nearer = lower
      bottom edge, the usual ground-plane cue) is also missed with probability occluded_miss;
    - jitter: centre moved by N(0, jitter * size), width and height scaled by exp(N(0, jitter));
    - false positives: new ones appear at fp_per_frame per frame (Poisson), each a box of a random GT
      box's size at a random place within the GT boxes' extent, lasting a geometric number of frames
      with mean mean_fp_run, jittered like the rest (a clutter object fires for a few frames);
    - scores: detections U(0.5, 1), false positives U(0.3, 0.8) (overlapping, as in real detectors).
    with_source adds a third array per frame, int64[n]: the gt row each detection came from, -1 for
    a false positive (to hang ground-truth poses on the detections).
    """
    rng = np.random.default_rng(seed)
    gt = _rows(gt_rows)
    n_frames = int(gt[:, 0].max()) if len(gt) else 0
    keep = np.ones(len(gt), bool)
    # Gilbert-Elliott chain: P(missed -> seen) = 1/L; P(seen -> missed) = q with q / (q + 1/L) = drop_fraction.
    leave = 1 / max(mean_miss_run, 1.0)
    enter = drop_fraction * leave / max(1 - drop_fraction, 1e-9)
    for tid in np.unique(gt[:, 1]):
        idx = np.flatnonzero(gt[:, 1] == tid)
        idx = idx[np.argsort(gt[idx, 0], kind="stable")]
        missed = rng.random() < drop_fraction
        for i in idx:
            keep[i] = not missed
            missed = rng.random() >= leave if missed else rng.random() < enter
    # Occlusion: per frame, the share of each box covered by nearer boxes (rasterised on a coarse grid).
    for f in np.unique(gt[:, 0]):
        idx = np.flatnonzero(gt[:, 0] == f)
        for i in idx:
            x, y, w, h = gt[i, 2:6]
            near = [j for j in idx if j != i and gt[j, 3] + gt[j, 5] > y + h]
            if not near or w <= 0 or h <= 0:
                continue
            gx, gy = np.meshgrid(x + (np.arange(16) + 0.5) * w / 16, y + (np.arange(16) + 0.5) * h / 16)
            covered = np.zeros_like(gx, bool)
            for j in near:
                covered |= (gx >= gt[j, 2]) & (gx < gt[j, 2] + gt[j, 4]) & (gy >= gt[j, 3]) & (gy < gt[j, 3] + gt[j, 5])
            if covered.mean() > 0.5 and rng.random() < occluded_miss:
                keep[i] = False

    def noisy(xywh: np.ndarray) -> np.ndarray:
        c = xywh[:, :2] + xywh[:, 2:] / 2 + rng.normal(0, jitter, (len(xywh), 2)) * xywh[:, 2:]
        wh = xywh[:, 2:] * np.exp(rng.normal(0, jitter, (len(xywh), 2)))
        return np.concatenate([c - wh / 2, c + wh / 2], 1)

    out: dict[int, tuple[list, list, list]] = {f: ([], [], []) for f in range(1, n_frames + 1)}
    for i, box in zip(np.flatnonzero(keep), noisy(gt[keep, 2:6]) if keep.any() else np.zeros((0, 4))):
        out[int(gt[i, 0])][0].append(box)
        out[int(gt[i, 0])][1].append(rng.uniform(0.5, 1.0))
        out[int(gt[i, 0])][2].append(i)
    if len(gt):
        lo, hi = gt[:, 2:4].min(0), (gt[:, 2:4] + gt[:, 4:6]).max(0)
        for f in range(1, n_frames + 1):
            for _ in range(rng.poisson(fp_per_frame)):
                w, h = gt[rng.integers(len(gt)), 4:6]
                xy = rng.uniform(lo, np.maximum(hi - (w, h), lo))
                for g in range(f, min(f + rng.geometric(1 / max(mean_fp_run, 1.0)), n_frames + 1)):
                    out[g][0].append(noisy(np.array([[*xy, w, h]]))[0])
                    out[g][1].append(rng.uniform(0.3, 0.8))
                    out[g][2].append(-1)
    return {f: (np.asarray(b, np.float32).reshape(-1, 4), np.asarray(s, np.float32))
            + ((np.asarray(src, np.int64),) if with_source else ()) for f, (b, s, src) in out.items()}
