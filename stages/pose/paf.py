"""Part Affinity Field grouping (OpenPose): limb scores, per-limb matching, assembly into people.

Pure numpy/scipy. Keypoint layout inside this module is OpenPose-18 (with the neck); people leave it
in COCO-17 order through `OPENPOSE18_TO_COCO17`.

OpenPose-18: 0 nose, 1 neck, 2 r_shoulder, 3 r_elbow, 4 r_wrist, 5 l_shoulder, 6 l_elbow,
7 l_wrist, 8 r_hip, 9 r_knee, 10 r_ankle, 11 l_hip, 12 l_knee, 13 l_ankle, 14 r_eye, 15 l_eye,
16 r_ear, 17 l_ear.
"""
from __future__ import annotations

import numpy as np

from stages.pose.params import GroupingParams

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


def _bilinear_taps(xy: np.ndarray, h: int, w: int):
    """Integer corners and weights of bilinear samples at pixel-centre coordinates xy float[..., 2],
    clamped at the border: (y0, y1, x0, x1, fy, fx)."""
    x = np.clip(xy[..., 0], 0.0, w - 1.0)
    y = np.clip(xy[..., 1], 0.0, h - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2) if w > 1 else np.zeros_like(x, np.int64)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2) if h > 1 else np.zeros_like(y, np.int64)
    return y0, np.minimum(y0 + 1, h - 1), x0, np.minimum(x0 + 1, w - 1), y - y0, x - x0


def _lerp2(v00, v01, v10, v11, fy, fx):
    top = v00 * (1 - fx) + v01 * fx
    bottom = v10 * (1 - fx) + v11 * fx
    return top * (1 - fy) + bottom * fy


