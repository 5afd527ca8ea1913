"""Tests for stages/io/decode.py on real videos (and damaged copies of them made in tmp_path).

Eval data: /work/shared/eval (next to the repo) or $POSEPIPE_EVAL pointing at the eval folder.
"""
from __future__ import annotations

import re
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
from conftest import EVAL
from media import audio_file, cut, encoded_clip, marked_frame, remux

from stages.batches import FrameBatch
from stages.io.decode import DecodeError, VideoReader, count_frames, video_id_for

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


# ---- variable frame rate ------------------------------------------------------------------

VFR_PTS = [0, 33, 50, 120, 200, 210, 400, 433, 466, 600]  # ms: bursts, a stall, a 10 ms gap


@pytest.mark.parametrize("ext,bframes", [("mp4", 0), ("mp4", 2), ("mov", 0), ("mkv", 2)])
def test_variable_frame_rate(tmp_path, ext, bframes):
    r, batches = read_all(encoded_clip(tmp_path / f"vfr.{ext}", VFR_PTS, bframes=bframes), batch_size=3)
    times = np.concatenate([b.time_s for b in batches]).tolist()
    # exactly the pts written, though mp4 rescales 1/1000 to its own 1/16000 time base
    assert times == [float(Fraction(p, 1000)) for p in VFR_PTS]
    assert r.frames_decoded == len(VFR_PTS) and r.missing_pts == 0 and r.corrupt_frames == 0
    # mkv has no frame count: a duration * header-rate estimate would call this complete file cut
    assert not r.truncated, r.truncation_reason
    gaps = np.diff(VFR_PTS) / 1000
    assert 1 / gaps.max() <= r.meta.fps <= 1 / gaps.min()
    if ext != "mkv":
        assert r.meta.frame_count == len(VFR_PTS)
    if not bframes:  # count and duration in the header: fps is their average
        assert 0.6 < r.meta.duration_s < 0.75  # last pts + the muxer's guess at the last frame's length
        assert r.meta.fps == pytest.approx(len(VFR_PTS) / r.meta.duration_s)


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


@pytest.mark.parametrize("ext,codec", [("mp4", "libx264"), ("mkv", "libx264"), ("webm", "libvpx-vp9")])
def test_rotation_of_encoded_clip(tmp_path, ext, codec):
    # A display matrix, as phones write it (tkhd matrix in mp4/mov, projection in mkv/webm). FFmpeg 8
    # drops a legacy "rotate" metadata tag when muxing, so set_display_rotation is how to write one.
    path = encoded_clip(tmp_path / f"rot.{ext}", range(0, 400, 100), rotation=90, codec=codec)
    with av.open(str(path)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.width, cc.height) == (64, 48)  # coded landscape
    r, batches = read_all(path)
    assert r.meta.rotation == 90 and (r.meta.width, r.meta.height) == (48, 64)
    images = np.concatenate([b.images for b in batches])
    assert images.shape == (4, 64, 48, 3)
    upright = np.rot90(marked_frame((64, 48)))  # 90 degrees ccw: the white quadrant goes bottom-left
    assert np.abs(images.astype(int) - upright).mean() < 4


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


@pytest.mark.parametrize("name,cover_art,streams", [
    ("a.m4a", False, "#0 audio aac"),
    ("song.mp4", True, "#0 audio aac, #1 cover art mjpeg"),  # album art is a one-picture "video"
])
def test_audio_only_file(tmp_path, name, cover_art, streams):
    path = audio_file(tmp_path / name, cover_art=cover_art)
    assert _open_error(path).endswith(f"no video stream (audio only; streams: {streams})")


def test_subtitles_only_file(tmp_path):
    path = tmp_path / "subs.mp4"  # FFmpeg goes by content, not by the name
    path.write_text("1\n00:00:01,000 --> 00:00:02,000\nhello\n")
    assert _open_error(path).endswith("no video stream (streams: #0 subtitle srt)")


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
    assert r.truncated and "s of the 3.333 s header duration" in r.truncation_reason
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


# ---- size and length limits ---------------------------------------------------------------

