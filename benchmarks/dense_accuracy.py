"""Dense humans against ground-truth masks (issue 22): visible-mask IoU per person, occlusion order, UV drift.

    python benchmarks/dense_accuracy.py [--sets p05,p10,p20,coco,ochuman] [--fits detected,gt] [--frames 50]
    python benchmarks/dense_accuracy.py --sets none --held-out 11,12 --fits detected --results held_out.csv

Sets: crowd_synth clips p05/p10/p20 (../shared/eval/crowd_synth: exact visible mask per person and frame) and
the COCO / OCHuman photo fixtures (person segmentations; crowdpose, mpii and posetrack18 have none).
Fits: `detected` = what a user gets: clips through `posepipe run --mode topdown --mesh` (its output cached
under --cache, git-ignored, and reused when finished), photos through the same top-down stages and one
body fit per photo as pipeline/evaluate_body.py does; `gt` = the same fit fed the ground truth's keypoints
(every labelled one, score 1; clips through the mesh stage's BodyStream), which tells 2D error apart from
what a naked body cannot cover (hair, clothes).
Each frame's bodies are rendered together (stages/dense, one depth test) and, as the dense stage does with
`[dense] silhouettes`, cut to the people's silhouettes in the frame, their overlaps ordered by the frame's
colours (stages/dense/layers.py; --silhouettes on,off scores both);
stages/eval/dense_score.py says
how people are matched and counted (unmatched ground truth = IoU 0). Baselines need no body: the detection
box filled, the convex hull of the confident keypoints. Occlusion: where two people's whole extents
overlap (rebuilt from each crowd_synth track's visible masks: the people are rigid cut-outs), the share
of those pixels the rendered front person holds against the back one, also among the pixels both bodies
cover (the depth order alone) and for pairs whose feet are >= CLEAR_GAP of a body height apart. UV drift:
a body point seen in consecutive frames, its (U, V) and its place on the rest mesh (cm) in both.
Bodies are scored grown along their normals as the dense stage draws them (`[dense] grow_cm`, 1 cm: clothes and
hair); --inflate-cm 0,1,2 scores each of those growths instead.
Held out (--held-out SEEDS): clips not in ../shared, made once in --cache by ../shared/tools/composite_crowd.py
with p10's own arguments and another seed (set `seedN`), scored as the clips are.
Writes benchmarks/results/dense_accuracy.csv (one row per set, fit, silhouettes and growth; the committed one
is `--silhouettes on,off`, all sets and fits) and per-person and per-pair CSVs in --cache.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from pycocotools.coco import COCO

import posepipe
from pipeline.config import load_config, mode_file
from pipeline.models import Grouping, build_pose_models, choose_models, choose_segment_model, model_blobs
from stages.batches import FrameBatch, TrackedRows
from stages.body.fit import BodyFitter
from stages.body.load import load_body_model
from stages.body.stream import BodyStream
from stages.body.table import track_shapes
from stages.dense.parts import surface_labels
from stages.dense.raster import make_raster
from stages.dense.segment import SEGMENT_FILE, PersonSegmenter
from stages.eval.dense_score import Bodies, DenseScorer, Scene, labelled_keypoints, whole_references
from stages.io.frame_source import FrameSource
from stages.io.output import fixed_column
from stages.weights import resolve

REPO = Path(__file__).resolve().parents[1]
EVAL = Path(os.environ.get("POSEPIPE_EVAL", REPO.parent / "shared" / "eval"))
os.environ.setdefault("POSEPIPE_WEIGHTS", str(REPO.parent / "shared" / "weights"))
CLIPS = ("p05", "p10", "p20")
FITS = ("detected", "gt")
PHOTOS = {"coco": "coco/test_coco.json", "ochuman": "ochuman/test_ochuman.json"}
# OCHuman ann 3's mask is the girl in front of that person (IoU 0.94 with ann 2; crowd_synth/README.md).
BAD_MASKS = {("ochuman", 3)}
# Feet this share of the front person's height apart: a clear depth order. crowd_synth's crossing pairs pass
# 3-12 px apart, ~25 cm in depth, about a body's thickness (the cut-outs are flat, the bodies are not).
CLEAR_GAP = 0.1
RESULTS = REPO / "benchmarks" / "results" / "dense_accuracy.csv"
COMPOSITE = REPO.parent / "shared" / "tools" / "composite_crowd.py"
# crowd_synth p10's arguments (its gt_coco.json's info.command) but the seed: a held-out clip like it
P10_LIKE = ("--people", "10", "--frames", "50", "--fps", "25", "--size", "960x540", "--source", "coco,ochuman")


def quiet_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        return COCO(str(path))


def by_frame(bodies: pa.Table, tracks: pa.Table) -> dict[int, Bodies]:
    """A video's bodies and body_tracks rows as frame -> Bodies."""
    shapes = track_shapes(tracks)
    plausible = dict(zip(tracks["track_id"].to_pylist(), tracks["plausible"].to_pylist()))
    out = {}
    for f in np.unique(bodies["frame_index"].to_numpy()):
        b = bodies.filter(pc.equal(bodies["frame_index"], int(f)))
        track = b["track_id"].to_numpy().astype(np.int64)
        width = b.schema.field("bone_rotvec").type.list_size
        out[int(f)] = Bodies(track, np.stack([shapes[int(t)] for t in track]),
                             fixed_column(b, "bone_rotvec", width, np.float64).reshape(len(track), -1, 3),
                             fixed_column(b, "root_rotvec", 3, np.float64),
                             fixed_column(b, "translation", 3, np.float64), float(b["focal_px"][0].as_py()),
                             np.array([bool(plausible[int(t)]) for t in track]))
    return out


