"""Ray-side guarantees on one local Ray with logical GPUs: backpressure under a slow sink, a pose actor
killed mid-run, resumable re-runs, and placement of fractional GPU shares (no real GPU needed)."""
from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest
import ray
from conftest import EVAL
from media import audio_file, cut, encoded_clip, first_frames, remux
from outputs import assert_same_people, config_with, people

from pipeline.cli import main
from pipeline.graph import build_graph
from pipeline.inputs import expand_inputs
from pipeline.models import choose_models, model_blobs
from pipeline.runner import Runner, prepare
from pipeline.workers import SinkWorker
from stages.io.decode import video_id_for
from stages.io.sink import read_video_rows

CLIP = EVAL / "videos" / "mmhuman3d_multi_person_demo.mp4"  # 40 frames, 2 people, 1080x1920 portrait
FAST = "[decode]\nbatch_size = 4\n"


@pytest.fixture(scope="module")
def gpu_ray():
    # Two logical GPUs: Ray places and accounts for them without any real device behind them.
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    """CLIP's first 8 frames: the same two people, for tests that run a clip many times."""
    return first_frames(CLIP, tmp_path_factory.mktemp("short") / "short.mp4", 8)


@pytest.fixture(scope="module")
def references(gpu_ray, tmp_path_factory, short):
    """Plain top-down runs of the two clips: {clip: people}."""
    tmp = tmp_path_factory.mktemp("clean")
    runner = Runner(prepare(config_with(tmp, "topdown", FAST), tmp / "out"), progress=False)
    assert [r["status"] for r in runner.run([str(CLIP), str(short)])] == ["ok", "ok"]
    return {v: people(tmp / "out", video_id_for(v)) for v in (CLIP, short)}


@pytest.fixture(scope="module")
def clean_run(references):
    return references[CLIP]


def _plasma_mib() -> float:
    # The numbers behind `ray memory --stats-only` (no public API gives object store usage).
    from ray._private.internal_api import memory_summary

    text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    return float(re.search(r"Plasma memory usage (\d+) MiB", text).group(1))


def test_slow_sink_stalls_decode_within_the_bound(gpu_ray, tmp_path, clean_run):
    class SlowSink(SinkWorker):  # defined here: Ray ships it by value
        def write(self, *args):
            time.sleep(0.4)
            return super().write(*args)

    bound, batch = 2, 4
    config = config_with(tmp_path, "topdown", f"[run]\nmax_batches_in_flight = {bound}\n[decode]\nbatch_size = {batch}\n")
    runner = Runner(prepare(config, tmp_path / "out"), progress=False, sink_cls=SlowSink)
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            if runner.graph is not None:
                decoded = sum(s["calls"] for s in ray.get([d.stats.remote() for d in runner.graph.decoders.actors]))
                samples.append((decoded * batch - runner.frames_done, _plasma_mib()))
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.monotonic()
    try:
        row = runner.run([str(CLIP)])[0]
    finally:  # a sampler left running polls Ray (and re-starts one) for the rest of the session
        stop.set()
        thread.join()
    wall = time.monotonic() - t0
    assert row["status"] == "ok" and row["frames"] == 40
    ahead = np.array([s[0] for s in samples])
    plasma = np.array([s[1] for s in samples])
    assert len(samples) > 20
    # Decode never runs more than the bound ahead of the sink (+1 batch: the sample may catch a
    # batch the sink has written but the driver has not yet counted).
    assert ahead.max() <= (bound + 1) * batch, ahead.max()
    assert runner.peak_in_flight <= bound
    # Object store: model bytes plus at most a few frame batches (a 720x1280 batch of 4 is 11 MiB),
    # not the 10 batches of the clip.
    model_mib = sum(len(b) for _, b in model_blobs(runner.models).values()) / 2**20
    assert plasma.max() <= model_mib + (bound + 2) * 11, (plasma.max(), model_mib)
    # The sink set the pace: 10 writes x 0.4 s, and decode sat idle most of the run.
    assert wall >= 10 * 0.4
    decode = runner.stage_stats["decode"]
    assert decode["busy_s"] < 0.5 * wall
    assert_same_people(people(tmp_path / "out"), clean_run)  # slow is not different


def test_killed_pose_actor_restarts_and_output_equals_clean_run(gpu_ray, tmp_path, clean_run):
    config = config_with(tmp_path, "topdown", FAST)
    runner = Runner(prepare(config, tmp_path / "out"), progress=False)
    killed = threading.Event()

    def killer():
        while runner.frames_done < 8:  # a few batches through: the next ones are in flight
            time.sleep(0.01)
        ray.kill(runner.graph.pose.actors[0], no_restart=False)
        killed.set()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    row = runner.run([str(CLIP)])[0]
    thread.join(timeout=5)
    assert killed.is_set()
    assert row["status"] == "ok" and row["frames"] == 40, row
    # The restarted actor re-ran the batches it had in flight: calls > batches of the clip.
    assert runner.stage_stats["pose"]["actors"] == 1
    assert_same_people(people(tmp_path / "out"), clean_run)


def test_one_video_spread_over_two_pose_actors_keeps_frame_order(gpu_ray, tmp_path, clean_run):
    # Batches of one video go round robin to both pose actors and come back out of order; the sink
    # still writes (and tracks) them in frame order, so the rows equal the one-actor run's.
    config = config_with(tmp_path, "topdown", FAST + "[pose.resources]\nactors = 2\nnum_cpus = 0.5\n")
    runner = Runner(prepare(config, tmp_path / "out"), progress=False)
    assert runner.run([str(CLIP)])[0]["status"] == "ok"
    calls = [s["calls"] for s in ray.get([a.stats.remote() for a in runner.graph.pose.actors])]
    assert len(calls) == 2 and min(calls) >= 4, calls  # 10 batches of 4 frames, shared
    assert_same_people(people(tmp_path / "out"), clean_run)


