"""The fit's settings ([mesh.fit] in the config), apart from fit.py so loading a config needs no torch."""
from __future__ import annotations

from dataclasses import dataclass

# Metres a camera may stand above the floor: what the floor estimate accepts of a height it measured, and what
# the config accepts of a known one (camera_height_m).
CAMERA_HEIGHT_RANGE_M = (0.2, 100.0)


@dataclass(frozen=True)
class FitParams:
    focal_factor: float = 1.0  # focal length = this x the image diagonal (about 53 degrees across a 16:9 frame)
    low_conf_weight: float = 0.2  # weight (x score) of a joint below the house threshold (stages/scores.py)
    min_joints: int = 6  # confident keypoints (incl. 2 of the torso) a person-frame needs to be fitted alone
    min_joints_tracked: int = 3  # ...and with fewer, if its track has a body (fit_rows.py)
    iters_root: int = 25
    iters_full: int = 100
    iters_warm: int = 40  # stage 2 of a chunk whose tracks all continue from the previous chunk
    # Stage-2 iterations a new track's shape is held at its probed start: freed from the first step, it took
    # up the error of a pose still at rest (crowd_synth p10: an adult fitted as a 1.07 m child, 74 cm up).
    # 20 did as well on clips but cost photos' reprojected PCK (COCO 0.762 -> 0.757, OCHuman 0.548 -> 0.534).
    shape_after: int = 10
    shape_iters: int = 40  # stage-2 iterations with the shape free after those; then it is held again
    probe_frames: int = 6  # frames of a new track fitted from each starting shape
    probe_iters: int = 60  # stage-2 iterations of those fits: which start wins is settled before the poses are
    lr: float = 0.04
    lr_xy: float = 0.05  # x/z and y/z steps, as a fraction of lr: one step moves the body focal x step px
    lr_depth: float = 0.5  # log-depth step, as a fraction of lr
    robust_sigma: float = 0.1  # Geman-McClure scale, in person sizes (diagonal of the keypoints' box)
    root_sigma: float = 0.5  # stage 1's: nearly quadratic, since a cold start is far off and GM would be flat there
    w_pose: float = 1e-3
    w_limits: float = 1e-1
    w_shape: float = 1e-3
    w_accel: float = 0.01  # per (m/frame^2)^2 summed over the 17 keypoints: jitter measured in docs/bodies.md
    w_velocity: float = 0.1  # root translation, per (m/frame)^2: damps depth swings where few keypoints are seen
    # Plausibility (issue 19): where the video's floor is known, the standing foot on it (errors in
    # units of ground_tol metres); each track's stature near the population's (stages/body/ground.py:
    # STATURE_M, STATURE_SD_M), saturating so that evidence wins; an adult's age unless the body is small;
    # every fitted joint within its range (the body model's joint_limits).
    w_ground: float = 0.02
    ground_tol: float = 0.2  # a floor 1.5 degrees off is 0.25 m off at 10 m: a tight tolerance bends legs
    w_stature: float = 0.003  # a stature the floor measured
    w_stature_unmeasured: float = 0.03  # the population's, where nothing measured the person
    w_adult: float = 1.0
    w_joint_limits: float = 0.1
    # The floor estimate may also estimate the focal (ground.estimate_ground), but only people's verticals
    # converging toward a vanishing point tell it: on a level or composited view it drifts (crowd_synth p10:
    # 5507 px for a 1101 px diagonal), so by default the focal stays focal_factor x the diagonal.
    estimate_focal: bool = False
    # The scene's metric scale: one view gives it only through the population's mean stature, so every stature
    # of a scene whose adults average 4% short comes out ~4% tall (benchmarks/body_scenes.py). A camera at a
    # known height (mounted: CCTV, a tripod) sets it instead; 0 = unknown.
    camera_height_m: float = 0.0
    w_upright: float = 0.04  # standing people (a foot on the floor) upright within upright_free_deg of up
    upright_free_deg: float = 10.0
