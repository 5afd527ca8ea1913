"""One camera and one ground per video, from where the tracked people's feet touch the floor.

A single view cannot tell a small near person from a large far one; a floor shared by everyone can.
Camera frame as in the fit: x right, y down, z forward, principal point at the image centre.

    n = (cos p sin r, -cos p cos r, -sin p)    up normal; pitch p > 0 looks down, roll r leans up toward +x
    floor n.X = -h; an upright person of stature S on it has a joint at fraction a_j at X_feet + a_j S n
    ankle midpoint pixel -> ray q:  X_ankle = q (a_ankle S - h) / (n.q)
    residuals: project(X_ankle + (a_j - a_ankle) S n) - pixel, for the shoulder midpoint (x, y) and nose (y)

With h = 1 the unknowns are p, r, the focal (when not given), and per track, constant over time, log(S_k / h)
and a lean of its own (a person's posture; its prior is upright): a track walking in depth pins the horizon, its
change of size with depth the tilt, and the lean of people's verticals away from the image centre, shared by
all, the focal; a weak prior ties the tracks' log(S_k / h) together, so people standing at different depths
also do. soft_l1 (scipy least_squares) with views and whole tracks that do not
fit trimmed between solves keeps mis-detections and off-floor people out. The images cannot give the metric
scale: h = STATURE_M / the typical S_k / h (median, then mean of the tracks near it, so children do not count).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.optimize import OptimizeResult, least_squares

from stages.body.ground_views import UprightViews, initial_horizon, upright_views
from stages.body.params import CAMERA_HEIGHT_RANGE_M
from stages.scores import HOUSE_THRESHOLD

# Joint heights as fractions of stature: Winter, Biomechanics and Motor Control of Human Movement (4th ed.,
# 2009), fig. 4.1 after Drillis & Contini (1966): ankle 0.039, shoulder 0.818, hip 0.530, eye 0.936; the nose
# tip sits a little under the eyes.
ANKLE_AT, SHOULDER_AT, NOSE_AT = 0.039, 0.818, 0.93
# Adult stature: men ~1.76 m, women ~1.63 m in Europe / North America (NCD-RisC 2016, eLife 5:e13410), sd
# ~0.07 m within a sex: a mixed crowd has mean ~1.70 m, sd ~0.09 m (5%, the scale's spread from one person).
STATURE_M = 1.70
STATURE_SD_M = 0.09
# Below ADULT_FROM_M a person may be a child (fit.py's adult prior fades out down to CHILD_M): the 5th
# percentile of adult women's stature is ~1.50 m, an 11-year-old's median ~1.45 m (WHO growth references).
ADULT_FROM_M, CHILD_M = 1.50, 1.30
DEFAULT_CAMERA_HEIGHT_M = 1.6  # eye level: what the fit assumed before there was a ground
# Relative sd of a stature the floor measured from a track whose views fit the upright model (~3% on synthetic
# scenes); a track whose views fit it worse (a bent or leaning pose, a child's proportions) is measured too,
# less surely: its sd grows with its typical view error (Ground.height_sd).
HEIGHT_SD = 0.04
# A track's own lean (its ankle-to-head line off the floor's normal, constant along it): people standing or
# walking lean a few degrees (a walker's trunk ~3-5 degrees forward; sway, a hip out), rarely more than 15.
LEAN_SD_DEG, MAX_LEAN_DEG = 5.0, 30.0
TRACK_OFF = 2.0  # noise scales a track's typical view may be off and still hold the floor (_FloorFit.kept)


def up_normal(pitch: float, roll: float) -> np.ndarray:
    """float64[3] camera-frame unit up vector for pitch, roll in radians (see the module docstring)."""
    cp = np.cos(pitch)
    return np.array([cp * np.sin(roll), -cp * np.cos(roll), -np.sin(pitch)])


@dataclass(frozen=True)
class Ground:
    """The floor seen from the camera. heights: track id -> stature in metres, height_sd: its relative sd, for
    every track with upright views (the floor itself is fitted to the inlier tracks only)."""

    image_size: tuple[int, int]  # (width, height) pixels
    focal: float  # pixels
    camera_height: float = DEFAULT_CAMERA_HEIGHT_M  # metres above the floor
    pitch_deg: float = 0.0  # > 0: looking down
    roll_deg: float = 0.0
    focal_estimated: bool = False  # True when the focal came from the scene, not the caller
    horizon_sd_px: float = 1e6  # the horizon row's standard error; 1e6 = unknown
    n_tracks: int = 0
    n_obs: int = 0
    inlier_fraction: float = 0.0
    heights: Mapping[int, float] = field(default_factory=dict, hash=False)
    height_sd: Mapping[int, float] = field(default_factory=dict, hash=False)
    ok: bool = False
    reason: str = ""

    @property
    def normal(self) -> np.ndarray:
        """float64[3] camera-frame unit normal of the floor, pointing up."""
        return up_normal(np.radians(self.pitch_deg), np.radians(self.roll_deg))

    def rays(self, uv: np.ndarray) -> np.ndarray:
        """float[N, 2] pixels -> float64[N, 3] camera rays with z = 1."""
        uv = np.asarray(uv, np.float64).reshape(-1, 2)
        c = np.array(self.image_size, np.float64) / 2
        return np.concatenate([(uv - c) / self.focal, np.ones((len(uv), 1))], 1)

    def backproject(self, uv: np.ndarray, height: float = 0.0) -> np.ndarray:
        """float[N, 2] pixels -> float64[N, 3] camera-frame points where their rays meet the plane `height`
        metres above the floor (0: the floor itself; ANKLE_AT x stature: an ankle); NaN rows for pixels on or
        above that plane's horizon, whose rays never reach it."""
        q = self.rays(uv)
        nq = q @ self.normal
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (height - self.camera_height) / nq
        t = np.where((nq < -1e-9) & (t > 0), t, np.nan)
        return q * t[:, None]

    def distance(self, points: np.ndarray) -> np.ndarray:
        """float[N, 3] camera-frame points -> float64[N] signed height above the floor, metres."""
        return np.asarray(points, np.float64).reshape(-1, 3) @ self.normal + self.camera_height

    def project(self, points: np.ndarray) -> np.ndarray:
        """float[N, 3] camera-frame points (z > 0) -> float64[N, 2] pixels."""
        p = np.asarray(points, np.float64).reshape(-1, 3)
        return self.focal * p[:, :2] / p[:, 2:3] + np.array(self.image_size, np.float64) / 2

    def horizon(self) -> np.ndarray:
        """float64[3] (a, b, c) with a u + b v + c = 0 for pixels (u, v) on the horizon, (a, b) a unit vector."""
        n = self.normal
        cx, cy = np.array(self.image_size, np.float64) / 2
        line = np.array([n[0], n[1], n[2] * self.focal - n[0] * cx - n[1] * cy])
        return line / np.hypot(n[0], n[1])

    @property
    def horizon_row(self) -> float:
        """The horizon's row at the image's centre column (above the centre when looking down)."""
        a, b, c = self.horizon()
        return float(-(a * self.image_size[0] / 2 + c) / b)


