"""Body-fit accuracy on real photos: the 2D pose stages on each COCO-17 keypoint set, a body fitted to
every predicted person, and both scored against the ground truth (PCK@0.1 x torso, people matched at
OKS > 0.5 as `posepipe eval` matches them). There is no 3D ground truth for these photos, so the
fitted body's reprojection is what they can measure: a fit losing PCK against the labels is wrong.

    python benchmarks/mesh_accuracy.py [--sets coco,ochuman,crowdpose] [--mode topdown] [--threads 1]

A set is a folder under the eval folder (POSEPIPE_EVAL, default ../shared/eval) holding a COCO-format
keypoint file with 17 keypoints per person and an `area` per person (what the OKS matching needs);
a folder without one (another joint layout, another format) is skipped with the reason printed.
Prints per set: 2D PCK@0.1, fitted PCK@0.1 over the same keypoints and over all 17, people
fitted/skipped, median reprojection error, seconds (2D stages and fit).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import time
from pathlib import Path

import torch

from pipeline.config import load_config, mode_file
from pipeline.evaluate_body import evaluate_body
from stages.body.load import load_body_model

REPO = Path(__file__).resolve().parents[1]
EVAL = Path(os.environ.get("POSEPIPE_EVAL", REPO.parent / "shared" / "eval"))
# The 2D stages resolve their model files through POSEPIPE_WEIGHTS: the shared folder unless set.
os.environ.setdefault("POSEPIPE_WEIGHTS", str(REPO.parent / "shared" / "weights"))
THR = 0.1


def not_coco17(path: Path) -> str | None:
    """Why a json is not a COCO-17 keypoint ground truth this benchmark can score, or None if it is."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= data.keys():
        return "not a COCO ground truth (no images/annotations/categories)"
    sizes = {len(c.get("keypoints", [])) for c in data["categories"]}
    if sizes != {17}:
        return f"keypoints per person {sorted(sizes)}, not COCO-17"
    people = [a for a in data["annotations"] if a.get("num_keypoints", 0) > 0]
    if not people:
        return "no person with labelled keypoints"
    if not all("area" in a for a in people):
        return "no `area` per person (OKS matching needs it)"
    return None


def ground_truth(set_dir: Path) -> tuple[Path | None, list[str]]:
    """The set's COCO-17 keypoint file and why each other json was passed over. Where several files
    qualify (coco/ also has a whole-body file with the same body keypoints), test_<set>.json wins."""
    reasons, good = [], []
    for path in sorted(set_dir.glob("*.json")):
        why = not_coco17(path)
        if why:
            reasons.append(f"{path.name}: {why}")
        else:
            good.append(path)
    if not good:
        return None, reasons
    chosen = next((p for p in good if p.name == f"test_{set_dir.name}.json"), good[0])
    return chosen, reasons + [f"{p.name}: another COCO-17 file of the set" for p in good if p != chosen]


def run_set(config, model, gt_path: Path, images_dir: Path) -> dict:
    """pipeline.evaluate_body.evaluate_body on one set, with its seconds (2D stages + fit)."""
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' "loading annotations" chatter
        out = evaluate_body(config, gt_path, images_dir, model, THR)
    return {**out, "seconds": time.perf_counter() - t0}


def line(name: str, r: dict) -> str:
    pose, body = r["pose_2d"], r["body"]
    return (f"{name}: PCK@{THR} 2D {pose['pck']:.3f} | fitted {body['pck']:.3f} (same keypoints), "
            f"{body['pck_all']:.3f} (all 17) | delta {body['pck'] - pose['pck']:+.3f} | "
            f"people fitted {r['fitted']}, skipped {r['skipped']} (GT {pose['people_gt']}, found 2D "
            f"{pose['people_found']}, fitted {body['people_found']}) | median reprojection "
            f"{r['median_reproj_px']:.1f} px | {r['seconds']:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="coco,ochuman,crowdpose", help="folders under the eval folder")
    ap.add_argument("--mode", default="topdown", choices=("topdown", "bottomup", "hybrid"))
    ap.add_argument("--device", default="cpu", help="the body fit's device (the 2D stages run on CPU)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(mode_file(args.mode))
    model = load_body_model(config.mesh.body_model, config.mesh.body_model_path, args.device)
    print(f"mode {args.mode}, body model {config.mesh.body_model} on {args.device}, threads {args.threads}, "
          f"fit iters {config.mesh.fit.iters_root}+{config.mesh.fit.iters_full}")
    for name in args.sets.split(","):
        set_dir = EVAL / name
        if not set_dir.is_dir():
            raise FileNotFoundError(f"{set_dir}: no such eval set")
        gt_path, passed_over = ground_truth(set_dir)
        for why in passed_over:
            print(f"{name}: not used {why}")
        if gt_path is None:
            print(f"{name}: skipped, no COCO-17 keypoint ground truth in {set_dir}")
            continue
        print(line(f"{name} ({gt_path.name})", run_set(config, model, gt_path, set_dir)), flush=True)


if __name__ == "__main__":
    main()
