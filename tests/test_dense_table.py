"""The dense table (stages/io/dense_table.py): rows rendered from bodies rows (stages/dense/video.py), staged
and flagged by the sink as the graph's sink does, then read back through posepipe.read, pyarrow and DuckDB.
Every value must come back within the quantisation the module documents, against the same bodies rendered
straight (render_dense on frame_vertices), with no table in between.
"""
from __future__ import annotations

from functools import partial

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from scipy.spatial.transform import Rotation

import posepipe
from stages.body.anny_body import AnnyBody
from stages.body.table import body_tracks_table, track_shapes
from stages.dense.bodies import frame_vertices
from stages.dense.raster import GlRaster
from stages.dense.render import DenseCrop, render_dense
from stages.dense.video import DenseRenderer
from stages.io.dense_table import decode_png, decode_rows, encode_crop, flag_plausibility, iter_frames
from stages.io.sink import ParquetSink

VID = "scene-0a1b2c3d"
SIZE, FOCAL = (320, 240), 300.0
TRACKS = (7, 3, 5)
# Camera-frame places per frame: 7 in front of 3 (they overlap); 5 behind the camera in frame 0, seen in frame 1.
PLACES = {0: [[-0.2, 0.3, 4.0], [0.1, 0.4, 5.5], [0.0, 0.0, -3.0]],
          1: [[-0.1, 0.3, 4.2], [0.3, 0.4, 5.0], [1.2, 0.2, 6.0]]}
# Quantisation steps of the module docstring, plus float32 rounding of the decoded values.
UV_TOL, DEPTH_TOL, NORMAL_DEG = 0.5 / 65535 + 1e-7, 0.0005 + 2e-6, 0.4


@pytest.fixture(scope="module")
def renderer():
    r = DenseRenderer(AnnyBody(), GlRaster())
    yield r
    r.release()


def _fixed(values: np.ndarray) -> pa.FixedSizeListArray:
    v = np.ascontiguousarray(values, np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1])


def _scene(model) -> tuple[pa.Table, pa.Table]:
    """(bodies rows, body_tracks rows) of the scene: random poses, people facing about the camera; track 3
    is 0.70 m tall in its body_tracks row, so it is implausible."""
    rng = np.random.default_rng(4)
    j = len(model.parents)
    facing = Rotation.from_matrix(model.facing.numpy().astype(np.float64))
    rows = []
    for f, places in PLACES.items():
        for t, xyz in zip(TRACKS, places):
            rows.append({"frame_index": f, "time_s": f / 25, "track_id": t, "translation": xyz,
                         "root_rotvec": (Rotation.from_rotvec([0, rng.uniform(-0.6, 0.6), 0]) * facing).as_rotvec(),
                         "bone_rotvec": rng.normal(0, 0.15, 3 * j)})
    rng.shuffle(rows)  # the renderer sorts them: the mesh stage returns a chunk in its fit's order
    col = lambda k: np.array([r[k] for r in rows])  # noqa: E731
    n = len(rows)
    bodies = pa.table({"video_id": [VID] * n, "frame_index": col("frame_index"), "time_s": col("time_s"),
                       "track_id": col("track_id"), "body_model": ["anny"] * n,
                       **{k: _fixed(col(k)) for k in ("bone_rotvec", "root_rotvec", "translation")},
                       "focal_px": np.full(n, FOCAL, np.float32)})
    shapes = {t: rng.uniform(0.3, 0.7, len(model.shape_names)).astype(np.float32) for t in TRACKS}
    tracks = body_tracks_table(VID, "anny", list(model.shape_names), shapes, {t: 2 for t in TRACKS},
                               {7: 1.7, 3: 0.7, 5: 1.6}, {})
    return bodies, tracks


