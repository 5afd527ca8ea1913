"""`posepipe dense OUT` on a real output: the session's real_out (a real clip's tracked people and its first
frames' fitted bodies), copied, rendered, and what its dense table then says about the people in it; then
`posepipe render --dense` drawing that table over the video."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import duckdb
import numpy as np
import pyarrow.dataset as ds
import pytest
import torch

import posepipe
from outputs import FITTED

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.models import choose_segment_model, segment_note
from segment_double import installed_stand_in
from stages.dense.segment import SEGMENT_FILE
from stages.dense.video import dense_plan
from stages.io.publish_bodies import replace_bodies
from stages.io.render import sheet_layout
from stages.io.render_dense import Crop, paint
from stages.io.output import read_video_table
from stages.io.sink import put_video_row, read_video_rows, resolve_output
from stages.io.summary import summary, summary_lines


def _dense(*args: str) -> int:
    """main(["dense", ...]) without leaving its one-thread torch setting to the tests after it."""
    threads = torch.get_num_threads()
    try:
        return main(["dense", *args, "--no-progress"])
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dense_out(real_out, tmp_path_factory):
    """`posepipe dense` as the weights folder has it: cut to the silhouettes where the model is installed (it is
    not in every folder, CI's included), the bodies alone where not; tests that need the cut install a stand-in."""
    src, vid = real_out
    out = str(tmp_path_factory.mktemp("dense") / "out")
    shutil.copytree(src, out)
    return _dense(out, "--video", vid), out, vid


def _masks() -> str:
    """The dense_masks `posepipe dense` writes with this weights folder and the default config."""
    return "bodies" if choose_segment_model(load_config()) is None else "silhouettes"


def _started(masks: str) -> list[str]:
    """What `posepipe dense --no-progress` says on stderr before it renders (pipeline/say.py)."""
    note = [f"posepipe: {segment_note(load_config(), None)}..."] if masks == "bodies" else []
    return [*note, "posepipe: loading the body model..."]


@pytest.fixture
def stand_in(tmp_path):
    """The silhouettes' stand-in model installed (tests/segment_double.py), for tests of what is around it."""
    with installed_stand_in(tmp_path / "weights"):
        yield


@pytest.fixture
def not_installed(tmp_path, monkeypatch):
    """A weights folder and cache without the silhouettes' model."""
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("POSEPIPE_WEIGHTS", str(tmp_path / "empty"))
    monkeypatch.setattr("stages.weights.cache_dir", lambda: tmp_path / "cache")


def _row(out: str, vid: str) -> dict:
    return {r["video_id"]: r for r in read_video_rows(out)}[vid]


def test_every_body_gets_a_row_on_its_person(dense_out):
    status, out, vid = dense_out
    assert status == 0
    q = lambda sql: sorted(duckdb.sql(sql.replace("OUT", out)).fetchall())  # noqa: E731
    dense = q("SELECT frame_index, track_id, plausible, implausible_reason FROM read_parquet('OUT/dense/*/*.parquet')")
    bodies = q("SELECT b.frame_index, b.track_id, t.plausible, t.implausible_reason "
               "FROM read_parquet('OUT/bodies/*/*.parquet') b JOIN read_parquet('OUT/body_tracks/*/*.parquet') t "
               "USING (track_id)")
    assert dense == bodies and len(dense) >= 14  # two people over 8 frames, as the fixture fitted them
    assert _row(out, vid)["dense_rows"] == len(dense) and _row(out, vid)["dense_masks"] == _masks()
    (row,) = [r for r in summary(out) if r["video_id"] == vid]  # and `posepipe summary` says so
    assert row["dense_rows"] == len(dense) and f"{len(dense)} dense rows" in "\n".join(
        line for line, _ in summary_lines([row], width=80))

    people = ds.dataset(f"{out}/people", partitioning="hive").to_table().to_pydict()
    kp = {(f, t): (np.c_[x, y], np.asarray(low)) for f, t, x, y, low in
          zip(people["frame_index"], people["track_id"], people["kp_x"], people["kp_y"], people["kp_low_conf"])}
    fit = {(f, t): (z[2], focal) for f, t, z, focal in q("SELECT frame_index, track_id, translation, focal_px "
                                                         "FROM read_parquet('OUT/bodies/*/*.parquet')")}
    w, h = _row(out, vid)["width"], _row(out, vid)["height"]
    on_mask, parts, facing = [], set(), []
    for p in posepipe.read(out, "dense", video=vid):
        x0, y0, x1, y1 = p.box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and p.mask.sum() == p.pixels > 20000  # ~1000 px tall people
        # Where the body is drawn is where the person is: its confident 2D keypoints fall on the mask, widened
        # by 10 px for the fit's reprojection error (measured over the whole clip: 95% on the mask itself,
        # 100% within 10 px; a camera off by a few percent puts the hands and feet 10s of px off).
        near = cv2.dilate(p.mask.astype(np.uint8), np.ones((21, 21), np.uint8)) > 0
        xy, low = kp[(p.frame_index, p.track_id)]
        c = np.floor(xy[~low & np.isfinite(xy).all(1)]).astype(int) - [x0, y0]
        inside = (c[:, 0] >= 0) & (c[:, 0] < x1 - x0) & (c[:, 1] >= 0) & (c[:, 1] < y1 - y0)
        on_mask += [bool(inside[i]) and bool(near[c[i, 1], c[i, 0]]) for i in range(len(c))]
        # The surface seen is a body's depth in front of its root, and faces the camera: clothes pixels out of the
        # body's outline take the nearest outline pixel's normal, which grazes (measured per person: 0.94-0.99 of
        # the pixels face it strictly, 0.991+ within cos 0.1 of grazing; over 0.97 strictly with the bodies alone).
        z, focal = fit[(p.frame_index, p.track_id)]
        assert abs(np.median(p.depth[p.mask]) - z) < 0.4
        rows, cols = np.nonzero(p.mask)
        ray = np.c_[cols + x0 + 0.5 - w / 2, rows + y0 + 0.5 - h / 2, np.full(len(rows), focal)]
        cos = (p.normal[p.mask] * ray).sum(1) / np.linalg.norm(ray, axis=1)
        facing += [np.mean(cos < 0), np.mean(cos < 0.1)]
        parts |= set(np.unique(p.part[p.mask]).tolist())
    assert len(on_mask) > 150 and np.mean(on_mask) > 0.97, np.mean(on_mask)
    assert min(facing[::2]) > 0.9 and min(facing[1::2]) > 0.98, facing
    assert len(parts) >= 14 and parts <= set(range(1, 25))


def test_rerun_skips_a_rendered_video(dense_out, capsys):
    _, out, vid = dense_out
    stamps = lambda: [f.stat().st_mtime_ns for f in sorted(Path(out, "dense").rglob("*.parquet"))]  # noqa: E731
    before = stamps()
    assert _dense(out, "--video", vid) == 0
    assert capsys.readouterr().out.splitlines() == [f"dense     {vid}  (done earlier; --redo renders it again)"]
    assert stamps() == before and len(before) == 1
    assert list(dense_plan(out, vid, redo=True).todo) == [vid] and dense_plan(out, vid).done == [vid]


def test_refit_bodies_drop_the_dense_table_and_a_rerun_renders_it_again(dense_out, tmp_path, capsys):
    """`mocap` replaces bodies (publish_bodies.replace_bodies): the dense rows drawn from the old ones go, and
    `posepipe dense` renders the video again, here the same bytes (the same bodies put back)."""
    _, src, vid = dense_out
    out = str(tmp_path / "out")
    shutil.copytree(src, out)
    before = read_video_table(out, "dense", vid).sort_by([("frame_index", "ascending"), ("track_id", "ascending")])
    bodies, tracks = read_video_table(out, "bodies", vid), read_video_table(out, "body_tracks", vid)
    replace_bodies(out, vid, bodies, tracks, None, {})
    assert read_video_table(out, "dense", vid) is None and _row(out, vid)["dense_rows"] is None
    capsys.readouterr()
    assert _dense(out) == 0
    assert capsys.readouterr().err.splitlines() == _started(_masks())  # --no-progress: no bar
    after = read_video_table(out, "dense", vid).sort_by([("frame_index", "ascending"), ("track_id", "ascending")])
    assert after.equals(before) and _row(out, vid)["dense_rows"] == before.num_rows


def _sheet(out: str, vid: str, path, *dense: str) -> np.ndarray:
    """`posepipe render OUT --png --frames 0:8 [--dense [STYLE]]` read back, RGB int16."""
    assert main(["render", out, "--video", vid, "--png", "--frames", f"0:{FITTED}", "-o", str(path), *dense]) == 0
    return cv2.imread(str(path))[..., ::-1].astype(np.int16)


def test_render_dense_colours_the_visible_people(dense_out, tmp_path):
    """`posepipe render --dense [iuv|parts] --png`: the sheet changes where the people's masks are and nowhere
    else, and the two looks differ from each other there."""
    _, out, vid = dense_out
    plain, iuv = _sheet(out, vid, tmp_path / "plain.png"), _sheet(out, vid, tmp_path / "iuv.png", "--dense")
    parts = _sheet(out, vid, tmp_path / "parts.png", "--dense", "parts")
    # Where the default sheet (6 frames of 0:8, 480 px tiles) puts each frame's masks, scaled as the tiles are.
    row = _row(out, vid)
    wanted = np.unique(np.round(np.linspace(0, FITTED - 1, 6)).astype(np.int64))
    cols, _, tw, th = sheet_layout(len(wanted), (row["width"], row["height"]), 480)
    masks = np.zeros(plain.shape[:2], bool)
    people = posepipe.read(out, "dense", video=vid)
    for k, f in enumerate(wanted):
        r, c = divmod(k, cols)
        tile = np.zeros((row["height"], row["width"]), np.uint8)
        for p in (p for p in people if p.frame_index == f):
            x0, y0, x1, y1 = p.box
            tile[y0:y1, x0:x1] |= p.mask
        y, x = 4 + r * (th + 4), 4 + c * (tw + 4)
        masks[y:y + th, x:x + tw] = cv2.resize(tile, (tw, th), interpolation=cv2.INTER_NEAREST) > 0
    assert masks.sum() > 20000
    near = cv2.dilate(masks.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # the tile's resize rounds
    for sheet in (iuv, parts):
        changed = np.abs(sheet - plain).max(-1) > 0
        assert not (changed & ~near).any()
        # Not all of it: the skeletons are drawn over the colours, alike in both sheets.
        assert changed[masks].mean() > 0.8, changed[masks].mean()
    assert (np.abs(iuv - parts).max(-1) > 20)[masks].mean() > 0.5


def test_render_dense_video_and_refusals(dense_out, real_out, tmp_path, capsys):
    """A video render counts the crops it painted; an output without a dense table, or a style that is none,
    is one line and exit 2, with nothing written."""
    _, out, vid = dense_out
    path = tmp_path / "d.mp4"
    assert main(["render", out, "--video", vid, "--frames", "2:5", "--dense", "parts", "-o", str(path)]) == 0
    line = capsys.readouterr().out.strip()
    shown = sum(p.pixels > 0 for p in posepipe.read(out, "dense", video=vid) if 2 <= p.frame_index < 5)
    assert line.startswith(f"wrote {path}: frames=3, ") and f"dense={shown}," in line and shown >= 5, line
    assert main(["render", real_out[0], "--video", vid, "--dense", "-o", str(tmp_path / "x.mp4")]) == 2
    with pytest.raises(SystemExit) as usage:  # argparse's refusal (pipeline/cli.py: one line, exit 2)
        main(["render", out, "--video", vid, "--dense", "normals", "-o", str(tmp_path / "x.mp4")])
    assert usage.value.code == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and "no dense table" in errors[0] and "invalid choice: 'normals'" in errors[1], errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.mp4"]


def test_an_input_video_gone_is_one_line(dense_out, stand_in, tmp_path, capsys):
    """The silhouettes read the input video again: gone, `posepipe dense` says so in one line, exit 2, before
    the body model loads, and the dense table there is left as it was."""
    _, out, vid = dense_out
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    fs, root = resolve_output(str(copy))
    put_video_row(fs, root, {**_row(str(copy), vid), "path": str(tmp_path / "moved.mp4")})
    before = read_video_table(str(copy), "dense", vid)
    capsys.readouterr()
    assert _dense(str(copy), "--video", vid, "--redo") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"input video of {vid!r} is missing: {tmp_path / 'moved.mp4'}" in err[0], err
    assert read_video_table(str(copy), "dense", vid).equals(before)


def test_frames_are_read_at_the_runs_decode_size(dense_out, stand_in, tmp_path, monkeypatch):
    """`posepipe dense` reads the frames for the silhouettes at the size the run decoded them (job.json's
    [decode] max_side), not at the size of the config it is given now."""
    import json

    import stages.dense.video as video

    _, out, vid = dense_out
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    sizes = []

    class Recorded(video.FrameSource):
        def __init__(self, path, max_side=0, video_id=None):
            sizes.append(max_side)
            super().__init__(path, max_side, video_id)

    monkeypatch.setattr(video, "FrameSource", Recorded)
    assert _dense(str(copy), "--video", vid, "--redo") == 0  # this output was written without a job.json
    (copy / "job.json").write_text(json.dumps({"config": {"decode": {"max_side": 640}}}))  # as pipeline/jobfile.py
    assert _dense(str(copy), "--video", vid, "--redo") == 0
    assert sizes == [1280, 640]  # the config's default, then the run's


def test_without_the_model_auto_draws_the_bodies_alone_and_says_so(dense_out, not_installed, tmp_path, capsys):
    """`[dense] silhouettes = "auto"` (the default) where the model is not installed: the bodies alone, the rows
    "off" draws, one line saying so, and the videos row and the summary say what the masks are; "on": one line,
    exit 2, before the body model loads, the table left as it was."""
    _, out, vid = dense_out
    auto, off = tmp_path / "auto", tmp_path / "off"
    shutil.copytree(out, auto)
    shutil.copytree(out, off)
    (tmp_path / "off.toml").write_text('[dense]\nsilhouettes = "off"\n')
    (tmp_path / "on.toml").write_text('[dense]\nsilhouettes = "on"\n')
    capsys.readouterr()
    assert _dense(str(auto), "--video", vid, "--redo") == 0
    said = capsys.readouterr()
    assert said.err.splitlines() == _started("bodies") and "masks=bodies" in said.out, said
    assert _dense(str(off), "--video", vid, "--redo", "--config", str(tmp_path / "off.toml")) == 0
    assert capsys.readouterr().err.splitlines() == ["posepipe: loading the body model..."]  # asked for: no note
    table = read_video_table(str(auto), "dense", vid)
    assert table.num_rows >= 14 and table.equals(read_video_table(str(off), "dense", vid))
    assert _row(str(auto), vid)["dense_masks"] == "bodies"
    (row,) = summary(str(auto))
    assert f"{table.num_rows} dense rows (masks: the bodies alone)" in "\n".join(
        line for line, _ in summary_lines([row], width=120))
    assert _dense(str(auto), "--video", vid, "--redo", "--config", str(tmp_path / "on.toml")) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"posepipe: {SEGMENT_FILE}: not found"), err
    assert read_video_table(str(auto), "dense", vid).equals(table)
    # nothing left to render: the model is not looked for (nor downloaded), so its absence is no error
    assert _dense(str(auto), "--video", vid, "--config", str(tmp_path / "on.toml")) == 0
    said = capsys.readouterr()
    assert said.out.splitlines() == [f"dense     {vid}  (done earlier; --redo renders it again)"] and not said.err


def test_paint_blends_the_crop_over_the_image():
    img = np.full((6, 8, 3), 100, np.uint8)
    mask = np.array([[1, 1, 0], [0, 1, 1]], bool)
    crop = Crop((2, 1, 5, 3), mask, np.full((2, 3, 3), 200, np.uint8))
    out = paint(img, [crop])
    expect = img.copy()
    expect[1:3, 2:5][mask] = int(0.7 * 200 + 0.3 * 100)
    assert np.array_equal(out, expect) and (img == 100).all()  # a copy: the input is left as it was
    half = paint(np.full((3, 4, 3), 100, np.uint8), [Crop((0, 0, 8, 6), np.ones((6, 8), bool),
                                                          np.full((6, 8, 3), 200, np.uint8))], scale=0.5)
    assert (half == 170).all()  # the crop resized to the half-size image