def test_limits_refuse_at_open_without_decoding(tmp_path, monkeypatch):
    clip = encoded_clip(tmp_path / "clip.mp4", range(0, 1000, 100), rate=10)  # 64x48, 10 frames, 1.0 s
    with monkeypatch.context() as m:
        m.setattr(VideoReader, "_decode_frames", lambda self: pytest.fail("decoded a refused video"))
        with pytest.raises(DecodeError) as ei:
            VideoReader(clip, max_pixels=3071)
        assert str(ei.value) == (f"{clip}: frame size 64x48 = 3072 pixels is over the limit of 3071 pixels "
                                 "(raise decode.max_pixels, or set it to 0 for no limit)")
        with pytest.raises(DecodeError) as ei:
            VideoReader(clip, max_duration_s=0.5)
        assert str(ei.value) == (f"{clip}: duration 1.000 s is over the limit of 0.5 s "
                                 "(raise decode.max_duration_s, or set it to 0 for no limit)")
    for ok in [{"max_pixels": 3072, "max_duration_s": 1.0}, {"max_pixels": 0, "max_duration_s": 0}, {}]:
        r, _ = read_all(clip, **ok)
        assert r.frames_decoded == 10 and not r.truncated
    with pytest.raises(ValueError):
        VideoReader(clip, max_pixels=-1)


def test_decode_worker_gets_limits_from_config():
    from pipeline.config import load_config
    from pipeline.workers import DecodeWorker

    d = load_config().decode
    assert (d.max_pixels, d.max_duration_s) == (3840 * 2160, 4 * 3600.0)
    worker = DecodeWorker(d.batch_size, d.max_side, d.max_pixels, d.max_duration_s)
    assert worker.open(str(PORTRAIT), "p")["width"] == 1080  # 1080p, 3 s: well inside the defaults
    worker.close("p")
    small = DecodeWorker(d.batch_size, d.max_side, max_pixels=1920 * 1080 - 1)
    assert "raise decode.max_pixels" in small.open(str(PORTRAIT), "p")["error"]
    assert "p" not in small.readers


# ---- ids and lifetime -----------------------------------------------------------------------

HOSTILE_NAMES = ["../../etc/passwd.mp4", "..", "/", "a=b.mp4", ".hidden.mp4", "-rf.mp4", "a..b.mp4",
                 "...mp4", "my video (1).mp4", "my_video_1_.mp4", "d/é ü.mov", "日本語.mp4", "tab\there.mp4",
                 "nul\x00.mp4", "back\\slash.mp4", "%2e%2e%2f.mp4", "x" * 300 + ".mp4"]


def test_video_id_for(tmp_path):
    a, b = tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4"
    assert video_id_for(a) != video_id_for(b)
    assert video_id_for(a).startswith("clip-") and video_id_for(a) == video_id_for(str(a))


def test_video_id_for_hostile_names(tmp_path):
    import pyarrow as pa
    import pyarrow.dataset as ds

    hive = ds.HivePartitioning(pa.schema([("video_id", pa.string())]))
    ids = [video_id_for(tmp_path / name) for name in HOSTILE_NAMES]
    for vid in ids:
        # one path component, never hidden or option-like, no "..", bounded: "<=64 chars>-<8 hex>"
        assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}-[0-9a-f]{8}", vid), vid
        assert ".." not in vid
        # and a hive partition value that reads back unchanged ("=" and "%" would not)
        assert hive.parse(f"/video_id={vid}/part-0.parquet").equals(ds.field("video_id") == vid)
    assert len(set(ids)) == len(ids)  # names that sanitise alike still get their own id
    assert ids == [video_id_for(tmp_path / name) for name in HOSTILE_NAMES]  # stable
    readable = dict(zip(HOSTILE_NAMES, (i.rsplit("-", 1)[0] for i in ids)))
    assert [readable[n] for n in ["../../etc/passwd.mp4", "a=b.mp4", ".hidden.mp4", "-rf.mp4", "a..b.mp4"]] == [
        "passwd", "a_b", "hidden", "rf", "a.b"]
    assert [readable[n] for n in ["..", "...mp4", "日本語.mp4", "d/é ü.mov"]] == ["video", "video", "video", "e_u"]
    assert readable["x" * 300 + ".mp4"] == "x" * 64


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
