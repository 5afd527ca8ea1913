"""One scale for joint scores, whichever keypoint model made them.

MoveNet's scores and PP-TinyPose's heatmap peaks are different numbers: a TinyPose joint at 0.3
is not as sure as a MoveNet joint at 0.3. Everything downstream thresholds joints at one house
value (`HOUSE_THRESHOLD`, read by all of them: top-down's crowd checks, the hybrid merge, tracking's
OKS, the sink's kp_low_conf flags, mesh fitting; one number, so the people and bodies tables always
agree on which joint was sure), so
each model's raw joint scores are mapped onto the house scale once, where top-down people are made
(`topdown.TopDownKeypoints`, after the person score, which keeps the model's own scale):

    s_house = clip(s_raw, 0, 1) ** gamma,  gamma = log(HOUSE_THRESHOLD) / log(t_raw)

a monotone map of [0, 1] onto itself that sends the model's own confident-joint threshold t_raw to
the house's 0.3 (and keeps 0 and 1). Each model's t_raw sits in one place, the table in `zoo.py`,
derived by one rule for every model (benchmarks/joint_scores.py: the Youden-optimal cut between
labelled-visible and unlabelled joints on GT-box crops of the shared photo sets); MoveNet
Lightning's scores define the house scale and pass unchanged.
"""
from __future__ import annotations

import numpy as np

HOUSE_THRESHOLD = 0.3  # a joint scoring at least this is confident, for every model


def confident(keypoints: np.ndarray, threshold: float = HOUSE_THRESHOLD) -> np.ndarray:
    """keypoints float[..., 3] (x, y, score) -> bool[...]: the joint scores at least `threshold` and has a
    finite position (a missing joint is NaN there, whatever its score)."""
    kp = np.asarray(keypoints)
    return (kp[..., 2] >= threshold) & np.isfinite(kp[..., :2]).all(-1)


def to_house_scale(scores: np.ndarray, raw_threshold: float) -> np.ndarray:
    """float[...] raw scores of a model whose confident threshold is raw_threshold -> float32[...]
    on the house scale (raw_threshold -> HOUSE_THRESHOLD, monotone, [0, 1] -> [0, 1])."""
    if not 0.0 < raw_threshold < 1.0:
        raise ValueError(f"a raw joint threshold must lie in (0, 1), got {raw_threshold}")
    if raw_threshold == HOUSE_THRESHOLD:
        return np.asarray(scores, np.float32)  # the reference model: its scores are the scale
    gamma = np.log(HOUSE_THRESHOLD) / np.log(raw_threshold)
    return (np.clip(scores, 0.0, 1.0) ** gamma).astype(np.float32)