def _reference(renderer: DenseRenderer, bodies: pa.Table, shapes: dict) -> dict[tuple[int, int], DenseCrop]:
    """(frame, track) -> the crop render_dense gives for the bodies of each frame, posed without the cache."""
    model, out, b = renderer.model, {}, bodies.to_pydict()
    for f in PLACES:
        at = sorted((i for i, g in enumerate(b["frame_index"]) if g == f), key=lambda i: b["track_id"][i])
        tid = [b["track_id"][i] for i in at]
        pick = lambda k: np.array([b[k][i] for i in at])  # noqa: E731
        verts = frame_vertices(model, np.stack([shapes[t] for t in tid]), pick("bone_rotvec").reshape(len(at), -1, 3),
                               pick("root_rotvec"), pick("translation"))
        frame = render_dense(verts, model.faces, FOCAL, SIZE, labels=renderer.labels, raster=renderer.raster)
        out.update({(f, t): c for t, c in zip(tid, frame.people)})
    return out


@pytest.fixture(scope="module")
def written(renderer, tmp_path_factory):
    """OUT with the scene's dense table, written as the graph's sink writes it: two chunks appended, then the
    flags filled in at the video's end (ParquetSink.rewrite_table)."""
    bodies, tracks = _scene(renderer.model)
    shapes = track_shapes(tracks)
    out = str(tmp_path_factory.mktemp("dense") / "out")
    sink = ParquetSink(out)
    sink.open(VID)
    for f in PLACES:
        rows = renderer.rows(bodies.filter(pc.equal(bodies["frame_index"], f)), shapes, SIZE)
        assert rows.column("plausible").null_count == rows.num_rows  # unknown until the video's end
        sink.write_table(VID, "dense", rows)
    assert sink.rewrite_table(VID, "dense", partial(flag_plausibility, tracks=tracks)) == 6
    sink.finish(VID, {"path": "scene.mp4", "status": "ok", "width": SIZE[0], "height": SIZE[1]})
    return out, _reference(renderer, bodies, shapes)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip((a * b).sum(-1), -1, 1)))


def test_values_decode_within_the_quantisation(written):
    out, ref = written
    people = posepipe.read(out, "dense")
    assert [(p.frame_index, p.track_id) for p in people] == sorted(ref)
    seen = 0
    for p in people:
        r = ref[(p.frame_index, p.track_id)]
        assert p.box == r.box and p.video_id == VID and p.time_s == p.frame_index / 25
        assert np.array_equal(p.mask, r.mask) and np.array_equal(p.part, r.part) and p.pixels == r.mask.sum()
        if not r.mask.size:  # track 5 behind the camera in frame 0: a row, an empty box, no images
            assert (p.frame_index, p.track_id) == (0, 5) and p.mask.shape == (0, 0) and p.normal.shape == (0, 0, 3)
            continue
        m = r.mask
        seen += m.sum()
        assert np.abs(p.u - r.u).max() <= UV_TOL and np.abs(p.v - r.v).max() <= UV_TOL
        assert np.abs(p.depth - r.depth).max() <= DEPTH_TOL
        assert _angle_deg(p.normal[m], r.normal[m]).max() <= NORMAL_DEG
        assert not p.normal[~m].any() and not p.depth[~m].any() and not p.part[~m].any()
    assert seen > 5000
    # 7 stands in front of 3: the overlap is 7's, so 3 shows fewer pixels than alone in its box.
    front = {p.track_id: p for p in people if p.frame_index == 0}
    assert front[3].pixels < 0.9 * (front[3].part.size) and front[7].pixels > 1000


def test_plausibility_is_body_tracks(written):
    out, _ = written
    flags = {(p.track_id, p.plausible, p.implausible_reason) for p in posepipe.read(out, "dense")}
    assert flags == {(7, True, None), (3, False, "height 0.70 m"), (5, True, None)}


