"""What a container says about a video before any frame is decoded, and whether to refuse it.

A batch can hold anything: audio files, cover-art-only m4a, 8K screen captures, day-long CCTV
dumps. Everything here reads container metadata only, so such a file is turned away in
milliseconds instead of after minutes of decoding. Functions return a one-line problem (or None)
rather than raising, so decode.py stays the one place that builds DecodeError.
"""
from __future__ import annotations

import math
import re

import av

_ISO_BOX_TYPES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid"}
# Matroska/WebM muxers (FFmpeg, mkvmerge) store each track's length only as a "DURATION" tag.
_DURATION_TAG = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}(?:\.\d*)?)$")


def iso_bmff_problem(path: str, size: int) -> str | None:
    """Why an mp4/mov file is unreadable, judged from its top-level boxes; None if not obvious.

    FFmpeg says "moov atom not found" only in its log (off by default in PyAV), and the exception
    just reads "Invalid data found", so we look at the box list ourselves when av.open fails.
    """
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8 or head[4:8] not in _ISO_BOX_TYPES:
            return None
        offset, seen = 0, []
        while offset + 8 <= size and len(seen) < 10000:
            f.seek(offset)
            hdr = f.read(16)
            box_size, box_type = int.from_bytes(hdr[:4], "big"), hdr[4:8]
            if box_size == 1:
                box_size = int.from_bytes(hdr[8:16], "big")
            elif box_size == 0:
                box_size = size - offset  # box runs to the end of the file
            if box_size < 8:
                return "truncated or corrupt: invalid mp4 box structure"
            seen.append(box_type)
            if box_type == b"moov" and offset + box_size > size:
                return (f"truncated or corrupt: moov atom cut short (file ends at byte {size}, "
                        f"moov needs {offset + box_size})")
            offset += box_size
    if b"moov" not in seen:
        return "truncated or corrupt: moov atom not found (mp4 index missing, file cut short?)"
    return None


def _is_cover_art(stream) -> bool:
    # Album art in mp3/m4a/mp4 shows up as a one-picture "video" stream; it is not a video.
    return stream.type == "video" and bool(stream.disposition & av.stream.Disposition.attached_pic)


def video_stream(container):
    """The first real video stream, or None."""
    return next((s for s in container.streams.video if not _is_cover_art(s)), None)


def no_video_reason(container) -> str:
    """Why there is nothing to decode, listing every stream so the user sees what the file is."""
    streams = list(container.streams)
    if not streams:
        return "no video stream (the file has no streams at all)"
    parts = []
    for s in streams:
        codec = s.codec_context.name if s.codec_context is not None else "unknown codec"
        parts.append(f"#{s.index} {'cover art' if _is_cover_art(s) else s.type} {codec}")
    kinds = {s.type for s in streams if not _is_cover_art(s)}
    what = "audio only; " if kinds == {"audio"} else ""
    return f"no video stream ({what}streams: {', '.join(parts)})"


def rate_and_duration(stream, container) -> tuple[float, float]:
    """Header fps (nan if none) and the video stream's duration in seconds (nan if unknown).

    The stream's own duration comes first: the container's covers every stream, and an audio
    track that runs on past the picture would make a complete video look cut short.
    """
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else math.nan
    if stream.duration is not None and stream.time_base is not None:
        return fps, float(stream.duration * stream.time_base)
    tag = _DURATION_TAG.match(str(stream.metadata.get("DURATION", "")).strip())
    if tag:
        h, m, s = tag.groups()
        return fps, int(h) * 3600 + int(m) * 60 + float(s)
    if container.duration is not None:
        return fps, container.duration / av.time_base  # microseconds
    return fps, math.nan


def limit_problem(width: int, height: int, duration_s: float, max_pixels: int | None,
                  max_duration_s: float | None) -> str | None:
    """Why a video is over the configured size/length limits; None if it is within them.

    Zero or None means no limit; an unknown size (0) or duration (nan) is not refused. The
    message names the config key because the person reading it wants to know what to change.
    """
    pixels = int(width) * int(height)
    if max_pixels and pixels > max_pixels:
        return (f"frame size {width}x{height} = {pixels} pixels is over the limit of {max_pixels} "
                f"pixels (raise decode.max_pixels, or set it to 0 for no limit)")
    if max_duration_s and math.isfinite(duration_s) and duration_s > max_duration_s:
        return (f"duration {duration_s:.3f} s is over the limit of {max_duration_s:g} s "
                f"(raise decode.max_duration_s, or set it to 0 for no limit)")
    return None
