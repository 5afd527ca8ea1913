"""The actor graph, written once:

    videos -> DecodeWorker --FrameBatch--> PoseWorker --PoseOutput--> GroupWorker --PoseBatch--> TrackWorker
              (CPU; holds      (GPU or CPU: network   (CPU: peaks, PAF       (CPU: one tracker per video,
               the readers)     maps and/or detector   matching, assembly,    a video always on the same
                                + keypoint crops)      hybrid merge)          one, in order)
                                                                                 | tracked slices
                           Parquet <- SinkWorker <-- bodies rows -- MeshWorker <-+ (--mesh; GPU or CPU: body
                                     (writer; a video always        fits per chunk of frames, a video
                                      on the same one)              always on the same one)
                                          ^-------- tracked slices --------------'
                                          ^-- dense rows -- DenseWorker <-- the MeshWorker's bodies rows
                                                            (--dense; CPU     and its tracks' shapes
                                                             or GPU: OpenGL render of a chunk's bodies;
                                                             no state per video, any one, in turn)

Each box is a pool of actors whose count and logical resources come from the config
(`[decode.resources]`, `[pose.resources]`, ...). Batches move actor to actor through the object
store; the driver (runner.py) only sees small info objects and bounds how many batches of each
video are in flight. Actors restart on failure and their in-flight calls are retried
(`max_restarts`, `max_task_retries`); every stage is deterministic, so a retry writes the same rows.
"""
from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass

import ray

from pipeline.config import Config, ConfigError, StageResources
from pipeline.say import Say, actors_line, quiet
from pipeline.sizing import required_resources, sized, stage_resources
from pipeline.workers import DecodeWorker, DenseWorker, GroupWorker, MeshWorker, PoseWorker, SinkWorker, TrackWorker


def _remote(cls: type, res: StageResources):
    # Retries of an actor method only make sense for stateless deterministic stages; the sink's
    # writes are not retried (a half-applied write is caught by its order check and fails the
    # video), nor the tracker's or the mesh stage's (their per-video state dies with them: the
    # video fails).
    retries = 0 if issubclass(cls, (SinkWorker, TrackWorker, MeshWorker)) else -1  # dense: stateless, retried
    return ray.remote(
        num_cpus=res.num_cpus, num_gpus=res.num_gpus, max_restarts=res.max_restarts,
        max_task_retries=retries if res.max_restarts else 0,
    )(cls)


class _ModelStore:
    """Holds the model bytes the driver resolved, for pose actors to fetch at every (re)start. An
    object-store argument of a restartable actor (model bytes are one) makes Ray log an error-level
    line on every run, since it might be gone at a restart (an actor handle argument counts too); this
    actor is not restarted, so its argument is fine, and pose actors are given its name."""

    def __init__(self, blobs: dict[str, tuple[str, bytes]], segment: bytes | None = None):
        self.blobs, self.segment_bytes = blobs, segment

    def get(self) -> dict[str, tuple[str, bytes]]:
        return self.blobs

    def segment(self) -> bytes | None:
        """The dense stage's segmentation model (None without silhouettes)."""
        return self.segment_bytes


class _PoseActor(PoseWorker):
    """PoseWorker that fetches its model bytes from the named _ModelStore (a copy in transit, then freed)."""

    def __init__(self, config: Config, store_name: str):
        super().__init__(config, ray.get(ray.get_actor(store_name).get.remote()))


class _DenseActor(DenseWorker):
    """DenseWorker that fetches its segmentation model from the named _ModelStore, as _PoseActor does."""

    def __init__(self, config: Config, store_name: str):
        super().__init__(config, ray.get(ray.get_actor(store_name).segment.remote()))


class _RoundRobin:
    def __init__(self, actors: list):
        self.actors = actors
        self._next = itertools.cycle(actors)

    def next(self):
        return next(self._next)


