"""Dense-stage speed: person-frames/s of posing + dense render (stages/dense) at 960x540.

    python benchmarks/dense_speed.py [--people 1,5,10] [--frames 30] [--backend gl,rays] [--threads 1]
                                     [--silhouettes on|off] [--seg-threads 1] [--no-stage]

Crowd_synth-like frames: P anny bodies (random shapes, kept per track as the stage would) standing on a
floor 1.5 m under a level camera, each 150-300 px tall, anywhere across the view, in a random pose
(bone rotations ~N(0, 0.15 rad), turned randomly about the vertical); each frame draws new poses and
places. Per people count and backend it prints, per frame: wall ms of posing (bodies.frame_vertices with
a warm RestBodies) and of render_dense (with its raster kept), the process's CPU ms (all threads: the
llvmpipe and embree workers count), person-frames/s (wall) and the mean visible pixels per person; then
the CPU ms per person of encoding the crops as the dense table's PNG row (stages/io/dense_table.py), its
KB per person, the wall ms of cutting the frame to its people's silhouettes (stages/dense/silhouette.py: the
segmentation model on each person's crop of a real crowd_synth frame, then the cut; --silhouettes off: none) and
person-frames/s of the whole stage (pose + render + silhouettes + encode, CPU time). The
first frame of each run (cache fill, GL start) is left out. The machine's load average is printed
too: on a shared machine wall times follow it, CPU times much less.

Then (--stage, gl) the stage as it runs (stage_run): the same bodies as a bodies table through
DenseRenderer.rows on the crowd_synth clip's frames, decoded again as the stage does, the silhouettes on
their own thread one frame ahead; person-frames/s of wall time on this machine's cores, and CPU ms per
person-frame (all threads: what the stage costs beside other stages on the same cores).

Torch runs on one thread by default: posing 10 people is ~10 ms of small tensor work, and with two
OpenMP threads their spin-waiting after each op took the CPU from llvmpipe's raster threads (measured on
2 cores: posing 122 ms and 34 person-frames/s at 10 people with 2 threads, 11 ms and 53 with 1).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from scipy.spatial.transform import Rotation

from stages.body.anny_body import AnnyBody
from stages.dense.bodies import RestBodies, frame_vertices
from stages.dense.parts import surface_labels
from stages.dense.raster import GlRaster, RayRaster
from stages.dense.render import render_dense
from stages.dense.segment import SEGMENT_FILE, PersonSegmenter
from stages.dense.silhouette import cut_to_silhouettes
from stages.dense.video import DenseRenderer
from stages.io.dense_table import IMAGES, dense_table
from stages.io.frame_source import FrameSource
from stages.weights import resolve

CLIP = Path(__file__).resolve().parents[2] / "shared" / "eval" / "crowd_synth" / "p10" / "video.mp4"  # 960x540
SIZE = (960, 540)
FOCAL = 1000.0  # the pinhole of a ~51 degree horizontal field of view, as the fit guesses for 960 px
CAMERA_HEIGHT = 1.5  # metres above the floor
STATURE = 1.7  # metres, to turn a pixel height into a distance
FEET_BELOW_ORIGIN = 0.82  # anny's rest soles are ~0.82 m under its model origin (the hips)


def random_frame(model, rng: np.random.Generator, people: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bone_rotvec [P, J, 3], root_rotvec [P, 3], translation [P, 3]) for one frame (module docstring)."""
    tall = rng.uniform(150, 300, people)
    z = FOCAL * STATURE / tall
    half_width = (SIZE[0] / 2 - 0.15 * tall) * z / FOCAL  # keep ~the whole body in view
    x = rng.uniform(-1, 1, people) * half_width
    y = np.full(people, CAMERA_HEIGHT - FEET_BELOW_ORIGIN)
    facing = Rotation.from_matrix(model.facing.numpy().astype(np.float64))
    root = np.stack([(Rotation.from_rotvec([0, a, 0]) * facing).as_rotvec()
                     for a in rng.uniform(-np.pi, np.pi, people)])
    bones = rng.normal(0, 0.15, (people, len(model.bone_names), 3))
    return bones, root, np.c_[x, y, z]


