"""`posepipe render`: a finished video's people (and fitted bodies) drawn on its input video.

    render(out, video_id, "overlay.mp4", frames=(100, 200), boxes=True)   # -> counts
    contact_sheet(out, video_id, "sheet.png", count=6)                     # a PNG grid of frames
    render(out, video_id, "iuv.mp4", dense="iuv")                          # the dense table under them

The input is decoded again with VideoReader (upright, the frame indices the people table uses), each
frame is drawn on (render_draw.py) and encoded upright with no rotation tag, so the picture and the
keypoints agree whatever the phone's rotation was. Timing is the input's: the output stream takes the
input stream's time base and each frame's pts, shifted so the first written frame is at 0 (a range
late in a video then plays from its start instead of after an empty edit). Audio is not copied.

Every refusal (unknown or failed video, input missing or replaced, empty frame range, unwritable
output) is an OutputError of one line, raised before anything is written. The video is written to a
temporary name beside the output and moved into place when complete.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow.compute as pc

from stages.body.ground import floor_grid, ground_from_columns
from stages.io.errors import OutputError
from stages.io.output import fixed_column, video_row
from stages.io.output import video_table as _table
from stages.io import probe
from stages.io.decode import DecodeError, VideoReader
from stages.io.render_dense import DenseLayer, paint
from stages.io.render_draw import Bodies, People, draw_frame, label, pad_even, project
from stages.io.sink import resolve_output
from stages.io.sink_fs import join

_BATCH = 8  # frames per decoded batch: memory is a few full-size frames whatever the video's length
# crf 18: near-transparent, the video under the overlay stays as it was. No B-frames: with them
# libx264 derives dts from earlier frames' pts, and for uneven (VFR) pts the mp4 sample durations
# then no longer match the frames' (the last frame's length, the track's duration go wrong).
_X264 = {"preset": "veryfast", "crf": "18", "bf": "0"}
_MPEG4_QSCALE = 3  # fixed quantiser (1 best .. 31): mpeg4's default bit rate smears HD frames
_MPEG4_MAX_DEN = 65535  # the MPEG-4 standard's largest time-base denominator


@dataclass(frozen=True)
class Overlay:
    """What is drawn on one video: its input file, upright size, frame count, rows."""

    video_id: str
    path: str
    width: int
    height: int
    fps: float
    frame_count: int
    people: People
    bodies: Bodies | None
    floor: np.ndarray | None = None  # float[L, N, 2] the floor grid the body fit assumed (video pixels)


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _has_table(out: str, name: str, video_id: str) -> bool:
    fs, root = resolve_output(out)
    return fs.get_file_info(join(root, name, f"video_id={video_id}")).type.name == "Directory"


def _people(out: str, video_id: str) -> People:
    t = _table(out, "people", video_id).sort_by([("frame_index", "ascending"), ("person_index", "ascending")])
    tid = t["track_id"].combine_chunks()
    return People(
        frame_index=t["frame_index"].to_numpy().astype(np.int64),
        track_id=pc.fill_null(tid, -1).to_numpy().astype(np.int64),
        xy=np.stack([fixed_column(t, "kp_x", 17, np.float32), fixed_column(t, "kp_y", 17, np.float32)], -1),
        low=fixed_column(t, "kp_low_conf", 17, bool),
        bbox=fixed_column(t, "bbox", 4, np.float32), det_bbox=fixed_column(t, "det_bbox", 4, np.float32))


def _bodies(out: str, video_id: str, size: tuple[int, int]) -> Bodies:
    t = _table(out, "bodies", video_id).sort_by("frame_index")
    xyz = np.stack([fixed_column(t, f"joint_{c}", 17, np.float32) for c in "xyz"], -1)
    return Bodies(frame_index=t["frame_index"].to_numpy().astype(np.int64),
                  track_id=t["track_id"].to_numpy().astype(np.int64),
                  uv=project(xyz, t["focal_px"].to_numpy(), size))


def load_overlay(out: str, video_id: str) -> Overlay:
    """The rows to draw and the input to draw them on; OutputError when the video cannot be rendered."""
    row = video_row(out, video_id)
    if row["status"] == "failed":
        reason = _one_line(row["error"] or "no reason given")
        raise OutputError(f"{out}: video {video_id!r} failed, nothing to render ({reason})")
    path = row["path"]
    if not path or not os.path.isfile(path):
        raise OutputError(f"{out}: input video of {video_id!r} is missing: {path}")
    if not _has_table(out, "people", video_id):
        raise OutputError(f"{out}: video {video_id!r} has no people table (output incomplete?)")
    size = (int(row["width"] or 0), int(row["height"] or 0))
    bodies = _bodies(out, video_id, size) if _has_table(out, "bodies", video_id) else None
    return Overlay(video_id, path, size[0], size[1], float(row["fps"] or math.nan), int(row["frames"] or 0),
                   _people(out, video_id), bodies, _floor(row, size) if bodies is not None else None)


def _floor(row: dict, size: tuple[int, int]) -> np.ndarray | None:
    """The floor grid of a videos row whose body fit found a floor (ground_ok), else None."""
    return floor_grid(ground_from_columns(row, size)) if row.get("ground_ok") else None


def frame_range(frames: tuple[int | None, int | None] | None, frame_count: int) -> tuple[int, int]:
    """(start, stop) of the frames to draw, stop exclusive as in a Python slice (A:B is A .. B-1);
    a stop past the end is cut to the end. An empty range is an OutputError."""
    start, stop = (None, None) if frames is None else frames
    start = 0 if start is None else int(start)
    stop = frame_count if stop is None else min(int(stop), frame_count)
    if start < 0 or stop <= start:
        given = "all" if frames is None else ":".join("" if v is None else str(v) for v in frames)
        raise OutputError(f"frames {given} is empty: the video has {frame_count} frames (0:{frame_count})")
    return start, stop


def pick_encoder(available: Iterable[str] | None = None) -> str:
    """libx264 when this FFmpeg build has it (PyAV's wheels do), else the built-in mpeg4."""
    return "libx264" if "libx264" in (av.codecs_available if available is None else set(available)) else "mpeg4"


def _stream_time_base(path: str) -> Fraction:
    # VideoReader gives times in seconds; the exact pts come back from them with the stream's time base.
    with av.open(path) as container:
        stream = probe.video_stream(container)
        return (stream.time_base if stream is not None else None) or Fraction(1, 1)


def encode_video(output: str, frames: Iterable[tuple[np.ndarray, float]], time_base: Fraction, fps: float,
                 codec: str | None = None) -> tuple[int, str, tuple[int, int]]:
    """Encode (RGB image, time_s) pairs, in order, to `output` (format from its extension, mp4 if none).

    pts = (time_s - first time_s) / time_base, rounded: the input's own pts when time_base is its
    stream's. Each frame lasts until the next one (the last as long as the one before, or 1 / fps),
    as the input's frames did. Returns (frames written, codec, (width, height)). Written under a
    temporary name and moved into place at the end, so a failure leaves no half file.
    """
    codec = codec or pick_encoder()
    dst = Path(output)
    tmp = dst.with_name(f".{dst.stem}.partial{dst.suffix}")
    fmt = None if dst.suffix else "mp4"
    opts = {"movflags": "+faststart"} if dst.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
    # FFmpeg opens the file only when the first packet is muxed; refuse a bad place before encoding.
    if not dst.parent.is_dir() or not os.access(dst.parent, os.W_OK):
        raise OutputError(f"{output}: cannot write a video there (no writable folder {str(dst.parent)!r})")
    try:
        container = av.open(str(tmp), "w", format=fmt, options=opts)
    except (av.error.FFmpegError, ValueError, OSError) as e:
        raise OutputError(f"{output}: cannot write a video there ({_one_line(e)})") from None
    if codec not in container.supported_codecs:  # e.g. .png/.jpg (FFmpeg's image2) or .gif: no video codec
        container.close()
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{output}: a {dst.suffix or 'mp4'} file cannot hold a {codec} video; "
                          "name it .mp4, .mkv or .mov")
    count, size, stream = 0, (0, 0), None
    try:
        with container:
            pending, gap, t0 = None, None, None  # frame held until the next one gives its duration
            lengths: dict[int, int] = {}  # pts -> duration of the frames in the encoder
            for img, t in frames:
                img = pad_even(img)
                if stream is None:
                    size = (img.shape[1], img.shape[0])
                    stream = _add_stream(container, codec, size, time_base, fps)
                    t0 = Fraction(t)
                pts = round((Fraction(t) - t0) / time_base)
                if pending is not None:
                    # Encoders refuse repeated pts (inputs without pts, broken VFR): one tick later.
                    pts = max(pts, pending[1] + 1)
                    gap = pts - pending[1]
                    _encode(container, stream, *pending, gap, time_base, lengths)
                    count += 1
                pending = (img, pts)
            if pending is not None:
                nominal = round(1 / (fps * time_base)) if math.isfinite(fps) and fps > 0 else 1
                _encode(container, stream, *pending, gap or max(1, nominal), time_base, lengths)
                count += 1
                _mux(container, stream.encode(), time_base, lengths)
        if stream is None:
            raise OutputError(f"{output}: no frames to write")
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count, codec, size


