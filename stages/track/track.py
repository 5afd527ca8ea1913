"""Tracking: stable person ids across the frames of one video (pure numpy/scipy; never ray).

    PoseBatch (track_id = -1) --Tracker (one per video, batches in frame order)--> PoseBatch (track_id >= 0)

Per frame: every live track predicts its box with a constant-velocity Kalman filter (DeepSORT's, on
centre x, y, width, height) and its pose by moving each joint's last confident position with the
pose's own velocity; detections are assigned to tracks by the Hungarian method on
    cost = (w_oks * (1 - OKS(predicted pose, detection)) + w_iou * (1 - IoU(predicted box, box))) / (w_oks + w_iou)
and pairs costing more than match_threshold stay unmatched. A pair with fewer than min_joints
confident joints in common (box detections, e.g. MOT, have none) costs 1 - IoU alone, so the same
code tracks boxes only (`track_boxes`). Unmatched detections start tracks; a track unmatched for
more than max_gap_frames frames (counted in frame indices) ends, so a short occlusion keeps the id.
With flip_correction, a detection whose left/right-swapped pose (FLIP_PAIRS) fits its track's
predicted pose clearly better (by flip_margin OKS) is swapped back, keypoints and scores together.
The box filter is in kalman.py, the cost in association.py, the optional keypoint smoothing
(One-Euro, params.smoothing) in one_euro.py; this file keeps the tracks and runs the phases.

Re-identification (params.reid, when batches carry appearance descriptors): when a new track is
confirmed (min_hits matched frames), its mean clothing colour (stages/track/appearance.py, averaged
over those frames) is compared with every confirmed track not seen since before the new one began,
coasting or past max_gap_frames (kept in `lost` for reid_max_gap_frames); a pair at least
reid_min_similarity alike, and near enough to where the old track was last seen (reid_max_speed body
heights per frame of the gap), is one person: the old track takes over the new one's motion state and
the new id is retired (`Tracker.merged`). Deciding at confirmation rather than on the first frame a
person reappears means min_hits descriptors instead of one, usually of someone still half hidden,
and the new id's rows are still held back then (stages/track/confirm.py), so the output carries the
old id from the person's first frame back (with drop_unconfirmed off nothing is held: those first
min_hits - 1 rows keep the new id). This is what keeps an id through an occlusion that motion
cannot bridge, or an exit and re-entry.

Ids: every row gets an id at once (the Parquet column must never be null), so a track takes the next
integer when it is created, and ids are never reused within a video. min_hits decides what a
*tentative* track (matched in fewer than min_hits frames) may do: it ends at its first missed frame
instead of coasting for max_gap_frames, so a one-off false detection cannot linger and steal a real
person's detection later. Its id just goes unused afterwards: ids are unique and stable, not
contiguous. `Tracker.confirmed_ids` lists the ids that reached min_hits (`track_boxes` uses it to drop
never-confirmed tracks from a MOT evaluation, as SORT-style trackers do).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from stages.batches import PoseBatch
from stages.coco17 import FLIP_PAIRS, NUM_KEYPOINTS
from stages.track import kalman, one_euro
from stages.track.appearance import similarity
from stages.track.association import association_cost, detections


def _hungarian(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # scipy.optimize is imported on first use: it takes 0.7 s, and every Ray process reading the
    # config imports this module for TrackParams.
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(cost)


@dataclass(frozen=True)
class TrackParams:
    """Tracker settings; costs are in [0, 1] (see the module docstring), gaps in frame indices."""

    enabled: bool = True  # off: every row gets an id of its own (no association; for A/B timing)
    drop_unconfirmed: bool = True  # output only tracks that reached min_hits (stages/track/confirm.py)
    w_oks: float = 0.5  # weight of 1 - OKS in the cost (pose detections only)
    w_iou: float = 0.5  # weight of 1 - IoU (the whole cost when a pair shares < min_joints joints)
    match_threshold: float = 0.7  # max cost of a match; 0.7 = SORT's IoU >= 0.3 for boxes
    max_gap_frames: int = 30  # frames a confirmed track survives unmatched (an occlusion of <= this keeps the id)
    min_hits: int = 3  # matched frames before a track is confirmed (tentative tracks end at their first miss)
    min_joints: int = 3  # confident joints a track and a detection must share for OKS to count
    flip_correction: bool = True
    flip_margin: float = 0.15  # OKS gain a left/right swap must bring to count (either way)
    flip_patience: int = 5  # cap of a track's left/right vote: flip_patience + 2 mirrored poses in a row are adopted
    smoothing: bool = False  # One-Euro filter on output keypoints (off: rows keep the model's output)
    min_cutoff: float = 1.0  # One-Euro: cutoff (Hz) at rest; lower = smoother, more lag
    beta: float = 0.01  # One-Euro: cutoff rises by beta per px/s of joint speed (less lag when moving)
    d_cutoff: float = 1.0  # One-Euro: cutoff (Hz) for the speed estimate
    fps: float = 25.0  # frame rate for One-Euro time steps where time_s is not finite
    reid: bool = True  # re-identify lost tracks by appearance (stages/track/appearance.py) after long gaps
    appearance_side: int = 256  # px, longest side of the frame thumbnails the descriptor is taken from
    reid_min_similarity: float = 0.85  # Bhattacharyya coefficient (mean descriptors) a re-identification needs
    reid_max_gap_frames: int = 300  # ... and is forgotten after this long (12 s at 25 fps)
    reid_max_speed: float = 0.1  # body heights per frame a re-identified person may have moved (a run at 25 fps)


def _cxcywh(b: np.ndarray) -> np.ndarray:
    # at least 1 px: a one-keypoint "box" has zero size, and the Kalman noise scales with the size
    return np.r_[(b[:2] + b[2:]) / 2, np.maximum(b[2:] - b[:2], 1.0)]


class _Track:
    """One person: Kalman box state, pose memory with its own velocity, One-Euro filter state."""

    def __init__(self, tid: int, frame: int, box_cxcywh: np.ndarray):
        self.id, self.frame, self.last_frame, self.hits = tid, frame, frame, 1
        self.born = frame
        self.mean, self.cov = kalman.init(box_cxcywh)
        # Each joint is remembered where (and when) it was last confidently seen; the prediction moves
        # the whole pose with one velocity measured on the pose itself. Per-joint velocities from noisy
        # keypoints extrapolate badly over gaps, and the box is no reference: a detector's box covers
        # the visible part, so it jumps and reshapes when a person is partly hidden while the visible
        # joints stay put (pose memory relative to the box mislabelled left/right after occlusions).
        self.kp = np.full((NUM_KEYPOINTS, 2), np.nan)
        self.kp_frame = np.zeros(NUM_KEYPOINTS, np.int64)
        self.kp_vel: np.ndarray | None = None  # px per frame; the box's until the pose has one
        self.euro = one_euro.init(NUM_KEYPOINTS)
        self.lr_votes = 0  # evidence that the memory's left/right labels are right (see vote)
        self.app: np.ndarray | None = None  # running mean of the appearance descriptor
        self.n_app = 0  # descriptors folded into it
        self.seen = box_cxcywh  # the last detected box (the Kalman state drifts while unseen)

    def predict(self, frame: int) -> None:
        if frame > self.frame:
            self.mean, self.cov = kalman.predict(self.mean, self.cov, frame - self.frame)
            self.frame = frame

    def pose(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (predicted keypoints float[17, 2] at frame, known bool[17])."""
        vel = self.mean[4:6] if self.kp_vel is None else self.kp_vel
        return self.kp + vel * (frame - self.kp_frame)[:, None], ~np.isnan(self.kp[:, 0])

    def adopt(self, new: _Track) -> None:
        """Re-identified: this (older) track is the person of the new one; take over its motion, pose
        and left/right state (its own is stale after the gap) and its hits. The appearance stays."""
        for name in ("mean", "cov", "frame", "last_frame", "kp", "kp_frame", "kp_vel", "euro", "lr_votes", "seen"):
            setattr(self, name, getattr(new, name))
        self.hits += new.hits

    def see(self, app: np.ndarray) -> None:
        """Fold an appearance descriptor into the running mean (halves a detection lacks keep theirs):
        the plain mean of the first 10, then an exponential one (weight 0.1) that follows slow changes.
        An exponential mean from the start would let the first frame, often of a person still half
        hidden, weigh 0.81 after three frames, when re-identification judges a new track."""
        app = app.astype(np.float64)
        self.n_app += 1
        if self.app is None:
            self.app = app
            return
        halves = app.reshape(2, -1).sum(-1) > 0
        mean = self.app.reshape(2, -1)
        w = max(1 / self.n_app, 0.1)
        mean[halves] = (1 - w) * mean[halves] + w * app.reshape(2, -1)[halves]

    def mirror(self) -> None:
        """Swap left and right in the pose memory and the filters (the memory was the mirrored one)."""
        self.kp, self.kp_frame = self.kp[FLIP_PAIRS], self.kp_frame[FLIP_PAIRS]
        self.euro = one_euro.State(*(a[FLIP_PAIRS] for a in self.euro))

    def vote(self, side: int, patience: int) -> bool:
        """Left/right evidence of the detection matched now (side: +1 agrees with the memory, -1
        mirrored, 0 undecided) -> whether the detection is the one to swap.

        Which is wrong, the detection or the memory of the person? The vote (+1 per detection agreeing,
        -1 per mirrored one, at most patience) decides: while it is >= 0 the memory wins; otherwise the
        memory is the odd one out (its first frame was mirrored, or the model labels this person the
        other way for good) and is swapped here instead, so one bad frame never flips a whole track."""
        if side > 0:
            self.lr_votes = min(self.lr_votes + 1, patience)
        elif side < 0 and self.lr_votes >= 0:
            self.lr_votes -= 1
            return True
        elif side < 0:
            self.mirror()
            self.lr_votes = min(1 - self.lr_votes, patience)
        return False

    def hit(self, frame: int, box_cxcywh: np.ndarray) -> None:
        """Matched at frame to a detection with this box: correct the Kalman state, count the hit."""
        self.seen = box_cxcywh
        if self.last_frame != frame:  # else a new track: it was initialised from this very box
            self.mean, self.cov = kalman.update(self.mean, self.cov, box_cxcywh)
            self.last_frame, self.hits = frame, self.hits + 1

    def remember(self, xy: np.ndarray, ok: np.ndarray, frame: int) -> None:
        """Store the confident joints (xy float[17, 2], ok bool[17]) seen at frame; update the pose velocity
        with the median displacement of the joints seen before (robust to a joint or two jumping)."""
        again = ok & ~np.isnan(self.kp[:, 0]) & (self.kp_frame < frame)
        if again.any():
            v = np.median((xy[again] - self.kp[again]) / (frame - self.kp_frame[again])[:, None], axis=0)
            self.kp_vel = v if self.kp_vel is None else (self.kp_vel + v) / 2
        self.kp[ok], self.kp_frame[ok] = xy[ok], frame


