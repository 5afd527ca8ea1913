"""Tests for stages/decode.py on real videos (and damaged copies of them made in tmp_path).

Eval data: /work/shared/eval (next to the repo) or $POSEPIPE_EVAL pointing at the eval folder.
"""
from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
from conftest import EVAL
from media import cut, remux

from stages.batches import FrameBatch
from stages.decode import DecodeError, VideoReader, count_frames, video_id_for

VIDEOS = EVAL / "videos"
LANDSCAPE = VIDEOS / "mmtracking_demo.mp4"  # MPEG-4 Part 2, 1920x1080, 8 frames, moov at end
PORTRAIT = VIDEOS / "mmhuman3d_multi_person_demo.mp4"  # H.264 1080x1920, 40 frames, moov at end
VTEST = VIDEOS / "vtest.mp4"  # H.264 480x360 + audio, 795 frames, moov first
POSETRACK = EVAL / "posetrack18" / "videos" / "000001_mpiinew_test" / "000001_mpiinew_test.mp4"
CROWD = EVAL / "crowd_synth" / "p05" / "video.mp4"

def read_all(path, **kw) -> tuple[VideoReader, list[FrameBatch]]:
    with VideoReader(path, **kw) as r:
        return r, list(r)


# ---- frame counts, times, batches --------------------------------------------------------

@pytest.mark.parametrize("path", [LANDSCAPE, PORTRAIT, POSETRACK, CROWD, VTEST], ids=lambda p: p.parent.name + "/" + p.name)
def test_frame_count_equals_pyav(path):
    r, batches = read_all(path, batch_size=16)
    n = sum(len(b) for b in batches)
    assert n == count_frames(path) == r.frames_decoded
    assert n == r.meta.frame_count  # these headers are right
    assert not r.truncated and r.truncation_reason is None and r.exhausted
    idx = np.concatenate([b.frame_index for b in batches])
    np.testing.assert_array_equal(idx, np.arange(n))


@pytest.mark.parametrize("path", [PORTRAIT, VTEST], ids=lambda p: p.name)
def test_time_is_pts_times_time_base(path):
    r, batches = read_all(path, batch_size=8)
    times = np.concatenate([b.time_s for b in batches])
    assert np.all(np.diff(times) > 0)
    assert r.missing_pts == 0
    # An independent plain PyAV decode of the first frames gives the reference pts.
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        ref = []
        for f in c.decode(s):
            ref.append(float(Fraction(f.pts) * s.time_base))
            if len(ref) == 12:
                break
    assert times[: len(ref)].tolist() == ref
    # last frame: pts-based time sits one frame before the header duration
    assert times[-1] == pytest.approx(r.meta.duration_s - 1 / r.meta.fps, abs=1e-3)


def test_batch_sizes_and_columns():
    r, batches = read_all(PORTRAIT, batch_size=3)
    assert [len(b) for b in batches] == [3] * 13 + [1]
    for i, b in enumerate(batches):
        assert b.video_id == r.meta.video_id
        assert b.images.dtype == np.uint8 and b.images.flags.c_contiguous
        np.testing.assert_array_equal(b.frame_index, np.arange(3 * i, 3 * i + len(b)))
    with pytest.raises(ValueError):
        VideoReader(PORTRAIT, batch_size=0)


def test_meta_of_real_clips():
    with VideoReader(PORTRAIT) as r:
        m = r.meta
        first = next(iter(r))
    assert (m.width, m.height, m.rotation, m.codec) == (1080, 1920, 0, "h264")
    assert (m.fps, m.frame_count) == (12.0, 40)
    assert m.duration_s == pytest.approx(40 / 12, abs=1e-3)
    assert m.size_bytes == PORTRAIT.stat().st_size and m.path == str(PORTRAIT)
    assert first.images.shape == (8, 1920, 1080, 3) and first.scale == 1.0
    with VideoReader(LANDSCAPE, video_id="given") as r:
        assert (r.meta.width, r.meta.height, r.meta.codec, r.meta.video_id) == (1920, 1080, "mpeg4", "given")