def _add_stream(container, codec: str, size: tuple[int, int], time_base: Fraction, fps: float):
    rate = Fraction(fps).limit_denominator(1001) if math.isfinite(fps) and fps > 0 else None
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.time_base = time_base  # the muxer keeps the input's ticks
    if codec == "libx264":
        stream.codec_context.time_base = time_base
        stream.options = dict(_X264)
    else:
        # MPEG-4 caps the denominator; PyAV rescales each frame's pts into it (sub-tick rounding only).
        stream.codec_context.time_base = (time_base if time_base.denominator <= _MPEG4_MAX_DEN
                                          else Fraction(1, _MPEG4_MAX_DEN))
        stream.codec_context.qscale = True
        stream.codec_context.global_quality = _MPEG4_QSCALE * 118  # FF_QP2LAMBDA
    return stream


def _encode(container, stream, img: np.ndarray, pts: int, duration: int, time_base: Fraction,
            lengths: dict[int, int]) -> None:
    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
    frame.pts, frame.time_base, frame.duration = pts, time_base, duration
    lengths[pts] = duration
    _mux(container, stream.encode(frame), time_base, lengths)


def _mux(container, packets, time_base: Fraction, lengths: dict[int, int]) -> None:
    """Mux packets with their frame's duration: libx264 stamps every packet 1 / rate whatever the
    frame's was, and mp4 keeps the last packet's as the last frame's length (VFR input, ranges)."""
    for packet in packets:
        if packet.pts is not None and packet.time_base:
            ticks = lengths.pop(round(packet.pts * packet.time_base / time_base), None)
            if ticks is not None:
                packet.duration = round(ticks * time_base / packet.time_base)
        container.mux(packet)