@dataclass
class Graph:
    decoders: _RoundRobin
    pose: _RoundRobin
    group: _RoundRobin
    tracks: list  # per-video stages (tracker, sink, mesh): a video's actor is chosen by a stable hash of its id
    sinks: list  # one writer per video
    model_store: object  # the _ModelStore actor: restarted pose actors fetch their models from it
    meshes: list = ()  # mesh actors (empty without --mesh)
    dense: _RoundRobin | None = None  # dense actors (None without --dense)

    @staticmethod
    def _pinned(actors: list, video_id: str):
        return actors[sum(video_id.encode()) % len(actors)]

    def submit_batch(self, frames_ref, video_id: str, mode: str, model: str, image_size: tuple[int, int],
                     path: str = ""):
        """Chain one batch through pose -> group -> track (-> mesh (-> dense)) -> sink; returns a ref to the
        tracker's (frames, people, per frame), ready when every row of the batch is written.
        mode: the branch mode to run; model: the label its rows carry; path: the input video (the dense
        stage reads its frames again for the silhouettes)."""
        pose_ref = self.pose.next().process.remote(frames_ref, mode, model)
        people_ref = self.group.next().process.remote(pose_ref)
        info_ref, pieces_ref = self._pinned(self.tracks, video_id).push.options(num_returns=2).remote(people_ref)
        mesh = self._pinned(self.meshes, video_id) if self.meshes else None
        bodies_ref = mesh.fit.remote(video_id, pieces_ref, image_size) if mesh else None
        # shapes() runs after fit() on the same actor (one caller's calls run in order): the fitted tracks' shapes.
        dense_ref = self.dense.next().render.remote(bodies_ref, mesh.shapes.remote(video_id), image_size, path) \
            if self.dense else None
        return self._pinned(self.sinks, video_id).write.remote(video_id, pieces_ref, info_ref, bodies_ref, dense_ref)

    def finish_video(self, video_id: str, row: dict, image_size: tuple[int, int], path: str = ""):
        """Ref to the sink's final videos row: the held rows flushed (and fitted, with --mesh, and rendered,
        with --dense), files published."""
        pieces_ref, tracking_ref = self._pinned(self.tracks, video_id).finish.options(num_returns=2).remote(video_id)
        end_ref = self._pinned(self.meshes, video_id).finish.remote(video_id, pieces_ref, image_size) \
            if self.meshes else None
        dense_ref = self.dense.next().finish.remote(end_ref, image_size, path) if self.dense else None
        return self._pinned(self.sinks, video_id).finish.remote(video_id, row, pieces_ref, tracking_ref, end_ref,
                                                                dense_ref)

    def open_video(self, video_id: str) -> None:
        stages = [self.tracks, self.sinks, *([self.meshes] if self.meshes else [])]
        ray.get([self._pinned(actors, video_id).open.remote(video_id) for actors in stages])

    def fail_video(self, video_id: str, row: dict):
        for actors in [self.tracks, *([self.meshes] if self.meshes else [])]:
            self._pinned(actors, video_id).drop.remote(video_id)
        return self._pinned(self.sinks, video_id).fail.remote(video_id, row)

    def stage_stats(self) -> dict[str, dict]:
        """Per stage: summed busy seconds, calls, and busy fraction of the actors' lifetime."""
        out = {}
        for name, actors in (("decode", self.decoders.actors), ("pose", self.pose.actors),
                             ("group", self.group.actors), ("track", self.tracks), ("sink", self.sinks),
                             ("mesh", list(self.meshes)), ("dense", self.dense.actors if self.dense else [])):
            if not actors:
                continue
            stats = ray.get([a.stats.remote() for a in actors])
            busy = sum(s["busy_s"] for s in stats)
            alive = sum(s["alive_s"] for s in stats)
            out[name] = {"actors": len(actors), "busy_s": busy, "calls": sum(s["calls"] for s in stats),
                         "busy_fraction": busy / alive if alive else 0.0}
        return out


def _check_fits(need: dict[str, float], have: dict[str, float]) -> None:
    """Ray would queue actors that can never be placed and the run would hang: say so now.
    have: ray.cluster_resources()."""
    for kind, amount in need.items():
        if amount > have.get(kind, 0.0) + 1e-9:
            raise ConfigError(
                f"the config asks for {amount:g} {kind} in all (actors x num_{kind.lower()}s per stage) "
                f"but the Ray cluster has {have.get(kind, 0.0):g}; lower the [*.resources] values"
            )


