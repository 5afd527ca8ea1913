"""Keypoint evaluation metrics as pure functions (numpy, scipy, pycocotools; never ray).

Conventions (shared by every function here):
- N instances (people), K joints, C coordinates; arrays are anything numpy accepts.
- ``mask``: bool[N, K], True = the joint is labelled and should be scored.
- The PCK family follows mmpose (``mmpose/evaluation/functional/keypoint_eval.py``), so numbers
  are comparable with published mmpose results: a joint with no scorable entry gets accuracy -1
  and is left out of averages; an average over nothing is 0.0.
- A predicted keypoint that was not found is NaN (see ``stages.batches.PoseBatch``); OKS counts it
  as infinitely far away, so it lowers the score instead of poisoning it with NaN.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.coco17 import SIGMAS, oks

if TYPE_CHECKING:  # pycocotools is imported where AP is computed: pose and sink actors use the kernels only
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval


COCO_STAT_KEYS: tuple[str, ...] = (
    "AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)",
)

# COCO-17 joint indices used by the torso normaliser.
_L_SHOULDER, _R_SHOULDER, _L_HIP, _R_HIP = 5, 6, 11, 12
# MPII-16 joint indices used by the head-size stand-in.
_MPII_UPPER_NECK, _MPII_HEAD_TOP = 8, 9


def oks_matrix(pred_xy: Any, gt: Any, gt_area: Any, sigmas: Any = SIGMAS) -> np.ndarray:
    """Object keypoint similarity of every prediction against every ground truth.

    pred_xy: float[P, K, 2] (NaN = keypoint not found); gt: float[G, K, 3] = (x, y, v);
    gt_area: float[G] (object area, the COCO scale s^2); sigmas: float[K].
    Returns float64[P, G] in [0, 1].

    COCO definition (pycocotools ``computeOks``, through ``stages.coco17.oks``): per joint
    e = d^2 / (2σ)^2 / (area + eps) / 2, OKS = mean of exp(-e) over the GT joints with v > 0.
    Unlike pycocotools, a GT with no labelled joint scores 0 (pycocotools measures a distance to its
    box instead), because tracking and NMS call this with predictions as "GT" and an empty pose must
    match nothing.
    """
    sig = np.asarray(sigmas, np.float64)
    k = len(sig)
    pred = np.asarray(pred_xy, np.float64)[..., :2].reshape(-1, k, 2)
    g = np.asarray(gt, np.float64).reshape(-1, k, 3)
    area = np.asarray(gt_area, np.float64).reshape(-1)
    if len(area) != len(g):
        raise ValueError(f"gt_area has {len(area)} entries for {len(g)} ground truths")
    # every predicted joint against the GT's labelled ones (v > 0), scaled by the GT's area
    return oks(pred, g[:, :, :2], np.ones(pred.shape[:2], bool), g[:, :, 2] > 0, area[None, :], sig)[0]


def shared_oks(xy: np.ndarray, conf: np.ndarray, area: np.ndarray, min_shared: int) -> np.ndarray:
    """COCO OKS of every pose pair over the joints confident in both: xy float[n, K, 2],
    conf bool[n, K], area float[n] (box areas; a pair uses their geometric mean as scale).
    Returns float64[n, n], 0 where fewer than min_shared joints are shared.

    Two views of one person often agree only in part: a top-down crop that slid onto its neighbour
    returns the neighbour's head and arms at good scores, a bottom-up person may be only the legs
    of a person top-down found whole. The joints both are sure of sit on the same spots, while plain
    OKS, counting every joint of one pose, stays well below a duplicate.
    """
    agree, shared = oks(xy, xy, conf, conf, np.sqrt(area[:, None] * area[None]))
    return np.where(shared >= max(min_shared, 1), agree, 0.0)


def _norm_distances(pred: Any, gt: Any, mask: Any, norm: Any) -> tuple[np.ndarray, np.ndarray]:
    """Distances with x/y divided per instance: pred, gt float[N, K, C], mask bool[N, K],
    norm float[N, C]. Returns (d float[N, K], valid bool[N, K]). An instance whose normaliser
    has a 0 (mmpose) or negative/non-finite component (garbage, so not scored) is fully masked."""
    pred = np.asarray(pred, np.float64)
    gt = np.asarray(gt, np.float64)
    norm = np.asarray(norm, np.float64).reshape(len(pred), -1)
    ok_norm = np.all(np.isfinite(norm) & (norm > 0), axis=1)
    valid = np.asarray(mask, bool) & ok_norm[:, None]
    safe = np.where(ok_norm[:, None], norm, 1.0)
    d = np.linalg.norm((pred - gt) / safe[:, None, :], axis=-1)
    return np.where(valid, d, 0.0), valid


def _acc_per_joint(correct: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """correct, valid bool[N, K] -> float[K]: fraction correct among valid, -1 without any."""
    n_valid = valid.sum(0)
    hits = (correct & valid).sum(0)
    return np.where(n_valid > 0, hits / np.maximum(n_valid, 1), -1.0)


def keypoint_pck_accuracy(
    pred: Any, gt: Any, mask: Any, thr: float, norm_factor: Any
) -> tuple[np.ndarray, float, int]:
    """PCK: pred, gt float[N, K, 2]; mask bool[N, K]; norm_factor float[N, 2] (x, y).

    A joint is correct when ||(pred - gt) / norm_factor|| < thr (strict, as mmpose).
    Returns (acc float[K] with -1 for joints without valid entries, avg_acc = mean of the
    acc >= 0 entries or 0.0, cnt = number of such joints).
    """
    d, valid = _norm_distances(pred, gt, mask, norm_factor)
    acc = _acc_per_joint(d < thr, valid)
    good = acc[acc >= 0]
    return acc, float(good.mean()) if len(good) else 0.0, len(good)


def keypoint_auc(pred: Any, gt: Any, mask: Any, norm_factor: float, num_thrs: int = 20) -> float:
    """Area under the PCK curve: pred, gt float[N, K, 2]; mask bool[N, K]; norm_factor scalar
    (pixels, both axes). Thresholds i/num_thrs for i in 0..num_thrs-1, each weighted 1/num_thrs
    (a left Riemann sum, as mmpose; threshold 0 always scores 0 since PCK is strict)."""
    n = len(np.asarray(pred))
    norm = np.full((n, 2), float(norm_factor))
    return float(sum(keypoint_pck_accuracy(pred, gt, mask, i / num_thrs, norm)[1]
                     for i in range(num_thrs)) / num_thrs)


def keypoint_nme(pred: Any, gt: Any, mask: Any, normalize_factor: Any) -> float:
    """Normalised mean error: mean over valid joints of ||(pred - gt) / normalize_factor[n]||.
    pred, gt float[N, K, 2]; mask bool[N, K]; normalize_factor float[N, 2]. 0.0 if none valid."""
    d, valid = _norm_distances(pred, gt, mask, normalize_factor)
    return float(d[valid].sum() / max(1, int(valid.sum())))


def keypoint_epe(pred: Any, gt: Any, mask: Any) -> float:
    """End-point error: mean Euclidean distance (pixels) over mask==True joints.
    pred, gt float[N, K, 2]; mask bool[N, K]. 0.0 if none valid."""
    pred = np.asarray(pred, np.float64)
    return keypoint_nme(pred, gt, mask, np.ones((len(pred), pred.shape[-1])))


def _heatmap_argmax(heatmaps: np.ndarray) -> np.ndarray:
    """float[N, K, H, W] -> float[N, K, 2] (x, y) of each maximum; -1 where the maximum is <= 0
    (empty heatmap), as mmpose's get_heatmap_maximum."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    idx = flat.argmax(-1)
    xy = np.stack([idx % w, idx // w], axis=-1).astype(np.float64)
    xy[np.take_along_axis(flat, idx[..., None], -1)[..., 0] <= 0] = -1
    return xy


def pose_pck_accuracy(
    output_heatmaps: Any, target_heatmaps: Any, mask: Any, thr: float = 0.05
) -> tuple[np.ndarray, float, int]:
    """PCK between argmax-decoded heatmaps: output, target float[N, K, H, W]; mask bool[N, K].
    Distances are normalised by (W, H) per axis. mmpose passes (H, W), the same for the usual
    square heatmaps; (W, H) is the right pairing for x, y. Returns as keypoint_pck_accuracy."""
    out = np.asarray(output_heatmaps)
    n, k, h, w = out.shape
    if k == 0:
        return np.zeros(0), 0.0, 0
    pred = _heatmap_argmax(out)
    gt = _heatmap_argmax(np.asarray(target_heatmaps))
    return keypoint_pck_accuracy(pred, gt, mask, thr, np.tile([[w, h]], (n, 1)))


def _pck_by_scale(pred: Any, gt: Any, mask: Any, scale: np.ndarray, thr: float
                  ) -> tuple[float, np.ndarray]:
    """Pooled and per-joint PCK with one scalar normaliser per instance (scale float[N]);
    instances with scale <= 0 or non-finite are not scored. Correct = d / scale <= thr."""
    pred = np.asarray(pred, np.float64)[..., :2]
    gt = np.asarray(gt, np.float64)[..., :2]
    scale = np.asarray(scale, np.float64).reshape(-1)
    d, valid = _norm_distances(pred, gt, mask, np.stack([scale, scale], 1))
    correct = (d <= thr) & valid
    total = int(valid.sum())
    overall = float(correct.sum() / total) if total else 0.0
    return overall, _acc_per_joint(correct, valid)


def pckh(pred: Any, gt: Any, mask: Any, head_size: Any, thr: float = 0.5
         ) -> tuple[float, np.ndarray]:
    """PCKh@thr: pred, gt float[N, K, 2]; mask bool[N, K]; head_size float[N] (pixels).

    A joint is correct when ||pred - gt|| <= thr * head_size, with `<=` as in the MPII evaluation
    script. head_size is the official 0.6 x head-box diagonal when a head box exists
    (``head_size_from_box``, e.g. PoseTrack's bbox_head), else the upper_neck-head_top segment
    (``mpii_head_size``; the MPII files here carry no head boxes).
    Returns (overall = correct / valid joints pooled over everything, per-joint float[K] with -1
    for joints never scored); instances with head_size <= 0 are skipped.
    """
    return _pck_by_scale(pred, gt, mask, np.asarray(head_size), thr)


def head_size_from_box(box_xywh: Any) -> np.ndarray:
    """float[N, 4] head boxes (x, y, w, h) -> float[N]: 0.6 x diagonal (MPII SC_BIAS)."""
    b = np.asarray(box_xywh, np.float64).reshape(-1, 4)
    return 0.6 * np.hypot(b[:, 2], b[:, 3])


def mpii_head_size(joints: Any) -> np.ndarray:
    """float[N, 16, 2] MPII joints -> float[N]: upper_neck(8)-head_top(9) distance."""
    j = np.asarray(joints, np.float64)
    return np.linalg.norm(j[:, _MPII_UPPER_NECK, :2] - j[:, _MPII_HEAD_TOP, :2], axis=-1)


def torso_size(gt: Any, mask: Any) -> np.ndarray:
    """COCO-17 torso diameter per instance: gt float[N, 17, 2+]; mask bool[N, 17] -> float[N].

    left_shoulder(5)-right_hip(12) when both are labelled, else right_shoulder(6)-left_hip(11),
    else 0 (instance not scorable). One diagonal keeps the normaliser defined with half the torso
    occluded; both diagonals are the same length on a frontal body."""
    g = np.asarray(gt, np.float64)[..., :2]
    m = np.asarray(mask, bool)
    diag1 = np.linalg.norm(g[:, _L_SHOULDER] - g[:, _R_HIP], axis=-1)
    diag2 = np.linalg.norm(g[:, _R_SHOULDER] - g[:, _L_HIP], axis=-1)
    has1 = m[:, _L_SHOULDER] & m[:, _R_HIP]
    has2 = m[:, _R_SHOULDER] & m[:, _L_HIP]
    return np.where(has1, diag1, np.where(has2, diag2, 0.0))


def pck_torso(pred: Any, gt: Any, mask: Any, thr: float = 0.2) -> tuple[float, np.ndarray]:
    """PCK@thr x torso diameter for COCO-17 (see ``torso_size``): pred, gt float[N, 17, 2];
    mask bool[N, 17]. Correct when ||pred - gt|| <= thr * torso. Returns as ``pckh``."""
    return _pck_by_scale(pred, gt, mask, torso_size(gt, mask), thr)


def _mean_masked_error(pred: np.ndarray, gt: np.ndarray, mask: Any) -> float:
    m = np.asarray(mask, bool)
    if not m.any():
        raise ValueError("mask selects no joint")
    return float(np.linalg.norm(pred - gt, axis=-1)[m].mean())


def mpjpe(pred: Any, gt: Any, mask: Any) -> float:
    """Mean per-joint position error: pred, gt float[N, K, C]; mask bool[N, K] (>= 1 True)."""
    return _mean_masked_error(np.asarray(pred, np.float64), np.asarray(gt, np.float64), mask)


def p_mpjpe(pred: Any, gt: Any, mask: Any) -> float:
    """MPJPE after a per-instance similarity fit (rotation, uniform scale, translation;
    Umeyama/Procrustes, reflections excluded) of pred onto gt. As mmpose, the fit uses all K
    joints (mask only selects the scored ones). Shapes as ``mpjpe``."""
    p = np.asarray(pred, np.float64)
    g = np.asarray(gt, np.float64)
    mu_p, mu_g = p.mean(1, keepdims=True), g.mean(1, keepdims=True)
    x1, x2 = p - mu_p, g - mu_g
    var1 = (x1 ** 2).sum((1, 2))
    cov = np.einsum("nkc,nkd->ncd", x1, x2)  # [N, C, C]
    u, _, vh = np.linalg.svd(cov)
    v = np.swapaxes(vh, 1, 2)
    z = np.broadcast_to(np.eye(cov.shape[1]), cov.shape).copy()
    # Flip the last axis when the best orthogonal map is a reflection, so det(R) = +1.
    z[:, -1, -1] = np.sign(np.linalg.det(u @ np.swapaxes(v, 1, 2)))
    r = v @ z @ np.swapaxes(u, 1, 2)
    tr = np.einsum("nii->n", r @ cov)
    # A collapsed prediction (all joints at one point) has no defined scale: map it to 0.
    scale = np.where(var1 > 0, tr / np.where(var1 > 0, var1, 1.0), 0.0)
    aligned = scale[:, None, None] * np.einsum("ncd,nkd->nkc", r, x1) + mu_g
    return _mean_masked_error(aligned, g, mask)


def n_mpjpe(pred: Any, gt: Any, mask: Any) -> float:
    """MPJPE after scaling pred by s = <pred, gt> / <pred, pred> per instance (least-squares
    scale about the origin, all K joints, as mmpose's 'scale' alignment). Shapes as ``mpjpe``."""
    p = np.asarray(pred, np.float64)
    g = np.asarray(gt, np.float64)
    pp = np.einsum("nkc,nkc->n", p, p)
    s = np.where(pp > 0, np.einsum("nkc,nkc->n", p, g) / np.where(pp > 0, pp, 1.0), 0.0)
    return _mean_masked_error(p * s[:, None, None], g, mask)


def _summarize_keypoints(ev: COCOeval) -> dict[str, float]:
    """COCOeval.summarize() for keypoints, but reading maxDets index 0 instead of looking for
    maxDets == 20 (pycocotools hard-codes 20, which yields -1 for any other max_dets)."""
    p = ev.params
    out: dict[str, float] = {}
    for key in COCO_STAT_KEYS:
        ap = key.startswith("AP")
        area = {"(M)": "medium", "(L)": "large"}.get(key[-3:], "all")
        s = ev.eval["precision"] if ap else ev.eval["recall"]  # [T,R,K,A,M] / [T,K,A,M]
        if key.endswith((".5", ".75")):
            s = s[np.isclose(p.iouThrs, float(key.split()[1]))]
        s = s[..., p.areaRngLbl.index(area), 0]
        valid = s[s > -1]
        out[key] = float(valid.mean()) if valid.size else -1.0  # -1: no GT in that range
    return out


def coco_keypoint_eval(
    gt: str | Path | COCO,
    results: Sequence[dict],
    max_dets: int = 20,
    image_ids: Iterable[int] | None = None,
    quiet: bool = True,
) -> dict[str, float]:
    """COCO OKS keypoint AP/AR (pycocotools COCOeval, iouType 'keypoints').

    gt: a COCO keypoints json path or a loaded COCO; results: COCO results list of
    {image_id, keypoints: 3K floats (x, y, score), score[, category_id]}. Only those fields are
    passed on (copied: loadRes writes into its input), so pycocotools derives each detection's
    area from its keypoint extent, as for official keypoint results, even when a bbox is present.
    max_dets: detections kept per image (COCO default 20; raise for crowds of 50);
    image_ids: evaluate only these images. Returns the 10 standard stats keyed by
    COCO_STAT_KEYS (-1 where no GT falls in a range); all zeros for an empty results list.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    sink = contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()
    with sink:
        coco_gt = gt if isinstance(gt, COCO) else COCO(str(gt))
        if len(results) == 0:
            return {k: 0.0 for k in COCO_STAT_KEYS}
        dets = [{"image_id": r["image_id"], "category_id": r.get("category_id", 1),
                 "keypoints": list(r["keypoints"]), "score": float(r["score"])} for r in results]
        ev = COCOeval(coco_gt, coco_gt.loadRes(dets), "keypoints")
        ev.params.maxDets = [int(max_dets)]
        if image_ids is not None:
            ev.params.imgIds = sorted({int(i) for i in image_ids})
        ev.evaluate()
        ev.accumulate()
    return _summarize_keypoints(ev)


def match_people(
    pred_xy: Any, pred_valid: Any, gt: Any, gt_area: Any, min_oks: float = 0.0
) -> list[tuple[int, int]]:
    """One-to-one prediction/GT pairs maximising total OKS (Hungarian assignment).

    pred_xy: float[P, K, 2]; pred_valid: bool[P, K] (invalid joints count as not found);
    gt: float[G, K, 3]; gt_area: float[G]. Returns (p, g) pairs sorted by p, keeping only pairs
    with OKS > min_oks (default 0: any overlap; pass e.g. 0.5 to count "found" people, since far
    apart people still have a tiny positive OKS).
    """
    pred = np.where(np.asarray(pred_valid, bool)[..., None], np.asarray(pred_xy, np.float64),
                    np.nan)
    oks = oks_matrix(pred, gt, gt_area)
    if oks.size == 0:
        return []
    from scipy.optimize import linear_sum_assignment  # lazily: 0.7 s, and actors import this module

    rows, cols = linear_sum_assignment(oks, maximize=True)
    return [(int(p), int(g)) for p, g in zip(rows, cols) if oks[p, g] > min_oks]


def mean_keypoint_error_px(
    pred_xy: Any, pred_valid: Any, gt: Any, pairs: Sequence[tuple[int, int]]
) -> float:
    """Mean pixel distance over matched pairs (from ``match_people``), pooled over every joint
    that is both predicted (pred_valid) and labelled (gt v > 0). pred_xy float[P, K, 2],
    pred_valid bool[P, K], gt float[G, K, 3]. NaN when no joint qualifies."""
    if len(pairs) == 0:
        return float("nan")
    p_idx, g_idx = np.asarray(pairs, int).T
    pred = np.asarray(pred_xy, np.float64)[p_idx, :, :2]
    g = np.asarray(gt, np.float64)[g_idx]
    use = np.asarray(pred_valid, bool)[p_idx] & (g[..., 2] > 0)
    if not use.any():
        return float("nan")
    return float(np.linalg.norm(pred - g[..., :2], axis=-1)[use].mean())
