"""Part Affinity Field grouping (OpenPose): limb scores, per-limb matching, assembly into people.

Pure numpy/scipy. Keypoint layout inside this module is OpenPose-18 (with the neck); people leave it
in COCO-17 order through `OPENPOSE18_TO_COCO17`.

OpenPose-18: 0 nose, 1 neck, 2 r_shoulder, 3 r_elbow, 4 r_wrist, 5 l_shoulder, 6 l_elbow,
7 l_wrist, 8 r_hip, 9 r_knee, 10 r_ankle, 11 l_hip, 12 l_knee, 13 l_ankle, 14 r_eye, 15 l_eye,
16 r_ear, 17 l_ear.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

NUM_PARTS = 18
NECK = 1

# coco17[i] = openpose18[OPENPOSE18_TO_COCO17[i]]; the neck (1) has no COCO-17 slot and is dropped
# after grouping (it is the hub that joins the torso limbs, so it is needed until then).
OPENPOSE18_TO_COCO17 = np.array([0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10])

# The network's 19 limbs (part a, part b); limb k's field is PAF channel 2k (x) and 2k + 1 (y),
# pointing from a to b. The order matters for assembly: it walks outwards from the neck, so a
# limb's first part is normally already placed in a person when the limb is processed.
LIMBS = np.array([
    [1, 8], [8, 9], [9, 10], [1, 11], [11, 12], [12, 13], [1, 2], [2, 3], [3, 4], [2, 16],
    [1, 5], [5, 6], [6, 7], [5, 17], [1, 0], [0, 14], [0, 15], [14, 16], [15, 17],
])


@dataclass(frozen=True)
class GroupingParams:
    """Thresholds of the PAF grouping (values of the OpenPose / tf-pose-estimation papers' code)."""

    num_samples: int = 10  # points on each candidate segment for the line integral
    sample_threshold: float = 0.05  # a sample "agrees" when its PAF projection exceeds this
    min_agree_fraction: float = 0.8  # ...and at least this share of samples must agree
    min_parts: int = 4  # people with fewer assigned parts are dropped
    min_mean_score: float = 0.2  # ...and so are people whose mean part+limb score is lower


def sample_bilinear(field: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples of a map at real-valued pixel-centre coordinates, clamped at the border.

    field: float[C, H, W]; xy: float[..., 2]. Returns float[C, ...].
    """
    _, h, w = field.shape
    x = np.clip(xy[..., 0], 0.0, w - 1.0)
    y = np.clip(xy[..., 1], 0.0, h - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2) if w > 1 else np.zeros_like(x, np.int64)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2) if h > 1 else np.zeros_like(y, np.int64)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    fx = x - x0
    fy = y - y0
    top = field[:, y0, x0] * (1 - fx) + field[:, y0, x1] * fx
    bottom = field[:, y1, x0] * (1 - fx) + field[:, y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def limb_scores(paf: np.ndarray, cand_a: np.ndarray, cand_b: np.ndarray,
                params: GroupingParams) -> tuple[np.ndarray, np.ndarray]:
    """PAF line integral for every candidate pair of one limb, vectorised over all pairs.

    paf: float[2, H, W] (x and y field of the limb, map pixels); cand_a: float[na, 2],
    cand_b: float[nb, 2] peak positions in the same map pixels.
    Returns (score float[na, nb], valid bool[na, nb]). score = mean over `num_samples` points of
    the field projected on the unit vector a->b, plus a penalty min(0.5 * H / length - 1, 0) that
    discourages limbs longer than half the map height; valid = score > 0 and at least
    `min_agree_fraction` of the samples exceed `sample_threshold`.
    """
    na, nb = len(cand_a), len(cand_b)
    if na == 0 or nb == 0:
        return np.zeros((na, nb)), np.zeros((na, nb), bool)
    vec = cand_b[None, :, :].astype(np.float64) - cand_a[:, None, :]  # [na, nb, 2]
    length = np.linalg.norm(vec, axis=-1)
    unit = vec / np.maximum(length, 1e-6)[..., None]
    t = np.linspace(0.0, 1.0, params.num_samples)
    points = cand_a[:, None, None, :] + t[None, None, :, None] * vec[:, :, None, :]  # [na, nb, S, 2]
    field = sample_bilinear(paf, points)  # [2, na, nb, S]
    proj = field[0] * unit[..., None, 0] + field[1] * unit[..., None, 1]  # [na, nb, S]
    score = proj.mean(axis=-1) + np.minimum(0.5 * paf.shape[1] / np.maximum(length, 1e-6) - 1.0, 0.0)
    agree = (proj > params.sample_threshold).mean(axis=-1)
    valid = (score > 0) & (agree >= params.min_agree_fraction) & (length > 1e-6)
    return score, valid


def match_limb(score: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """One-to-one matching of a limb's candidates maximising the summed score (Hungarian).

    Returns int[m, 2] index pairs (into cand_a, cand_b), only pairs that are valid.
    """
    if not valid.any():
        return np.zeros((0, 2), np.int64)
    # Invalid pairs get a cost no valid assignment would choose over leaving both unmatched;
    # they are filtered out after the solve.
    cost = np.where(valid, -score, 1e6)
    rows, cols = linear_sum_assignment(cost)
    keep = valid[rows, cols]
    return np.stack([rows[keep], cols[keep]], axis=1).astype(np.int64)


def assemble_people(peak_scores: list[np.ndarray], limb_pairs: list[np.ndarray],
                    limb_pair_scores: list[np.ndarray], params: GroupingParams) -> tuple[np.ndarray, np.ndarray]:
    """Join matched limbs that share a peak into people.

    peak_scores: per part, float[n_part] scores of its peaks. limb_pairs[k]: int[m_k, 2] matched
    peak indices of limb k (indices into part LIMBS[k, 0] and LIMBS[k, 1] peaks);
    limb_pair_scores[k]: float[m_k] their PAF scores.
    Returns (parts int[M, 18] peak index per part or -1, score float[M] mean part+limb score).
    """
    people: list[np.ndarray] = []  # each: int[18] peak index, -1 where unassigned
    totals: list[float] = []  # summed peak + limb scores
    counts: list[int] = []  # number of scores summed
    owner: list[dict[int, int]] = [{} for _ in range(NUM_PARTS)]  # part -> {peak index: person index}
    for (a, b), pairs, scores in zip(LIMBS, limb_pairs, limb_pair_scores):
        for (ia, ib), s in zip(pairs, scores):
            pa, pb = owner[a].get(int(ia)), owner[b].get(int(ib))
            if pa is None and pb is None:
                person = np.full(NUM_PARTS, -1, np.int64)
                person[a], person[b] = ia, ib
                people.append(person)
                totals.append(float(peak_scores[a][ia] + peak_scores[b][ib] + s))
                counts.append(3)
                owner[a][int(ia)] = owner[b][int(ib)] = len(people) - 1
            elif pa is not None and pb is not None:
                if pa == pb:
                    continue
                # Two partial people joined by this limb: merge them when no part clashes.
                if np.any((people[pa] >= 0) & (people[pb] >= 0)):
                    continue
                taken = people[pb] >= 0
                people[pa][taken] = people[pb][taken]
                totals[pa] += totals[pb] + s
                counts[pa] += counts[pb] + 1
                for part in np.nonzero(taken)[0]:
                    owner[part][int(people[pa][part])] = pa
                people[pb][:] = -1
                totals[pb] = counts[pb] = 0
            else:
                # One end is placed: attach the other end when that person's slot is free.
                pid, part, peak = (pa, b, ib) if pa is not None else (pb, a, ia)
                if people[pid][part] >= 0:
                    continue
                people[pid][part] = peak
                totals[pid] += float(peak_scores[part][peak] + s)
                counts[pid] += 2
                owner[part][int(peak)] = pid
    if not people:
        return np.zeros((0, NUM_PARTS), np.int64), np.zeros(0)
    parts = np.stack(people)
    mean_score = np.array(totals) / np.maximum(np.array(counts), 1)
    keep = ((parts >= 0).sum(axis=1) >= params.min_parts) & (mean_score >= params.min_mean_score)
    return parts[keep], mean_score[keep]


def group_people(peaks_xy: list[np.ndarray], peak_scores: list[np.ndarray], pafs: np.ndarray,
                 params: GroupingParams) -> tuple[np.ndarray, np.ndarray]:
    """Whole bottom-up grouping of one frame.

    peaks_xy: per OpenPose-18 part, float[n_part, 2] peak positions in PAF-map pixels;
    peak_scores: per part float[n_part]; pafs: float[38, H, W].
    Returns (keypoints float32[M, 17, 3] = x, y, score in PAF-map pixels, COCO-17 order, nan/0 for
    parts not found; person score float32[M]). The person score is the mean of the 17 keypoint
    scores with 0 for parts not found (as COCO bottom-up methods rank people): unlike the grouping's
    mean part+limb score, it ranks a complete person above a confident fragment.
    """
    limb_pairs, limb_pair_scores = [], []
    for k, (a, b) in enumerate(LIMBS):
        score, valid = limb_scores(pafs[2 * k : 2 * k + 2], peaks_xy[a], peaks_xy[b], params)
        pairs = match_limb(score, valid)
        limb_pairs.append(pairs)
        limb_pair_scores.append(score[pairs[:, 0], pairs[:, 1]])
    parts, _ = assemble_people(peak_scores, limb_pairs, limb_pair_scores, params)
    m = len(parts)
    kp18 = np.full((m, NUM_PARTS, 3), np.nan, np.float32)
    kp18[:, :, 2] = 0.0
    for part in range(NUM_PARTS):
        has = parts[:, part] >= 0
        idx = parts[has, part]
        kp18[has, part, :2] = peaks_xy[part][idx]
        kp18[has, part, 2] = peak_scores[part][idx]
    kp17 = kp18[:, OPENPOSE18_TO_COCO17]
    return kp17, kp17[:, :, 2].mean(axis=1).astype(np.float32)
