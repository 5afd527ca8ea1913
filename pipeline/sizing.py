"""How much of the machine each stage gets: the logical resources the graph reserves, and the pose
actor count when `[pose.resources] actors = "auto"` (the default).

The pose stage is where the time goes (~80% of the stages' CPU time with bottom-up on this
project's 2-core laptop, docs/speed.md), so "auto" gives it the machine:
- on GPUs: one pose actor per `num_gpus` share of the cluster's GPUs (0.5 -> two per GPU), as many as
  the CPUs also allow;
- on CPUs: one pose actor per `max(num_cpus, threads)` of the CPUs the other stages leave. Frames of
  one video are spread over them (graph.py hands batches round robin, the sink keeps their order).
A local Ray is given the machine's cores *plus* the other stages' fractional shares (decode,
grouping and the sink mostly wait on the pose actors, and logical CPUs only place actors), so on a
2-core laptop "auto" means two 1-thread pose actors: two 1-thread onnxruntime processes run this
network at 20-23 frames/s there, one 2-thread process at 18-19.
On a cluster the same rule counts the cluster's logical CPUs, i.e. the nodes' cores.
"""
from __future__ import annotations

import math
from dataclasses import replace

from pipeline.config import Config


def stage_resources(config: Config, with_pose: bool = True) -> tuple:
    """The [<stage>.resources] of every stage the graph starts (mesh only with --mesh, dense with --dense)."""
    stages = (config.decode.resources, config.group.resources, config.track.resources, config.sink.resources)
    stages += (config.mesh.resources,) if config.mesh.enabled else ()
    stages += (config.dense.resources,) if config.dense.enabled else ()
    return ((config.pose.resources,) if with_pose else ()) + stages


def _other_cpus(config: Config) -> float:
    """Logical CPUs of every stage but the pose stage."""
    return sum(r.actors * r.num_cpus for r in stage_resources(config, with_pose=False))


def required_resources(config: Config) -> dict[str, float]:
    """Logical CPUs and GPUs the graph's actors reserve in all (pose actors counted: see `sized`)."""
    if config.pose.resources.actors == "auto":
        raise ValueError("required_resources: size the config first (sizing.sized)")
    stages = stage_resources(config)
    return {"CPU": sum(r.actors * r.num_cpus for r in stages), "GPU": sum(r.actors * r.num_gpus for r in stages)}


def pose_actor_count(config: Config, cpus: float, gpus: float) -> int:
    """Pose actors that `actors = "auto"` gives on a cluster of `cpus` logical CPUs and `gpus` GPUs."""
    res = config.pose.resources
    free_cpus = cpus - _other_cpus(config)
    if res.num_gpus > 0:
        by_cpu = math.floor(free_cpus / res.num_cpus + 1e-9) if res.num_cpus > 0 else math.inf
        n = min(math.floor(gpus / res.num_gpus + 1e-9), by_cpu)
    else:
        n = math.floor(free_cpus / max(res.num_cpus, config.pose.threads) + 1e-9)
    return max(1, int(n))


def sized(config: Config, cpus: float, gpus: float) -> Config:
    """The config with an "auto" pose actor count replaced by the number for this cluster."""
    res = config.pose.resources
    if res.actors != "auto":
        return config
    n = pose_actor_count(config, cpus, gpus)
    return replace(config, pose=replace(config.pose, resources=replace(res, actors=n)))


def local_cpus(config: Config, cores: int) -> int:
    """Logical CPUs for a local Ray on a machine with `cores` cores."""
    if config.pose.resources.actors == "auto":
        # The cores for the pose actors, plus the other stages' shares on top.
        return math.ceil(cores + _other_cpus(config) - 1e-9)
    # Fixed counts: whatever they reserve, at least the cores (the mesh stage's CPU share does not fit
    # beside the four stages that fill a 2-core laptop; logical units only place actors).
    return max(cores, math.ceil(required_resources(config)["CPU"] - 1e-9))
