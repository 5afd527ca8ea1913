"""`posepipe render` (stages/io/render.py): overlays drawn on a real clip, read back with PyAV.

The output under test is the session's `real_out` (tests/outputs.py: fitted_output), made in-process
without Ray by the same stage code `posepipe run --mesh` runs.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
from conftest import EVAL, REPO
from media import encoded_clip, remux
from outputs import CLIP, FITTED, finished_row

from stages.batches import PoseBatch
from stages.io.read_bodies import OutputError
from stages.io.decode import VideoReader, count_frames
from stages.io.render import contact_sheet, encode_video, frame_range, load_overlay, pick_encoder, render, sheet_layout
from stages.io.render_draw import draw_frame, pad_even, project
from stages.io.sink import ParquetSink, put_video_row, resolve_output

SHORT = EVAL / "videos" / "mmtracking_demo.mp4"  # 8 frames, 1920x1080, mpeg4


def _decode(path, every: int = 1) -> tuple[dict[int, np.ndarray], list[float], str]:
    """Frames of a written file (every `every`-th kept, by index), all frame times, codec name."""
    images, times = {}, []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        for i, f in enumerate(c.decode(stream)):
            assert f.rotation == 0  # written upright, no display matrix
            if i % every == 0:
                images[i] = f.to_ndarray(format="rgb24")
            times.append(float(f.pts * f.time_base))
        return images, times, stream.codec_context.name


def _input_frames(path) -> tuple[list[np.ndarray], list[float]]:
    images, times = [], []
    with VideoReader(path, batch_size=8) as reader:
        for b in reader:
            images += list(b.images)
            times += b.time_s.tolist()
    return images, times


@pytest.fixture(scope="module")
def source():
    """CLIP's frames as VideoReader gives them (what render draws on) and their times."""
    return _input_frames(CLIP)