def test_duckdb_and_pyarrow_read_the_same_rows(written):
    out, _ = written
    people = {(p.frame_index, p.track_id): p for p in posepipe.read(out, "dense", video=VID)}
    rows = duckdb.sql(f"SELECT frame_index, track_id, box, pixels, plausible, depth, normal, part "
                      f"FROM read_parquet('{out}/dense/*/*.parquet', hive_partitioning = true) "
                      f"WHERE pixels > 0 ORDER BY frame_index, track_id").fetchall()
    assert len(rows) == 5  # the row behind the camera has no pixels
    for f, t, box, pixels, plausible, depth, normal, part in rows:
        p = people[(f, t)]
        hw = (box[3] - box[1], box[2] - box[0])
        assert tuple(box) == p.box and pixels == p.pixels and plausible == p.plausible
        assert np.array_equal(decode_png(depth, "depth", hw), p.depth)
        assert np.array_equal(decode_png(normal, "normal", hw), p.normal)
        assert np.array_equal(decode_png(part, "part", hw), p.part)
    table = ds.dataset(f"{out}/dense", partitioning="hive").to_table()
    assert table.num_rows == 6 and table.schema.field("depth").type == pa.binary()
    again = decode_rows(table.sort_by([("frame_index", "ascending"), ("track_id", "ascending")]))
    assert all(np.array_equal(a.u, people[(a.frame_index, a.track_id)].u) for a in again)
    frame = posepipe.read(out, "dense", pandas=True)
    assert len(frame) == 6 and np.array_equal(frame["mask"][0], again[0].mask)


def test_frames_come_in_order_one_row_group_at_a_time(written, tmp_path):
    out, _ = written
    got = [(f, rows["track_id"].to_pylist()) for f, rows in iter_frames(out, VID, ["track_id"])]
    assert got == [(0, [3, 5, 7]), (1, [3, 5, 7])]
    assert [f for f, _ in iter_frames(out, VID, ["part"], start=1)] == [1]
    assert list(iter_frames(out, VID, ["part"], start=2)) == []
    # One row group of frames 0 and 2: asked for frame 1, its statistics (0..2) let it be read, and it has none.
    table = ds.dataset(f"{out}/dense", partitioning="hive").to_table().sort_by("frame_index")
    table = table.set_column(1, "frame_index", pa.array(np.where(table["frame_index"].to_numpy() == 1, 2, 0)))
    gap = tmp_path / "gap"
    (gap / "dense" / f"video_id={VID}").mkdir(parents=True)
    pq.write_table(table, gap / "dense" / f"video_id={VID}" / "part-0.parquet")
    assert list(iter_frames(str(gap), VID, ["track_id"], start=1, stop=2)) == []
    assert [f for f, _ in iter_frames(str(gap), VID, ["track_id"])] == [0, 2]


def test_quantisation_at_the_ends():
    """u, v of 0 and 1 exactly; depth 65.535 m at most and 1 mm at least on the mask; a normal in the PNG's
    corner directions; all of it 0 off the mask."""
    mask = np.array([[True, True, True, False]])
    n = np.array([[[0, 0, -1], [1, 0, 0], [0.6, -0.8, 0], [0, 0, 0]]], np.float32)
    crop = DenseCrop(box=(5, 6, 9, 7), mask=mask, face=np.zeros((1, 4), np.int32),
                     part=np.array([[1, 24, 3, 0]], np.uint8), u=np.array([[0, 1, 0.25, 0]], np.float32),
                     v=np.array([[1, 0, 0.5, 0]], np.float32),
                     depth=np.array([[70.0, 0.0002, 2.0004, 0]], np.float32), normal=n)
    pngs = encode_crop(crop)
    back = {k: decode_png(pngs[k], k, (1, 4)) for k in pngs}
    assert np.array_equal(back["mask"], mask) and np.array_equal(back["part"], crop.part)
    assert np.array_equal(back["u"][:, :2], [[0, 1]]) and np.array_equal(back["v"][:, :2], [[1, 0]])
    assert np.abs(back["u"] - crop.u).max() <= UV_TOL and np.abs(back["v"] - crop.v).max() <= UV_TOL
    np.testing.assert_allclose(back["depth"], [[65.535, 0.001, 2.0, 0]], atol=1e-6)
    assert _angle_deg(back["normal"][mask], n[mask]).max() <= NORMAL_DEG and not back["normal"][~mask].any()
    assert encode_crop(DenseCrop((0, 0, 0, 0), *(np.zeros((0, 0)),) * 7)) == dict.fromkeys(pngs)