def pipeline_output(video: Path, out: Path) -> float:
    """Seconds `posepipe run --mode topdown --mesh` took to write out (0: a finished output reused)."""
    if (out / "videos").exists():
        rows = posepipe.read(out, "videos").to_pylist()
        if rows and rows[0]["status"] == "ok" and rows[0]["body_rows"] is not None:
            return 0.0
    t0 = time.perf_counter()
    posepipe.run(str(video), out, mode="topdown", mesh=True)
    return time.perf_counter() - t0


def xyxy(anns: list[dict]) -> np.ndarray:
    """float64[G, 4] x0, y0, x1, y1 of COCO annotations' boxes."""
    box = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
    return np.c_[box[:, :2], box[:, :2] + box[:, 2:]]


def found_in_output(out: Path, frames: int) -> dict[int, tuple]:
    """frame -> (keypoints float[P, 17, 3], detection boxes float[P, 4], track int64[P] (-1 none), None) of an
    output's people table."""
    people = posepipe.read(out, "people")
    found = {}
    for f in range(frames):
        p = people.filter(pc.equal(people["frame_index"], f))
        kp = np.stack([fixed_column(p, c, 17, np.float64) for c in ("kp_x", "kp_y", "kp_score")], -1)
        det = fixed_column(p, "det_bbox", 4, np.float64)
        box = np.where(np.isfinite(det), det, fixed_column(p, "bbox", 4, np.float64))  # the detector's, if any
        track = p["track_id"].to_numpy(zero_copy_only=False).astype(np.float64)  # null (untracked): NaN
        found[f] = (kp, box, np.nan_to_num(track, nan=-1).astype(np.int64), None)
    return found


def fit_ground_truth(name: str, anns: list[dict], size: tuple[int, int], config, model) -> dict[int, Bodies]:
    """Bodies fitted to a clip's ground-truth keypoints (labelled_keypoints) through the mesh stage's BodyStream,
    in chunks and on the floor it estimates, as the graph's mesh actor runs it. anns in frame order."""
    rows = TrackedRows(name, np.array([a["frame_index"] for a in anns], np.int64),
                       np.array([a["frame_index"] / 25.0 for a in anns]),
                       np.array([a["track_id"] for a in anns], np.int64), labelled_keypoints(anns).astype(np.float32))
    stream = BodyStream(BodyFitter(model, config.mesh.fit), config.mesh.chunk_frames, config.mesh.floor_wait_frames)
    stream.open(name)
    first = stream.push(rows, size)
    last, tracks, _, _ = stream.finish(rows.take(np.zeros(len(rows), bool)), size)
    return by_frame(pa.concat_tables([t for t in (first, last) if t is not None]), tracks)


def held_out_clip(seed: int, cache: Path) -> Path:
    """The folder of a p10-like clip made with `seed` (composite_crowd.py), made once under cache."""
    seq = cache / "held_out" / f"seed{seed}"
    if not (seq / "gt_coco.json").is_file():
        subprocess.run([sys.executable, str(COMPOSITE), *P10_LIKE, "--seed", str(seed), "--out", str(seq)],
                       check=True, stdout=subprocess.DEVNULL)
    return seq