def _open_reader(ov: Overlay, max_side: int | None) -> VideoReader:
    try:
        reader = VideoReader(ov.path, batch_size=_BATCH, max_side=max_side, video_id=ov.video_id)
    except DecodeError as e:
        raise OutputError(f"input video of {ov.video_id!r}: {e}") from None
    if (reader.meta.width, reader.meta.height) != (ov.width, ov.height):
        reader.close()
        raise OutputError(f"{ov.path}: not the video that was run ({reader.meta.width}x{reader.meta.height} "
                          f"now, {ov.width}x{ov.height} in the output)")
    return reader


def _frames_in(reader: VideoReader, start: int, stop: int) -> Iterator[tuple[np.ndarray, int, float, float]]:
    """(image, frame_index, time_s, scale) of the frames start .. stop-1; decoding stops after stop-1
    (no seeking: frame indices count from the file's first frame, as in the people table)."""
    for batch in reader:
        for img, f, t in zip(batch.images, batch.frame_index, batch.time_s):
            if f >= stop:
                return
            if f >= start:
                yield img, int(f), float(t), batch.scale


def render(out: str, video_id: str, output: str, frames: tuple[int | None, int | None] | None = None,
           boxes: bool = False, *, codec: str | None = None, dense: str | None = None) -> dict:
    """Write `output`: the input video of `video_id` with its people (and bodies) drawn, frames
    start .. stop-1 of `frames` (all by default), same timing. codec: None = pick_encoder(); dense: "iuv" or
    "parts" draws the dense table under them (render_dense.py), None not.

    Returns {"frames", "people", "bodies"} (frames written, person rows and bodies drawn), "dense" (person
    crops painted) with dense, and the "codec", "width", "height" written.
    """
    ov = load_overlay(out, video_id)
    start, stop = frame_range(frames, ov.frame_count)
    layer = DenseLayer(out, video_id, dense, start, stop) if dense else None  # no table: refused before writing
    time_base = _stream_time_base(ov.path)
    drawn = {"people": 0, "bodies": 0}

    def drawn_frames(reader: VideoReader) -> Iterator[tuple[np.ndarray, float]]:
        for img, f, t, scale in _frames_in(reader, start, stop):
            people = ov.people.at(f)
            bodies = ov.bodies.at(f) if ov.bodies is not None else None
            drawn["people"] += len(people)
            drawn["bodies"] += len(bodies) if bodies is not None else 0
            img = paint(img, layer.at(f), 1.0 / scale) if layer is not None else img
            yield draw_frame(img, people, bodies, boxes, 1.0 / scale, ov.floor), t

    with _open_reader(ov, None) as reader:  # opened first: a bad input is refused before any file is made
        count, used, (w, h) = encode_video(output, drawn_frames(reader), time_base, ov.fps, codec)
    painted = {"dense": layer.painted} if layer is not None else {}
    return {"frames": count, **drawn, **painted, "codec": used, "width": w, "height": h}


