"""Dense rows of fitted people, and `posepipe dense OUT` over the finished videos of an output.

A frame's bodies rows are posed with their tracks' shapes (bodies.frame_vertices), rendered together in
one depth test (render.render_dense, at the fit's own pinhole: the rows' focal_px, the video's upright
size) and encoded as rows of the dense table (stages/io/dense_table.py). `DenseRenderer` holds what lasts
a whole run, made once: the body model, its surface labels, one raster (a GL context and its buffers)
and the rest-shape cache. The graph's dense actor (pipeline/workers.py) hands it each chunk of bodies
rows the mesh stage returns; `posepipe dense` hands it a finished video's bodies, a block of frames at a
time, and publishes the video's table whole (staged, then moved into place) with its videos row's
dense_rows, so an interrupted job leaves no half table and its re-run skips the videos done.

Run it with torch on one thread (bodies.py says why); the caller sets that, it is the process's. With a
segmenter, each frame's silhouettes (its pixels decoded again, the segmentation model) run on a second thread
one frame ahead of the render: on a 2-core CPU the stage then keeps both cores busy (benchmarks/dense_speed.py).
The frame's render is cut to them (silhouette.py), then each overlap of two bodies goes to the person the
pixels' colours show in front where they clearly do (layers.py).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stages.body.rig import BodyModel
from stages.body.table import track_shapes
from stages.dense.bodies import RestBodies, frame_vertices
from stages.dense.layers import order_by_colour
from stages.dense.parts import surface_labels
from stages.dense.raster import GlRaster, RayRaster, raster_named
from stages.dense.render import DenseFrame, grown_with_normals, projected_boxes, render_dense
from stages.dense.segment import PersonSegmenter, Silhouette
from stages.dense.silhouette import refine
from stages.io.dense_table import DENSE_SCHEMA, dense_masks, dense_table, flag_plausibility
from stages.io.errors import OutputError
from stages.io.frame_source import FrameSource
from stages.io.output import fixed_column, read_video_table, video_row, video_table
from stages.io.sink import DONE_STATUSES, put_video_row, read_video_rows, resolve_output
from stages.io.sink_fs import delete_dir, ensure_dir, join, move, rmdir_if_empty

BLOCK_FRAMES = 32  # frames per row group of `posepipe dense`, as the graph's mesh chunks


class DenseRenderer:
    """Bodies rows -> dense rows with one model, raster and shape cache (module docstring)."""

    def __init__(self, model: BodyModel, raster: GlRaster | RayRaster, grow_m: float = 0.0,
                 segmenter: PersonSegmenter | None = None):
        """grow_m: every body drawn that much larger along its normals (render.grown; `[dense] grow_cm`);
        segmenter: each frame's render cut to its people's silhouettes (silhouette.py) where rows() is given
        the frames, None: the bodies alone."""
        self.model, self.grow_m, self.segmenter = model, grow_m, segmenter
        self.labels = surface_labels(model)  # ValueError for a model without UVs (SMPL)
        self.faces = np.asarray(model.faces, np.int64)
        self.raster = raster
        self.rest = RestBodies(model)

    @classmethod
    def load(cls, raster: str = "auto", grow_m: float = 0.0, segment_model: str | Path | bytes | None = None,
             threads: int = 1) -> DenseRenderer:
        """Anny (the one body model with texture coordinates here), the `[dense] raster` backend and, given
        its file or bytes (segment.SEGMENT_FILE, resolved by the caller), the segmentation model on `threads`
        onnxruntime threads."""
        from stages.body.load import load_body_model

        segmenter = PersonSegmenter(segment_model, threads) if segment_model is not None else None
        return cls(load_body_model("anny", "", "cpu"), raster_named(raster), grow_m, segmenter)

    def rows(self, bodies: pa.Table, shapes: dict[int, np.ndarray], image_size: tuple[int, int],
             frames: FrameSource | None = None) -> pa.Table:
        """Dense rows of bodies rows (any frames, in any order; out by frame, then track), plausibility null.

        shapes: track id -> float[S] (body_tracks' shape, or the mesh stage's frozen one); image_size: the
        video's upright (width, height); frames: the video's, for the silhouettes (None, or a renderer
        without a segmenter: the bodies alone). Memory: two frames' crops, bodies and pixels (the silhouettes run
        one frame ahead).
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
        cut = frames is not None and self.segmenter is not None
        tables = []
        # Each frame's silhouettes (decode, crops, the segmentation model: ~40% of the stage's CPU) run on a second
        # thread while this one poses, renders and encodes: the model and the decoder release the GIL, and the GL
        # context must stay on the thread that made it. One frame ahead: memory stays two frames' crops.
        with ThreadPoolExecutor(1, thread_name_prefix="silhouettes") if cut else nullcontext() as pool:
            waiting = None
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(frame)]):
                shape = np.stack([shapes[int(t)] for t in track[lo:hi]])
                verts, normals = grown_with_normals(
                    frame_vertices(self.model, shape, bones[lo:hi], root[lo:hi], trans[lo:hi], rest=self.rest),
                    self.faces, self.grow_m)
                f = float(focal[lo])
                # each person's projected extent: the silhouettes' crops, and the render's (its default, given)
                boxes = projected_boxes(verts, f, image_size)
                sil = pool.submit(self._silhouettes, frames, int(frame[lo]), boxes) if cut else None
                dense = render_dense(verts, self.faces, f, image_size, boxes, labels=self.labels, raster=self.raster,
                                     normals=normals)
                if waiting is not None:
                    tables.append(self._finish(vid, *waiting))
                waiting = (dense, sil, verts, normals, f, frame[lo:hi], time_s[lo:hi], track[lo:hi])
            if waiting is not None:
                tables.append(self._finish(vid, *waiting))
        return pa.concat_tables(tables)

    def _silhouettes(self, frames: FrameSource, index: int, boxes: np.ndarray
                     ) -> tuple[list[Silhouette], np.ndarray, float] | None:
        """The people's silhouettes in frame `index` of the video, and its pixels and their scale (None: a frame
        past the file's end, drawn from the bodies alone)."""
        got = frames.images([index]).get(index)
        return None if got is None else (self.segmenter(got[0], boxes, got[1]), *got)

    def _finish(self, vid: str, dense: DenseFrame, sil: Future | None, verts: np.ndarray, normals: np.ndarray,
                focal: float, frame: np.ndarray, time_s: np.ndarray, track: np.ndarray) -> pa.Table:
        """One frame's rows: its render cut to its silhouettes when they came, the overlaps given to whom the
        pixels show (layers.py), then encoded."""
        got = sil.result() if sil is not None else None
        if got is not None:
            people, image, scale = got
            dense = order_by_colour(refine(dense, people), dense, verts, self.faces, focal, image, self.raster,
                                    self.labels, normals, scale)
        return dense_table(vid, frame, time_s, track, dense.people)

    def release(self) -> None:
        self.raster.release()