def clip_scenes(name: str, seq: Path, fits: str, config, model, cache: Path, frames: int
                ) -> tuple[list[Scene], dict, float]:
    """A crowd_synth-style clip's scenes (its folder seq; frames < `frames`), its people's whole extents
    (whole_references), and the seconds the bodies took (the pipeline run into cache / name, 0 when its output
    was reused; or the fit)."""
    coco = quiet_coco(seq / "gt_coco.json")
    anns = sorted((a for a in coco.dataset["annotations"] if a["frame_index"] < frames),
                  key=lambda a: (a["frame_index"], a["track_id"]))
    per_frame: dict[int, list[dict]] = {}
    for a in anns:
        per_frame.setdefault(a["frame_index"], []).append(a)
    size = (coco.dataset["images"][0]["width"], coco.dataset["images"][0]["height"])
    t0 = time.perf_counter()
    if fits == "detected":  # the whole clip goes through the pipeline; the first `frames` are scored
        seconds = pipeline_output(seq / "video.mp4", cache / name)
        bodies = by_frame(posepipe.read(cache / name, "bodies"), posepipe.read(cache / name, "body_tracks"))
        found = found_in_output(cache / name, frames)
    else:
        bodies = fit_ground_truth(name, anns, size, config, model)
        seconds = time.perf_counter() - t0
        found = {f: (labelled_keypoints(fa), xyxy(fa), np.array([a["track_id"] for a in fa], np.int64),
                     [(g, g) for g in range(len(fa))]) for f, fa in per_frame.items()}
    source = FrameSource(str(seq / "video.mp4"))
    try:
        images = source.images(range(frames))  # for the silhouettes
    finally:
        source.close()
    none = Bodies(np.zeros(0, np.int64), *(np.zeros((0, 1)),) * 4, 1.0, np.zeros(0, bool))
    nobody = (np.zeros((0, 17, 3)), np.zeros((0, 4)), np.zeros(0, np.int64), [])
    scenes = []
    for f in range(frames):
        fa = per_frame.get(f, [])
        kp, box, track, pairs = found.get(f, nobody)
        scenes.append(Scene(f, size, [coco.annToRLE(a) for a in fa],
                            np.array([a["keypoints"] for a in fa], np.float64).reshape(-1, 17, 3),
                            np.array([a["area"] for a in fa], np.float64),
                            np.array([a["bbox_full"][3] for a in fa], np.float64),
                            np.array([a["visible_fraction"] for a in fa], np.float64),
                            np.array([a["track_id"] for a in fa], np.int64),
                            np.array([a["bbox_full"] for a in fa], np.float64).reshape(-1, 4),
                            kp, box, track, bodies.get(f, none), pairs, images[f][0] if f in images else None))
    return scenes, whole_references(anns), seconds


