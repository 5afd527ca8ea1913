"""Helpers that make damaged or remuxed copies of real videos for tests."""
from __future__ import annotations

from pathlib import Path

import av


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
    import numpy as np

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
