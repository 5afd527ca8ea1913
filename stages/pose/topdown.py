"""Top-down pose: detector boxes -> crops -> a single-person keypoint model (batched) -> people.

    boxes float[n, 4] xyxy (image px) --crop_transforms--> A, A_inv float32[n, 2, 3]
    frames uint8[N, H, W, 3] --warp_crops--> crops uint8[n, h, w, 3] RGB (the model's input size)
    crops --keypoint model--> float32[n, 17, 3] (x, y in crop px, score) --A_inv--> image px --scale--> video px
    --crowd checks (few keypoints, pose outside its box, duplicate pose)--> PoseBatch(mode="topdown")

The keypoint model (`movenet.py`) is injected: anything with `input_size` (width, height) and
`__call__(crops, max_batch) -> float32[B, 17, 3]` in crop pixels.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from stages.batches import FrameBatch, PoseBatch
from stages.coco17 import FLIP_PAIRS, NUM_KEYPOINTS, keypoint_boxes
from stages.eval.metrics import shared_oks
from stages.pose.crops import apply_affine, crop_transforms, warp_crops
from stages.pose.params import TopDownParams
from stages.scores import HOUSE_THRESHOLD, to_house_scale

DROP_REASONS = ("few_keypoints", "outside_box", "duplicate")


class KeypointModel(Protocol):
    """A single-person keypoint model on crops (`movenet.MoveNet`, `tinypose.TinyPose`)."""

    input_size: tuple[int, int]  # (width, height) of a crop
    raw_threshold: float  # the raw score of a confident joint (zoo.py), mapped onto the house's 0.3

    def __call__(self, crops: np.ndarray, max_batch: int | None = None) -> np.ndarray:
        """uint8[B, height, width, 3] RGB -> float32[B, 17, 3] (x, y in crop px, raw score)."""


def low_confidence_mask(keypoints: np.ndarray, threshold: float = HOUSE_THRESHOLD) -> np.ndarray:
    """float[P, 17, 3] -> bool[P, 17]: True where the score is below threshold or x is NaN."""
    return (keypoints[..., 2] < threshold) | np.isnan(keypoints[..., 0])


def _inside_fraction(xy: np.ndarray, ok: np.ndarray, boxes: np.ndarray, expand: float) -> np.ndarray:
    """Share of the ok keypoints inside each grown box: xy [n, K, 2], ok bool[n, K], boxes [n, 4] -> [n]."""
    pad = expand * (boxes[:, 2:] - boxes[:, :2])
    lo, hi = (boxes[:, :2] - pad)[:, None], (boxes[:, 2:] + pad)[:, None]
    inside = np.all((xy >= lo) & (xy <= hi), axis=-1) & ok
    return inside.sum(1) / np.maximum(ok.sum(1), 1)


class TopDownKeypoints:
    """FrameBatch + per-frame detector boxes -> PoseBatch(mode="topdown"), all crops in one model call
    (chunked at params.max_crops_per_call). `last_dropped` counts the people dropped by the last call."""

    def __init__(self, model: KeypointModel, params: TopDownParams = TopDownParams()):
        self.model = model
        self.params = params
        self.last_dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)

    def __call__(self, frames: FrameBatch, detections: Sequence[tuple[np.ndarray, np.ndarray]]) -> PoseBatch:
        """detections: per frame (boxes float[n, 4] xyxy, scores float[n]) in frame-batch image px."""
        if len(detections) != len(frames):
            raise ValueError(f"{len(detections)} detection lists for {len(frames)} frames")
        p = self.params
        per_frame = [np.asarray(b, np.float32).reshape(-1, 4) for b, _ in detections]
        boxes = np.concatenate([*per_frame, np.zeros((0, 4), np.float32)])  # [n, 4], n over all frames
        det_score = np.concatenate([np.asarray(s, np.float32).reshape(-1) for _, s in detections]
                                   + [np.zeros(0, np.float32)])
        if len(det_score) != len(boxes):
            raise ValueError(f"{len(det_score)} detector scores for {len(boxes)} boxes")
        frame_of = np.repeat(np.arange(len(frames), dtype=np.int64), [len(b) for b in per_frame])  # [n]
        size = self.model.input_size
        A, A_inv = crop_transforms(boxes, p.crop_margin, size)
        kps = np.zeros((len(boxes), NUM_KEYPOINTS, 3), np.float32)
        # Warp and infer chunk by chunk: crops of several frames share a call, memory stays bounded.
        for s in range(0, len(boxes), p.max_crops_per_call):
            sl = slice(s, s + p.max_crops_per_call)
            crops = np.concatenate([warp_crops(frames.images[f], A[sl][frame_of[sl] == f], size)
                                    for f in np.unique(frame_of[sl])])
            kps[sl] = self._infer(crops)
        kps[:, :, :2] = apply_affine(kps[:, :, :2], A_inv)
        # Person score: how sure the detector is times how sure the keypoint model is on average
        # over all 17 joints (a crop of a background object still returns 17 joints, at low scores),
        # on the model's own scale: a monotone remap of each joint reorders people (TinyPose on the
        # house scale: OCHuman AP 0.362 -> 0.302, COCO 0.832 -> 0.823 with PicoDet's boxes).
        score = det_score * kps[:, :, 2].mean(1)  # [n]
        # Joint scores onto the house scale, where every consumer reads "confident" as >= 0.3.
        kps[:, :, 2] = to_house_scale(kps[:, :, 2], self.model.raw_threshold)

        keep, order = self._crowd_filter(kps, boxes, score, frame_of)
        idx = order[keep[order]]
        # image px -> video px, as the bottom-up stage maps its pixel centres
        to_vid = lambda v: (v + 0.5) * frames.scale - 0.5
        out_kp = kps[idx].copy()
        out_kp[:, :, :2] = to_vid(out_kp[:, :, :2])
        out_det = to_vid(boxes[idx]).astype(np.float32)
        confident = out_kp[:, :, 2] >= HOUSE_THRESHOLD
        bbox = keypoint_boxes(np.where(confident[..., None], out_kp[:, :, :2], np.nan))
        # fewer than 2 confident joints make no box: the detector's stands in
        bbox = np.where((confident.sum(1) >= 2)[:, None], bbox, out_det).astype(np.float32)
        fi = frame_of[idx]
        return PoseBatch(
            video_id=frames.video_id, frames=frames.frame_index, frame_time_s=frames.time_s,
            frame_index=frames.frame_index[fi], time_s=frames.time_s[fi], keypoints=out_kp,
            bbox=bbox, score=score[idx].astype(np.float32), det_bbox=out_det,
            det_score=det_score[idx], mode="topdown",
        )

    def _infer(self, crops: np.ndarray) -> np.ndarray:
        """uint8[B, S, S, 3] -> float32[B, 17, 3] crop px; with flip_test, averaged with the
        mirrored crops' poses (mirrored back, left/right swapped), all in one model call."""
        if not self.params.flip_test:
            return self.model(crops, max_batch=self.params.max_crops_per_call)
        both = self.model(np.concatenate([crops, crops[:, :, ::-1]]), max_batch=self.params.max_crops_per_call)
        plain, mirrored = both[: len(crops)], both[len(crops):, FLIP_PAIRS]
        mirrored[:, :, 0] = crops.shape[2] - 1 - mirrored[:, :, 0]  # pixel centres: x -> S - 1 - x
        return (plain + mirrored) / 2

    def _crowd_filter(self, kps: np.ndarray, boxes: np.ndarray, score: np.ndarray, frame_of: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """-> (keep bool[n], order int[n]: frame by frame, best person first). Updates last_dropped.

        MoveNet returns the person nearest the crop centre, so in a crowd a box can come back with
        its neighbour's pose. Such a pose lies mostly outside its own box, or repeats a pose already
        kept: the second is resolved like NMS, visiting people by how well they fit their own box
        (then by score) and dropping any whose OKS with a kept one exceeds duplicate_oks.
        """
        p = self.params
        dropped = dict.fromkeys(DROP_REASONS, 0)
        conf = kps[:, :, 2] >= HOUSE_THRESHOLD
        fit = _inside_fraction(kps[:, :, :2], conf, boxes, p.outside_box_expand)
        keep = conf.sum(1) >= p.min_keypoints
        dropped["few_keypoints"] = int((~keep).sum())
        outside = keep & (fit < 1 - p.outside_box_fraction)
        dropped["outside_box"] = int(outside.sum())
        keep &= ~outside
        area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
        orders = []
        for f in np.unique(frame_of):
            members = np.flatnonzero(frame_of == f)
            if keep[members].sum() > 1:
                sub = members[keep[members]]
                oks = shared_oks(kps[sub, :, :2], conf[sub], area[sub], p.min_keypoints)
                kept: list[int] = []
                for j in np.lexsort((-score[sub], -fit[sub])):
                    if any(oks[j, i] > p.duplicate_oks for i in kept):
                        keep[sub[j]] = False
                        dropped["duplicate"] += 1
                    else:
                        kept.append(j)
            orders.append(members[np.argsort(-score[members], kind="stable")])
        self.last_dropped = dropped
        return keep, (np.concatenate(orders) if orders else np.zeros(0, np.int64))
