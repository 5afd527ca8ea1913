"""A video's frames by index, decoded again after the fact: what a stage downstream of the pose stage reads
when it needs the pixels (the dense stage's silhouettes, stages/dense/segment.py).

Decoding is a forward pass (decode.VideoReader), and the frames asked for come in frame order (a video's
bodies chunks do), so the source keeps its reader where the last request left it: over a whole video that
is one more decode of it, ~3 ms a 960x540 frame, against the frames held in memory from the pose stage
until the mesh stage's chunks are fitted (up to its wait_frames + chunk_frames of them, 1.5 MB each).
A request behind the reader reopens the file (a restarted actor, a chunk handed to another actor).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator

import numpy as np

from stages.io.decode import VideoReader

Frame = tuple[np.ndarray, float]  # (RGB uint8 image, video pixels per image pixel)


class FrameSource:
    """One video's frames by index (module docstring); frame indices count from the file's first frame, as
    in the people and bodies tables. max_side as the run's decode (`[decode] max_side`, 0: full size)."""

    def __init__(self, path: str, max_side: int = 0, video_id: str | None = None):
        self.path, self.max_side, self.video_id = path, max_side or None, video_id
        self._reader: VideoReader | None = None
        self._frames: Iterator[tuple[int, np.ndarray, float]] | None = None
        self._next = 0  # the index of the frame the reader yields next

    def images(self, frames: Iterable[int]) -> dict[int, Frame]:
        """frame index -> Frame for each of frames present in the file (one past its end is left out)."""
        want = sorted(set(int(f) for f in frames))
        if not want:
            return {}
        if self._frames is None or want[0] < self._next:
            self._open()
        out, wanted = {}, set(want)
        for f, img, scale in self._frames:
            self._next = f + 1
            if f in wanted:
                out[f] = (img, scale)
            if f >= want[-1]:
                break
        return out

    def _open(self) -> None:
        self.close()
        self._reader = VideoReader(self.path, batch_size=8, max_side=self.max_side, video_id=self.video_id)
        self._frames = ((int(f), img, batch.scale) for batch in self._reader
                        for f, img in zip(batch.frame_index, batch.images))
        self._next = 0

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = self._frames = None


class FrameSources:
    """The FrameSource of each of the last `keep` videos asked for, so a long-lived worker does not hold a
    reader per video it ever saw (the graph's dense actors take chunks of many videos in turn)."""

    def __init__(self, max_side: int = 0, keep: int = 4):
        self.max_side, self.keep = max_side, keep
        self._open: OrderedDict[str, FrameSource] = OrderedDict()

    def get(self, path: str, video_id: str | None = None) -> FrameSource:
        source = self._open.pop(path, None) or FrameSource(path, self.max_side, video_id)
        self._open[path] = source
        while len(self._open) > self.keep:
            self._open.popitem(last=False)[1].close()
        return source

    def close(self, path: str | None = None) -> None:
        """Close one video's source (None: all)."""
        for p in [path] if path is not None else list(self._open):
            source = self._open.pop(p, None)
            if source is not None:
                source.close()