def sample_bilinear(field: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples of a map at real-valued pixel-centre coordinates, clamped at the border.

    field: float[C, H, W]; xy: float[..., 2]. Returns float[C, ...].
    """
    y0, y1, x0, x1, fy, fx = _bilinear_taps(xy, *field.shape[1:])
    return _lerp2(field[:, y0, x0], field[:, y0, x1], field[:, y1, x0], field[:, y1, x1], fy, fx)


def samples_needed(params: GroupingParams) -> int:
    """Agreeing samples a valid pair needs: the least k with k / num_samples >= min_agree_fraction
    (the same float comparison as the mean of the agree flags); num_samples + 1 when none suffices."""
    n = params.num_samples
    return next((k for k in range(n + 1) if k / n >= params.min_agree_fraction), n + 1)


def _early_checks(params: GroupingParams) -> np.ndarray | None:
    """Sample indices of which at least one must agree for any pair to be valid, or None.

    A valid pair may miss at most `allowed` of its samples; any allowed + 1 samples that all miss
    reject it. Spread along the segment (none at all when no pair can be valid).
    """
    n = params.num_samples
    allowed = n - samples_needed(params)
    if allowed + 1 >= n:
        return None
    return np.unique(np.linspace(0, n - 1, allowed + 3)[1:-1].round().astype(np.int64))[: allowed + 1]


def limb_scores_all(pafs: np.ndarray, cand_a: list[np.ndarray], cand_b: list[np.ndarray],
                    params: GroupingParams) -> list[tuple[np.ndarray, np.ndarray]]:
    """PAF line integral of every candidate pair of every limb, in one vectorised pass.

    pafs: float[2L, H, W], limb k's field in channels 2k (x) and 2k + 1 (y); cand_a[k]: float[na_k, 2],
    cand_b[k]: float[nb_k, 2] peak positions of limb k's two parts, in the same map pixels.
    Returns per limb (score float[na_k, nb_k], valid bool[na_k, nb_k]). score = mean over
    `num_samples` points of the field projected on the unit vector a->b, plus a penalty
    min(0.5 * H / length - 1, 0) that discourages limbs longer than half the map height; valid =
    score > 0 and at least `min_agree_fraction` of the samples exceed `sample_threshold`.
    In a crowd most pairs join two people and no field runs between them: a few samples reject them
    (`_early_checks`), and such pairs get score -inf without the other samples being read.
    All limbs at once, not a loop of 19: per-limb numpy calls on a few dozen pairs each cost more in
    call overhead than in arithmetic.
    """
    na = np.array([len(a) for a in cand_a], np.int64)
    nb = np.array([len(b) for b in cand_b], np.int64)
    sizes = na * nb
    score = np.full(sizes.sum(), -np.inf)
    valid = np.zeros(sizes.sum(), bool)
    if sizes.any():
        # Pair p of limb k is (a_i, b_j) with p = i * nb_k + j, limbs one after the other.
        a = np.concatenate([np.repeat(np.asarray(c, np.float64), j, axis=0) for c, j in zip(cand_a, nb)])
        b = np.concatenate([np.tile(np.asarray(c, np.float64), (i, 1)) for c, i in zip(cand_b, na)])
        limb = np.repeat(np.arange(len(sizes)), sizes)
        vec = b - a  # [P, 2]
        length = np.linalg.norm(vec, axis=-1)
        unit = vec / np.maximum(length, 1e-6)[..., None]
        t = np.linspace(0.0, 1.0, params.num_samples)
        live = np.arange(len(a))
        checks = _early_checks(params)
        if checks is not None:
            early = _projections(pafs, limb, a, vec, unit, t[checks])
            live = np.flatnonzero((early > params.sample_threshold).any(axis=1))
        proj = _projections(pafs, limb[live], a[live], vec[live], unit[live], t)  # [P', S]
        h = pafs.shape[1]
        score[live] = proj.mean(axis=-1) + np.minimum(0.5 * h / np.maximum(length[live], 1e-6) - 1.0, 0.0)
        agree = (proj > params.sample_threshold).mean(axis=-1)
        valid[live] = (score[live] > 0) & (agree >= params.min_agree_fraction) & (length[live] > 1e-6)
    ends = np.cumsum(sizes)[:-1]
    return [(s.reshape(i, j), v.reshape(i, j))
            for s, v, i, j in zip(np.split(score, ends), np.split(valid, ends), na, nb)]


def _projections(pafs: np.ndarray, limb: np.ndarray, a: np.ndarray, vec: np.ndarray, unit: np.ndarray,
                 t: np.ndarray) -> np.ndarray:
    """Field of each pair's limb at a + t vec, projected on its unit vector: float[P, len(t)]."""
    points = a[:, None, :] + t[None, :, None] * vec[:, None, :]  # [P, S, 2]
    _, h, w = pafs.shape
    y0, y1, x0, x1, fy, fx = _bilinear_taps(points, h, w)
    flat = pafs.reshape(-1)
    base = (2 * limb * h * w)[:, None]  # the x field of each pair's limb; its y field is h * w further
    i00, i01, i10, i11 = (base + yy * w + xx for yy, xx in ((y0, x0), (y0, x1), (y1, x0), (y1, x1)))
    field_x = _lerp2(flat[i00], flat[i01], flat[i10], flat[i11], fy, fx)
    field_y = _lerp2(*(flat[i + h * w] for i in (i00, i01, i10, i11)), fy, fx)
    return field_x * unit[:, None, 0] + field_y * unit[:, None, 1]


def limb_scores(paf: np.ndarray, cand_a: np.ndarray, cand_b: np.ndarray,
                params: GroupingParams) -> tuple[np.ndarray, np.ndarray]:
    """`limb_scores_all` of one limb: paf float[2, H, W]; returns (score, valid) float/bool[na, nb]."""
    return limb_scores_all(paf, [cand_a], [cand_b], params)[0]


def match_limb(score: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """One-to-one matching of a limb's candidates maximising the summed score (Hungarian).

    Returns int[m, 2] index pairs (into cand_a, cand_b), only pairs that are valid.
    """
    if not valid.any():
        return np.zeros((0, 2), np.int64)
    # Invalid pairs get a cost no valid assignment would choose over leaving both unmatched;
    # they are filtered out after the solve.
    cost = np.where(valid, -score, 1e6)
    # scipy.optimize is imported here: it takes 0.7 s, and actors that never group import this module.
    from scipy.optimize import linear_sum_assignment

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
    parts not found; person score float32[M]); see `people_from_limbs`.
    """
    scored = limb_scores_all(pafs, [peaks_xy[a] for a, _ in LIMBS], [peaks_xy[b] for _, b in LIMBS], params)
    return people_from_limbs(peaks_xy, peak_scores, scored, params)


def people_from_limbs(peaks_xy: list[np.ndarray], peak_scores: list[np.ndarray],
                      scored: list[tuple[np.ndarray, np.ndarray]], params: GroupingParams) -> tuple[np.ndarray, np.ndarray]:
    """People from scored limbs: Hungarian per limb, assembly, COCO-17 keypoints.

    scored: per limb of LIMBS, (score float[na, nb], valid bool[na, nb]) as `limb_scores_all` gives
    (computed here or on a GPU). Returns (keypoints float32[M, 17, 3], person score float32[M]). The
    person score is the mean of the 17 keypoint scores with 0 for parts not found (as COCO bottom-up
    methods rank people): unlike the grouping's mean part+limb score, it ranks a complete person
    above a confident fragment.
    """
    limb_pairs, limb_pair_scores = [], []
    for score, valid in scored:
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