@dataclass(frozen=True)
class DensePlan:
    """`posepipe dense OUT`: todo, the videos to render and their bodies rows (person-frames); done, those
    with a dense table already (skipped unless redo); bare, finished videos without bodies."""

    todo: dict[str, int]
    done: list[str]
    bare: list[str]


def dense_plan(out: str, video_id: str | None = None, redo: bool = False, need_video: bool = False) -> DensePlan:
    """Which finished videos of OUT to render (one, when named). OutputError when there is nothing to
    render at all: no finished video, none (or not the one named) with bodies, or bodies of a model
    without texture coordinates (SMPL); with need_video (silhouettes), when a video to render is gone."""
    rows = [r for r in read_video_rows(out) if r["status"] in DONE_STATUSES]
    if video_id is not None:
        named = [r for r in rows if r["video_id"] == video_id]
        if not named:
            ids = ", ".join(r["video_id"] for r in rows) or "none"
            raise OutputError(f"{out}: no finished video {video_id!r} (finished: {ids})")
        rows = named
    if not rows:
        raise OutputError(f"{out}: no finished videos (is it a posepipe output?)")
    fitted = [r for r in rows if r.get("body_rows")]
    if not fitted:
        which = f"video {video_id!r} has" if video_id is not None else "it has"
        raise OutputError(f"{out}: {which} no bodies to render; run with --mesh, or posepipe mocap OUT --all")
    for r in fitted:
        models = read_video_table(out, "body_tracks", r["video_id"], columns=["body_model"])
        names = set(models["body_model"].to_pylist()) if models is not None else set()
        if names - {"anny"}:
            raise OutputError(f"{out}: video {r['video_id']!r} has {'/'.join(sorted(names))} bodies; dense needs "
                              "anny's texture coordinates (run or mocap with --body-model anny)")
    done = [r["video_id"] for r in fitted if r.get("dense_rows") is not None and not redo]
    for r in fitted:
        if need_video and r["video_id"] not in done and not os.path.isfile(r.get("path") or ""):
            raise OutputError(f"{out}: input video of {r['video_id']!r} is missing: {r.get('path')} (the silhouettes "
                              "need its frames; [dense] silhouettes = \"off\" draws the bodies alone)")
    return DensePlan(todo={r["video_id"]: int(r["body_rows"]) for r in fitted if r["video_id"] not in done}, done=done,
                     bare=[r["video_id"] for r in rows if not r.get("body_rows")])


