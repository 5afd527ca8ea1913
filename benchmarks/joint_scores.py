"""Joint scores of each top-down keypoint model: labelled-visible vs unlabelled joints, and the
raw score each model's joints must reach to count as confident.

    python benchmarks/joint_scores.py [--models lightning,thunder,tinypose]

Each model runs on the ground-truth boxes of the shared photo sets (eval/coco, eval/ochuman,
eval/crowdpose in COCO-17), with its own crop (crops.py) and its raw scores (no mapping). A joint
labelled visible (v = 2) is a positive, an unlabelled joint (v = 0: out of the frame, or hidden
beyond guessing) a negative.

The rule, the same for every model: the house threshold (0.3) was set on MoveNet Lightning, where
it passes TPR_ref of the visible joints. A model's raw threshold t is the score that passes the
same share of its visible joints (the (1 - TPR_ref) quantile of its visible-joint scores), so the
consumers of "confident" (tracking's OKS, the hybrid merge, mesh fitting, the low-confidence flag)
see as many of a person's visible joints as they were tuned on, and a model that tells visible from
unlabelled better shows it as a lower false-positive rate at the same TPR. `stages/scores.py`
maps t onto 0.3. Youden's J-optimal cut (max TPR - FPR) is printed beside it: on 64 negatives it is
noisy, and it would change what "confident" passes from model to model.
Prints per model: positives, negatives, score quantiles of both, t with its TPR/FPR, the J-optimal
cut with its TPR/FPR.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
from pathlib import Path

import cv2
import numpy as np
from pycocotools.coco import COCO

from stages.pose.crops import crop_transforms, warp_crops
from stages.pose.params import TopDownParams
from stages.scores import HOUSE_THRESHOLD
from stages.pose.zoo import KEYPOINT_MODELS, build_keypoint_model

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = Path(os.environ.get("POSEPIPE_WEIGHTS", REPO.parent / "shared" / "weights"))
EVAL = Path(os.environ.get("POSEPIPE_EVAL", REPO.parent / "shared" / "eval"))
SETS = ("coco/test_coco.json", "ochuman/test_ochuman.json", "crowdpose/crowdpose_coco17.json")


def raw_scores(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(scores float[n], labels int[n] = the GT visibility v) over every GT-box crop's joints."""
    filename, _ = KEYPOINT_MODELS[name]
    model = build_keypoint_model(TopDownParams(keypoint_model=name), (WEIGHTS / filename).read_bytes(),
                                 num_threads=2)  # a model returns its raw scores; TopDownKeypoints maps them
    scores, labels = [], []
    for rel in SETS:
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(EVAL / rel))
        for img in gt.loadImgs(gt.getImgIds()):
            anns = [a for a in gt.loadAnns(gt.getAnnIds(imgIds=img["id"])) if a["num_keypoints"] > 0]
            if not anns:
                continue
            rgb = np.ascontiguousarray(cv2.imread(str((EVAL / rel).parent / img["file_name"]))[:, :, ::-1])
            xywh = np.array([a["bbox"] for a in anns], np.float32)
            boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
            A, _ = crop_transforms(boxes, TopDownParams().crop_margin, model.input_size)
            kps = model(warp_crops(rgb, A, model.input_size))
            scores.append(kps[:, :, 2].reshape(-1))
            labels.append(np.array([a["keypoints"] for a in anns]).reshape(len(anns), 17, 3)[:, :, 2].reshape(-1))
    return np.concatenate(scores), np.concatenate(labels).astype(np.int64)


def youden(scores: np.ndarray, positive: np.ndarray) -> tuple[float, float, float]:
    """(t, TPR, FPR) at the threshold maximising TPR - FPR (midpoint between adjacent scores)."""
    order = np.unique(scores)
    cuts = np.concatenate([[order[0] - 1e-6], (order[1:] + order[:-1]) / 2, [order[-1] + 1e-6]])
    tpr = np.array([(scores[positive] >= c).mean() for c in cuts])
    fpr = np.array([(scores[~positive] >= c).mean() for c in cuts])
    best = int(np.argmax(tpr - fpr))
    return float(cuts[best]), float(tpr[best]), float(fpr[best])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(KEYPOINT_MODELS))
    args = ap.parse_args()
    q = (0.1, 0.25, 0.5, 0.75, 0.9)
    data = {}
    for name in ["lightning", *(m for m in args.models.split(",") if m != "lightning")]:
        scores, v = raw_scores(name)
        keep = (v == 2) | (v == 0)
        data[name] = scores[keep], v[keep] == 2
    s, p = data["lightning"]
    tpr_ref = float((s[p] >= HOUSE_THRESHOLD).mean())
    print(f"reference: lightning passes {tpr_ref:.3f} of visible joints at the house threshold {HOUSE_THRESHOLD}")
    print(f"{'model':<10} {'pos':>4} {'neg':>4}  {'visible q10/25/50/75/90':<30} {'unlabelled q10/25/50/75/90':<30}"
          f" {'t':>6} {'TPR':>5} {'FPR':>5}   {'J-opt':>6} {'TPR':>5} {'FPR':>5}")
    for name, (s, p) in data.items():
        t = HOUSE_THRESHOLD if name == "lightning" else float(np.quantile(s[p], 1 - tpr_ref))
        jt, jtpr, jfpr = youden(s, p)
        qs = lambda a: "/".join(f"{x:.2f}" for x in np.quantile(a, q))
        print(f"{name:<10} {p.sum():>4} {(~p).sum():>4}  {qs(s[p]):<30} {qs(s[~p]):<30} {t:>6.3f}"
              f" {(s[p] >= t).mean():>5.2f} {(s[~p] >= t).mean():>5.2f}   {jt:>6.3f} {jtpr:>5.2f} {jfpr:>5.2f}")


if __name__ == "__main__":
    main()
