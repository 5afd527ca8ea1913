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
import unicodedata
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Self

import av
import numpy as np

from stages.io import probe
from stages.batches import FrameBatch, VideoMeta

# Frames the header lists but that did not decode, before we call a file truncated. Some real files
# list one or two packets more than decode (edit lists discarding leading B-frames), so a single
# missing frame must not count; a cut file loses far more than this unless it is cut in the last
# packet, and that case is caught by the "last packet incomplete" check instead.
_MISSING_FRAMES_ABS = 2
_MISSING_FRAMES_REL = 0.01
# With no frame count in the header we compare the time the frames cover with the header duration;
# the last frame's length is often only the muxer's guess, hence the slack (or two nominal frames).
_MISSING_DURATION_REL = 0.05
# Ids become directory names ("video_id=<id>"): well under the 255-byte limit, still readable.
_ID_STEM_MAX = 64


class DecodeError(Exception):
    """The file cannot be read as a video; str(e) is one line: "<path>: <reason>"."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # FFmpeg messages may carry newlines
        super().__init__(f"{self.path}: {self.reason}")


def video_id_for(path: str | os.PathLike) -> str:
    """A stable id for a video file, safe as one directory name and as a hive partition value.

    "<stem>-<hash8>": the file stem folded to ASCII (é -> e), every character outside
    [A-Za-z0-9._-] replaced by "_" (this removes "/", "\\", "=", NUL, control characters and "%"),
    runs of dots squeezed to one (no ".."), leading dots and dashes removed (never hidden, never
    read as an option), cut to 64 characters; then the first 8 hex digits of the SHA-1 of the
    resolved absolute path. The stem keeps ids readable; the hash keeps ".../a/clip.mp4" and
    ".../b/clip.mp4" apart, and names that sanitise alike ("a b.mp4", "a_b.mp4"). The id depends
    on where the file is, so the same file reached through another mount point gets another id
    (symlinks are resolved).
    """
    p = Path(path).expanduser()
    stem = unicodedata.normalize("NFKD", p.stem).encode("ascii", "ignore").decode("ascii")
    stem = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "_", stem))
    stem = stem.lstrip(".-")[:_ID_STEM_MAX] or "video"
    try:
        full = str(p.resolve())
    except (OSError, ValueError):  # NUL in the name, symlink loop: hash the unresolved path
        full = os.path.abspath(p)
    digest = hashlib.sha1(full.encode("utf-8", "surrogateescape")).hexdigest()[:8]
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


class VideoReader:
    """Streams one video as FrameBatch objects of up to `batch_size` consecutive frames.

    with VideoReader(path, batch_size=8, max_side=1280, max_pixels=3840 * 2160) as reader:
        reader.meta                      # VideoMeta, known right after opening
        for batch in reader: ...         # RGB uint8, upright, time_s = pts * time_base
        reader.truncated, reader.truncation_reason, reader.frames_decoded

    A reader is iterated once (decoding is a single forward pass over the file). The truncation
    attributes are final once the last batch has been handed out: the reader looks one frame
    ahead, so even a caller that stops right after the last batch sees the verdict.
    `exhausted` says whether the whole file was read (False if the caller stopped early, in which
    case `truncated` is not judged).

    `max_pixels` (coded width * height) and `max_duration_s` refuse a video at open, from the
    container header alone, with a DecodeError naming the limit; 0 or None means no limit.
    """

    def __init__(self, path: str | os.PathLike, batch_size: int = 8, max_side: int | None = None,
                 video_id: str | None = None, *, max_pixels: int | None = 0,
                 max_duration_s: float | None = 0.0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_side is not None and max_side < 1:
            raise ValueError(f"max_side must be >= 1 or None, got {max_side}")
        if (max_pixels or 0) < 0 or (max_duration_s or 0) < 0:
            raise ValueError(f"max_pixels and max_duration_s must be >= 0 (0 = no limit), got "
                             f"{max_pixels} and {max_duration_s}")
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
        self._span: tuple[float, float] | None = None  # (first pts, last pts + duration) in s
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
            reason = probe.iso_bmff_problem(self.path, size)
            raise DecodeError(self.path, reason or "not a video (no video stream / invalid data)") from None
        except (av.error.FFmpegError, OSError) as e:
            raise DecodeError(self.path, f"cannot open ({getattr(e, 'strerror', None) or e})") from None
        try:
            self._stream = probe.video_stream(self._container)
            if self._stream is None:
                raise DecodeError(self.path, probe.no_video_reason(self._container))
            self._stream.thread_type = "AUTO"  # frame + slice threads; several x faster on HD H.264
            self._time_base = self._stream.time_base or Fraction(1, 1)
            self._fps, self._duration = probe.rate_and_duration(self._stream, self._container)
            cc = self._stream.codec_context
            limits = (max_pixels, max_duration_s)
            self._refuse_over(cc.width, cc.height, *limits)
            self._frames = self._decode_frames()
            # Rotation lives in the display-matrix side data that FFmpeg attaches to decoded frames;
            # PyAV 18 has a setter on the stream but no getter, so we decode the first frame now.
            self._first = next(self._frames, None)
            if self._first is not None and not (cc.width and cc.height):
                # No size in the header (rare raw streams): judge the first frame instead.
                self._refuse_over(self._first.width, self._first.height, *limits)
            self.meta = self._read_meta(video_id, size)
        except BaseException:
            self.close()
            raise

    # ---- opening ---------------------------------------------------------------------------
    def _refuse_over(self, width: int, height: int, max_pixels, max_duration_s) -> None:
        problem = probe.limit_problem(width, height, self._duration, max_pixels, max_duration_s)
        if problem:
            raise DecodeError(self.path, problem)

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
                    self._note_span(frame)
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
            expected = int(s.frames) - self._empty_packets
            if expected - got > max(_MISSING_FRAMES_ABS, _MISSING_FRAMES_REL * expected):
                self._mark_truncated(f"decoded {got} of {expected} frames the header lists")
        else:
            # Judged in time, not as duration * fps frames: the header rate of variable frame rate
            # video (screen and browser recordings, mostly mkv/webm, which carry no frame count)
            # can be far from the real average and would flag complete files as cut.
            dur, fps = self._duration, self._fps
            covered = self._covered_s()
            slack = max(_MISSING_DURATION_REL * dur, _MISSING_FRAMES_ABS / fps if fps > 0 else 0.0)
            if math.isfinite(dur) and covered is not None and dur - covered > slack:
                self._mark_truncated(f"decoded {got} frames covering {covered:.3f} s of the "
                                     f"{dur:.3f} s header duration")
        if self._last_packet_cut:
            self._mark_truncated("last packet incomplete (file ends inside it)")

    def _note_span(self, frame: av.VideoFrame) -> None:
        if frame.pts is None:
            return
        tb = frame.time_base or self._time_base
        t = float(frame.pts * tb)
        end = t + float((frame.duration or 0) * tb)
        self._span = (t, end) if self._span is None else (
            min(self._span[0], t), max(self._span[1], end))

    def _covered_s(self) -> float | None:
        """Seconds from the container's start to the end of the last decoded frame; None: unknown."""
        if self._span is None:  # no frame had a pts: count nominal frames if the header has a rate
            if not self.frames_decoded:
                return 0.0
            return self.frames_decoded / self._fps if self._fps > 0 else None
        first, end = self._span
        # Durations count from the container's start, which may lie before the first video frame
        # (audio starting first), so measure from there, as the header does.
        start = self._container.start_time
        return end - (min(first, start / av.time_base) if start is not None else first)

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
