"""`posepipe mocap OUT`: the offline motion-capture job. Refits the tracks already in a finished
output with whole-track smoothing (every track one optimisation over all its frames, so the
temporal terms look both ways), spread over mesh actors, one video per call; the driver publishes
each video's new bodies as its call returns (stages/io/publish_bodies.py).
"""
from __future__ import annotations

from pipeline.config import Config
from pipeline.say import Say, quiet
from stages.io.errors import OutputError
from stages.batches import TrackedRows
from stages.io.sink import DONE_STATUSES, read_video_rows


def _select(rows: TrackedRows, track_id: int | None) -> TrackedRows:
    if track_id is None:
        return rows
    keep = rows.track_id == track_id
    if not keep.any():
        raise OutputError(f"{rows.video_id}: no tracked rows for track {track_id} "
                          f"(tracks: {sorted(set(rows.track_id.tolist()))})")
    return rows.take(keep)


def plan(out: str, video_id: str | None = None, unfitted: bool = False) -> list[str]:
    """The finished videos of OUT to refit (one, when named). A video whose row has no body counts was
    run without --mesh: refitting it is a first fit of every track, as long as the mesh stage of a
    whole run, so it is refused unless unfitted (`mocap --all`) says that is what is wanted."""
    rows = [r for r in read_video_rows(out) if r["status"] in DONE_STATUSES]
    done = [r["video_id"] for r in rows]
    if video_id is not None:
        if video_id not in done:
            raise OutputError(f"{out}: no finished video {video_id!r} (finished: {', '.join(done) or 'none'})")
        done = [video_id]
    if not done:
        raise OutputError(f"{out}: no finished videos to refit")
    bare = [r["video_id"] for r in rows if r["video_id"] in done and r.get("body_rows") is None]
    if bare and not unfitted:
        which = (f"video {bare[0]!r} has no bodies" if len(bare) == 1 else
                 f"none of its {len(done)} videos has bodies" if len(bare) == len(done) else
                 f"{len(bare)} of {len(done)} videos have no bodies")
        raise OutputError(f"{out}: {which} to refit (run without --mesh); give --all to fit all their tracks "
                          "from scratch")
    return done


def run_mocap(config: Config, out: str, video_id: str | None = None, track_id: int | None = None,
              unfitted: bool = False, progress: bool = False, say: Say = quiet) -> list[dict]:
    """Refit and publish; returns the rewritten videos rows (unfitted: see plan). Ray must be initialised.
    progress: a bar over the person-frames to refit, moved as each group of tracks is fitted; say: told
    the actors' start (pipeline/say.py)."""
    # Imported here, not above: Ray and torch take seconds to import, and plan()'s refusals should not wait.
    import ray
    from tqdm import tqdm

    from pipeline.graph import build_mesh_pool
    from stages.body.load import check_body_model
    from stages.io.publish_bodies import replace_bodies
    from stages.io.read_bodies import tracked_people

    videos = plan(out, video_id, unfitted)
    check_body_model(config.mesh.body_model, config.mesh.body_model_path)
    inputs = {}
    for vid in videos:  # small: keypoints only
        rows, size = tracked_people(out, vid)
        inputs[vid] = (_select(rows, track_id), size)
    actors = build_mesh_pool(config, say)
    # Each call streams (mesh actor's mocap): the person-frames of each group as it is fitted, then the result.
    pending = {actors[i % len(actors)].mocap.remote(rows, size): vid
               for i, (vid, (rows, size)) in enumerate(inputs.items())}
    results = []
    with tqdm(total=sum(len(rows) for rows, _ in inputs.values()), desc="refit", unit="person-frame",
              disable=not progress) as bar:
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            step = ray.get(next(ready))
            if isinstance(step, int):
                bar.update(step)
                continue
            vid = pending.pop(ready)
            bodies, tracks, skipped, scene = step
            results.append(replace_bodies(out, vid, bodies, tracks, skipped, scene, only_track=track_id))
    return sorted(results, key=lambda r: r["video_id"])
