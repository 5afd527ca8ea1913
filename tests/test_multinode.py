"""Two Ray nodes on this machine (ray.cluster_utils.Cluster): a batch whose pose stage can only run
on the second node completes, and its output equals a single-node run of the same batch."""
from __future__ import annotations

import ray
from conftest import EVAL
from media import first_frames
from outputs import assert_same_people, config_with, people
from ray.cluster_utils import Cluster

from pipeline.runner import Runner, prepare
from stages.io.decode import video_id_for

CLIP = EVAL / "videos" / "mmhuman3d_multi_person_demo.mp4"  # 40 frames, 2 people
# The head has 1 CPU, taken by decode + group + sink (0.5 + 0.25 + 0.25); the pose actor asks for
# 2 CPUs, which only the second node has: every batch crosses between the nodes twice.
PLACED = "[run]\nstart_timeout_s = 60.0\n[decode]\nbatch_size = 4\n[pose.resources]\nnum_cpus = 2.0\n"


def _node_of(actor) -> str:
    return ray.get(actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))


def test_batch_across_two_nodes_equals_single_node(tmp_path):
    config = config_with(tmp_path, "topdown", PLACED)
    VIDEOS = [first_frames(CLIP, tmp_path / "short.mp4", 8), CLIP]  # two videos, the first a cheap one
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        worker = cluster.add_node(num_cpus=2)
        ray.init(address=cluster.address, log_to_driver=False)
        runner = Runner(prepare(config, tmp_path / "two_nodes"), progress=False)
        rows = runner.run([str(v) for v in VIDEOS])
        g = runner.graph
        pose_node = _node_of(g.pose.actors[0])
        other = {_node_of(a) for a in (*g.decoders.actors, *g.group.actors, *g.tracks, *g.sinks)}
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert pose_node == worker.node_id and worker.node_id not in other  # really two nodes at work

    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    try:
        single = Runner(prepare(config, tmp_path / "one_node"), progress=False).run([str(v) for v in VIDEOS])
    finally:
        ray.shutdown()
    assert [r["frames"] for r in single] == [r["frames"] for r in rows] == [8, 40]
    for v in VIDEOS:
        vid = video_id_for(v)
        assert_same_people(people(tmp_path / "two_nodes", vid), people(tmp_path / "one_node", vid))
