"""Frames by index decoded again (stages/io/frame_source.py): the same pixels the pose stage saw, forward
and after a step back, and nothing past the end."""
from __future__ import annotations

import numpy as np

from stages.io.decode import VideoReader
from stages.io.frame_source import FrameSource, FrameSources


def test_frames_by_index_match_the_decode(eval_dir):
    path = str(eval_dir / "crowd_synth" / "p10" / "video.mp4")
    with VideoReader(path, batch_size=8, max_side=640) as reader:
        seen = {int(f): (img, b.scale) for b in reader for f, img in zip(b.frame_index, b.images)}
    source = FrameSource(path, max_side=640)
    try:
        got = source.images([10, 3, 3])
        assert sorted(got) == [3, 10]
        for f in (3, 10):
            assert np.array_equal(got[f][0], seen[f][0]) and got[f][1] == seen[f][1] == 1.5  # 960 px -> 640
        assert np.array_equal(source.images([5])[5][0], seen[5][0])  # behind the reader: the file reopened
        assert np.array_equal(source.images([11, 49])[49][0], seen[49][0])
        assert source.images([49, 50]).keys() == {49} and source.images([]) == {}  # 50 frames: 0..49
    finally:
        source.close()

    sources = FrameSources(keep=1)
    first = sources.get(path)
    assert sources.get(path) is first
    sources.get(path + ".other")  # a second video: the first one's reader is closed and forgotten
    assert sources.get(path) is not first
    sources.close()
