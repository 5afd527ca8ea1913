"""Reading a finished output's bodies back: one track as a TrackMotion (for export), pure pyarrow."""
from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from stages.body.export import TrackMotion
from stages.batches import TrackedRows
from stages.io.errors import OutputError
from stages.io.output import video_row
from stages.io.output import video_table as _table

__all__ = ["OutputError", "read_track", "tracked_people", "video_row"]


def read_track(out: str, video_id: str, track_id: int) -> TrackMotion:
    """The bodies rows of one track, with its shape and the video's frame rate."""
    row = video_row(out, video_id)
    bodies = _table(out, "bodies", video_id)
    bodies = bodies.filter(pc.equal(bodies["track_id"], track_id)).sort_by("frame_index")
    if bodies.num_rows == 0:
        have = sorted(set(_table(out, "bodies", video_id)["track_id"].to_pylist()))
        raise OutputError(f"{out}: video {video_id!r} has no bodies for track {track_id} (tracks: {have})")
    tracks = _table(out, "body_tracks", video_id)
    tracks = tracks.filter(pc.equal(tracks["track_id"], track_id))
    n = bodies.num_rows

    def fixed(name: str, width: int) -> np.ndarray:
        return bodies[name].combine_chunks().flatten().to_numpy().reshape(n, width).astype(np.float32)

    rot = fixed("bone_rotvec", bodies.schema.field("bone_rotvec").type.list_size)
    return TrackMotion(
        body_model=bodies["body_model"][0].as_py(), shape=np.asarray(tracks["shape"][0].as_py(), np.float32),
        frame_index=bodies["frame_index"].to_numpy(), time_s=bodies["time_s"].to_numpy(),
        bone_rotvec=rot.reshape(n, -1, 3), root_rotvec=fixed("root_rotvec", 3), translation=fixed("translation", 3),
        fps=float(row["fps"] or 25.0))


def tracked_people(out: str, video_id: str) -> tuple[TrackedRows, tuple[int, int]]:
    """Every people row of a video with a track id, as TrackedRows, and the video's (width, height)."""
    row = video_row(out, video_id)
    people = _table(out, "people", video_id)
    people = people.filter(pc.invert(pc.is_null(people["track_id"]))).sort_by([("frame_index", "ascending")])
    n = people.num_rows
    kp = np.stack([people[c].combine_chunks().flatten().to_numpy().reshape(n, 17)
                   for c in ("kp_x", "kp_y", "kp_score")], -1).astype(np.float32)
    size = (int(row["width"] or 0), int(row["height"] or 0))
    return TrackedRows(video_id, people["frame_index"].to_numpy(), people["time_s"].to_numpy(),
                       people["track_id"].to_numpy(), kp), size