def photo_scenes(name: str, fits: str, config, model) -> tuple[list[Scene], dict, float]:
    """A photo set's scenes, no whole extents, the seconds the bodies took (2D stages and fits). Each photo is
    fitted on its own (a "video" of one frame, no floor), as pipeline/evaluate_body.py fits photos; the 2D
    people of `detected` come from the config's stages as pipeline.evaluate.predict_images runs them, with
    their detection boxes kept for the box baseline."""
    path = EVAL / PHOTOS[name]
    coco = quiet_coco(path)
    fitter = BodyFitter(model, config.mesh.fit)
    if fits == "detected":
        models = build_pose_models(config, model_blobs(choose_models(config)), "cpu")
        grouping = Grouping(config)
    scenes, seconds = [], 0.0
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(image_id)[0]
        size = (int(info["width"]), int(info["height"]))
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id))
                if a.get("num_keypoints", 0) > 0 and (name, int(a["id"])) not in BAD_MASKS]
        bgr = cv2.imread(str(path.parent / info["file_name"]))
        t0 = time.perf_counter()
        if fits == "detected":
            batch = FrameBatch(video_id=name, frame_index=np.array([image_id], np.int64), time_s=np.zeros(1),
                               images=np.ascontiguousarray(bgr[None, :, :, ::-1]))
            people = grouping(models(batch, config.run.mode))
            kp = people.keypoints.astype(np.float64)
            box = np.where(np.isfinite(people.det_bbox), people.det_bbox, people.bbox).astype(np.float64)
            pairs = None
        else:
            kp, box, pairs = labelled_keypoints(anns), xyxy(anns), [(g, g) for g in range(len(anns))]
        fit_kp = kp.astype(np.float32)
        fit_kp[fit_kp[..., 2] <= 0, :2] = np.nan  # a keypoint not found stays out of the fit
        video = f"{name}-{image_id}"
        fit = fitter.fit(video, fit_kp, np.arange(len(kp), dtype=np.int64), np.zeros(len(kp), np.int64), size)
        shapes = fitter.shapes(video)
        fitter.close(video)
        seconds += time.perf_counter() - t0
        track = fit.rows.astype(np.int64)
        bodies = Bodies(track, np.stack([shapes[int(t)] for t in track]) if len(track) else np.zeros((0, 1)),
                        fit.bone_rotvec, fit.root_rotvec, fit.translation, fit.focal,
                        np.ones(len(track), bool))  # no floor under a photo: nothing to judge the feet by
        g = len(anns)
        scenes.append(Scene(image_id, size, [coco.annToRLE(a) for a in anns],
                            np.array([a["keypoints"] for a in anns], np.float64).reshape(-1, 17, 3),
                            np.array([a["area"] for a in anns], np.float64),
                            np.array([a["bbox"][3] for a in anns], np.float64), np.full(g, np.nan),
                            np.full(g, -1, np.int64), np.full((g, 4), np.nan), kp, box,
                            np.arange(len(kp), dtype=np.int64), bodies, pairs, np.ascontiguousarray(bgr[:, :, ::-1])))
    return scenes, {}, seconds


def summary(tally, seconds: dict) -> dict:
    """One results row: means over ground-truth people (unmatched = 0), occlusion and drift."""
    people, pairs = tally.people, [p for p in tally.pairs if p["bodies"]]
    mean = lambda key: float(np.mean([p[key] for p in people])) if people else np.nan
    on_body = [p for p in people if p["body"]]
    clear = [p for p in pairs if p["feet_gap_px"] >= CLEAR_GAP * p["front_height_px"]]

    def share(some: list[dict], won: str = "front_won", lost: str = "back_won") -> float:
        total = sum(p[won] + p[lost] for p in some)
        return sum(p[won] for p in some) / total if total else np.nan

    uv = np.concatenate(tally.uv) if tally.uv else np.zeros(0)
    cm = np.concatenate(tally.cm) if tally.cm else np.zeros(0)
    q = lambda x, p: float(np.percentile(x, p)) if len(x) else np.nan
    return {
        "gt_people": len(people), "matched": mean("matched"), "with_body": mean("body"),
        "iou_dense": mean("iou_dense"), "iou_box": mean("iou_box"), "iou_hull": mean("iou_hull"),
        "iou_dense_own": mean("iou_dense_own"), "iou_box_own": mean("iou_box_own"),
        "iou_hull_own": mean("iou_hull_own"),
        "iou_dense_on_body": float(np.mean([p["iou_dense"] for p in on_body])) if on_body else np.nan,
        "missed_median": q([p["missed"] for p in on_body], 50),
        "spilled_median": q([p["spilled"] for p in on_body], 50),
        "overlap_pairs": len(pairs), "overlap_pixels": sum(p["pixels"] for p in pairs),
        "front_share": share(pairs), "order_share": share(pairs, "order_front", "order_back"),
        "clear_pairs": len(clear), "front_share_clear": share(clear),
        "order_share_clear": share(clear, "order_front", "order_back"),
        "front_share_pairs": float(np.mean([p["front_won"] > p["back_won"] for p in pairs])) if pairs else np.nan,
        "nearer_fit_pairs": float(np.mean([p["nearer_fit"] for p in pairs])) if pairs else np.nan,
        "gt_agreement": float(np.mean([p["agreement"] for p in tally.pairs])) if tally.pairs else np.nan,
        "drift_samples": len(uv), "drift_uv_median": q(uv, 50), "drift_uv_p90": q(uv, 90),
        "drift_cm_median": q(cm, 50), "drift_cm_mean": float(cm.mean()) if len(cm) else np.nan,
        "drift_cm_p90": q(cm, 90), **seconds}