class _FloorFit:
    """The least-squares problem over x = [pitch, roll, log f, m, log(S_k/h) for each of K tracks, then each
    track's lean toward the camera and to its right (2K, radians)] (h = 1), every residual in noise units:
    shoulder-midpoint x, y and nose y of each view (N), then the prior that ties log(S_k/h) to its mean m (K),
    the leans' prior (2K), a weak pull of the focal toward its start and of the roll toward 0.

    A person holds a posture along a track (a walker's forward lean, a hip out, a head bent): held upright,
    every view of a leaning track is off the same way, and the one camera bends to take it up (synthetic
    scenes: each leaning track pulled the pitch a few degrees the same way, 6 degrees on seed 19, and the camera
    height 41% with it). A lean per track, its prior centred on upright, takes a track's own posture; what
    all tracks share stays the camera's."""

    def __init__(self, obs: UprightViews, size: tuple[int, int], f0: float, free_focal: bool, prior_sd: float):
        self.obs, self.f0, self.free, self.prior_sd = obs, f0, free_focal, prior_sd
        self.c = np.array(size, np.float64) / 2
        self.n, self.k = len(obs.track), len(obs.ids)
        # pixel noise plus the body's own sway, a share of the person's size
        self.sigma = 1.0 + 0.03 * np.hypot(*(obs.ankle - obs.shoulder).T)
        n = self.n
        self.view_rows = np.concatenate([np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2), np.arange(2 * n, 3 * n)])
        lean = np.full(2 * self.k, np.radians(MAX_LEAN_DEG))
        self.lo = np.concatenate([np.radians([-60.0, -45.0]), [np.log(f0 / 5), -8.0], np.full(self.k, -8.0), -lean])
        self.hi = np.concatenate([np.radians([85.0, 45.0]), [np.log(f0 * 5), 3.0], np.full(self.k, 3.0), lean])

    def residuals(self, x: np.ndarray, free: bool, keep: np.ndarray) -> np.ndarray:
        """float[3N + 3K + 2]; keep float[N] weighs each view (0: left out)."""
        o, n, k, c = self.obs, self.n, self.k, self.c
        f, s = (np.exp(x[2]) if free else self.f0), np.exp(x[4: 4 + k])[o.track]
        nrm = up_normal(x[0], x[1])
        q = np.concatenate([(o.ankle - c) / f, np.ones((n, 1))], 1)
        nq = np.minimum(q @ nrm, -1e-4)  # feet on or above the horizon: as far away as the model allows
        xa = q * ((ANKLE_AT * s - 1.0) / nq)[:, None]
        toward = np.array([0.0, 0.0, -1.0]) + nrm[2] * nrm  # on the floor, toward the camera
        toward /= np.linalg.norm(toward)
        lean = np.tan(x[4 + k:].reshape(2, k)[:, o.track])  # [2, N]
        axis = nrm + lean[0, :, None] * toward + lean[1, :, None] * np.cross(toward, nrm)
        axis /= np.linalg.norm(axis, axis=1, keepdims=True)  # float[N, 3] each view's ankle-to-head direction

        def pixel(at: float) -> np.ndarray:  # float[N, 2] where the joint at fraction `at` of stature projects
            xj = xa + ((at - ANKLE_AT) * s)[:, None] * axis
            return f * xj[:, :2] / np.maximum(xj[:, 2:3], 1e-4) + c

        w = keep / self.sigma
        return np.concatenate([((pixel(SHOULDER_AT) - o.shoulder) * w[:, None]).ravel(),
                               (pixel(NOSE_AT)[:, 1] - o.nose[:, 1]) * w * o.nose_ok,
                               (x[4: 4 + k] - x[3]) / self.prior_sd, x[4 + k:] / np.radians(LEAN_SD_DEG),
                               [(x[2] - np.log(self.f0)) / 0.5, x[1] / np.radians(10)]])

    def _lsq(self, fun, x: np.ndarray, sp: sparse.lil_matrix, lo: np.ndarray, hi: np.ndarray) -> OptimizeResult:
        with np.errstate(all="ignore"):
            return least_squares(fun, np.clip(x, lo + 1e-9, hi - 1e-9), jac_sparsity=sp, bounds=(lo, hi),
                                 loss="soft_l1", f_scale=1.0, x_scale="jac", max_nfev=300)

    def _track_sparsity(self, cols: int) -> sparse.lil_matrix:
        """The residuals' sparsity in the per-track unknowns (statures, leans), placed after `cols` others."""
        n, k = self.n, self.k
        sp = sparse.lil_matrix((3 * n + 3 * k + 2, cols + 3 * k), dtype=int)
        for j in range(3):  # a view's rows depend on its own track's stature and leans
            sp[self.view_rows, cols + j * k + np.tile(self.obs.track, 3)] = 1
        sp[3 * n + np.arange(3 * k), cols + np.arange(3 * k)] = 1
        return sp

    def solve(self, x: np.ndarray, keep: np.ndarray, free: bool) -> OptimizeResult:
        n, k = self.n, self.k
        sp = self._track_sparsity(4)
        sp[: 3 * n, : 3 if free else 2] = 1
        sp[3 * n: 3 * n + k, 3] = 1
        sp[-2, 2] = sp[-1, 1] = 1
        return self._lsq(lambda z: self.residuals(z, free, keep), x, sp, self.lo, self.hi)

    def statures(self, x: np.ndarray, free: bool) -> np.ndarray:
        """x with every track's log(S/h) and leans refitted to all its views, the camera held: a track left
        out under an earlier, rougher camera gets its stature back before it is judged again."""
        z = self._lsq(lambda z: self.residuals(np.concatenate([x[:4], z]), free, np.ones(self.n)), x[4:],
                      self._track_sparsity(0), self.lo[4:], self.hi[4:]).x
        return np.concatenate([x[:4], z])

    def view_errors(self, x: np.ndarray, free: bool) -> tuple[np.ndarray, np.ndarray]:
        """(float[N] each view's shoulder error, float[K] each track's median one), in units of the measured
        noise scale (median view error / 1.18, the Rayleigh median), so noisier keypoints do not empty the fit."""
        r, t = self.residuals(x, free, np.ones(self.n)), self.obs.track
        e = np.hypot(r[0: 2 * self.n: 2], r[1: 2 * self.n: 2])
        e = e / max(1.0, float(np.median(e)) / 1.18)
        return e, np.array([np.median(e[t == j]) for j in range(self.k)])

    def trim(self, x: np.ndarray, free: bool) -> np.ndarray:
        """float[N] 1 for the views kept (kept, below)."""
        return self.kept(*self.view_errors(x, free)).astype(float)

    def kept(self, e: np.ndarray, med: np.ndarray) -> np.ndarray:
        """bool[N] from view_errors' output: a view off by 3 noise scales is left out, and so is a whole track
        whose typical view is off by TRACK_OFF (a detection that wanders, someone on a stair or a seat)."""
        return (e < 3.0) & (med[self.obs.track] < TRACK_OFF)

    def horizon_sd(self, sol: OptimizeResult) -> float:
        """Standard error (pixels) of the horizon's row at the centre column, cy - f tan(p) / cos(r): depth
        from the feet rests on it, and a free focal and the pitch trade off along it when people's verticals
        do not converge, so it, not the pitch, is what must be known."""
        jac = sol.jac.toarray() if sparse.issparse(sol.jac) else np.asarray(sol.jac)
        cols = [0, 1] + ([2] if self.free else []) + list(range(3, 4 + 3 * self.k))
        dof = max(len(sol.fun) - len(cols), 1)
        cov = np.linalg.pinv(jac[:, cols].T @ jac[:, cols]) * max(1.0, 2 * float(sol.cost) / dof)
        p, r, f = sol.x[0], sol.x[1], (np.exp(sol.x[2]) if self.free else self.f0)
        grad = np.array([-f / (np.cos(p) ** 2 * np.cos(r)), -f * np.tan(p) * np.sin(r) / np.cos(r) ** 2,
                         -f * np.tan(p) / np.cos(r)])[: 3 if self.free else 2]
        m = len(grad)
        return float(np.sqrt(max(grad @ cov[:m, :m] @ grad, 0.0)))


