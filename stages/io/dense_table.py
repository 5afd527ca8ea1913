"""The dense table: one row per fitted person-frame of the dense stage (stages/dense), its images as PNGs.

    dense/video_id=<id>/part-0.parquet   video_id, frame_index, time_s, track_id, box, pixels, plausible,
                                         implausible_reason, mask, part, u, v, depth, normal

Each image column holds one lossless PNG of the person's crop: `box` is (x0, y0, x1, y1) in video pixels,
x1 and y1 exclusive, and every image is [y1 - y0, x1 - x0] (null when the box is empty: a body wholly
outside the frame). Only the quantisation to PNG's integers loses anything, chosen below what the render
is accurate to (its depth is exact to float32 for the mesh; the mesh itself is a fit):

    column  PNG                  value                                                   max error
    mask    8-bit grey           255 where the person is seen (silhouette.py), else 0    exact
    part    8-bit grey           DensePose part 1..24 (stages/dense/parts.py), 0 off it exact
    u, v    16-bit grey          round(65535 u), anny's texture coordinates in [0, 1]    0.5 / 65535 = 7.7e-6
    depth   16-bit grey          round(1000 z), camera z in millimetres, >= 1 on the     0.5 mm up to 65.535 m
                                 mask (0 off it), farther than 65.535 m stored as that    (farther: clipped)
    normal  8-bit RGB            round(127.5 (n + 1)) for the unit camera-frame normal's 1/255 per component,
                                 x, y, z (x right, y down, z forward); 0 off the mask    under 0.4 degrees
Normals are 8-bit: 16-bit ones were 2.6x the bytes (50 vs 19 KB per person at 960x540) for an angle no
one can use that finely. Off the mask every image is 0 and decodes to 0.

Rows are written in frame order (then track id) by both writers (the graph's dense actor and `posepipe
dense`); `pixels` is the mask's count, so queries need not decode anything to find the visible people.
plausible / implausible_reason are body_tracks' (stages/body/table.py): an implausible body is rendered
all the same, and flagged here. decode_rows() turns rows back into arrays (posepipe.read(out, "dense")).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow.fs import FileSelector, FileSystem, FileType

from stages.io.errors import OutputError
from stages.io.sink import resolve_output
from stages.io.sink_fs import join

if TYPE_CHECKING:  # torch-free readers (render, posepipe.read) need not import the render's module
    from stages.dense.render import DenseCrop

IMAGES = ("mask", "part", "u", "v", "depth", "normal")
DENSE_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("frame_index", pa.int64()),
    ("time_s", pa.float64()),
    ("track_id", pa.int64()),
    ("box", pa.list_(pa.int32(), 4)),  # x0, y0, x1, y1 of the crops, video pixels, x1 and y1 exclusive
    ("pixels", pa.int32()),  # visible pixels (the mask's count)
    ("plausible", pa.bool_()),  # body_tracks': null only while the graph's sink has not flagged the rows yet
    ("implausible_reason", pa.string()),
    *((name, pa.binary()) for name in IMAGES),  # PNG bytes (module docstring)
])


def dense_masks(silhouettes: bool) -> str:
    """The videos row's dense_masks (stages/io/sink.py): what a table's masks are, cut to the silhouettes or not."""
    return "silhouettes" if silhouettes else "bodies"


UV_SCALE = 65535.0
DEPTH_SCALE = 1000.0  # depth PNG units per metre
NORMAL_SCALE = 127.5
_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1]  # level 1: 5% larger than 6, a third faster (~6 ms per person at 960x540)


def _png(image: np.ndarray) -> bytes:
    # cv2 takes 3 channels as BGR: reversed, a PNG viewer shows the normal's x as red.
    ok, buf = cv2.imencode(".png", image[..., ::-1] if image.ndim == 3 else image, _PNG)
    if not ok:
        raise ValueError(f"PNG encoding failed for an image of shape {image.shape}")
    return buf.tobytes()


def encode_crop(crop: DenseCrop) -> dict[str, bytes | None]:
    """The six PNGs of one person's crop (module docstring), None each when its box is empty."""
    m = crop.mask
    if m.size == 0:
        return dict.fromkeys(IMAGES)
    depth = np.where(m, np.clip(np.round(crop.depth * DEPTH_SCALE), 1, 65535), 0).astype(np.uint16)
    normal = np.where(m[..., None], np.round((crop.normal + 1) * NORMAL_SCALE), 0).astype(np.uint8)
    return {"mask": _png(m.astype(np.uint8) * 255), "part": _png(crop.part),
            "u": _png(np.round(crop.u * UV_SCALE).astype(np.uint16)),
            "v": _png(np.round(crop.v * UV_SCALE).astype(np.uint16)),
            "depth": _png(depth), "normal": _png(normal)}


def dense_table(video_id: str, frame_index: np.ndarray, time_s: np.ndarray, track_id: np.ndarray,
                crops: list[DenseCrop]) -> pa.Table:
    """Rows of N person-frames: frame_index int[N], time_s float[N], track_id int[N], one crop each; the
    plausibility columns are null until flag_plausibility()."""
    n = len(crops)
    pngs = [encode_crop(c) for c in crops]
    box = np.asarray([c.box for c in crops], np.int32).reshape(n, 4)
    return pa.Table.from_arrays([
        pa.array([video_id] * n, pa.string()), pa.array(np.asarray(frame_index, np.int64)),
        pa.array(np.asarray(time_s, np.float64)), pa.array(np.asarray(track_id, np.int64)),
        pa.FixedSizeListArray.from_arrays(pa.array(box.reshape(-1)), 4),
        pa.array(np.asarray([c.mask.sum() for c in crops], np.int32)),
        pa.nulls(n, pa.bool_()), pa.nulls(n, pa.string()),
        *(pa.array([p[name] for p in pngs], pa.binary()) for name in IMAGES),
    ], schema=DENSE_SCHEMA)


