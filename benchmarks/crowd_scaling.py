"""Crowd scaling: per-stage CPU cost and accuracy of bottomup / topdown / hybrid vs people per frame.

    python benchmarks/crowd_scaling.py [--seqs p01,p05,p10,p20,p50] [--modes bottomup,topdown,hybrid]
                                       [--threads N] [--frames N] [--config FILE] [--out benchmarks/results]

Data: crowd_synth sequences (960x540, 50 frames, 1..50 people, exact COCO keypoint GT; see
shared/eval/crowd_synth/README.md). Each video is decoded once into FrameBatches of
[decode] batch_size frames (decode time excluded); then, per mode, the stages run in this process
(no Ray), each timed with perf_counter: bottom-up network, bottom-up grouping, detector, top-down
keypoints (crops + MoveNet), hybrid merge. Every mode builds its own models from its preset
(configs/<mode>.toml, `[pose] threads` from --threads) and runs them once before timing.
fps = frames / summed stage time. Accuracy: COCO keypoint AP/AR (pycocotools, maxDets 100);
recall = GT people with visible_fraction >= 0.5 matched one-to-one (per frame, Hungarian on OKS,
against all GT people of the frame) by a prediction at OKS > 0.5; precision = predictions so
matched to any GT person / all predictions (a person written twice counts once).
Writes <out>/crowd_scaling.csv and <out>/crowd_scaling.png.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import time
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from pipeline.config import load_config, mode_file
from pipeline.evaluate import coco_results
from pipeline.models import Grouping, build_pose_models, choose_models, model_blobs
from stages.batches import PoseBatch, PoseOutput
from stages.io.decode import VideoReader
from stages.eval.metrics import coco_keypoint_eval, match_people
from stages.pose.mode_table import MODES
from stages.pose.modes import merge_hybrid

REPO = Path(__file__).resolve().parents[1]
# Models resolve at build time (stages/weights.py reads the variable then); the sibling shared/ as default.
os.environ.setdefault("POSEPIPE_WEIGHTS", str(REPO.parent / "shared" / "weights"))
EVAL = Path(os.environ.get("POSEPIPE_EVAL", REPO.parent / "shared" / "eval")) / "crowd_synth"

STAGES = ("bu_net", "bu_group", "detector", "td_keypoints", "hybrid_merge")
MODE_STAGES = {"bottomup": STAGES[:2], "topdown": STAGES[2:4], "hybrid": STAGES}
MIN_VISIBLE = 0.5


def build(mode: str, threads: int | None, extra: Path | None = None):
    config = load_config(mode_file(mode), *([extra] if extra else []))
    if threads is not None:
        config = dataclasses.replace(config, pose=dataclasses.replace(config.pose, threads=threads))
    blobs = model_blobs(choose_models(config))
    return config, build_pose_models(config, blobs, "cpu"), Grouping(config)


def run_batch(mode: str, models, grouping: Grouping, batch, ms: dict[str, float]) -> PoseBatch:
    """The mode's stages on one FrameBatch; adds each stage's wall time (ms) to `ms`."""
    def timed(stage, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        ms[stage] += (time.perf_counter() - t0) * 1e3
        return out

    bottom = top = None
    branches = MODES[mode]
    if branches.bottomup:
        maps = timed("bu_net", models.bottomup, batch)
        bottom = timed("bu_group", grouping, PoseOutput(mode="bottomup", maps=maps))
    if branches.topdown:
        dets = timed("detector", models.detector, batch.images)
        ms["crops"] += sum(len(boxes) for boxes, _ in dets)
        top = timed("td_keypoints", models.topdown, batch, dets)
    if branches.bottomup and branches.topdown:  # the same merge Grouping does on a hybrid PoseOutput, timed on its own
        return timed("hybrid_merge", merge_hybrid, top, bottom, grouping.hybrid.max_oks)
    return bottom if bottom is not None else top


def accuracy(gt: COCO, poses: list[PoseBatch], frame_ids: set[int]) -> dict[str, float]:
    results = [r for pb in poses for r in coco_results(pb, image_id_offset=1)]  # GT image id = frame + 1
    image_ids = sorted(i + 1 for i in frame_ids)
    coco = coco_keypoint_eval(gt, results, max_dets=100, image_ids=image_ids)
    found = total = matched = predicted = 0
    for pb in poses:
        for f in np.unique(pb.frames):
            anns = gt.loadAnns(gt.getAnnIds(imgIds=int(f) + 1))
            if not anns:
                continue
            g = np.array([a["keypoints"] for a in anns], np.float64).reshape(-1, 17, 3)
            area = np.array([a["area"] for a in anns], np.float64)
            visible = np.array([a["visible_fraction"] >= MIN_VISIBLE for a in anns])
            kp = pb.keypoints[pb.frame_index == f]
            valid = np.isfinite(kp[:, :, 0]) & (kp[:, :, 2] > 0)
            pairs = match_people(kp[:, :, :2], valid, g, area, min_oks=0.5)
            found += int(sum(visible[gi] for _, gi in pairs))
            total += int(visible.sum())
            matched += len(pairs)
            predicted += len(kp)
    return {"AP": coco["AP"], "AR": coco["AR"], "recall": found / total if total else float("nan"),
            "precision": matched / predicted if predicted else float("nan")}


def crossings(x: list[float], a: list[float], b: list[float]) -> list[tuple[float, str]]:
    """Every x (linear interpolation between neighbours) where a - b changes sign, with the side
    a is on after it ("a>b" or "a<b"), scanning upward in x."""
    d = [ai - bi for ai, bi in zip(a, b)]
    out = []
    for i in range(1, len(d)):
        if (d[i - 1] > 0) != (d[i] > 0):
            out.append((x[i - 1] + (x[i] - x[i - 1]) * d[i - 1] / (d[i - 1] - d[i]), "a>b" if d[i] > 0 else "a<b"))
    return out


def describe(name_a: str, name_b: str, x: list[float], a: list[float], b: list[float]) -> str:
    cs = crossings(x, a, b)
    start = f"{name_a} {'>' if a[0] > b[0] else '<='} {name_b} at {x[0]} people"
    return start + "".join(f"; {name_a} {'>' if s == 'a>b' else '<='} {name_b} from {c:.1f}" for c, s in cs)


def plot(rows: list[dict], modes: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_a) = plt.subplots(1, 2, figsize=(12, 4.8))
    for mode in modes:
        r = [row for row in rows if row["mode"] == mode]
        x = [row["people_per_frame"] for row in r]
        ax_t.plot(x, [row["ms_total"] for row in r], "o-", label=mode)
        line, = ax_a.plot(x, [row["AP"] for row in r], "o-", label=f"{mode} AP")
        ax_a.plot(x, [row["recall"] for row in r], "s--", color=line.get_color(), label=f"{mode} recall")
    for ax, ylabel in ((ax_t, "CPU ms / frame (all stages)"), (ax_a, "AP (OKS)  /  recall (OKS > 0.5)")):
        ax.set_xscale("log")
        ax.set_xlabel("people per frame (mean GT)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax_t.set_title("cost vs crowd size")
    ax_a.set_title("accuracy vs crowd size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seqs", default="p01,p05,p10,p20,p50")
    ap.add_argument("--modes", default="bottomup,topdown,hybrid")
    ap.add_argument("--threads", type=int, default=None, help="[pose] threads (default: config, 1)")
    ap.add_argument("--config", type=Path, default=None, help="TOML over every mode's preset (e.g. [bottomup] net_height)")
    ap.add_argument("--frames", type=int, default=None, help="first N frames per sequence (default all)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    seqs, modes = args.seqs.split(","), args.modes.split(",")
    unknown = set(modes) - set(MODE_STAGES)
    if unknown:
        raise SystemExit(f"unknown modes {sorted(unknown)}; choose from {list(MODE_STAGES)}")
    t_start = time.perf_counter()
    built = {mode: build(mode, args.threads, args.config) for mode in modes}
    threads = {built[m][0].pose.threads for m in modes}
    print(f"pose threads {threads}, models: "
          + "; ".join(f"{m}: " + "+".join(c.filename for c in choose_models(built[m][0]).values()) for m in modes))

    rows, warm = [], set()
    for seq in seqs:
        cfg = built[modes[0]][0].decode
        with VideoReader(EVAL / seq / "video.mp4", batch_size=cfg.batch_size, max_side=cfg.max_side) as reader:
            batches = list(reader)
        if args.frames is not None:
            batches = [b for b in batches if b.frame_index[0] < args.frames]
        n_frames = sum(len(b) for b in batches)
        frame_ids = {int(i) for b in batches for i in b.frame_index}
        gt = COCO(str(EVAL / seq / "gt_coco.json"))
        people = sum(len(gt.getAnnIds(imgIds=i + 1)) for i in frame_ids) / n_frames
        for mode in modes:
            _, models, grouping = built[mode]
            if mode not in warm:  # first call of each model (session init, allocations) is not timed
                run_batch(mode, models, grouping, batches[0], dict.fromkeys((*STAGES, "crops"), 0.0))
                warm.add(mode)
            ms = dict.fromkeys((*STAGES, "crops"), 0.0)
            poses = [run_batch(mode, models, grouping, b, ms) for b in batches]
            total = sum(ms[s] for s in MODE_STAGES[mode]) / n_frames
            row = {"seq": seq, "people_per_frame": round(people, 2), "mode": mode, "frames": n_frames,
                   "fps": round(1e3 / total, 2)}
            row |= {f"ms_{s}": round(ms[s] / n_frames, 2) if s in MODE_STAGES[mode] else "" for s in STAGES}
            row |= {"ms_total": round(total, 2)}
            row |= {k: round(v, 4) for k, v in accuracy(gt, poses, frame_ids).items()}
            row["predictions_per_frame"] = round(sum(len(p) for p in poses) / n_frames, 2)
            row["crops_per_frame"] = round(ms["crops"] / n_frames, 2) if "detector" in MODE_STAGES[mode] else ""
            rows.append(row)
            print(f"  {seq} {mode:8s} {row['ms_total']:8.1f} ms/frame  AP {row['AP']:.3f}  recall {row['recall']:.3f}",
                  flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "crowd_scaling.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, modes, args.out / "crowd_scaling.png")

    cols = list(rows[0])
    print("\n" + "  ".join(f"{c:>{max(len(c), 8)}}" for c in cols))
    for r in rows:
        print("  ".join(f"{r[c]!s:>{max(len(c), 8)}}" for c in cols))
    by = {m: [r for r in rows if r["mode"] == m] for m in modes}
    print()
    if "bottomup" in by and "topdown" in by:
        x = [r["people_per_frame"] for r in by["bottomup"]]
        bu_ms, td_ms = [r["ms_total"] for r in by["bottomup"]], [r["ms_total"] for r in by["topdown"]]
        print("ms/frame crossover: " + describe("top-down", "bottom-up", x, td_ms, bu_ms))
        print("AP crossover:       " + describe("top-down", "bottom-up", x, [r["AP"] for r in by["topdown"]],
                                                [r["AP"] for r in by["bottomup"]]))
    for mode in ("bottomup", "topdown"):
        r = by.get(mode, [])
        if len(r) >= 2:
            ratio = r[-1]["ms_total"] / r[0]["ms_total"]
            slope = np.polyfit([q["people_per_frame"] for q in r], [q["ms_total"] for q in r], 1)[0]
            check = (f"  (target <= 1.25: {'PASS' if ratio <= 1.25 else 'FAIL'})" if mode == "bottomup" else "")
            print(f"{mode}: ms/frame at {r[-1]['people_per_frame']} people / at {r[0]['people_per_frame']}"
                  f" = {ratio:.2f}{check}; fitted slope {slope:.2f} ms per extra person")
    print(f"wrote {args.out / 'crowd_scaling.csv'} and {args.out / 'crowd_scaling.png'}; "
          f"total {time.perf_counter() - t_start:.0f} s; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
