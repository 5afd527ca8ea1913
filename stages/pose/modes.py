"""Choosing between top-down and bottom-up: the `auto` switch and the `hybrid` merge.

auto: top-down is more accurate per person but costs O(people); bottom-up costs about the same for
any crowd. `AutoSwitch` follows the number of people seen and switches with hysteresis (two
thresholds and a minimum dwell), so a count hovering at the threshold does not flap.
hybrid: top-down people plus every bottom-up person that no top-down person explains, so a person
the detector missed is still found, and a person both branches found is written once.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from stages.batches import PoseBatch
from stages.eval.metrics import shared_oks
from stages.pose.params import AutoParams
from stages.scores import HOUSE_THRESHOLD


class AutoSwitch:
    """Per-video state: which mode the next frames use, from the people counts seen so far."""

    def __init__(self, params: AutoParams, start: str = "topdown"):
        if params.to_topdown_at >= params.to_bottomup_at:
            raise ValueError("auto mode needs to_topdown_at < to_bottomup_at (a hysteresis band)")
        self.params = params
        self.mode = start
        self.counts: list[int] = []
        self.since_switch = 0

    def observe(self, people_per_frame: np.ndarray) -> str:
        """Record people counts of processed frames (in order); returns the mode for what follows."""
        for n in np.asarray(people_per_frame, np.int64):
            self.counts = [*self.counts, int(n)][-self.params.window:]
            self.since_switch += 1
            if self.since_switch < self.params.min_dwell:
                continue
            recent = float(np.mean(self.counts))
            if self.mode == "topdown" and recent >= self.params.to_bottomup_at:
                self.mode, self.since_switch = "bottomup", 0
            elif self.mode == "bottomup" and recent <= self.params.to_topdown_at:
                self.mode, self.since_switch = "topdown", 0
        return self.mode


MIN_SHARED = 2  # keypoints two poses must both be sure of before their agreement says anything


def merge_hybrid(top: PoseBatch, bottom: PoseBatch, max_oks: float) -> PoseBatch:
    """Top-down people plus the bottom-up people of the same frames that none of them explains.

    A bottom-up person is that top-down person when, over the keypoints both are sure of (score >=
    HOUSE_THRESHOLD, at least MIN_SHARED of them), their OKS reaches `max_oks` (`shared_oks`, scaled by
    the geometric mean of the two people's box areas). Plain OKS
    against the top-down pose missed partial finds: bottom-up often assembles only a person's legs,
    or the arms apart from the torso, and those scored below any threshold while sitting exactly on
    a top-down person. They were written as a second person there, and tracking gave the pair of
    them alternating ids. Both batches must cover the same frames. Returns a PoseBatch with mode
    "hybrid"; det_score is NaN for the people that came from the bottom-up branch.

    Scores are tiered: a detector-confirmed person scores 0.5 + score / 2, a person only bottom-up
    found scores score / 2. Each branch keeps its own order, and every added person ranks below
    every top-down one, so the additions only extend the precision-recall curve at its tail: on
    the crowd benchmark, untiered scores let bottom-up people outrank top-down ones and cost AP.
    """
    if not np.array_equal(top.frames, bottom.frames):
        raise ValueError("hybrid merge needs both branches on the same frames")
    keep = np.ones(len(bottom), bool)
    for f in np.unique(bottom.frame_index):
        b = np.nonzero(bottom.frame_index == f)[0]
        t = np.nonzero(top.frame_index == f)[0]
        if len(t):
            kp = np.concatenate([top.keypoints[t], bottom.keypoints[b]])
            conf = (kp[:, :, 2] >= HOUSE_THRESHOLD) & np.isfinite(kp[:, :, 0])
            box = np.concatenate([top.bbox[t], bottom.bbox[b]])
            oks = shared_oks(kp[:, :, :2], conf, np.prod(np.clip(box[:, 2:] - box[:, :2], 0, None), axis=1), MIN_SHARED)
            keep[b] = oks[len(t):, :len(t)].max(axis=1) < max_oks
    merged = top.with_people([top, bottom.take(keep)])
    score = np.concatenate([0.5 + top.score / 2, bottom.score[keep] / 2]).astype(np.float32)
    order = np.lexsort((-score, merged.frame_index))  # frame order, best first
    return replace(merged, score=score, mode="hybrid").take(order)
