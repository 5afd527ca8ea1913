"""Streaming video decode: one file -> FrameBatch after FrameBatch, never the whole video in memory.

Policy for damaged input is "keep what decoded, mark it truncated": a file that cannot be opened as
a video at all raises DecodeError (one line, naming the file), while a file that breaks part way
through yields every frame decoded before the break and then reports `truncated` and a reason, so
the pipeline can still write (and flag) the usable part of a long recording.

Times come from each frame's pts * time_base, never frame_index / fps: variable frame rate phone
video, dropped frames and edit lists make the index-based time drift.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import os
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Self

import av
import numpy as np

from stages.batches import FrameBatch, VideoMeta

# Frames the header lists but that did not decode, before we call a file truncated. Some real files
# list one or two packets more than decode (edit lists discarding leading B-frames), so a single
# missing frame must not count; a cut file loses far more than this unless it is cut in the last
# packet, and that case is caught by the "last packet incomplete" check instead.
_MISSING_FRAMES_ABS = 2
_MISSING_FRAMES_REL = 0.01
# With no frame count in the header we estimate it from duration * fps, which is coarser.
_MISSING_DURATION_REL = 0.05

_ISO_BOX_TYPES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid"}


class DecodeError(Exception):
    """The file cannot be read as a video; str(e) is one line: "<path>: <reason>"."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # FFmpeg messages may carry newlines
        super().__init__(f"{self.path}: {self.reason}")


