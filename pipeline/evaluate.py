"""`posepipe eval`: the pose stages on a COCO-format keypoint set, scored with pycocotools.

Runs the same stage objects as the Ray graph, in this process (an image set is small and has no
frame order to keep), so the numbers are those of the pipeline's own decoding.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from pycocotools.coco import COCO

from pipeline.config import Config
from pipeline.inputs import InputError
from pipeline.models import Grouping, build_pose_models, choose_models, model_blobs
from stages.batches import FrameBatch, PoseBatch
from stages.pose.heatmap_decode import DECODERS
from stages.pose.mode_table import MODES
from stages.eval.metrics import coco_keypoint_eval, match_people, mean_keypoint_error_px, pck_torso, pckh
from stages.io.errors import OutputError
from stages.io.output import read_video_table
from stages.io.sink import DONE_STATUSES, read_video_rows


@dataclass(frozen=True)
class EvalReport:
    coco: dict[str, float]
    pck_name: str  # "PCKh@0.5" where the set has head boxes, else "PCK@0.2" (torso)
    pck: float
    people_found: int  # GT people (with keypoints) matched by a prediction at OKS > 0.5
    people_gt: int
    predictions: int
    mean_error_px: float  # over matched people's labelled, predicted keypoints

    def lines(self) -> list[str]:
        c = self.coco
        return [
            f"AP {c['AP']:.3f}  AP50 {c['AP .5']:.3f}  AP75 {c['AP .75']:.3f}  AR {c['AR']:.3f}",
            f"{self.pck_name} {self.pck:.3f}",
            (f"people found {self.people_found}/{self.people_gt} (OKS > 0.5), predictions {self.predictions}, "
             f"mean keypoint error {self.mean_error_px:.1f} px"),
        ]


def coco_results(poses: PoseBatch, image_id_offset: int = 0) -> list[dict]:
    """COCO keypoint results of a PoseBatch, image id = frame index + offset; keypoints not found
    (NaN) become 0, as COCO's format has no missing value (their score is 0 already)."""
    return [{"image_id": int(f) + image_id_offset, "category_id": 1, "score": float(s),
             "keypoints": np.nan_to_num(kp, nan=0.0).reshape(-1).tolist()}
            for f, kp, s in zip(poses.frame_index, poses.keypoints, poses.score)]


def predict_images(config: Config, gt: COCO, images_dir: Path) -> list[dict]:
    """COCO results (one per predicted person) for every image of the set, in the config's mode."""
    if not MODES[config.run.mode].branch:
        raise ValueError("eval scores single images: use --mode bottomup, topdown or hybrid")
    blobs = model_blobs(choose_models(config))
    models = build_pose_models(config, blobs, "cpu")
    grouping = Grouping(config)
    results = []
    for image_id in sorted(gt.getImgIds()):
        info = gt.loadImgs(image_id)[0]
        bgr = cv2.imread(str(images_dir / info["file_name"]))
        if bgr is None:
            raise FileNotFoundError(f"{images_dir / info['file_name']}: image missing or unreadable")
        frames = FrameBatch(video_id="eval", frame_index=np.array([image_id], np.int64),
                            time_s=np.zeros(1), images=np.ascontiguousarray(bgr[None, :, :, ::-1]))
        results += coco_results(grouping(models(frames, config.run.mode)))
    return results


@dataclass(frozen=True)
class ImageMatch:
    """One image's GT people (those with keypoints) and the predictions matched to them."""

    anns: list[dict]
    gt: np.ndarray  # float64[G, 17, 3]
    pred: np.ndarray  # float64[P, 17, 3] (x, y, score)
    valid: np.ndarray  # bool[P, 17] predicted keypoints (score > 0)
    pairs: list[tuple[int, int]]  # (prediction, GT) at OKS > 0.5

    def matched_xy(self, all_joints: bool = False) -> np.ndarray:
        """float64[G, 17, 2]: each GT person's matched prediction, NaN where no prediction or (unless
        all_joints, for a predictor that places every joint) where the keypoint was not predicted."""
        matched = np.full((len(self.anns), 17, 2), np.nan)
        for pi, gi in self.pairs:
            matched[gi] = self.pred[pi, :, :2] if all_joints else np.where(self.valid[pi][:, None],
                                                                           self.pred[pi, :, :2], np.nan)
        return matched


def match_images(gt: COCO, results: list[dict]) -> list[ImageMatch]:
    """Every image with labelled people, its predictions matched one-to-one to them by OKS (> 0.5)."""
    out = []
    for image_id in gt.getImgIds():
        anns = [a for a in gt.loadAnns(gt.getAnnIds(imgIds=image_id)) if a.get("num_keypoints", 0) > 0]
        if not anns:
            continue
        g = np.array([a["keypoints"] for a in anns], np.float64).reshape(-1, 17, 3)
        area = np.array([a["area"] for a in anns], np.float64)
        preds = [r for r in results if r["image_id"] == image_id]
        p = np.array([r["keypoints"] for r in preds], np.float64).reshape(-1, 17, 3)
        valid = p[:, :, 2] > 0
        out.append(ImageMatch(anns, g, p, valid, match_people(p[:, :, :2], valid, g, area, min_oks=0.5)))
    return out


