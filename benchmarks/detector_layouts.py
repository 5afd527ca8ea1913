"""Person-detector recall and CPU ms per frame versus input layout, on the crowd_synth sequences.

    python benchmarks/detector_layouts.py [--seqs p05,p10,p20,p50] [--frames N] [--tiles 2x1,2x2,3x2]
                                          [--out benchmarks/results]

Detector: RTMDet-nano (rtmdet_nano_320_person_end2end.onnx, input [N, 3, H, W] dynamic), one
onnxruntime thread, CPU. Layouts, every one run on each FrameBatch (8 frames) in one call per pass:
  one pass 320          RTMDetPerson with fine_side=0: the frame letterboxed into 320x320
  two passes 320+640    RTMDetPerson's default: 320 pass + whole frame at longer side 640, the
                        second pass's boxes added where they overlap no first-pass box (add_missed)
  whole 640, whole 960  one pass at that longer side (detect.fine_input gives the input size)
  tiles CxR + NMS       C columns x R rows of square tiles, each letterboxed to 320 (all tiles of
                        the batch in one call), boxes shifted back to the frame, plus the 320 pass;
                        merged by greedy NMS at IoU 0.5
  tiles 2x1 + add_missed  the same 2x1 tiles, added to the 320 pass's boxes like the fine pass
Square tiles: side s = the smallest that covers the frame with >= 20% overlap on both axes (capped
at the frame's shorter side), tiles spread evenly, so on a 16:9 frame the rows of a 2-row layout
overlap far more than 20% (the printed geometry gives the actual overlaps).
Recall: GT people with visible_fraction >= 0.5 matched one-to-one (per frame, Hungarian on box IoU,
against all GT people of the frame, GT bbox = the visible part) by a detection at IoU >= 0.5,
pooled over the frames. ms per frame: wall time of the layout's call (crops, letterbox, network,
merge; decode excluded) / frames. Each layout has its own session and is warmed up once on the
first batch; layouts alternate batch by batch (starting layout rotating), because this shared VM
stalls in bursts and a burst should hit every layout, not whichever ran during it.
Writes <out>/detector_layouts.csv and prints a markdown table.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from stages.io.decode import VideoReader
from stages.pose import detect
from stages.pose.detect import Detections
from stages.pose.params import DetectorParams
from stages.pose.rtmdet import RTMDET_FILE, RTMDetPerson
from stages.coco17 import box_iou

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = Path(os.environ.get("POSEPIPE_WEIGHTS", REPO.parent / "shared" / "weights"))
EVAL = Path(os.environ.get("POSEPIPE_EVAL", REPO.parent / "shared" / "eval")) / "crowd_synth"

MIN_VISIBLE = 0.5
MATCH_IOU = 0.5
MERGE_IOU = 0.5
MIN_TILE_OVERLAP = 0.2
CPU = ["CPUExecutionProvider"]
Layout = Callable[[np.ndarray], list[Detections]]


def tile_grid(height: int, width: int, cols: int, rows: int) -> tuple[int, list[tuple[int, int]]]:
    """(side, [(x0, y0), ...]) of cols x rows square tiles covering the frame, row-major."""
    need = lambda extent, n: extent / (n - (n - 1) * MIN_TILE_OVERLAP)  # side for 20% overlap
    side = int(np.ceil(min(max(need(width, cols), need(height, rows)), height, width)))
    if side * cols < width or side * rows < height:
        raise ValueError(f"{cols}x{rows} square tiles of at most {side} px cannot cover {width}x{height}")
    starts = lambda extent, n: [round(i * (extent - side) / (n - 1)) if n > 1 else 0 for i in range(n)]
    return side, [(x, y) for y in starts(height, rows) for x in starts(width, cols)]


def overlap_text(side: int, starts: list[int]) -> str:
    """Overlap between neighbouring tiles along one axis, as a share of the tile side."""
    return f"{(side - (starts[1] - starts[0])) / side:.0%}" if len(starts) > 1 else "-"


def tiled(det: RTMDetPerson, cols: int, rows: int, merge: str) -> Layout:
    params = det.params

    def run(images: np.ndarray) -> list[Detections]:
        n, h, w = images.shape[:3]
        side, origins = tile_grid(h, w, cols, rows)
        # Frame-major stack, so the tiles of frame i are rows i*T .. i*T+T-1 of the one call.
        crops = np.stack([images[i, y : y + side, x : x + side] for i in range(n) for x, y in origins])
        per_tile = det.detect_pass(crops, (det.size, det.size))
        shift = np.array([[x, y, x, y] for x, y in origins], np.float32)
        whole = det.detect_pass(images, (det.size, det.size))
        out = []
        for i, first in enumerate(whole):
            tiles = per_tile[i * len(origins) : (i + 1) * len(origins)]
            boxes = np.concatenate([b + shift[t] for t, (b, _) in enumerate(tiles)])
            scores = np.concatenate([s for _, s in tiles])
            if merge == "add_missed":
                out.append(detect.add_missed(first, (boxes, scores), MERGE_IOU, params.max_people))
                continue
            boxes, scores = np.concatenate([first[0], boxes]), np.concatenate([first[1], scores])
            keep = detect.nms(boxes, scores, MERGE_IOU)[: params.max_people]  # score desc already
            out.append((boxes[keep], scores[keep]))
        return out

    return run


def whole(det: RTMDetPerson, side: int) -> Layout:
    def run(images: np.ndarray) -> list[Detections]:
        size = detect.fine_input(images.shape[1], images.shape[2], det.size, side)
        return det.detect_pass(images, size if size is not None else (det.size, det.size))

    return run


def build_layouts(tiles: list[str]) -> dict[str, Layout]:
    # A session per layout, as a deployment of that layout would have: one layout's input shapes
    # then do not resize the memory arena of another's.
    new = lambda **kw: RTMDetPerson(WEIGHTS / RTMDET_FILE, DetectorParams(**kw), num_threads=1, providers=CPU)
    one = new(fine_side=0)
    if not one.batched:
        raise SystemExit("the RTMDet graph edit did not apply (is the onnx package installed?)")
    layouts: dict[str, Layout] = {"one pass 320": one, "two passes 320+640": new()}
    layouts |= {f"whole {s}": whole(new(fine_side=0), s) for s in (640, 960)}
    for spec in tiles:
        cols, rows = map(int, spec.split("x"))
        layouts[f"tiles {spec} + NMS"] = tiled(new(fine_side=0), cols, rows, "nms")
    if "2x1" in tiles:
        layouts["tiles 2x1 + add_missed"] = tiled(new(fine_side=0), 2, 1, "add_missed")
    return layouts


def load_gt(seq: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """frame_index -> (GT boxes float64[g, 4] x1y1x2y2, visible_fraction >= MIN_VISIBLE bool[g])."""
    data = json.loads((EVAL / seq / "gt_coco.json").read_text())
    frame_of = {img["id"]: img["frame_index"] for img in data["images"]}
    per_frame: dict[int, list[dict]] = {f: [] for f in frame_of.values()}
    for ann in data["annotations"]:
        per_frame[frame_of[ann["image_id"]]].append(ann)
    out = {}
    for f, anns in per_frame.items():
        xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        out[f] = (np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1),
                  np.array([a["visible_fraction"] >= MIN_VISIBLE for a in anns], bool))
    return out


def found_visible(dets: np.ndarray, gt_boxes: np.ndarray, visible: np.ndarray) -> int:
    """Visible GT people matched one-to-one by a detection at IoU >= MATCH_IOU."""
    if len(dets) == 0 or len(gt_boxes) == 0:
        return 0
    iou = box_iou(dets, gt_boxes)
    # Pairs below the threshold count as 0, so the assignment maximises overlap among real matches
    # only and a weak pair never steals a detection from a good one.
    iou = np.where(iou >= MATCH_IOU, iou, 0.0)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return int(sum(visible[g] for d, g in zip(rows, cols) if iou[d, g] >= MATCH_IOU))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seqs", default="p05,p10,p20,p50")
    ap.add_argument("--frames", type=int, default=None, help="first N frames per sequence (default all)")
    ap.add_argument("--tiles", default="2x1,2x2,3x2", help="tile layouts, columns x rows")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()
    seqs, tiles = args.seqs.split(","), [t for t in args.tiles.split(",") if t]
    layouts = build_layouts(tiles)
    names = list(layouts)

    rows, warm = [], False
    for seq in seqs:
        with VideoReader(EVAL / seq / "video.mp4", batch_size=8, max_side=1280) as reader:
            batches = list(reader)
        if args.frames is not None:  # cut the batch that runs past N too, so that N frames are scored
            batches = [dataclasses.replace(b, frame_index=b.frame_index[keep], time_s=b.time_s[keep],
                                           images=b.images[keep])
                       for b in batches for keep in [b.frame_index < args.frames] if keep.any()]
        gt = load_gt(seq)
        h, w = batches[0].images.shape[1:3]
        if not warm:  # first call of each session (arena growth, kernel choice) is not timed
            for spec in tiles:
                cols, nrows = map(int, spec.split("x"))
                side, origins = tile_grid(h, w, cols, nrows)
                print(f"tiles {spec}: {len(origins)} tiles of {side} px on {w}x{h}, overlap x "
                      f"{overlap_text(side, sorted({x for x, _ in origins}))}, y "
                      f"{overlap_text(side, sorted({y for _, y in origins}))}")
            for run in layouts.values():
                run(batches[0].images)
            warm = True
        ms = dict.fromkeys(names, 0.0)
        found, boxes = dict.fromkeys(names, 0), dict.fromkeys(names, 0)
        for k, batch in enumerate(batches):
            for name in names[k % len(names):] + names[: k % len(names)]:
                t0 = time.perf_counter()
                dets = layouts[name](batch.images)
                ms[name] += (time.perf_counter() - t0) * 1e3
                for f, (b, _) in zip(batch.frame_index, dets):
                    found[name] += found_visible(b * batch.scale, *gt[int(f)])  # GT is in video px
                    boxes[name] += len(b)
        n_frames = sum(len(b) for b in batches)
        frames = [int(f) for b in batches for f in b.frame_index]
        visible = sum(int(gt[f][1].sum()) for f in frames)
        people = sum(len(gt[f][1]) for f in frames) / n_frames
        for name in names:
            rows.append({"seq": seq, "people_per_frame": round(people, 2),
                         "visible_per_frame": round(visible / n_frames, 2), "layout": name, "frames": n_frames,
                         "recall": round(found[name] / visible, 4) if visible else float("nan"),
                         "boxes_per_frame": round(boxes[name] / n_frames, 2),
                         "ms_per_frame": round(ms[name] / n_frames, 2)})
            r = rows[-1]
            print(f"  {seq} {name:24s} recall {r['recall']:.3f}  {r['boxes_per_frame']:6.1f} boxes/frame"
                  f"  {r['ms_per_frame']:7.1f} ms/frame", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "detector_layouts.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    cell = {(r["layout"], r["seq"]): r for r in rows}
    people = {r["seq"]: r["people_per_frame"] for r in rows}
    head = [f"{s} ({people[s]:g}/frame) {col}" for s in seqs for col in ("recall", "ms")]
    print("\n| layout | " + " | ".join(head) + " |")
    print("|---|" + "---:|" * len(head))
    for name in names:
        vals = [f"{cell[name, s]['recall']:.3f} | {cell[name, s]['ms_per_frame']:.1f}" for s in seqs]
        print(f"| {name} | " + " | ".join(vals) + " |")


if __name__ == "__main__":
    main()