def flag_plausibility(rows: pa.Table, tracks: pa.Table) -> pa.Table:
    """rows with plausible and implausible_reason taken from body_tracks (tracks) by track id; a track
    missing there is left null."""
    ids = tracks["track_id"].to_pylist()
    at = pc.index_in(rows["track_id"], value_set=pa.array(ids, pa.int64()))
    flags = pc.take(tracks["plausible"], at), pc.take(tracks["implausible_reason"], at)
    for name, values in zip(("plausible", "implausible_reason"), flags):
        rows = rows.set_column(rows.schema.get_field_index(name), name, values)
    return rows


@dataclass(frozen=True)
class DensePerson:
    """One decoded row (module docstring for each column's quantisation): box (x0, y0, x1, y1) video pixels;
    arrays [h, w] = [y1 - y0, x1 - x0]: mask bool, part uint8 (0 off the mask), u, v float32 in [0, 1],
    depth float32 metres, normal float32[h, w, 3] unit camera frame (all 0 off the mask)."""

    video_id: str
    frame_index: int
    time_s: float
    track_id: int
    box: tuple[int, int, int, int]
    pixels: int
    plausible: bool | None
    implausible_reason: str | None
    mask: np.ndarray
    part: np.ndarray
    u: np.ndarray
    v: np.ndarray
    depth: np.ndarray
    normal: np.ndarray


def decode_png(data: bytes | None, name: str, hw: tuple[int, int]) -> np.ndarray:
    """One image column's PNG (name: mask, part, u, v, depth, normal) back to its array (DensePerson);
    None (an empty box) -> an empty array of shape hw."""
    if data is None:
        shape = (*hw, 3) if name == "normal" else hw
        return np.zeros(shape, bool if name == "mask" else np.uint8 if name == "part" else np.float32)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise OutputError(f"dense {name}: not a PNG")
    if name == "mask":
        return img > 0
    if name == "part":
        return img
    if name in ("u", "v"):
        return (img / UV_SCALE).astype(np.float32)
    if name == "depth":
        return (img / DEPTH_SCALE).astype(np.float32)
    n = img[..., ::-1].astype(np.float32) / NORMAL_SCALE - 1  # BGR as stored by cv2 -> x, y, z
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)
    # (0, 0, 0) is off the mask: no unit normal quantises to it (each component would be under -0.996).
    return np.where(img.any(-1, keepdims=True), n, 0).astype(np.float32)


def decode_rows(table: pa.Table) -> list[DensePerson]:
    """Every row of a dense table (or of any columns-complete slice of it) decoded."""
    out = []
    for r in table.to_pylist():
        x0, y0, x1, y1 = r["box"]
        hw = (max(y1 - y0, 0), max(x1 - x0, 0))
        images = {name: decode_png(r[name], name, hw) for name in IMAGES}
        out.append(DensePerson(r["video_id"], r["frame_index"], r["time_s"], r["track_id"], (x0, y0, x1, y1),
                               r["pixels"], r["plausible"], r["implausible_reason"], **images))
    return out


def iter_frames(out: str, video_id: str, columns: list[str], start: int = 0,
                stop: int | None = None) -> Iterator[tuple[int, pa.Table]]:
    """(frame_index, that frame's rows) of one video's dense table for frames start .. stop-1, in frame
    order, one row group in memory at a time (the table can be GBs; rows are in frame order, and row
    groups wholly outside the range are skipped by their statistics). OutputError without a table."""
    fs, root = resolve_output(out)
    folder = join(root, "dense", f"video_id={video_id}")
    if fs.get_file_info(folder).type.name != "Directory":
        raise OutputError(f"{out}: video {video_id!r} has no dense table (posepipe dense OUT, or run --mesh --dense)")
    stop = np.iinfo(np.int64).max if stop is None else stop
    wanted = list(dict.fromkeys(["frame_index", *columns]))
    held: list[pa.Table] = []  # the rows of the frame being gathered (it may span row groups)
    last = -1  # the last frame seen
    for path in sorted(f"{folder}/{name}" for name in _parquet_names(fs, folder)):
        with fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            col = pf.schema_arrow.get_field_index("frame_index")
            for g in range(pf.num_row_groups):
                stats = pf.metadata.row_group(g).column(col).statistics
                if stats is not None and stats.has_min_max and (stats.max < start or stats.min >= stop):
                    continue
                rows = pf.read_row_group(g, columns=wanted)
                rows = rows.filter(pc.and_(pc.greater_equal(rows["frame_index"], start),
                                           pc.less(rows["frame_index"], stop)))
                frames = rows["frame_index"].to_numpy()
                if not len(frames):  # the group spans the range without a frame in it
                    continue
                if frames[0] < last or np.any(np.diff(frames) < 0):
                    raise OutputError(f"{path}: dense rows are not in frame order")
                last = frames[-1]
                cuts = np.flatnonzero(np.diff(frames)) + 1
                for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(frames)]):
                    if held and held[0]["frame_index"][0].as_py() != int(frames[lo]):
                        yield held[0]["frame_index"][0].as_py(), pa.concat_tables(held)
                        held = []
                    held.append(rows.slice(lo, hi - lo))
    if held:
        yield held[0]["frame_index"][0].as_py(), pa.concat_tables(held)


def _parquet_names(fs: FileSystem, folder: str) -> list[str]:
    return [i.base_name for i in fs.get_file_info(FileSelector(folder)) if i.type == FileType.File
            and i.base_name.endswith(".parquet") and not i.base_name.startswith((".", "_"))]