def build_mesh_pool(config: Config, say: Say = quiet) -> list:
    """Mesh actors alone, for the offline `posepipe mocap` job over a finished output."""
    res = config.mesh.resources
    _check_fits({"CPU": res.actors * res.num_cpus, "GPU": res.actors * res.num_gpus}, ray.cluster_resources())
    say(actors_line(res.actors, "the body model"))
    actors = [_remote(MeshWorker, res).remote(config) for _ in range(res.actors)]
    _wait_ready(actors, config.run.start_timeout_s)
    return actors


def _wait_ready(actors: list, timeout_s: float) -> None:
    """Wait for the actors' constructors. A model that fails to load is one clear error for the run
    (not the same failure on every video); actors still unplaced after timeout_s are an error too."""
    ready = [a.__ray_ready__.remote() for a in actors]
    try:
        done, waiting = ray.wait(ready, num_returns=len(ready), timeout=timeout_s)
        ray.get(done)
    except ray.exceptions.RayActorError as exc:
        raise RuntimeError(f"an actor of the graph failed to start: {exc}") from exc
    if waiting:
        for a in actors:
            ray.kill(a)
        raise RuntimeError(
            f"{len(waiting)} actor(s) of the graph not placed after {timeout_s:g} s: no node has the CPUs/GPUs "
            "one actor asks for (the totals fit, a single node does not), or the cluster is still scaling up; "
            "lower the [*.resources] values or raise run.start_timeout_s")


def build_graph(config: Config, out_dir: str, blobs: dict[str, tuple[str, bytes]],
                sink_cls: type[SinkWorker] = SinkWorker, say: Say = quiet, segment: bytes | None = None) -> Graph:
    """Start every actor of the graph. blobs: role -> (backend, model bytes), held by one store actor
    and fetched from it by every pose actor; segment: the dense actors' segmentation model, held there too
    (None: the bodies alone; pipeline/models.py choose_segment_model).
    sink_cls: the sink's actor class (injected by tests). say: told how many actors start (their model
    loads are most of a run's start-up)."""
    have = ray.cluster_resources()
    config = sized(config, have.get("CPU", 0.0), have.get("GPU", 0.0))
    _check_fits(required_resources(config), have)
    say(actors_line(sum(r.actors for r in stage_resources(config))))
    store_name = f"posepipe-models-{uuid.uuid4().hex[:12]}"
    store = ray.remote(num_cpus=0, max_restarts=0)(_ModelStore).options(name=store_name).remote(blobs, segment)
    d, p, g, t, s = (config.decode.resources, config.pose.resources, config.group.resources,
                     config.track.resources, config.sink.resources)
    # Pose actors first. On a cluster they are placed before the rest are created: Ray places actors
    # as they come, and small ones placed first can fragment a node so a pose actor fits nowhere
    # although the totals add up (seen on a two-node cluster). On one node nothing can fragment, and
    # every actor starts at once (their imports and model loads overlap: seconds off the start-up).
    pose = [_remote(_PoseActor, p).remote(config, store_name) for _ in range(p.actors)]
    if len([n for n in ray.nodes() if n["Alive"]]) > 1:
        _wait_ready(pose, config.run.start_timeout_s)
    group = [_remote(GroupWorker, g).remote(config) for _ in range(g.actors)]
    tracks = [_remote(TrackWorker, t).remote(config.track) for _ in range(t.actors)]
    sinks = [_remote(sink_cls, s).remote(out_dir, config.sink.row_group_size) for _ in range(s.actors)]
    decoders = [_remote(DecodeWorker, d).remote(config.decode.batch_size, config.decode.max_side,
                                                config.decode.max_pixels, config.decode.max_duration_s)
                for _ in range(d.actors)]
    m = config.mesh.resources
    meshes = [_remote(MeshWorker, m).remote(config) for _ in range(m.actors)] if config.mesh.enabled else []
    n = config.dense.resources
    dense = [_remote(_DenseActor, n).remote(config, store_name) for _ in range(n.actors)] if config.dense.enabled \
        else []
    _wait_ready([*pose, *group, *tracks, *sinks, *decoders, *meshes, *dense], config.run.start_timeout_s)
    return Graph(decoders=_RoundRobin(decoders), pose=_RoundRobin(pose), group=_RoundRobin(group), tracks=tracks,
                 sinks=sinks, model_store=store, meshes=meshes, dense=_RoundRobin(dense) if dense else None)
