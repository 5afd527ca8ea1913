"""Top-down keypoint model x person detector: AP and ms per frame side by side, in one run.

    python benchmarks/topdown_models.py [--seqs p01,p05,p10,p20,p50] [--frames 50]
        [--models lightning,thunder,tinypose] [--detectors rtmdet,picodet] [--decoders dark]
        [--out benchmarks/results]

Every combination runs the whole top-down stage (detector, then every crop through the keypoint
model, the crowd checks) in this process, 1 thread per network, on crowd_synth sequences (960x540,
exact COCO keypoint GT) and on the shared photo sets (`posepipe eval`'s own code). The combinations
take turns batch by batch, so the shared machine's drifts hit them all alike: compare the ms of one
run, not across runs. Accuracy as benchmarks/crowd_scaling.py (COCO AP with maxDets 100; recall of
the people with visible_fraction >= 0.5 at OKS > 0.5). Prints a table and AP per ms at each crowd
size; writes <out>/topdown_models.csv.

    python benchmarks/topdown_models.py --gt-boxes [--models ...] [--frames 24]

instead runs each keypoint model on the ground-truth boxes (every person with keypoints; on
crowd_synth the box of the visible part, as `bbox` there is), detector score 1: the keypoint model's
own ceiling, to compare with MANIFEST.toml's standalone figures.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from crowd_scaling import EVAL, REPO, accuracy, build, run_batch
from pycocotools.coco import COCO

from pipeline.evaluate import coco_results, evaluate
from stages.batches import FrameBatch
from stages.eval.metrics import coco_keypoint_eval
from stages.io.decode import VideoReader

PHOTO_SETS = {"coco": "coco/test_coco.json", "ochuman": "ochuman/test_ochuman.json",
              "crowdpose": "crowdpose/crowdpose_coco17.json"}


def combo_config(model: str, detector: str, decoder: str, folder: Path) -> Path:
    path = folder / f"{model}_{detector}_{decoder}.toml"
    path.write_text(f'[topdown]\nkeypoint_model = "{model}"\ndecoder = "{decoder}"\n[detect]\nmodel = "{detector}"\n')
    return path


def _xyxy(anns: list[dict]) -> np.ndarray:
    b = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)


def gt_box_ap(config_path: Path, frames: int) -> dict[str, float]:
    """AP of a config's keypoint model on GT boxes: the photo sets, then crowd_synth p20 and p50."""
    _, models, _ = build("topdown", 1, config_path)
    out = {}
    crowds = [(seq, f"crowd_synth/{seq}/gt_coco.json") for seq in ("p20", "p50")]
    for label, rel in [*PHOTO_SETS.items(), *crowds]:
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(EVAL.parent / rel))
        results, ids = [], []
        if label in PHOTO_SETS:
            sources = [(img["id"], np.ascontiguousarray(cv2.imread(str((EVAL.parent / rel).parent / img["file_name"]))[
                :, :, ::-1])) for img in gt.loadImgs(gt.getImgIds())]
        else:
            video = EVAL.parent / rel.replace("gt_coco.json", "video.mp4")
            with VideoReader(video, batch_size=1, max_side=None) as reader:
                sources = [(int(b.frame_index[0]) + 1, b.images[0]) for b in reader if b.frame_index[0] < frames]
        for image_id, rgb in sources:
            anns = [a for a in gt.loadAnns(gt.getAnnIds(imgIds=image_id)) if a["num_keypoints"] > 0]
            boxes = _xyxy(anns)
            batch = FrameBatch(video_id="v", frame_index=np.array([image_id]), time_s=np.zeros(1), images=rgb[None])
            poses = models.topdown(batch, [(boxes, np.ones(len(boxes), np.float32))])
            results += coco_results(poses)
            ids.append(image_id)
        out[label] = coco_keypoint_eval(gt, results, max_dets=100, image_ids=ids)["AP"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seqs", default="p01,p05,p10,p20,p50")
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--models", default="lightning,thunder,tinypose")
    ap.add_argument("--detectors", default="rtmdet,picodet")
    ap.add_argument("--decoders", default="dark",
                    help="heatmap decoders for tinypose, e.g. argmax,parabola,soft_argmax,dark")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--gt-boxes", action="store_true", help="each keypoint model on GT boxes (--frames: 24)")
    args = ap.parse_args()
    if args.gt_boxes:
        folder = Path(tempfile.mkdtemp(prefix="topdown-models-"))
        for model in args.models.split(","):
            aps = gt_box_ap(combo_config(model, "rtmdet", "dark", folder), args.frames)
            print(f"{model:<10} GT boxes AP " + "  ".join(f"{k} {v:.3f}" for k, v in aps.items()), flush=True)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="topdown-models-"))
    combos = {f"{m}+{d}" + (f"/{dec}" if m == "tinypose" and "," in args.decoders else ""):
              combo_config(m, d, dec, folder) for d in args.detectors.split(",") for m in args.models.split(",")
              for dec in (args.decoders.split(",") if m == "tinypose" else ["dark"])}
    built = {name: build("topdown", 1, path) for name, path in combos.items()}
    rows = []
    for name, (config, _, _) in built.items():  # the photo sets: posepipe eval's numbers
        row = {"combo": name}
        for label, rel in PHOTO_SETS.items():
            with contextlib.redirect_stdout(io.StringIO()):
                report = evaluate(config, EVAL.parent / rel, (EVAL.parent / rel).parent)
            row[f"AP_{label}"] = round(report.coco["AP"], 4)
        rows.append(row)
        print(f"{name:<18} photos AP " + " / ".join(f"{row[f'AP_{k}']:.3f}" for k in PHOTO_SETS), flush=True)
    for seq in args.seqs.split(","):
        first = next(iter(built.values()))[0].decode
        with VideoReader(EVAL / seq / "video.mp4", batch_size=first.batch_size, max_side=first.max_side) as reader:
            batches = [b for b in reader if b.frame_index[0] < args.frames]
        frame_ids = {int(i) for b in batches for i in b.frame_index}
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(EVAL / seq / "gt_coco.json"))
        people = sum(len(gt.getAnnIds(imgIds=i + 1)) for i in frame_ids) / len(frame_ids)
        ms = {name: dict.fromkeys(("detector", "td_keypoints", "crops"), 0.0) for name in built}
        poses = {name: [] for name in built}
        for name, (_, models, grouping) in built.items():  # warm-up, untimed
            run_batch("topdown", models, grouping, batches[0], dict.fromkeys(ms[name], 0.0))
        for batch in batches:  # take turns batch by batch
            for name, (_, models, grouping) in built.items():
                poses[name].append(run_batch("topdown", models, grouping, batch, ms[name]))
        for name in built:
            row = next(r for r in rows if r["combo"] == name)
            acc = accuracy(gt, poses[name], frame_ids)
            total = (ms[name]["detector"] + ms[name]["td_keypoints"]) / len(frame_ids)
            row |= {f"{seq}_ms": round(total, 1), f"{seq}_det_ms": round(ms[name]["detector"] / len(frame_ids), 1),
                    f"{seq}_AP": round(acc["AP"], 4), f"{seq}_recall": round(acc["recall"], 4),
                    f"{seq}_AP_per_s": round(acc["AP"] / total * 1e3, 3), f"{seq}_people": round(people, 2)}
            print(f"{seq} ({people:.1f} people) {name:<18} {total:7.1f} ms/frame (detector "
                  f"{row[f'{seq}_det_ms']:5.1f})  AP {acc['AP']:.3f}  recall {acc['recall']:.3f}  "
                  f"AP per s {row[f'{seq}_AP_per_s']:.2f}", flush=True)
    with open(args.out / "topdown_models.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out / 'topdown_models.csv'}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s")
