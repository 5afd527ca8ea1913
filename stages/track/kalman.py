"""The tracker's box filter: a constant-velocity Kalman filter on (cx, cy, w, h), as SORT/DeepSORT.

State float[8] = box and its velocity per frame; the noise scales with the box, so a near person and
a far one are equally sure of themselves. Pure functions of (mean, covariance); `track.py` keeps one
state per track.
"""
from __future__ import annotations

import numpy as np

# DeepSORT's Kalman noise, as fractions of the box size (std of position, std of velocity per frame).
_STD_POS, _STD_VEL = 1 / 20, 1 / 160


def init(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box z = (cx, cy, w, h) -> state mean float[8] (box, velocity per frame), covariance [8, 8]."""
    w, h = z[2], z[3]
    std = np.array([2 * _STD_POS * w, 2 * _STD_POS * h] * 2 + [10 * _STD_VEL * w, 10 * _STD_VEL * h] * 2)
    return np.r_[z, np.zeros(4)], np.diag(std ** 2)


def predict(mean: np.ndarray, cov: np.ndarray, dt: int) -> tuple[np.ndarray, np.ndarray]:
    f = np.eye(8)
    f[:4, 4:] = dt * np.eye(4)
    w, h = mean[2], mean[3]
    q = np.diag(np.array([_STD_POS * w, _STD_POS * h] * 2 + [_STD_VEL * w, _STD_VEL * h] * 2) ** 2) * dt
    mean = f @ mean
    mean[2:4] = np.maximum(mean[2:4], 1.0)  # a shrinking box extrapolated through a long gap stays a box
    return mean, f @ cov @ f.T + q


def update(mean: np.ndarray, cov: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.diag(np.array([_STD_POS * mean[2], _STD_POS * mean[3]] * 2) ** 2)
    s = cov[:4, :4] + r
    gain = np.linalg.solve(s, cov[:4]).T  # K = P H^T S^-1, [8, 4] (S symmetric)
    return mean + gain @ (z - mean[:4]), cov - gain @ s @ gain.T


def xyxy(z: np.ndarray) -> np.ndarray:
    """float[..., 4] (cx, cy, w, h) -> xyxy."""
    return np.concatenate([z[..., :2] - z[..., 2:4] / 2, z[..., :2] + z[..., 2:4] / 2], -1)