def sheet_layout(count: int, size: tuple[int, int], tile_side: int) -> tuple[int, int, int, int]:
    """(columns, rows, tile width, tile height) of a contact sheet of `count` frames of `size` (w, h).

    Tiles have the frame's aspect with their long side tile_side; the grid wastes the fewest cells,
    then comes closest to a 3:2 sheet (a row of six portrait frames, or a column of landscape ones,
    is awkward to look at).
    """
    w, h = size
    tw, th = max(1, round(w * tile_side / max(w, h))), max(1, round(h * tile_side / max(w, h)))

    def cost(cols: int) -> tuple[int, float]:
        rows = math.ceil(count / cols)
        return cols * rows - count, abs(math.log((cols * tw) / (rows * th) / 1.5))

    cols = min(range(1, count + 1), key=cost)
    return cols, math.ceil(count / cols), tw, th


_GUTTER = 4  # px of dark background between tiles


def contact_sheet(out: str, video_id: str, output_png: str, frames: tuple[int | None, int | None] | None = None,
                  count: int = 6, *, boxes: bool = False, tile_side: int = 480, dense: str | None = None) -> None:
    """A PNG grid of `count` evenly spaced frames of the range (all frames by default), overlays drawn (dense:
    as for render), each tile's long side tile_side px, its frame index and time written in its corner.
    Fewer tiles when the range has fewer frames."""
    if count < 1:
        raise OutputError(f"contact sheet needs count >= 1, got {count}")
    ov = load_overlay(out, video_id)
    start, stop = frame_range(frames, ov.frame_count)
    wanted = np.unique(np.round(np.linspace(start, stop - 1, count)).astype(np.int64))
    layer = DenseLayer(out, video_id, dense, start, int(wanted[-1]) + 1) if dense else None
    cols, rows, tw, th = sheet_layout(len(wanted), (ov.width, ov.height), tile_side)
    sheet = np.full((rows * th + (rows + 1) * _GUTTER, cols * tw + (cols + 1) * _GUTTER, 3), 24, np.uint8)
    k = 0
    # The decoder shrinks the frames (swscale, in the YUV -> RGB step): full-size RGB is never made.
    with _open_reader(ov, tile_side) as reader:
        for img, f, t, scale in _frames_in(reader, start, int(wanted[-1]) + 1):
            if f not in wanted:
                continue
            bodies = ov.bodies.at(f) if ov.bodies is not None else None
            # Rows are in video pixels; the tile is (tw, th), whatever rounding the decoder did.
            tile = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA) if img.shape[:2] != (th, tw) else img
            tile = paint(tile, layer.at(f), tw / ov.width) if layer is not None else tile
            tile = draw_frame(tile, ov.people.at(f), bodies, boxes, tw / ov.width, ov.floor)
            label(tile, f"frame {f}  {t:.2f} s", (tw / 2, 16), (255, 255, 255), 1)
            r, c = divmod(k, cols)
            y, x = _GUTTER + r * (th + _GUTTER), _GUTTER + c * (tw + _GUTTER)
            sheet[y:y + th, x:x + tw] = tile
            k += 1
    if k == 0:
        raise OutputError(f"{ov.path}: none of frames {start}:{stop} decoded")
    ok, png = cv2.imencode(".png", np.ascontiguousarray(sheet[:, :, ::-1]))  # cv2 writes BGR
    if not ok:
        raise OutputError(f"{output_png}: PNG encoding failed")
    try:
        Path(output_png).write_bytes(png.tobytes())
    except OSError as e:
        raise OutputError(f"{output_png}: cannot write ({e.strerror or e})") from None
