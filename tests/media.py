"""Helpers that make damaged or remuxed copies of real videos, and small real files, for tests."""
from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def remux(src: Path, dst: Path, rotation: int | None = None, **open_kw) -> Path:
    """Copy the video packets of src into dst without re-encoding."""
    with av.open(str(src)) as ic, av.open(str(dst), "w", **open_kw) as oc:
        ist = ic.streams.video[0]
        ost = oc.add_stream_from_template(ist)
        if rotation is not None:
            ost.set_display_rotation(rotation)  # counter-clockwise, read back as frame.rotation
        for pkt in ic.demux(ist):
            if pkt.dts is None:  # the flush packet
                continue
            pkt.stream = ost
            oc.mux(pkt)
    return dst


def cut(src: Path, dst: Path, frac: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * frac)])
    return dst


def black_video(dst: Path, frames: int = 6, size: tuple[int, int] = (320, 240), fps: int = 10) -> Path:
    """An H.264 clip of black frames: a real video with nobody in it."""
    with av.open(str(dst), "w") as oc:
        stream = oc.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(np.zeros((size[1], size[0], 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                oc.mux(packet)
        for packet in stream.encode():
            oc.mux(packet)
    return dst


def marked_frame(size: tuple[int, int]) -> np.ndarray:
    """RGB (h, w, 3) grey image with a white top-left quadrant, so orientation survives encoding."""
    w, h = size
    img = np.full((h, w, 3), 64, np.uint8)
    img[: h // 2, : w // 2] = 255
    return img


def encoded_clip(dst: Path, pts: Sequence[int], time_base: Fraction = Fraction(1, 1000),
                 size: tuple[int, int] = (64, 48), rotation: int | None = None, bframes: int = 0,
                 codec: str = "libx264", rate: int = 30) -> Path:
    """Encode marked_frame at the given pts (in time_base units): irregular pts make a VFR file.

    `rate` is only the nominal rate the encoder is told (mp4 uses it for the last frame's length).
    Each frame carries its duration (gap to the next pts), as a camera's muxer writes it. B-frames
    are off by default: with them libx264 derives dts from earlier frames' pts, and for uneven pts
    the mp4 muxer then records a track duration short of the last frame.
    """
    with av.open(str(dst), "w") as oc:
        stream = oc.add_stream(codec, rate=rate, options={"bf": str(bframes)} if codec == "libx264" else {})
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)  # counter-clockwise; the tkhd matrix in mp4
        img = marked_frame(size)
        for i, p in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = p, time_base
            frame.duration = (pts[i + 1] - p) if i + 1 < len(pts) else (pts[-1] - pts[-2] if i else 1)
            for packet in stream.encode(frame):
                oc.mux(packet)
        for packet in stream.encode():
            oc.mux(packet)
    return dst


def audio_file(dst: Path, seconds: float = 1.0, cover_art: bool = False) -> Path:
    """AAC tone, optionally with an mjpeg cover picture (an attached_pic "video" stream)."""
    with av.open(str(dst), "w") as oc:
        audio = oc.add_stream("aac", rate=44100)
        if cover_art:
            pic = oc.add_stream("mjpeg")
            pic.width, pic.height, pic.pix_fmt = 32, 32, "yuvj420p"
            pic.disposition = av.stream.Disposition.attached_pic
            frame = av.VideoFrame.from_ndarray(marked_frame((32, 32)), format="rgb24").reformat(format="yuvj420p")
            for packet in [*pic.encode(frame), *pic.encode()]:
                oc.mux(packet)
        n = int(44100 * seconds)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 44100)).astype(np.float32)
        for i in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(tone[None, i:i + 1024].copy(), format="fltp", layout="mono")
            frame.sample_rate = 44100
            oc.mux(audio.encode(frame))
        oc.mux(audio.encode())
    return dst


def first_frames(src: Path, dst: Path, n: int) -> Path:
    """The first n frames of a real video re-encoded (H.264, same size and rate): the same people in a clip
    that costs a fraction of the whole to run."""
    with av.open(str(src)) as ic, av.open(str(dst), "w") as oc:
        ist = ic.streams.video[0]
        ost = oc.add_stream("libx264", rate=ist.average_rate, options={"bf": "0", "crf": "18"})
        ost.width, ost.height, ost.pix_fmt = ist.codec_context.width, ist.codec_context.height, "yuv420p"
        for i, frame in enumerate(ic.decode(ist)):
            if i == n:
                break
            out = frame.reformat(format="yuv420p")
            out.pts, out.time_base = i, Fraction(1) / ist.average_rate
            for packet in ost.encode(out):
                oc.mux(packet)
        for packet in ost.encode():
            oc.mux(packet)
    return dst