def _person_mask(shape, overlay, frame: int, margin: int) -> np.ndarray:
    """True within `margin` px of any person's keypoint box or fitted body in the frame (the label
    over the head reaches ~60 px above the box, so margins are generous)."""
    mask = np.zeros(shape[:2], bool)
    pts = [overlay.people.at(frame).xy]
    if overlay.bodies is not None:
        pts.append(overlay.bodies.at(frame).uv)
    for group in pts:
        for xy in group:
            ok = np.isfinite(xy).all(-1)
            if ok.any():
                x0, y0 = np.floor(xy[ok].min(0)).astype(int) - margin
                x1, y1 = np.ceil(xy[ok].max(0)).astype(int) + margin
                mask[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
    return mask


def _mad(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute difference in grey levels over the masked pixels (all three channels)."""
    return float(np.abs(a[mask].astype(np.int16) - b[mask]).mean())


@pytest.fixture(scope="module")
def rendered(real_out, tmp_path_factory):
    out, vid = real_out
    path = tmp_path_factory.mktemp("rendered") / "overlay.mp4"
    counts = render(out, vid, str(path), boxes=True)
    return path, counts


def test_render_keeps_frames_timing_and_size(real_out, rendered, source):
    out, vid = real_out
    path, counts = rendered
    overlay = load_overlay(out, vid)
    images, times, codec = _decode(path, every=20)
    assert len(times) == count_frames(CLIP) == 40 == counts["frames"]
    np.testing.assert_allclose(times, source[1], atol=1e-9)  # pts copied: this clip's first pts is 0
    assert images[0].shape == (1920, 1080, 3) and (counts["width"], counts["height"]) == (1080, 1920)
    assert codec == "h264" == {"libx264": "h264"}[counts["codec"]]
    assert counts["people"] == len(overlay.people) >= 70
    assert counts["bodies"] == len(overlay.bodies) >= 2 * FITTED - 2


def test_pixels_change_only_where_people_are(real_out, rendered, source):
    """Drawn where the people are, the input elsewhere.

    Tolerance: libx264 at crf 18 leaves 1.3-1.6 grey levels of mean noise on this clip against the
    decoded input, and an undrawn re-encode of the same frames measured the same values to within
    0.06 far from the people, so 2.5 admits the codec and nothing else; a skeleton inside its
    person's box measured 8-15 (limbs at ~100 levels from the video over a few percent of the box).
    """
    out, vid = real_out
    overlay = load_overlay(out, vid)
    drawn, _, _ = _decode(rendered[0], every=4)
    checked = 0
    for f, img in drawn.items():
        if not len(overlay.people.at(f)):
            continue
        near = _person_mask(img.shape, overlay, f, margin=10)
        far = ~_person_mask(img.shape, overlay, f, margin=120)
        assert far.mean() > 0.3  # most of the frame is far from both people
        assert _mad(img, source[0][f], near) > 5.0, f
        assert _mad(img, source[0][f], far) < 2.5, f
        checked += 1
    assert checked >= 9


def test_frame_range_with_mpeg4(real_out, source, tmp_path):
    out, vid = real_out
    path = tmp_path / "range.mp4"
    counts = render(out, vid, str(path), frames=(10, 18), codec="mpeg4")
    images, times, codec = _decode(path, every=8)
    assert len(times) == counts["frames"] == 8 and codec == "mpeg4"
    # Same gaps as the input's frames 10..17; the range starts at 0 so it plays from its start.
    np.testing.assert_allclose(times, np.array(source[1][10:18]) - source[1][10], atol=1e-4)
    overlay = load_overlay(out, vid)
    far = ~_person_mask(images[0].shape, overlay, 10, margin=120)
    # The first frame written is input frame 10 (mpeg4 at qscale 3 is noisier than x264: 4 levels).
    assert _mad(images[0], source[0][10], far) < 4.0
    assert counts["people"] == sum(len(overlay.people.at(f)) for f in range(10, 18))
    # A stop past the end is cut to the end, as in a slice.
    assert render(out, vid, str(tmp_path / "tail.mp4"), frames=(36, 99), codec="mpeg4")["frames"] == 4


def test_bodies_projected_onto_their_keypoints(real_out):
    """The camera convention is the fit's: projected 3D joints land on the confident 2D keypoints."""
    out, vid = real_out
    ov = load_overlay(out, vid)
    dists = []
    for f in np.unique(ov.bodies.frame_index):
        people, bodies = ov.people.at(f), ov.bodies.at(f)
        for tid, uv in zip(bodies.track_id, bodies.uv):
            i = np.flatnonzero(people.track_id == tid)[0]
            ok = ~people.low[i] & np.isfinite(people.xy[i]).all(-1)
            dists += np.linalg.norm(uv[ok] - people.xy[i][ok], axis=-1).tolist()
    assert np.median(dists) < 12.0  # docs/bodies.md's ~4 px mean reprojection; a wrong centre or axis is 100s
    # ... and they are drawn: the overlay with bodies differs from the one without at their joints.
    img = np.full((ov.height, ov.width, 3), 90, np.uint8)
    f = int(ov.bodies.frame_index[0])
    with_b, without = draw_frame(img, ov.people.at(f), ov.bodies.at(f)), draw_frame(img, ov.people.at(f))
    uv = ov.bodies.at(f).uv[0]
    on = [with_b[int(v), int(u)].astype(int).sum() != without[int(v), int(u)].astype(int).sum()
          for u, v in uv[np.isfinite(uv).all(-1)]]
    assert np.mean(on) > 0.8


def test_contact_sheet(real_out, tmp_path):
    out, vid = real_out
    path = tmp_path / "sheet.png"
    contact_sheet(out, vid, str(path), count=6)
    sheet = cv2.imread(str(path))
    cols, rows, tw, th = sheet_layout(6, (1080, 1920), 480)
    assert (cols, rows, tw, th) == (3, 2, 270, 480)  # six portrait tiles: 3 x 2, not a strip of 6
    assert sheet.shape == (2 * 480 + 3 * 4, 3 * 270 + 4 * 4, 3)
    # Each tile holds a frame (not the dark background), with overlays: saturated skeleton pixels.
    for r in range(rows):
        for c in range(cols):
            tile = sheet[4 + r * 484: 4 + r * 484 + 480, 4 + c * 274: 4 + c * 274 + 270]
            assert tile.mean() > 60
    hsv = cv2.cvtColor(sheet, cv2.COLOR_BGR2HSV)
    assert ((hsv[..., 1] > 200) & (hsv[..., 2] > 150)).sum() > 500
    # A range with fewer frames than asked: one tile per frame.
    contact_sheet(out, vid, str(path), frames=(0, 2), count=6)
    assert cv2.imread(str(path)).shape == (480 + 2 * 4, 2 * 270 + 3 * 4, 3)


def test_contact_sheet_boxes_from_the_cli(real_out, tmp_path):
    """`posepipe render --png --boxes` draws every person's box on its tile (it once drew none), and
    changes nothing else: the sheets with and without differ only on the boxes' edges."""
    from pipeline.cli import main

    out, vid = real_out
    sheets = {}
    for boxes in (False, True):
        path = tmp_path / f"sheet_{boxes}.png"
        assert main(["render", out, "--video", vid, "--png", "-o", str(path)] + (["--boxes"] if boxes else [])) == 0
        sheets[boxes] = cv2.imread(str(path)).astype(np.int16)
    differs = np.abs(sheets[True] - sheets[False]).max(-1) > 0

    # Where the CLI's default sheet (6 frames of the whole video, 480 px tiles) puts each person's box.
    ov = load_overlay(out, vid)
    wanted = np.unique(np.round(np.linspace(0, ov.frame_count - 1, 6)).astype(np.int64))
    cols, _, tw, th = sheet_layout(len(wanted), (ov.width, ov.height), 480)
    near = np.zeros(differs.shape, np.uint8)
    on_edge = []
    for k, f in enumerate(wanted):
        r, c = divmod(k, cols)
        origin = np.array([4 + c * (tw + 4), 4 + r * (th + 4)] * 2, np.float64)
        people = ov.people.at(int(f))
        for i in range(len(people)):
            box = people.det_bbox[i] if np.isfinite(people.det_bbox[i]).all() else people.bbox[i]
            x0, y0, x1, y1 = np.round(box * tw / ov.width + origin).astype(int)
            cv2.rectangle(near, (x0, y0), (x1, y1), 1, 5)  # 1 px box, anti-aliased: 2 px either side
            xs, ys = np.arange(x0 + 3, x1 - 2), np.arange(y0 + 3, y1 - 2)
            on_edge += [differs[y0, xs], differs[y1, xs], differs[ys, x0], differs[ys, x1]]
    on_edge = np.concatenate(on_edge)
    assert len(on_edge) > 500
    # Not all: the skeleton, drawn over the box, and the tile's frame label hide a few edge pixels.
    assert on_edge.mean() > 0.8, on_edge.mean()
    assert differs.sum() > 0 and not (differs & (near == 0)).any()


def _synthetic_person(x0: float, y0: float, s: float) -> np.ndarray:
    """A standing COCO-17 pose, box from (x0, y0), `s` px per unit; (x, y, score)."""
    xy = np.array([[2, 0], [2.2, -.2], [1.8, -.2], [2.5, 0], [1.5, 0], [3, 1.5], [1, 1.5], [3.4, 3], [.6, 3],
                   [3.6, 4.5], [.4, 4.5], [2.6, 5], [1.4, 5], [2.6, 7], [1.4, 7], [2.6, 9], [1.4, 9]], np.float32)
    kp = np.concatenate([xy * s + [x0, y0], np.full((17, 1), 0.9, np.float32)], -1)
    kp[9, 2] = 0.1  # a low-confidence wrist: hollow, dimmed limb
    kp[16] = [np.nan, np.nan, 0]  # an ankle not found
    return kp.astype(np.float32)


def test_rotated_input_is_drawn_and_written_upright(tmp_path):
    """A phone video with a rotation tag: frames, keypoints and output are all upright pixels."""
    clip = remux(SHORT, tmp_path / "rot.mp4", rotation=90)
    out, vid = str(tmp_path / "out"), "rot"
    with VideoReader(clip, video_id=vid) as reader:
        meta = reader.meta
        source = [img for b in reader for img in b.images]
    assert (meta.width, meta.height, meta.rotation) == (1080, 1920, 90)
    n = len(source)
    frames = np.arange(n, dtype=np.int64)
    # Two people in the upright top-left quarter: one tracked, one without a track id (grey).
    kp = np.stack([_synthetic_person(60, 120, 50), _synthetic_person(300, 150, 40)] * n)
    idx = np.repeat(frames, 2)
    box = np.stack([np.nanmin(kp[..., :2], 1), np.nanmax(kp[..., :2], 1)], 1).reshape(-1, 4)
    sink = ParquetSink(out)
    sink.open(vid)
    sink.write(PoseBatch(vid, frames, frames / 3.0, idx, idx / 3.0, kp, box, np.full(2 * n, .8, np.float32),
                         track_id=np.tile([3, -1], n).astype(np.int64),
                         det_bbox=box + np.array([-10, -10, 10, 10], np.float32),
                         det_score=np.full(2 * n, .9, np.float32), model="synthetic"))
    sink.finish(vid, finished_row(meta))
    counts = render(out, vid, str(tmp_path / "rot_overlay.mp4"), boxes=True)
    images, _, _ = _decode(tmp_path / "rot_overlay.mp4")
    images = [images[i] for i in sorted(images)]
    assert len(images) == counts["frames"] == n and counts["people"] == 2 * n and counts["bodies"] == 0
    assert images[0].shape == (1920, 1080, 3)
    person = np.zeros((1920, 1080), bool)
    person[100:650, 40:520] = True
    clear = np.zeros_like(person)
    clear[900:, 540:] = True  # bottom-right: nobody there
    for drawn, src in zip(images, source):
        assert _mad(drawn, src, person) > 5.0
        assert _mad(drawn, src, clear) < 3.0  # codec noise only (crf 18)


def test_errors_are_one_line_and_write_nothing(real_out, tmp_path, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("errors") / "out")
    shutil.copytree(real_out[0], out)  # rows are added below: the session's output stays as it is
    vid = real_out[1]
    dst = tmp_path / "x.mp4"
    fs, root = resolve_output(out)
    put_video_row(fs, root, {"video_id": "broken", "path": str(CLIP), "status": "failed",
                             "error": "decode error after 3 frames\n(invalid data)"})
    put_video_row(fs, root, {"video_id": "moved", "path": str(tmp_path / "gone.mp4"), "status": "ok", "frames": 3})
    cases = [
        (lambda: render(out, "nope", str(dst)), "no video 'nope'"),
        (lambda: render(out, "broken", str(dst)), "failed"),
        (lambda: render(out, "moved", str(dst)), "missing"),
        (lambda: render(out, vid, str(dst), frames=(40, 50)), "empty"),
        (lambda: render(out, vid, str(dst), frames=(5, 5)), "empty"),
        (lambda: contact_sheet(out, vid, str(tmp_path / "s.png"), frames=(7, 3)), "empty"),
        (lambda: contact_sheet(out, vid, str(tmp_path / "s.png"), count=0), "count"),
        (lambda: render(out, vid, str(tmp_path / "no_such_dir" / "x.mp4")), "cannot write"),
        (lambda: render(out, vid, str(tmp_path / "x.jpg")), "cannot hold"),  # FFmpeg's image2: no video codec
        (lambda: render(out, vid, str(tmp_path / "x.gif")), "cannot hold"),
    ]
    for call, words in cases:
        with pytest.raises(OutputError) as e:
            call()
        assert words in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_render_to_a_png_name_writes_the_contact_sheet(real_out, tmp_path):
    """`posepipe render -o x.png` without --png (once a 23-line PyAV traceback, exit 1): the name says what
    is wanted, so it writes the sheet --png writes, says so in its one line, and exits 0."""
    out, vid = real_out
    path = tmp_path / "sheet.png"
    run = subprocess.run([sys.executable, "-m", "pipeline.cli", "render", out, "--video", vid, "-o", str(path)],
                         cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0 and run.stderr == "", run.stdout + run.stderr
    assert run.stdout.splitlines() == [f"wrote {path} (a contact sheet: the name ends in .png)"], run.stdout
    contact_sheet(out, vid, str(tmp_path / "reference.png"))
    assert (cv2.imread(str(path)) == cv2.imread(str(tmp_path / "reference.png"))).all()


def test_pure_helpers():
    assert pick_encoder(["mpeg4", "h264"]) == "mpeg4" and pick_encoder(["libx264", "mpeg4"]) == "libx264"
    assert frame_range(None, 40) == (0, 40) and frame_range((3, 7), 40) == (3, 7)
    assert frame_range((None, 5), 40) == (0, 5) and frame_range((30, None), 40) == (30, 40)
    odd = np.arange(5 * 3 * 3, dtype=np.uint8).reshape(5, 3, 3)
    even = pad_even(odd)
    assert even.shape == (6, 4, 3) and (even[:5, :3] == odd).all() and (even[5, :3] == odd[4]).all()
    # A point on the optical axis lands on the frame centre; x = z, f = 100 -> 100 px right of it.
    uv = project(np.array([[[0, 0, 2], [2, -1, 2], [0, 0, -1]]], np.float32), np.array([100.0]), (640, 480))
    np.testing.assert_allclose(uv[0, :2], [[320, 240], [420, 190]])
    assert np.isnan(uv[0, 2]).all()


@pytest.mark.parametrize("codec, ticks", [("libx264", 1000), ("mpeg4", 90000)])
def test_variable_frame_rate_pts_copied(tmp_path, codec, ticks):
    """Uneven gaps survive: each frame's pts (in the input's time base) is written back as it was,
    each frame lasts until the next, the last as long as the gap before it. 1/90000 (MPEG-TS, many
    cameras) is finer than MPEG-4 allows, so mpeg4 encodes in 1/65535 and the file keeps 1/90000."""
    pts = [0, 40, 120, 130, 200, 290]
    tb = Fraction(1, ticks)
    clip = encoded_clip(tmp_path / "vfr.mp4", [p * ticks // 1000 for p in pts], time_base=tb, size=(64, 48))
    images, times = _input_frames(clip)
    with av.open(str(clip)) as c:
        tb = c.streams.video[0].time_base
    odd = [img[:47, :63] for img in images]  # an odd size, as some scaled or cropped inputs have
    count, used, size = encode_video(str(tmp_path / "copy.mp4"), zip(odd, times), tb, 25.0, codec)
    assert count == len(pts) and size == (64, 48) and used == codec  # padded to even
    with av.open(str(tmp_path / "copy.mp4")) as c:
        got = [(f.pts * f.time_base, f.duration * f.time_base) for f in c.decode(video=0)]
    # Exact in the input's ticks; through mpeg4's coarser 1/65535 a time may move by one 1/90000 tick.
    slack = 0 if codec == "libx264" else Fraction(1, 90000)
    want = [Fraction(p, 1000) for p in pts]
    assert all(abs(t - w) <= slack for (t, _), w in zip(got, want)) and len(got) == len(want), got
    lengths = [b - a for a, b in zip(want, want[1:])] + [Fraction(90, 1000)]
    assert all(abs(d - w) <= 2 * slack for (_, d), w in zip(got, lengths)), got