def test_images_are_rgb():
    # the reader's frame equals PyAV's own rgb24 conversion, and OpenCV's BGR read swapped to RGB
    with VideoReader(LANDSCAPE) as r:
        img = next(iter(r)).images[0]
    ok, bgr = cv2.VideoCapture(str(LANDSCAPE)).read()
    assert ok
    diff = np.abs(img.astype(int) - bgr[..., ::-1].astype(int)).mean()
    assert diff < 3.0, diff  # colour conversion details differ slightly, channel order must not
    assert np.abs(img.astype(int) - bgr.astype(int)).mean() > diff


# ---- max_side -----------------------------------------------------------------------------

@pytest.mark.parametrize("path,max_side,shape,scale", [
    (LANDSCAPE, 640, (360, 640), 3.0),
    (PORTRAIT, 480, (480, 270), 4.0),
    (PORTRAIT, 4000, (1920, 1080), 1.0),  # never upscales
], ids=["landscape", "portrait", "no-upscale"])
def test_max_side(path, max_side, shape, scale):
    r, batches = read_all(path, max_side=max_side)
    assert all(b.images.shape[1:3] == shape and b.scale == scale for b in batches)
    assert (r.meta.width, r.meta.height) == (shape[1] * scale, shape[0] * scale)  # meta stays in video px
    # same picture as a full-size decode shrunk by cv2 INTER_AREA
    full = next(iter(VideoReader(path, batch_size=1))).images[0]
    ref = cv2.resize(full, shape[::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(batches[0].images[0].astype(int) - ref.astype(int)).mean() < 4.0


# ---- rotation -----------------------------------------------------------------------------

@pytest.mark.parametrize("ccw", [90, -90, 180])
def test_rotation_metadata_gives_upright_frames(tmp_path, ccw):
    rotated = remux(LANDSCAPE, tmp_path / "rot.mp4", rotation=ccw)
    _, plain = read_all(LANDSCAPE)
    r, batches = read_all(rotated)
    k = (ccw // 90) % 4
    assert r.meta.rotation == k * 90
    assert (r.meta.width, r.meta.height) == ((1080, 1920) if k % 2 else (1920, 1080))
    np.testing.assert_array_equal(batches[0].images, np.rot90(plain[0].images, k=k, axes=(1, 2)))
    # downscaling and rotation together: longer side == max_side, scale in video px per image px
    _, b2 = read_all(rotated, max_side=480)
    assert b2[0].images.shape[1:3] == ((480, 270) if k % 2 else (270, 480)) and b2[0].scale == 4.0


# ---- bad input ----------------------------------------------------------------------------

def _open_error(path) -> str:
    with pytest.raises(DecodeError) as ei:
        VideoReader(path)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(str(path) + ": ")
    return msg


def test_missing_zero_byte_and_text_file(tmp_path):
    assert _open_error(tmp_path / "video.mp4").endswith("file not found")
    (tmp_path / "x.mp4").write_bytes(b"")
    assert _open_error(tmp_path / "x.mp4").endswith("empty file (0 bytes)")
    (tmp_path / "notes.mp4").write_text("shopping list\neggs\nmilk\n" * 20)
    assert "not a video" in _open_error(tmp_path / "notes.mp4")
    assert "not a regular file" in _open_error(tmp_path)


def test_audio_only_file(tmp_path):
    path = tmp_path / "a.mp4"
    with av.open(str(path), "w") as oc:
        st = oc.add_stream("aac", rate=44100)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(44100) / 44100)).astype(np.float32)
        for i in range(0, len(tone), 1024):
            f = av.AudioFrame.from_ndarray(tone[None, i:i + 1024].copy(), format="fltp", layout="mono")
            f.sample_rate = 44100
            oc.mux(st.encode(f))
        oc.mux(st.encode())
    assert _open_error(path).endswith("no video stream (audio only)")


def test_moov_at_end_cut_has_no_index(tmp_path):
    # mmhuman3d's moov atom sits after mdat: cutting the file loses the index, nothing decodable
    msg = _open_error(cut(PORTRAIT, tmp_path / "cut.mp4", 0.5))
    assert "truncated or corrupt: moov atom not found" in msg


def test_faststart_cut_mid_mdat_keeps_frames(tmp_path):
    fast = remux(PORTRAIT, tmp_path / "fast.mp4", options={"movflags": "faststart"})
    assert fast.read_bytes()[4:8] == b"ftyp" and b"moov" in fast.read_bytes()[:200]
    r, batches = read_all(cut(fast, tmp_path / "half.mp4", 0.5))
    n = sum(len(b) for b in batches)
    assert 0 < n < 40 and n == r.frames_decoded
    assert r.meta.frame_count == 40
    assert r.truncated and r.exhausted
    assert f"decoded {n} of 40 frames" in r.truncation_reason
    assert np.all(np.diff(np.concatenate([b.time_s for b in batches])) > 0)


def test_cut_in_last_packet_is_truncated(tmp_path):
    # only the last 10 bytes missing: the frame count is nearly right, the incomplete packet tells.
    # A 30-packet moov-first copy of vtest keeps this fast.
    short = tmp_path / "short.mp4"
    remux_head = tmp_path / "head.mp4"
    with av.open(str(VTEST)) as ic, av.open(str(remux_head), "w", options={"movflags": "faststart"}) as oc:
        ist = ic.streams.video[0]
        ost = oc.add_stream_from_template(ist)
        for i, pkt in enumerate(ic.demux(ist)):
            if pkt.dts is None or i >= 30:
                break
            pkt.stream = ost
            oc.mux(pkt)
    short.write_bytes(remux_head.read_bytes()[:-10])
    r, _ = read_all(short)
    assert r.meta.frame_count == 30
    assert r.truncated and "last packet incomplete" in r.truncation_reason
    assert r.frames_decoded >= 28  # at most the cut frame (and what depends on it) is lost


def test_truncation_without_frame_count_uses_duration(tmp_path):
    mkv = remux(PORTRAIT, tmp_path / "clip.mkv")  # Matroska has a duration but no frame count
    r, _ = read_all(mkv)
    assert r.meta.frame_count == 0 and not r.truncated and r.frames_decoded == 40
    r, batches = read_all(cut(mkv, tmp_path / "cut.mkv", 0.5))
    assert r.truncated and "duration * fps" in r.truncation_reason
    assert 0 < sum(len(b) for b in batches) == r.frames_decoded < 40


def test_decode_error_mid_stream_keeps_earlier_frames(tmp_path):
    data = bytearray(PORTRAIT.read_bytes())
    start = int(len(data) * 0.6)
    data[start:start + 20000] = bytes(20000)  # zeros inside mdat: H.264 send_packet fails there
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    r, batches = read_all(bad, batch_size=8)
    n = sum(len(b) for b in batches)
    assert r.truncated and r.truncation_reason.startswith(f"decode error after {n} frames")
    assert 0 < n < 40 and n == r.frames_decoded
    _, good = read_all(PORTRAIT, batch_size=8)  # frames before the damage are intact
    np.testing.assert_array_equal(batches[0].images, good[0].images)


# ---- ids and lifetime -----------------------------------------------------------------------

def test_video_id_for(tmp_path):
    a, b = tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4"
    assert video_id_for(a) != video_id_for(b)
    assert video_id_for(a).startswith("clip-") and video_id_for(a) == video_id_for(str(a))
    for weird in ["../../etc/passwd", "..", "my video (1).mp4", ".hidden.mp4", "d/é ü.mov", "/"]:
        vid = video_id_for(weird)
        assert vid and "/" not in vid and "\\" not in vid and not vid.startswith(".")
        assert set(vid) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    assert video_id_for("my video (1).mp4").startswith("my_video_1_-")


def test_iterate_once_and_close():
    r = VideoReader(PORTRAIT, batch_size=8)
    it = iter(r)
    next(it)
    it.close()  # caller stopped early: container closed, no verdict on truncation
    assert r._container is None and not r.exhausted and not r.truncated
    with pytest.raises(RuntimeError):
        list(r)
    with VideoReader(LANDSCAPE) as r2:
        pass
    assert r2._container is None