def run(model, labels, raster, people: int, frames: int, seed: int = 0, segmenter: PersonSegmenter | None = None,
        image: np.ndarray | None = None) -> dict:
    rng = np.random.default_rng(seed)
    shapes = rng.uniform(0.2, 0.8, (people, len(model.shape_names)))  # one per track, fixed
    rest = RestBodies(model)
    pose_s, render_s, cpu_s, pixels, encode_s, kb, sil_s, sil_cpu = [], [], [], [], [], [], [], []
    for f in range(frames + 1):
        bones, root, trans = random_frame(model, rng, people)
        c0, t0 = time.process_time(), time.perf_counter()
        verts = frame_vertices(model, shapes, bones, root, trans, rest=rest)
        t1 = time.perf_counter()
        frame = render_dense(verts, model.faces, FOCAL, SIZE, labels=labels, raster=raster)
        t2, c1 = time.perf_counter(), time.process_time()
        if segmenter is not None:
            frame = cut_to_silhouettes(frame, segmenter, image)
        t3, c3 = time.perf_counter(), time.process_time()
        rows = dense_table("bench", np.full(people, f), np.zeros(people), np.arange(people), frame.people)
        c2 = time.process_time()
        if f == 0:
            continue
        sil_s.append(t3 - t2)
        sil_cpu.append(c3 - c1)
        encode_s.append((c2 - c3) / people)
        kb.append(sum(len(v) for name in IMAGES for v in rows[name].to_pylist() if v) / 1024 / people)
        pose_s.append(t1 - t0)
        render_s.append(t2 - t1)
        cpu_s.append(c1 - c0)
        pixels.append(np.mean([c.mask.sum() for c in frame.people]))
    total = np.add(pose_s, render_s)
    return {"pose_ms": 1e3 * np.mean(pose_s), "render_ms": 1e3 * np.mean(render_s), "frame_ms": 1e3 * total.mean(),
            "cpu_ms": 1e3 * np.mean(cpu_s), "pf_s": people * len(total) / total.sum(),
            "pf_s_cpu": people * len(cpu_s) / np.sum(cpu_s), "pixels": float(np.mean(pixels)),
            "encode_ms": 1e3 * np.mean(encode_s), "kb": float(np.mean(kb)), "sil_ms": 1e3 * np.mean(sil_s),
            "stage_pf_s_cpu": people * len(cpu_s) / (np.sum(cpu_s) + np.sum(sil_cpu) + people * np.sum(encode_s))}


def bodies_rows(model, people: int, frames: int, seed: int = 0) -> tuple[pa.Table, dict[int, np.ndarray]]:
    """A bodies table (the columns DenseRenderer.rows reads) of `frames` random frames (random_frame) of
    `people` tracks, and the tracks' shapes."""
    rng = np.random.default_rng(seed)
    shapes = {t: rng.uniform(0.2, 0.8, len(model.shape_names)) for t in range(people)}
    drawn = [random_frame(model, rng, people) for _ in range(frames)]
    def fixed(parts: list[np.ndarray], size: int) -> pa.FixedSizeListArray:
        return pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(parts).astype(np.float32).ravel()), size)

    n, j = people * frames, len(model.bone_names)
    return pa.table({"video_id": ["bench"] * n, "frame_index": np.repeat(np.arange(frames), people),
                     "time_s": np.repeat(np.arange(frames) / 25.0, people),
                     "track_id": np.tile(np.arange(people), frames),
                     "body_model": [model.name] * n, "bone_rotvec": fixed([d[0] for d in drawn], 3 * j),
                     "root_rotvec": fixed([d[1] for d in drawn], 3), "translation": fixed([d[2] for d in drawn], 3),
                     "focal_px": np.full(n, FOCAL, np.float32)}), shapes