def _fallback(size: tuple[int, int], focal: float, reason: str, n_obs: int = 0, inliers: float = 0.0) -> Ground:
    return Ground(image_size=size, focal=focal, n_obs=n_obs, inlier_fraction=inliers, ok=False, reason=reason)


def estimate_ground(keypoints: np.ndarray, track_id: np.ndarray, frame_index: np.ndarray, image_size: tuple[int, int],
                    focal: float | None = None, *, threshold: float = HOUSE_THRESHOLD, focal_factor: float = 1.0,
                    stature_m: float = STATURE_M, per_track: int = 60, min_obs: int = 8,
                    prior_sd: float = 0.15, max_horizon_sd: float = 0.1, camera_height: float | None = None) -> Ground:
    """One ground for a video from all its people rows: keypoints float[P, 17, 3] (x, y, score; COCO-17),
    track_id and frame_index int[P], image_size (width, height). focal (pixels) when known, else estimated
    from focal_factor x the image diagonal on. prior_sd: spread (log stature) of the prior that ties people's
    statures together. max_horizon_sd: the most the horizon's row may be unsure of, as a share of the feet's
    typical distance below it (depth from the feet is as unsure as that). camera_height (metres above the floor)
    when known, a mounted camera's: it sets the scene's scale, otherwise the adults' mean stature is stature_m,
    which a scene of a few people misses by their own mean's offset. Never raises on empty or odd input:
    the fallback is ok=False with the reason, a level camera at DEFAULT_CAMERA_HEIGHT_M, the given or default
    focal and no heights."""
    w, h = int(image_size[0]), int(image_size[1])
    f0 = float(focal) if focal else focal_factor * float(np.hypot(w, h))
    if w <= 0 or h <= 0 or not np.isfinite(f0) or f0 <= 0:
        return _fallback((max(w, 1), max(h, 1)), 1000.0, "no image size")
    try:
        obs = upright_views(keypoints, track_id, frame_index, threshold, per_track)
    except ValueError as err:  # keypoints of the wrong shape
        return _fallback((w, h), f0, f"unreadable keypoints: {err}")
    n, k = len(obs.track), len(obs.ids)
    if n < min_obs:
        return _fallback((w, h), f0, f"{n} upright views with confident feet (need {min_obs})", n)
    fit = _FloorFit(obs, (w, h), f0, focal is None, prior_sd)
    row0, ratio = initial_horizon(obs, h / 2, f0)
    ell0 = np.log(ratio / (SHOULDER_AT - ANKLE_AT + ANKLE_AT * ratio))  # the level-camera S/h of that ratio
    x0 = np.concatenate([[np.arctan2(h / 2 - row0, f0), 0.0, np.log(f0), np.median(ell0)], ell0, np.zeros(2 * k)])
    # the focal held first: a free focal is the weakest direction, the one outliers push along most cheaply
    sol = fit.solve(x0, np.ones(n), False)
    for i in range(2):
        x = fit.statures(sol.x, fit.free and i > 0)
        sol = fit.solve(x, fit.trim(x, fit.free and i > 0), fit.free)
    x = fit.statures(sol.x, fit.free)  # statures from all of a track's views, for tracks the last fit left out
    view_err, track_err = fit.view_errors(x, fit.free)
    inlier = fit.kept(view_err, track_err)
    horizon_sd = fit.horizon_sd(sol)
    f = float(np.exp(x[2])) if fit.free else f0
    reach = float(np.median(obs.ankle[:, 1] - (h / 2 - f * np.tan(x[0]) / np.cos(x[1]))))  # feet below horizon
    counts = np.bincount(obs.track[inlier], minlength=k)
    used = counts >= min(3, int(counts.max())) if counts.any() else counts > 0
    rel = np.exp(x[4: 4 + k])  # S_k / h
    cam_h = np.nan
    if used.any() and camera_height:
        cam_h = float(camera_height)
    elif used.any():  # the median, then the mean of the tracks near it: adults, without children or odd tracks
        log_rel = np.log(rel[used])
        near = np.abs(log_rel - np.median(log_rel)) < np.log(1.15)
        if not near.any():  # an even count split in two (an adult and a child): the median lies between them;
            # the taller side is the adults' (children, sitting and crouching people read short, a raised one rarely)
            near = log_rel > log_rel.max() - np.log(1.15)
        cam_h = stature_m / float(np.exp(log_rel[near].mean()))
    why = []
    if not np.all(np.isfinite(x)) or not np.isfinite(cam_h):
        why.append("the fit did not converge")
    elif not CAMERA_HEIGHT_RANGE_M[0] <= cam_h <= CAMERA_HEIGHT_RANGE_M[1]:
        why.append(f"camera height {cam_h:.2f} m is implausible")
    if inlier.mean() < 0.5:
        why.append(f"only {inlier.mean():.0%} of the views fit one floor")
    if not horizon_sd <= max_horizon_sd * max(reach, 1.0):
        why.append(f"horizon undetermined (row sd {horizon_sd:.0f} px, feet {reach:.0f} px below it): people "
                   "neither move in depth nor stand at different depths")
    if why:
        return _fallback((w, h), f0, "; ".join(why), n, float(inlier.mean()))
    return Ground(image_size=(w, h), focal=f, camera_height=cam_h, pitch_deg=float(np.degrees(x[0])),
                  roll_deg=float(np.degrees(x[1])), focal_estimated=fit.free, horizon_sd_px=horizon_sd,
                  n_tracks=int(used.sum()), n_obs=n, inlier_fraction=float(inlier.mean()),
                  heights={int(obs.ids[j]): float(rel[j] * cam_h) for j in range(k)},
                  height_sd={int(obs.ids[j]): HEIGHT_SD * max(1.0, float(track_err[j]) / TRACK_OFF) for j in range(k)},
                  ok=True)