def test_rerun_skips_complete_videos_and_redoes_the_rest(gpu_ray, tmp_path, capsys, short):
    clip, short = short, tmp_path / "short.mp4"  # a copy of the 8-frame cut, changed below
    short.write_bytes(clip.read_bytes())
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    out = tmp_path / "out"
    args = ["run", str(short), str(bad), "--out", str(out), "--mode", "topdown", "--no-progress"]
    assert main(args) == 1
    part = out / "people" / f"video_id={video_id_for(short)}" / "part-0.parquet"
    first = (part.stat().st_mtime_ns, people(out))
    capsys.readouterr()

    assert main(args) == 1  # the bad file still fails; the good one is skipped, not rewritten
    printed = capsys.readouterr().out
    assert "(done earlier)" in printed and "1 done earlier" in printed
    assert part.stat().st_mtime_ns == first[0]

    # The bad file fixed and the good one changed (same path, new content, cut short): both are
    # redone. The fixed one succeeds; the cut one fails and its old output is withdrawn rather
    # than left beside a failed row.
    bad.write_bytes(clip.read_bytes())
    short.write_bytes(short.read_bytes()[: len(short.read_bytes()) // 2])
    assert main(args) == 1
    assert_same_people(people(out, video_id_for(bad)), first[1])
    assert not part.exists()
    capsys.readouterr()
    assert main(["status", str(out)]) == 1
    status = capsys.readouterr().out
    assert status.startswith("failed    short") and "moov" in status and "2 videos: 1 failed, 1 ok" in status


def test_fractional_gpu_shares_are_placed_and_accounted(gpu_ray, tmp_path):
    toml = "[pose.resources]\nactors = 3\nnum_gpus = 0.5\nnum_cpus = 0.25\n"
    config = config_with(tmp_path, "bottomup", toml)
    before = ray.available_resources().get("GPU", 0)
    graph = build_graph(config, str(tmp_path / "out"), model_blobs(choose_models(config)))
    assert before - ray.available_resources().get("GPU", 0) == pytest.approx(1.5)
    for actor in [*graph.decoders.actors, *graph.pose.actors, *graph.group.actors, *graph.tracks, *graph.sinks]:
        ray.kill(actor, no_restart=True)
    # More than the cluster has is one clear error, not actors waiting forever.
    too_many = config_with(tmp_path, "bottomup", "[pose.resources]\nactors = 5\nnum_gpus = 0.5\nnum_cpus = 0.1\n")
    with pytest.raises(ValueError, match="2.5 GPU"):
        build_graph(too_many, str(tmp_path / "out2"), model_blobs(choose_models(too_many)))


def test_batch_of_twenty_with_every_bad_kind(gpu_ray, tmp_path, references, short):
    """Real clips repeated and every bad kind in one batch: a status row each, the failures named,
    the good outputs equal to single-video runs."""
    src = tmp_path / "in"
    src.mkdir()
    # The 8-frame cut throughout: the batch is about statuses and names, not long videos.
    good = {src / f"short_{k}.mp4": short for k in range(12)}
    good[src / "a=b c.mp4"] = short  # a name that is not a safe path or partition value as it is
    for dst, origin in good.items():
        dst.write_bytes(origin.read_bytes())
    special = {
        remux(short, src / "rotated.mp4", rotation=90): ("ok", None),
        encoded_clip(src / "vfr.mp4", [0, 40, 120, 130, 250, 400, 410, 600]): ("ok", None),
        src / "missing.mp4": ("failed", "not found"),
        src / "empty.mp4": ("failed", "empty"),
        src / "notes.mp4": ("failed", "not a video"),
        cut(remux(short, src / "fast.mp4", options={"movflags": "faststart"}), src / "truncated.mp4", 0.5):
            ("truncated", "of 8 frames"),
        audio_file(src / "song.m4a"): ("failed", "no video stream"),
        encoded_clip(src / "long.mp4", [0, 20_000]): ("failed", "raise decode.max_duration_s"),
    }
    (src / "empty.mp4").write_bytes(b"")
    (src / "notes.mp4").write_text("these are meeting notes, not a video\n" * 50)
    (src / "fast.mp4").unlink()
    listing = tmp_path / "batch.txt"
    listing.write_text("\n".join(str(p) for p in [*good, *special]) + "\n")
    config = config_with(tmp_path, "topdown", FAST + "max_duration_s = 10.0\n[run]\nmax_videos_in_flight = 4\n")
    rows = Runner(prepare(config, tmp_path / "out"), progress=False).run(expand_inputs([f"@{listing}"]))

    assert len(rows) == len(good) + len(special) >= 20
    by_path = {r["path"]: r for r in rows}
    assert len(read_video_rows(tmp_path / "out")) == len(rows)  # one status row per video
    for path, (status, reason) in special.items():
        row = by_path[str(path)]
        assert row["status"] == status, (path.name, row["error"])
        assert reason is None and row["error"] is None or reason in row["error"], (path.name, row["error"])
    assert by_path[str(src / "rotated.mp4")]["width"] == 1920  # upright: the 1080x1920 clip turned
    for path, origin in good.items():
        assert by_path[str(path)]["status"] == "ok"
        assert_same_people(people(tmp_path / "out", video_id_for(path)), references[origin])