def video_id_for(path: str | os.PathLike) -> str:
    """A stable id for a video file, safe to use as one directory name.

    "<stem>-<hash8>": the file stem with every character outside [A-Za-z0-9._-] replaced by "_",
    leading dots removed (so the id is never ".", ".." or hidden) and cut to 64 characters, then the
    first 8 hex digits of the SHA-1 of the resolved absolute path. The stem keeps ids readable; the
    hash keeps ".../a/clip.mp4" and ".../b/clip.mp4" apart. The id depends on where the file is, so
    the same file reached through another mount point gets another id (symlinks are resolved).
    """
    p = Path(path).expanduser()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", p.stem).lstrip(".")[:64] or "video"
    digest = hashlib.sha1(str(p.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{stem}-{digest}"


def count_frames(path: str | os.PathLike) -> int:
    """Reference count: every frame plain PyAV decodes from the first video stream.

    Deliberately independent of VideoReader (no threads, no batching, no peeking) so tests can use
    it as ground truth. Open errors propagate as av errors; a decode error part way through stops
    the count there, like VideoReader does.
    """
    n = 0
    with av.open(str(path)) as container:
        try:
            for _ in container.decode(video=0):
                n += 1
        except av.error.FFmpegError:
            pass
    return n


def _iso_bmff_problem(path: str, size: int) -> str | None:
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


class VideoReader:
    """Streams one video as FrameBatch objects of up to `batch_size` consecutive frames.

    with VideoReader(path, batch_size=8, max_side=1280) as reader:
        reader.meta                      # VideoMeta, known right after opening
        for batch in reader: ...         # RGB uint8, upright, time_s = pts * time_base
        reader.truncated, reader.truncation_reason, reader.frames_decoded

    A reader is iterated once (decoding is a single forward pass over the file). The truncation
    attributes are final once the last batch has been handed out: the reader looks one frame
    ahead, so even a caller that stops right after the last batch sees the verdict.
    `exhausted` says whether the whole file was read (False if the caller stopped early, in which
    case `truncated` is not judged).
    """

    def __init__(self, path: str | os.PathLike, batch_size: int = 8, max_side: int | None = None,
                 video_id: str | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_side is not None and max_side < 1:
            raise ValueError(f"max_side must be >= 1 or None, got {max_side}")
        self.path = str(path)
        self.batch_size = int(batch_size)
        self.max_side = max_side
        self.truncated = False
        self.truncation_reason: str | None = None
        self.frames_decoded = 0
        self.missing_pts = 0  # frames without pts, timed by the fallback in _time_of
        self.corrupt_frames = 0  # frames the decoder flagged as concealed/damaged (kept)
        self.exhausted = False
        self._iterated = False
        self._container = None
        self._last_packet_cut = False
        self._empty_packets = 0
        self._first: av.VideoFrame | None = None

        if not os.path.exists(self.path):
            raise DecodeError(self.path, "file not found")
        if not os.path.isfile(self.path):
            raise DecodeError(self.path, "not a regular file")
        size = os.path.getsize(self.path)
        if size == 0:
            raise DecodeError(self.path, "empty file (0 bytes)")
        try:
            self._container = av.open(self.path)
        except av.error.InvalidDataError:
            reason = _iso_bmff_problem(self.path, size)
            raise DecodeError(self.path, reason or "not a video (no video stream / invalid data)") from None
        except (av.error.FFmpegError, OSError) as e:
            raise DecodeError(self.path, f"cannot open ({getattr(e, 'strerror', None) or e})") from None
        try:
            self._stream = self._pick_stream()
            self._stream.thread_type = "AUTO"  # frame + slice threads; several x faster on HD H.264
            self._time_base = self._stream.time_base or Fraction(1, 1)
            self._fps, self._duration = self._rate_and_duration()
            self._frames = self._decode_frames()
            # Rotation lives in the display-matrix side data that FFmpeg attaches to decoded frames;
            # PyAV 18 has a setter on the stream but no getter, so we decode the first frame now.
            self._first = next(self._frames, None)
            self.meta = self._read_meta(video_id, size)
        except BaseException:
            self.close()
            raise

    # ---- opening ---------------------------------------------------------------------------
    def _pick_stream(self):
        # Cover art in mp3/m4a shows up as a one-picture "video" stream; it is not a video.
        disp = av.stream.Disposition.attached_pic
        videos = [s for s in self._container.streams.video if not (s.disposition & disp)]
        if videos:
            return videos[0]
        kinds = sorted({s.type for s in self._container.streams
                        if not (s.type == "video" and s.disposition & disp)})
        what = ("audio only" if kinds == ["audio"] else
                f"only {', '.join(kinds)} streams" if kinds else "no streams at all")
        raise DecodeError(self.path, f"no video stream ({what})")

    def _rate_and_duration(self) -> tuple[float, float]:
        """fps (nan if the header has no rate) and duration in seconds (nan if unknown)."""
        s = self._stream
        rate = s.average_rate or s.guessed_rate
        fps = float(rate) if rate else math.nan
        if s.duration is not None and s.time_base is not None:
            return fps, float(s.duration * s.time_base)
        if self._container.duration is not None:
            return fps, self._container.duration / av.time_base  # microseconds
        return fps, math.nan

    def _read_meta(self, video_id: str | None, size: int) -> VideoMeta:
        s = self._stream
        # frame.rotation: degrees counter-clockwise (FFmpeg's av_display_rotation_get), -180..180.
        # Stored as 0/90/180/270 counter-clockwise, so a phone's legacy "rotate=90" tag reads 270.
        rot = self._first.rotation if self._first is not None else 0
        self._rot = round(rot / 90.0) % 4  # np.rot90 k; flips in the matrix are ignored
        w = self._first.width if self._first is not None else s.codec_context.width
        h = self._first.height if self._first is not None else s.codec_context.height
        if self._rot % 2:
            w, h = h, w
        return VideoMeta(
            video_id=video_id or video_id_for(self.path), path=self.path, size_bytes=size,
            width=int(w), height=int(h), fps=self._fps, frame_count=int(s.frames or 0),
            duration_s=self._duration, rotation=self._rot * 90, codec=s.codec_context.name,
        )

    # ---- decoding ------------------------------------------------------------------------
    def _decode_frames(self) -> Iterator[av.VideoFrame]:
        """Every frame of the stream in output (presentation) order; stops quietly on errors."""
        try:
            for packet in self._container.demux(self._stream):
                if packet.size:
                    # The demuxer flags a packet it could not read in full: the file ends inside it.
                    self._last_packet_cut = packet.is_corrupt
                elif packet.dts is not None:
                    # Empty packets are dropped frames (AVI, some capture files): the header counts
                    # them but they decode to nothing, so they must not look like missing frames.
                    self._empty_packets += 1
                for frame in packet.decode():
                    self.frames_decoded += 1
                    yield frame
        except av.error.FFmpegError as e:
            msg = getattr(e, "strerror", None) or str(e)
            self._mark_truncated(f"decode error after {self.frames_decoded} frames ({msg})")
        else:
            self._check_complete()
        self.exhausted = True

    def _check_complete(self) -> None:
        """Did the stream end where the header says it should? Else the file was cut short."""
        s, got = self._stream, self.frames_decoded
        if s.frames:
            expected, rel = int(s.frames) - self._empty_packets, _MISSING_FRAMES_REL
            what = f"decoded {got} of {expected} frames the header lists"
        else:
            dur, fps = self._duration, self._fps
            expected = round(dur * fps) if math.isfinite(dur) and math.isfinite(fps) else 0
            rel = _MISSING_DURATION_REL
            what = f"decoded {got} frames, header duration * fps says about {expected}"
        if expected and expected - got > max(_MISSING_FRAMES_ABS, rel * expected):
            self._mark_truncated(what)
        if self._last_packet_cut:
            self._mark_truncated("last packet incomplete (file ends inside it)")

    def _mark_truncated(self, reason: str) -> None:
        self.truncated = True
        self.truncation_reason = reason if self.truncation_reason is None else (
            f"{self.truncation_reason}; {reason}")

    def _time_of(self, frame: av.VideoFrame, prev: float | None) -> float:
        if frame.pts is not None:
            return float(frame.pts * (frame.time_base or self._time_base))
        # No pts (rare: raw streams, some AVI): one nominal frame after the previous frame, using
        # the frame's own duration if it has one, else 1 / average rate. Counted in missing_pts.
        self.missing_pts += 1
        if prev is None:
            return 0.0
        if frame.duration:
            step = float(frame.duration * (frame.time_base or self._time_base))
        else:
            step = 1.0 / self._fps if self._fps and math.isfinite(self._fps) else 0.0
        return prev + step

    def _image_of(self, frame: av.VideoFrame) -> tuple[np.ndarray, float]:
        """RGB uint8 upright image, and video pixels per image pixel."""
        w, h = frame.width, frame.height
        long_side = max(w, h)
        if self.max_side is not None and long_side > self.max_side:
            scale = long_side / self.max_side
            nw, nh = max(1, round(w / scale)), max(1, round(h / scale))
            # swscale AREA in the same call as the YUV->RGB conversion: no full-size RGB copy.
            img = frame.to_ndarray(format="rgb24", width=nw, height=nh, interpolation="AREA")
        else:
            scale = 1.0
            img = frame.to_ndarray(format="rgb24")
        if frame.is_corrupt:
            self.corrupt_frames += 1
        if self._rot:
            img = np.rot90(img, k=self._rot)  # view; made contiguous by np.stack in the batch
        return img, scale

    def __iter__(self) -> Iterator[FrameBatch]:
        if self._iterated:
            raise RuntimeError(f"{self.path}: a VideoReader can be iterated only once")
        self._iterated = True
        vid = self.meta.video_id
        images: list[np.ndarray] = []
        times: list[float] = []
        start = 0  # frame_index of images[0]
        scale = 1.0
        prev_t: float | None = None

        def flush() -> FrameBatch:
            idx = np.arange(start, start + len(images), dtype=np.int64)
            return FrameBatch(vid, idx, np.asarray(times, np.float64), np.stack(images), scale)

        try:
            first = [self._first] if self._first is not None else []
            self._first = None
            for frame in itertools.chain(first, self._frames):
                img, s = self._image_of(frame)
                t = self._time_of(frame, prev_t)
                prev_t = t
                # Flush only when the next frame arrives (or at the end), so the final batch goes
                # out after the decoder has finished and the truncation verdict is known. A size
                # change mid-stream also starts a new batch, as one batch holds one image size.
                if images and (len(images) == self.batch_size or img.shape != images[0].shape):
                    batch = flush()
                    start += len(images)
                    images, times = [], []
                    yield batch
                images.append(img)
                times.append(t)
                scale = s
            if images:
                yield flush()
        finally:
            self.close()

    # ---- lifetime ------------------------------------------------------------------------
    def close(self) -> None:
        # Also reached from the iterator's `finally`; an abandoned reader's container is closed by
        # PyAV when it is garbage collected, so no __del__ is needed.
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