class Tracker:
    """PoseBatch -> PoseBatch with track_id filled; one instance per video, fed its batches in order.

    Output rows keep their order; track_id >= 0, unique within a frame and stable across frames and
    batches. keypoints change only by a left/right swap (flip correction, counted in flips_corrected)
    and, with params.smoothing, by the One-Euro filter, which moves confident joints only: a NaN
    joint stays NaN, low-confidence joints pass through, and scores are never changed.
    """

    def __init__(self, params: TrackParams = TrackParams()):
        self.params = params
        self.tracks: list[_Track] = []
        self.next_id = 0
        self.last_frame: int | None = None
        self.video_id: str | None = None
        self.flips_corrected = 0
        self.confirmed_ids: set[int] = set()
        self.lost: list[_Track] = []  # confirmed tracks past max_gap_frames, kept for re-identification
        self.reidentified = 0
        self.merged: dict[int, int] = {}  # id of a new track re-identified at confirmation -> the id it continues

    def __call__(self, batch: PoseBatch) -> PoseBatch:
        frames = batch.frames
        if self.video_id is not None and batch.video_id != self.video_id:
            raise ValueError(f"tracker of video {self.video_id!r} got a batch of {batch.video_id!r}")
        self.video_id = batch.video_id
        backwards = self.last_frame is not None and len(frames) and frames[0] <= self.last_frame
        if backwards or np.any(np.diff(frames) <= 0):
            raise ValueError(f"frames must increase across batches: got {frames[:1]}..{frames[-1:]} "
                             f"after frame {self.last_frame}")
        if not np.isin(batch.frame_index, frames).all():
            raise ValueError("a person's frame_index is not in the batch's frames")
        if not self.params.enabled:
            ids = np.arange(self.next_id, self.next_id + len(batch), dtype=np.int64)
            self.next_id += len(batch)
            self.last_frame = int(frames[-1]) if len(frames) else self.last_frame
            return dataclasses.replace(batch, track_id=ids)
        kps = batch.keypoints.copy()
        ids = np.full(len(batch), -1, np.int64)
        order = np.argsort(batch.frame_index, kind="stable")
        bounds = np.searchsorted(batch.frame_index[order], frames, side="left")
        ends = np.searchsorted(batch.frame_index[order], frames, side="right")
        for f, lo, hi in zip(frames.tolist(), bounds, ends):
            rows = order[lo:hi]
            app = batch.appearance[rows] if batch.appearance.shape[1] else None
            ids[rows] = self._frame(f, kps[rows], batch.bbox[rows], batch.time_s[rows], app, out=kps, rows=rows)
            self.last_frame = f
        return dataclasses.replace(batch, keypoints=kps, track_id=ids)

    def _frame(self, f: int, kp: np.ndarray, bbox: np.ndarray, t: np.ndarray, app: np.ndarray | None,
               out: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """One frame: kp float32[D, 17, 3], bbox float32[D, 4], t float64[D], app float16[D, DIM] or None
        -> ids int64[D]; writes the flip-corrected / smoothed keypoints into out[rows].

        Phases: expire the tracks out of time, predict the others to f, associate detections with them
        by motion and pose, give the rest new tracks, apply each match to its track and detection, and
        confirm the tracks that reached min_hits, re-identifying them with older tracks by appearance."""
        reid = self.params.reid and app is not None
        self._expire(f, reid)
        for tr in self.tracks:
            tr.predict(f)
        box, xy, ok = detections(kp, bbox)
        det = np.flatnonzero(np.isfinite(box).all(1))
        matches = self._associate(f, det, box, xy, ok)
        matches += self._birth(f, det, {j for _, j, _ in matches}, box)
        for tr, j, side in matches:
            self._apply(f, tr, j, side, kp, xy, ok, box, t, app)
        matches = self._confirm(f, matches, reid)
        ids = np.full(len(kp), -1, np.int64)
        for tr, j, _ in matches:
            ids[j] = tr.id
        for j in np.flatnonzero(ids < 0):  # nothing to track it by (no box, no keypoint): an id of its own
            ids[j], self.next_id = self.next_id, self.next_id + 1
        out[rows] = kp
        return ids

    def _expire(self, f: int, reid: bool) -> None:
        """Drop the tracks out of time at frame f from self.tracks: confirmed ones after max_gap_frames
        missed frames (frame indices, so a strided run still measures video time), tentative ones when
        the previous processed frame missed them. With reid, the confirmed ones with an appearance wait
        in self.lost, which forgets tracks unseen for more than reid_max_gap_frames."""
        p = self.params
        alive = [(f - tr.last_frame - 1 <= p.max_gap_frames) and
                 (tr.id in self.confirmed_ids or tr.last_frame == self.last_frame) for tr in self.tracks]
        if reid:
            self.lost += [tr for tr, a in zip(self.tracks, alive) if not a and tr.id in self.confirmed_ids
                          and tr.app is not None]
            self.lost = [tr for tr in self.lost if f - tr.last_frame <= p.reid_max_gap_frames]
        self.tracks = [tr for tr, a in zip(self.tracks, alive) if a]

    def _associate(self, f: int, det: np.ndarray, box: np.ndarray, xy: np.ndarray, ok: np.ndarray
                   ) -> list[tuple[_Track, int, int]]:
        """Live tracks (predicted to f) vs the trackable rows det int[K] of the frame's box float[D, 4],
        xy float[D, 17, 2], ok bool[D, 17]: Hungarian on association_cost, pairs up to match_threshold
        -> matches [(track, row, side)] with side as association_cost's."""
        if not self.tracks or not len(det):
            return []
        p = self.params
        pred_box = kalman.xyxy(np.stack([tr.mean[:4] for tr in self.tracks]))
        poses = [tr.pose(f) for tr in self.tracks]
        pxy, known = np.stack([q[0] for q in poses]), np.stack([q[1] for q in poses])
        cost, side = association_cost(pred_box, pxy, known, box[det], xy[det], ok[det], p.w_oks, p.w_iou,
                                      p.min_joints, p.flip_margin if p.flip_correction else None)
        r, c = _hungarian(np.where(cost <= p.match_threshold, cost, 1e6))
        return [(self.tracks[i], int(det[j]), int(side[i, j])) for i, j in zip(r, c) if cost[i, j] <= p.match_threshold]

    def _birth(self, f: int, det: np.ndarray, placed: set[int], box: np.ndarray) -> list[tuple[_Track, int, int]]:
        """A new tentative track, with the next id, for each row of det int[K] not in placed (a new
        person, or a new false detection) -> its matches [(track, row, 0)], in row order."""
        born = []
        for j in det:
            if j not in placed:
                tr = _Track(self.next_id, f, _cxcywh(box[j]))
                self.next_id += 1
                self.tracks.append(tr)
                born.append((tr, int(j), 0))
        return born

    def _apply(self, f: int, tr: _Track, j: int, side: int, kp: np.ndarray, xy: np.ndarray, ok: np.ndarray,
               box: np.ndarray, t: np.ndarray, app: np.ndarray | None) -> None:
        """Row j of the frame (kp float32[D, 17, 3], xy float64[D, 17, 2], ok bool[D, 17], box float64[D, 4],
        t float64[D], app float16[D, DIM] or None) is track tr's detection at frame f: settle left/right
        (row j of kp, xy, ok may be swapped in place), update the track's state, and with smoothing
        replace kp[j]'s confident positions by the One-Euro filter's."""
        p = self.params
        if tr.vote(side, p.flip_patience):
            kp[j] = kp[j][FLIP_PAIRS]
            xy[j], ok[j] = xy[j][FLIP_PAIRS], ok[j][FLIP_PAIRS]
            self.flips_corrected += 1
        tr.hit(f, _cxcywh(box[j]))
        tr.remember(xy[j], ok[j], f)
        if app is not None and app[j].any():
            tr.see(app[j])
        if p.smoothing:
            now = t[j] if np.isfinite(t[j]) else f / p.fps
            tr.euro = one_euro.step(tr.euro, kp[j, :, :2], ok[j], now, p.min_cutoff, p.beta, p.d_cutoff)
            kp[j, ok[j], :2] = tr.euro.x[ok[j]]

    def _confirm(self, f: int, matches: list[tuple[_Track, int, int]], reid: bool) -> list[tuple[_Track, int, int]]:
        """Add the matched tracks that reached min_hits to confirmed_ids; with reid, those just
        reaching it are first re-identified (_reidentify), which may replace them in matches by the
        older tracks they continue -> matches."""
        p = self.params
        if reid:
            new = [tr for tr, _, _ in matches if tr.hits >= p.min_hits and tr.id not in self.confirmed_ids
                   and tr.app is not None]
            if new:
                continues = self._reidentify(f, new)
                matches = [(continues.get(id(tr), tr), j, side) for tr, j, side in matches]
        self.confirmed_ids.update(tr.id for tr, _, _ in matches if tr.hits >= p.min_hits)
        return matches

    def _reidentify(self, f: int, new: list[_Track]) -> dict[int, _Track]:
        """Tracks confirmed at frame f (not yet in confirmed_ids) vs confirmed tracks not seen since
        before each began (coasting in self.tracks or in self.lost): Hungarian on the similarity of
        their mean descriptors, pairs >= reid_min_similarity and within reach only. Each pair's old
        track adopts the new one, which leaves self.tracks (its id goes to self.merged) -> {id(new
        track): old track}."""
        p = self.params
        born = min(n.born for n in new)
        cands = [tr for tr in self.tracks + self.lost if tr.id in self.confirmed_ids and tr.app is not None
                 and tr.last_frame < born]
        if not cands:
            return {}
        sim = np.nan_to_num(similarity(np.stack([tr.app for tr in cands]), np.stack([n.app for n in new])), nan=0.0)
        # Nobody teleports: the new track must be within reach of where the old one was last seen,
        # in body heights (the taller of the two boxes: a half-hidden person's box is short).
        last, now = np.stack([tr.seen for tr in cands]), np.stack([n.seen for n in new])
        gap = np.array([f - tr.last_frame for tr in cands], np.float64)
        height = np.maximum(last[:, None, 3], now[None, :, 3])
        dist = np.linalg.norm(now[None, :, :2] - last[:, None, :2], axis=-1) / height
        # ... and must have begun after the old one was last seen (two people seen at once are two).
        before = np.array([[tr.last_frame < n.born for n in new] for tr in cands])
        sim = np.where((dist <= 1 + p.reid_max_speed * gap[:, None]) & before, sim, 0.0)
        r, c = _hungarian(-np.where(sim >= p.reid_min_similarity, sim, -1e6))
        out = {}
        for i, k in zip(r, c):
            if sim[i, k] >= p.reid_min_similarity:
                old, n = cands[i], new[k]
                if old in self.lost:
                    self.lost.remove(old)
                    self.tracks.append(old)
                old.adopt(n)
                self.tracks.remove(n)
                self.merged[n.id] = old.id
                self.reidentified += 1
                out[id(n)] = old
        return out


def track_boxes(frames: dict[int, tuple[np.ndarray, np.ndarray]], params: TrackParams = TrackParams(),
                drop_unconfirmed: bool = True) -> list[tuple[int, int, float, float, float, float]]:
    """Box-only tracking for MOT evaluation: frames {frame: (boxes float[n, 4] xyxy, scores float[n])}
    -> rows (frame, id, x, y, w, h) with (x, y) the top-left corner, in frame order.

    Runs the same Tracker on keypoint-less PoseBatches (cost = 1 - IoU). With drop_unconfirmed, rows
    of tracks that never reached min_hits are left out afterwards (they are mostly false detections;
    an online caller, which cannot wait, keeps them and has their ids in Tracker.confirmed_ids)."""
    keys = sorted(frames)
    boxes = [np.asarray(frames[k][0], np.float32).reshape(-1, 4) for k in keys]
    scores = [np.asarray(frames[k][1], np.float32).reshape(-1) for k in keys]
    frame_of = np.repeat(np.asarray(keys, np.int64), [len(b) for b in boxes])
    n = len(frame_of)
    bbox = np.concatenate([*boxes, np.zeros((0, 4), np.float32)])
    batch = PoseBatch(video_id="boxes", frames=np.asarray(keys, np.int64), frame_time_s=np.asarray(keys, np.float64),
                      frame_index=frame_of, time_s=frame_of.astype(np.float64),
                      keypoints=np.full((n, NUM_KEYPOINTS, 3), np.nan, np.float32), bbox=bbox,
                      score=np.concatenate([*scores, np.zeros(0, np.float32)]))
    tracker = Tracker(params)
    ids = tracker(batch).track_id
    return [(int(f), int(i), float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1]))
            for f, i, b in zip(frame_of, ids, bbox) if not drop_unconfirmed or int(i) in tracker.confirmed_ids]
