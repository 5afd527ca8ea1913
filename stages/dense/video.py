"""Dense rows of fitted people, and `posepipe dense OUT` over the finished videos of an output.

A frame's bodies rows are posed with their tracks' shapes (bodies.frame_vertices), rendered together in
one depth test (render.render_dense, at the fit's own pinhole: the rows' focal_px, the video's upright
size) and encoded as rows of the dense table (stages/io/dense_table.py). `DenseRenderer` holds what lasts
a whole run, made once: the body model, its surface labels, one raster (a GL context and its buffers)
and the rest-shape cache. The graph's dense actor (pipeline/workers.py) hands it each chunk of bodies
rows the mesh stage returns; `posepipe dense` hands it a finished video's bodies, a block of frames at a
time, and publishes the video's table whole (staged, then moved into place) with its videos row's
dense_rows, so an interrupted job leaves no half table and its re-run skips the videos done.

Run it with torch on one thread (bodies.py says why); the caller sets that, it is the process's.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from stages.body.rig import BodyModel
from stages.dense.bodies import RestBodies, frame_vertices
from stages.dense.parts import surface_labels
from stages.dense.raster import GlRaster, RayRaster, raster_named
from stages.dense.render import render_dense
from stages.io.dense_table import DENSE_SCHEMA, dense_table
from stages.io.output import fixed_column


def track_shapes(tracks: pa.Table) -> dict[int, np.ndarray]:
    """track id -> float32[S] shape, from body_tracks rows."""
    return {int(t): np.asarray(s, np.float32) for t, s in zip(tracks["track_id"].to_pylist(),
                                                              tracks["shape"].to_pylist())}


class DenseRenderer:
    """Bodies rows -> dense rows with one model, raster and shape cache (module docstring)."""

    def __init__(self, model: BodyModel, raster: GlRaster | RayRaster):
        self.model = model
        self.labels = surface_labels(model)  # ValueError for a model without UVs (SMPL)
        self.faces = np.asarray(model.faces, np.int64)
        self.raster = raster
        self.rest = RestBodies(model)

    @classmethod
    def load(cls, raster: str = "auto") -> DenseRenderer:
        """Anny (the one body model with texture coordinates here) and the `[dense] raster` backend."""
        from stages.body.load import load_body_model

        return cls(load_body_model("anny", "", "cpu"), raster_named(raster))

    def rows(self, bodies: pa.Table, shapes: dict[int, np.ndarray], image_size: tuple[int, int]) -> pa.Table:
        """Dense rows of bodies rows (any frames, in any order; out by frame, then track), plausibility null.

        shapes: track id -> float[S] (body_tracks' shape, or the mesh stage's frozen one); image_size: the
        video's upright (width, height). Memory: one frame's crops, then their PNGs.
        """
        if bodies.num_rows == 0:
            return DENSE_SCHEMA.empty_table()
        names = set(bodies["body_model"].unique().to_pylist())
        if names != {self.model.name}:
            raise ValueError(f"bodies of {sorted(names)}: the dense render has {self.model.name!r}'s surface")
        b = bodies.sort_by([("frame_index", "ascending"), ("track_id", "ascending")])
        frame, track = b["frame_index"].to_numpy(), b["track_id"].to_numpy()
        unknown = sorted(set(track.tolist()) - set(shapes))
        if unknown:
            raise ValueError(f"no shape for tracks {unknown}")
        j = len(self.model.parents)
        bones = fixed_column(b, "bone_rotvec", 3 * j, np.float32).reshape(-1, j, 3)
        root, trans = fixed_column(b, "root_rotvec", 3, np.float32), fixed_column(b, "translation", 3, np.float32)
        focal, time_s, vid = b["focal_px"].to_numpy(), b["time_s"].to_numpy(), b["video_id"][0].as_py()
        cuts = np.flatnonzero(np.diff(frame)) + 1
        tables = []
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(frame)]):
            shape = np.stack([shapes[int(t)] for t in track[lo:hi]])
            verts = frame_vertices(self.model, shape, bones[lo:hi], root[lo:hi], trans[lo:hi], rest=self.rest)
            crops = render_dense(verts, self.faces, float(focal[lo]), image_size, labels=self.labels,
                                 raster=self.raster).people
            tables.append(dense_table(vid, frame[lo:hi], time_s[lo:hi], track[lo:hi], crops))
        return pa.concat_tables(tables)

    def release(self) -> None:
        self.raster.release()
