"""The tracker's keypoint smoother: the One-Euro filter (Casiez et al. 2012), one per joint.

State = (x float[J, 2] last filtered position, dx float[J, 2] its filtered speed in px/s, t float[J]
time in s of the last filtered sample, NaN where the joint has none). Each joint keeps its own time:
a joint hidden for a while resumes with the long time step it really had. Pure functions of the
state; `track.py` keeps one state per track and takes min_cutoff, beta and d_cutoff from TrackParams.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class State(NamedTuple):
    x: np.ndarray  # float64[J, 2]
    dx: np.ndarray  # float64[J, 2]
    t: np.ndarray  # float64[J]


def init(joints: int) -> State:
    """-> a state with no joint filtered yet (the next confident sample of each joint starts it)."""
    return State(np.full((joints, 2), np.nan), np.zeros((joints, 2)), np.full(joints, np.nan))


def _alpha(cutoff: np.ndarray | float, dt: np.ndarray) -> np.ndarray:
    """Smoothing factor of a first-order low-pass with this cutoff (Hz) over time steps dt (s)."""
    return 1 / (1 + 1 / (2 * np.pi * cutoff * dt))


def step(state: State, xy: np.ndarray, ok: np.ndarray, now: float, min_cutoff: float, beta: float,
         d_cutoff: float) -> State:
    """Filter the joints ok bool[J] of xy float[J, 2], sampled at time now (s) -> the new state, whose
    x[ok] are the filtered positions (a joint's first sample passes unchanged).

    Joints outside ok neither move nor update the filter: they are low-confidence guesses, and a
    guess fed to the filter would drag the next confident frames with it."""
    x, dx, t = (a.copy() for a in state)
    new = ok & np.isnan(t)
    x[new], dx[new], t[new] = xy[new], 0.0, now
    upd = ok & ~new
    dt = np.maximum(now - t[upd], 1e-6)[:, None]
    sample = xy[upd].astype(np.float64)
    speed = dx[upd] + _alpha(d_cutoff, dt) * ((sample - x[upd]) / dt - dx[upd])
    cutoff = min_cutoff + beta * np.linalg.norm(speed, axis=-1, keepdims=True)
    x[upd] = x[upd] + _alpha(cutoff, dt) * (sample - x[upd])
    dx[upd], t[upd] = speed, now
    return State(x, dx, t)
