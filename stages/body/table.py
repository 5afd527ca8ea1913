"""The bodies tables: one row per fitted person-frame, and one row per track for its shape.

    bodies/video_id=<id>/part-0.parquet        video_id, frame_index, time_s, track_id, body_model,
                                               bone_rotvec, root_rotvec, translation, focal_px,
                                               joint_x/y/z, joint_low_conf, reproj_px
    body_tracks/video_id=<id>/part-0.parquet   video_id, track_id, body_model, shape_names, shape, frames

Meshes are rebuilt from these parameters (rig.pose_full, model.vertices), never stored.
bone_rotvec is the local axis-angle of every bone of the model's rig, flattened (J x 3; anny's
Mixamo rig J = 52, SMPL 24), zeros for the bones the fit leaves at rest.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from stages.coco17 import NUM_KEYPOINTS

if TYPE_CHECKING:  # torch is imported by fit.py: the sink actor, which uses this module, need not
    from stages.body.fit_rows import FitResult

_KP = pa.list_(pa.float32(), NUM_KEYPOINTS)


def bodies_schema(num_bones: int) -> pa.Schema:
    return pa.schema([
        ("video_id", pa.string()),
        ("frame_index", pa.int64()),
        ("time_s", pa.float64()),
        ("track_id", pa.int64()),
        ("body_model", pa.string()),
        ("bone_rotvec", pa.list_(pa.float32(), 3 * num_bones)),  # local axis-angle per bone, J x 3 flattened
        ("root_rotvec", pa.list_(pa.float32(), 3)),  # model -> camera orientation
        ("translation", pa.list_(pa.float32(), 3)),  # camera frame (x right, y down, z forward), metres
        ("focal_px", pa.float32()),
        ("joint_x", _KP),  # COCO-17 keypoints of the fitted body, camera frame, metres
        ("joint_y", _KP),
        ("joint_z", _KP),
        ("joint_low_conf", pa.list_(pa.bool_(), NUM_KEYPOINTS)),  # 2D input low-confidence or missing: not measured
        ("reproj_px", pa.float32()),  # mean reprojection error over the confident keypoints
        ("foot_contact", pa.bool_()),  # a foot stands on the floor (lowest, still: stages/body/contact.py)
        ("foot_height_m", pa.float32()),  # the lower ankle above the video's floor; null without a floor
    ])


BODY_TRACKS_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("track_id", pa.int64()),
    ("body_model", pa.string()),
    ("shape_names", pa.list_(pa.string())),
    ("shape", pa.list_(pa.float32())),  # anny: phenotypes in [0, 1]; smpl: betas
    ("frames", pa.int64()),  # fitted person-frames of the track
    ("height_m", pa.float32()),  # stature of the fitted shape (nose to ankles, over their share of stature)
    ("age", pa.float32()),  # anny's age parameter (child 1/3, young adult 2/3, old 1); null for SMPL
    ("plausible", pa.bool_()),
    ("implausible_reason", pa.string()),  # why not, e.g. "height 0.95 m", "feet 0.31 m off the floor"
])

# A body a motion-capture user would reject: outside human statures (a toddler to the tallest adults), or
# standing feet, on the median standing frame, further from the floor than a step.
HEIGHT_RANGE_M = (0.8, 2.2)
MAX_FOOT_OFF_M = 0.15


def _fixed(values: np.ndarray, size: int) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(values, np.float32).reshape(-1)), size)


def bodies_table(video_id: str, body_model: str, frame_index: np.ndarray, time_s: np.ndarray,
                 track_id: np.ndarray, fit: FitResult, foot_height: np.ndarray) -> pa.Table:
    """Rows of one fit; frame_index, time_s, track_id: the inputs' columns (fit.rows picks from them);
    foot_height float32[B] per fitted row (NaN: no floor)."""
    n, j = len(fit.rows), fit.bone_rotvec.shape[1]
    r = fit.rows
    return pa.Table.from_arrays([
        pa.array([video_id] * n, pa.string()), pa.array(frame_index[r].astype(np.int64)),
        pa.array(time_s[r].astype(np.float64)), pa.array(track_id[r].astype(np.int64)),
        pa.array([body_model] * n, pa.string()), _fixed(fit.bone_rotvec, 3 * j), _fixed(fit.root_rotvec, 3),
        _fixed(fit.translation, 3), pa.array(np.full(n, fit.focal, np.float32)),
        *(_fixed(fit.joints[:, :, c], NUM_KEYPOINTS) for c in range(3)),
        pa.FixedSizeListArray.from_arrays(pa.array(fit.low_conf.reshape(-1)), NUM_KEYPOINTS),
        pa.array(fit.reproj_px.astype(np.float32)), pa.array(fit.contact.astype(bool)),
        pa.array(foot_height, mask=~np.isfinite(foot_height)),
    ], schema=bodies_schema(j))


def plausibility(height_m: float, foot_heights: list[float]) -> str | None:
    """Why a track's body is not believable (None: it is): its stature, or its standing feet's median
    height above the floor (foot_heights: the standing frames', metres; empty without a floor)."""
    why = []
    if not HEIGHT_RANGE_M[0] <= height_m <= HEIGHT_RANGE_M[1]:
        why.append(f"height {height_m:.2f} m")
    if foot_heights and abs(float(np.median(foot_heights))) > MAX_FOOT_OFF_M:
        why.append(f"feet {float(np.median(foot_heights)):+.2f} m off the floor")
    return ", ".join(why) or None


def body_tracks_table(video_id: str, body_model: str, shape_names: list[str], shapes: dict[int, np.ndarray],
                      frames: dict[int, int], statures: dict[int, float], foot: dict[int, list[float]]) -> pa.Table:
    """One row per track: its shape, stature, age and plausibility. statures: track -> metres; foot: track ->
    the standing feet's heights above the floor (stream.py)."""
    age = shape_names.index("age") if "age" in shape_names else None
    rows = []
    for t in sorted(shapes):
        why = plausibility(statures[t], foot.get(t, []))
        rows.append({"video_id": video_id, "track_id": t, "body_model": body_model, "shape_names": shape_names,
                     "shape": [float(v) for v in shapes[t]], "frames": frames.get(t, 0), "height_m": statures[t],
                     "age": float(shapes[t][age]) if age is not None else None, "plausible": why is None,
                     "implausible_reason": why})
    return pa.Table.from_pylist(rows, schema=BODY_TRACKS_SCHEMA)


def track_shapes(tracks: pa.Table) -> dict[int, np.ndarray]:
    """track id -> float32[S] shape, from body_tracks rows."""
    return {int(t): np.asarray(s, np.float32) for t, s in zip(tracks["track_id"].to_pylist(),
                                                              tracks["shape"].to_pylist())}


def body_summary(tracks: pa.Table, skipped: dict[str, int] | None) -> dict:
    """The videos row's mesh columns: body_rows, body_tracks, body_skipped (person-frames without a body,
    0 when none, so it sums and compares like the other counts) and body_skipped_reasons
    ("reason=count,...", null when none). skipped None: not known (both null)."""
    counts = {"body_tracks": tracks.num_rows, "body_rows": sum(tracks.column("frames").to_pylist())}
    if skipped is None:
        return {**counts, "body_skipped": None, "body_skipped_reasons": None}
    return {**counts, "body_skipped": sum(skipped.values()),
            "body_skipped_reasons": ",".join(f"{k}={v}" for k, v in sorted(skipped.items()) if v) or None}