def by_height(people: list[dict]) -> str:
    """Mean dense / box / hull IoU by whole-body height, to see whether small people are the weak ones."""
    out = []
    for lo, hi in ((0, 120), (120, 180), (180, 240), (240, 10000)):
        sel = [p for p in people if lo <= p["height_px"] < hi]
        if sel:
            m = lambda k: np.mean([p[k] for p in sel])
            out.append(f"{lo}-{hi if hi < 10000 else ''} px n={len(sel)}: {m('iou_dense'):.2f}/{m('iou_box'):.2f}/"
                       f"{m('iou_hull'):.2f}")
    return "  ".join(out)


def write_csv(path: Path, records: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(records[0]) if records else [])
        w.writeheader()
        w.writerows(records)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="p05,p10,p20,coco,ochuman")
    ap.add_argument("--fits", default="detected,gt")
    ap.add_argument("--held-out", type=lambda v: [int(x) for x in v.split(",")], default=[],
                    help="seeds of p10-like clips not in ../shared, e.g. 11,12 (held_out_clip)")
    ap.add_argument("--frames", type=int, default=50, help="first frames of each clip (the clips have 50)")
    ap.add_argument("--cache", type=Path, default=REPO / "out" / "dense_accuracy", help="pipeline outputs")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--inflate-cm", type=lambda v: [float(x) for x in v.split(",")], default=None,
                    help="score bodies grown by these cm along their normals, e.g. 0,1,2,3 (default: the dense "
                         "stage's own [dense] grow_cm)")
    ap.add_argument("--silhouettes", type=lambda v: [x == "on" for x in v.split(",")], default=None,
                    help="on, off or on,off: renders cut to the people's silhouettes or the bodies alone (default: "
                         "as the dense stage: on where the model is installed)")
    args = ap.parse_args()
    sets, fits_list = [x for x in args.sets.split(",") if x != "none"], args.fits.split(",")
    unknown = [x for x in sets if x not in CLIPS and x not in PHOTOS] + [x for x in fits_list if x not in FITS]
    if unknown:
        ap.error(f"unknown {', '.join(unknown)} (sets: {', '.join(CLIPS + tuple(PHOTOS))} or none; "
                 f"fits: {', '.join(FITS)})")
    torch.set_num_threads(1)  # bodies.py: posing is small work, and spinning threads slow the GL raster
    config = load_config(mode_file("topdown"))
    args.inflate_cm = args.inflate_cm or [config.dense.grow_cm]
    args.silhouettes = args.silhouettes or [choose_segment_model(config) is not None]
    segmenter = PersonSegmenter(resolve(SEGMENT_FILE)) if any(args.silhouettes) else None
    model = load_body_model(config.mesh.body_model, config.mesh.body_model_path)
    labels, raster = surface_labels(model), make_raster()
    args.cache.mkdir(parents=True, exist_ok=True)
    clips = {name: EVAL / "crowd_synth" / name for name in sets if name in CLIPS}
    clips.update({f"seed{n}": held_out_clip(n, args.cache) for n in args.held_out})
    rows = []
    for name in sets + [f"seed{n}" for n in args.held_out]:
        for fits in fits_list:
            t0 = time.perf_counter()
            if name in clips:
                scenes, whole, fit_s = clip_scenes(name, clips[name], fits, config, model, args.cache, args.frames)
            else:
                scenes, whole, fit_s = photo_scenes(name, fits, config, model)
            t1 = time.perf_counter()
            for sil, cm in [(sil, cm) for sil in args.silhouettes for cm in args.inflate_cm]:
                t2 = time.perf_counter()
                scorer = DenseScorer(model, labels, raster, whole, inflate_m=cm / 100,
                                     segmenter=segmenter if sil else None)
                for s in scenes:
                    scorer.add(s)
                row = {"set": name, "fits": fits, "silhouettes": sil, "inflate_cm": cm, "frames": len(scenes),
                       **summary(scorer.tally, {"fit_s": round(fit_s, 1), "load_s": round(t1 - t0 - fit_s, 1),
                                               "score_s": round(time.perf_counter() - t2, 1)})}
                rows.append(row)
                for what, records in (("people", scorer.tally.people), ("pairs", scorer.tally.pairs)):
                    write_csv(args.cache / f"{what}_{name}_{fits}_{cm:g}cm{'_sil' if sil else ''}.csv", records)
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
                print(f"  IoU dense/box/hull by height: {by_height(scorer.tally.people)}", flush=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    write_csv(args.results, [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows])
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