def stage_run(renderer: DenseRenderer, people: int, frames: int) -> dict:
    """The dense stage as the graph's dense actor and `posepipe dense` run it (DenseRenderer.rows): the clip's
    frames decoded again, posing, render, silhouettes (on their own thread), PNG rows; wall and CPU time."""
    bodies, shapes = bodies_rows(renderer.model, people, frames + 1)
    source = FrameSource(str(CLIP))
    try:
        renderer.rows(bodies.filter(pc.equal(bodies["frame_index"], 0)), shapes, SIZE, source)  # warm: GL, decoder
        rest = bodies.filter(pc.greater(bodies["frame_index"], 0))
        c0, t0 = time.process_time(), time.perf_counter()
        out = renderer.rows(rest, shapes, SIZE, source)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        source.close()
    assert out.num_rows == rest.num_rows
    return {"pf_s": rest.num_rows / wall, "cpu_ms": 1e3 * cpu / rest.num_rows, "wall_ms": 1e3 * wall / frames}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", default="1,5,10")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--backend", default="gl,rays", help="comma list of gl (OpenGL/EGL) and rays (trimesh+embree)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (posing; module docstring)")
    ap.add_argument("--seg-threads", type=int, default=1, help="the segmentation model's threads ([dense] threads)")
    ap.add_argument("--silhouettes", choices=["on", "off"], default="on",
                    help="cut each frame to its people's silhouettes ([dense] silhouettes), on a crowd_synth frame")
    ap.add_argument("--stage", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the whole stage as it runs (stage_run), with the gl backend")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = AnnyBody()
    labels = surface_labels(model)
    segmenter, image = None, None
    if args.silhouettes == "on":
        segmenter = PersonSegmenter(resolve(SEGMENT_FILE), args.seg_threads)
        image = FrameSource(str(CLIP)).images([0])[0][0]  # real pixels; the bodies are not where its people are
    backends = {"gl": GlRaster, "rays": RayRaster}
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {SIZE[0]}x{SIZE[1]}, focal {FOCAL:.0f} px")
    print(f"{'backend':8s} {'people':>6s} {'pose ms':>8s} {'render ms':>9s} {'frame ms':>8s} {'cpu ms':>7s} "
          f"{'pf/s':>6s} {'pf/s cpu':>8s} {'px/person':>9s} {'encode ms':>9s} {'KB/person':>9s} "
          f"{'silh ms':>7s} {'stage pf/s cpu':>14s}")
    for name in args.backend.split(","):
        raster = backends[name]()
        for p in (int(x) for x in args.people.split(",")):
            r = run(model, labels, raster, p, args.frames, segmenter=segmenter, image=image)
            print(f"{name:8s} {p:6d} {r['pose_ms']:8.1f} {r['render_ms']:9.1f} {r['frame_ms']:8.1f} {r['cpu_ms']:7.1f} "
                  f"{r['pf_s']:6.1f} {r['pf_s_cpu']:8.1f} {r['pixels']:9.0f} {r['encode_ms']:9.1f} {r['kb']:9.1f} "
                  f"{r['sil_ms']:7.1f} {r['stage_pf_s_cpu']:14.1f}", flush=True)
        if name == "gl" and args.stage:
            renderer = DenseRenderer(model, raster, 0.01, segmenter)
            print(f"stage (DenseRenderer.rows, grow 1 cm, silhouettes {args.silhouettes}): people, person-frames/s "
                  "wall, CPU ms per person-frame, wall ms per frame")
            for p in (int(x) for x in args.people.split(",")):
                r = stage_run(renderer, p, args.frames)
                print(f"stage {p:6d} {r['pf_s']:8.1f} {r['cpu_ms']:8.1f} {r['wall_ms']:8.1f}", flush=True)
        raster.release()
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