def ground_from_columns(row: dict, image_size: tuple[int, int]) -> Ground:
    """The Ground a videos row's scene columns describe (ground_columns' inverse; not ok when none was found)."""
    if not row.get("ground_ok"):  # the camera columns are null then
        return Ground(image_size=image_size, focal=1.0, reason=row.get("ground_reason") or "")
    return Ground(image_size=image_size, focal=float(row["focal_px"]), camera_height=float(row["camera_height_m"]),
                  pitch_deg=float(row["camera_pitch_deg"]), roll_deg=float(row["camera_roll_deg"]), ok=True)


def ground_columns(ground: Ground) -> dict:
    """The videos row's scene columns: the floor and camera the fit assumed (ground_ok False: none, why in
    ground_reason; the camera columns are then null)."""
    ok = ground.ok
    return {"ground_ok": ok, "ground_reason": ground.reason or None,
            "camera_height_m": ground.camera_height if ok else None,
            "camera_pitch_deg": ground.pitch_deg if ok else None,
            "camera_roll_deg": ground.roll_deg if ok else None,
            "focal_px": ground.focal if ok else None}


def floor_grid(ground: Ground, spacing: float = 1.0, lines: int = 21, near: float = 0.5, far: float = 40.0,
               steps: int = 40) -> np.ndarray:
    """float64[L, steps, 2] pixel polylines of a grid on the floor (lines x lines lines `spacing` metres
    apart, centred in front of the camera, from `near` to `far` metres away), for `posepipe render` to
    show the floor the fit assumed; points behind the camera are NaN. Empty without a floor."""
    if not ground.ok:
        return np.zeros((0, steps, 2))
    up = ground.normal
    # Floor axes: "forward" is the optical axis flattened onto the floor, "right" completes them.
    forward = np.array([0.0, 0.0, 1.0]) - up[2] * up
    forward /= np.linalg.norm(forward)
    right = np.cross(up, forward)
    foot = -ground.camera_height * up  # the floor point under the camera
    half = (lines - 1) / 2 * spacing
    t = np.linspace(0, 1, steps)[:, None]
    segs = []
    for k in range(lines):
        off = -half + k * spacing
        a, b = foot + right * off + forward * near, foot + right * off + forward * far  # along the view
        segs.append(a + (b - a) * t)
        d = near + k * (far - near) / (lines - 1)  # across the view
        segs.append(foot + forward * d + right * (-half + 2 * half * t))
    pts = np.stack(segs)  # [2 lines, steps, 3]
    uv = ground.project(pts.reshape(-1, 3)).reshape(len(segs), steps, 2)
    uv[pts[..., 2] < 0.1] = np.nan
    return uv