def _ground_truth(gt_path: Path) -> COCO:
    """The COCO keypoints json; one that cannot be read is an InputError of one line (CLI: exit 2)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' "loading annotations..." lines
            return COCO(str(gt_path))
    except (OSError, ValueError) as exc:  # ValueError: json's decode error
        raise InputError(f"{gt_path}: cannot read COCO keypoints json ({getattr(exc, 'strerror', None) or exc})") \
            from None


def evaluate(config: Config, gt_path: Path, images_dir: Path) -> EvalReport:
    gt = _ground_truth(gt_path)
    results = predict_images(config, gt, images_dir)
    coco = coco_keypoint_eval(gt, results, max_dets=max(20, len(results)))
    found = total = 0
    errors, all_pred, all_gt, heads = [], [], [], []
    has_head_boxes = any("bbox_head" in a for a in gt.dataset["annotations"])
    for m in match_images(gt, results):
        found += len(m.pairs)
        total += len(m.anns)
        if m.pairs:
            errors.append((mean_keypoint_error_px(m.pred[:, :, :2], m.valid, m.gt, m.pairs), len(m.pairs)))
        # PCK over every labelled GT keypoint: a person or joint not predicted counts as a miss.
        all_pred.append(m.matched_xy())
        all_gt.append(m.gt)
        if has_head_boxes:
            heads.append(0.6 * np.hypot(*np.array([a["bbox_head"][2:] for a in m.anns], np.float64).T))
    pred_xy = np.nan_to_num(np.concatenate(all_pred), nan=1e9)  # not predicted = far away = a miss
    g = np.concatenate(all_gt)
    mask = g[:, :, 2] > 0
    if has_head_boxes:
        pck, _ = pckh(pred_xy, g[:, :, :2], mask, np.concatenate(heads), 0.5)
    else:
        pck, _ = pck_torso(pred_xy, g[:, :, :2], mask, 0.2)
    mean_err = sum(e * n for e, n in errors) / max(1, sum(n for _, n in errors)) if errors else float("nan")
    return EvalReport(
        coco=coco, pck_name="PCKh@0.5" if has_head_boxes else "PCK@0.2",
        pck=pck, people_found=found, people_gt=total,
        predictions=len(results), mean_error_px=mean_err,
    )


def decoder_lines(config: Config, gt_path: Path, images_dir: Path) -> list[str]:
    """AP per heatmap decoder ([topdown] decoder), one line each, for a heatmap keypoint model in a
    mode that runs it; [] otherwise. The rest of the config is the run's."""
    mode = MODES[config.run.mode]
    if config.topdown.keypoint_model != "tinypose" or not (mode.topdown and mode.branch):
        return []
    gt = _ground_truth(gt_path)
    lines = []
    for decoder in DECODERS:
        variant = replace(config, topdown=replace(config.topdown, decoder=decoder))
        results = predict_images(variant, gt, images_dir)
        coco = coco_keypoint_eval(gt, results, max_dets=max(20, len(results)))
        lines.append(f"decoder {decoder:<11} AP {coco['AP']:.3f}  AP75 {coco['AP .75']:.3f}  AR {coco['AR']:.3f}"
                     + ("  (this run)" if decoder == config.topdown.decoder else ""))
    return lines


def report_json(report: EvalReport) -> str:
    return json.dumps(report.__dict__, indent=1)


def mot_rows_from_output(out_dir: str | Path, video_id: str | None = None) -> np.ndarray:
    """MOTChallenge rows (frame 1-based, id, x, y, w, h) of one finished video in a posepipe output
    (video_id may be left out when OUT holds one); anything else is an OutputError of one line.

    The box is the detector's where there is one (top-down people; it is what MOT ground truth
    boxes measure), else the box around the keypoints.
    """
    out = str(out_dir)
    videos = read_video_rows(out)
    if not videos:
        raise OutputError(f"{out}: not a posepipe output (no videos table)")
    done = [r["video_id"] for r in videos if r["status"] in DONE_STATUSES]
    if video_id is None:
        if len(done) != 1:
            raise OutputError(f"{out} holds {len(done)} finished videos ({', '.join(done) or 'none'}): "
                              "name one with --video")
        video_id = done[0]
    elif video_id not in done:
        raise OutputError(f"{out}: no finished video {video_id!r} (finished: {', '.join(done) or 'none'})")
    table = read_video_table(out, "people", video_id, ["frame_index", "track_id", "bbox", "det_bbox"])
    if table is None:
        raise OutputError(f"{out}: video {video_id!r} is marked done but has no people file")
    t = table.to_pydict()
    rows = []
    for frame, track, bbox, det in zip(t["frame_index"], t["track_id"], t["bbox"], t["det_bbox"]):
        x1, y1, x2, y2 = det if det is not None else bbox
        rows.append((frame + 1, track, x1, y1, x2 - x1, y2 - y1))
    return np.array(rows, np.float64).reshape(-1, 6)