def dense_video(out: str, video_id: str, renderer: DenseRenderer,
                progress: Callable[[int], None] = lambda rows: None, max_side: int = 0) -> dict:
    """Render a finished video's bodies into its dense table, replacing any; returns its videos row, with
    dense_rows and dense_masks. progress(rows) after each block of frames (rows: the block's person-frames). A
    renderer with a segmenter reads the input video's frames again (max_side: as the run's `[decode] max_side`)."""
    row = video_row(out, video_id)
    bodies = video_table(out, "bodies", video_id).sort_by([("frame_index", "ascending"), ("track_id", "ascending")])
    tracks = video_table(out, "body_tracks", video_id)
    shapes, size = track_shapes(tracks), (int(row["width"] or 0), int(row["height"] or 0))
    fs, root = resolve_output(out)
    staging = join(root, "_staging", f"dense-{video_id}")
    delete_dir(fs, staging)  # a killed earlier job's
    ensure_dir(fs, staging)
    tmp = join(staging, "dense.parquet")
    frame = bodies["frame_index"].to_numpy()
    starts = np.r_[0, np.flatnonzero(np.diff(frame)) + 1, len(frame)]  # each frame's first row, then the end
    rows = 0
    frames = FrameSource(row["path"], max_side, video_id) if renderer.segmenter is not None else None
    try:
        with pq.ParquetWriter(tmp, DENSE_SCHEMA, filesystem=fs) as writer:
            for k in range(0, len(starts) - 1, BLOCK_FRAMES):
                lo, hi = starts[k], starts[min(k + BLOCK_FRAMES, len(starts) - 1)]
                table = flag_plausibility(renderer.rows(bodies.slice(lo, hi - lo), shapes, size, frames), tracks)
                writer.write_table(table)
                rows += table.num_rows
                progress(int(hi - lo))
    finally:
        if frames is not None:
            frames.close()
    final = join(root, "dense", f"video_id={video_id}")
    delete_dir(fs, final)
    ensure_dir(fs, final)
    move(fs, tmp, join(final, "part-0.parquet"))
    delete_dir(fs, staging)
    rmdir_if_empty(fs, join(root, "_staging"))
    row = {**row, "dense_rows": rows, "dense_masks": dense_masks(renderer.segmenter is not None)}
    put_video_row(fs, root, row)
    return row
