"""Scoring dense renders scene by scene: per ground-truth person mask IoU (beside the box and keypoint-hull
baselines), who wins where two people overlap, and the UV drift of body points between consecutive frames.

A scene is one video frame or one photo with its ground truth, the 2D people found in it and the bodies
fitted to them. Ground-truth people are matched to people found by keypoint OKS (> 0.5, one-to-one,
metrics.match_people, as `posepipe eval` matches them), so the three masks of a person found are judged
on the same pairs; a ground-truth person without a match, or whose match has no body, scores IoU 0.
The alternative, each method matched on its own by mask IoU (Hungarian), is kept beside it
(`iou_*_own`) to show the ranking does not come from the matching.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils

from stages.body.rig import BodyModel
from stages.dense.bodies import RestBodies, frame_vertices
from stages.dense.layers import order_by_colour
from stages.dense.parts import SurfaceLabels
from stages.dense.raster import GlRaster, RayRaster
from stages.dense.render import DenseCrop, grown, owner_map, render_dense
from stages.dense.segment import PersonSegmenter
from stages.dense.silhouette import cut_to_silhouettes
from stages.eval.dense_masks import (best_pairs, box_mask, encode, front_wins, hull_mask, iou_matrix, moved_mask,
                                     moved_pixels, overlaps, surface_points)
from stages.eval.metrics import match_people
from stages.scores import HOUSE_THRESHOLD


@dataclass(frozen=True)
class Bodies:
    """A scene's fitted people: track int64[B]; shape float[B, S]; bone_rotvec float[B, J, 3]; root_rotvec,
    translation float[B, 3] (the bodies table's columns); focal in pixels; plausible bool[B] (body_tracks'
    flag: a stature and feet on the floor a user can believe)."""

    track: np.ndarray
    shape: np.ndarray
    bone_rotvec: np.ndarray
    root_rotvec: np.ndarray
    translation: np.ndarray
    focal: float
    plausible: np.ndarray


@dataclass(frozen=True)
class Scene:
    """One video frame (frame = its index) or photo (its image id).

    Ground truth, G people: gt_rles (visible masks, pycocotools RLE), gt_kp float[G, 17, 3], gt_area float[G],
    gt_height float[G] (whole-body pixel height), gt_visible float[G] (crowd_synth's visible fraction of the whole
    body; NaN on photos), gt_track int64[G] (crowd_synth's track id; -1 on photos),
    gt_whole_box float[G, 4] x, y, w, h of the whole body (crowd_synth's bbox_full; NaN on photos).
    People found, P: kp float[P, 17, 3] (x, y, score), box float[P, 4] x0, y0, x1, y1 (the detection),
    track int64[P] (the body's track; -1: none). pairs: (person, GT) pairs when known (a fit to the ground
    truth's own keypoints), None: matched by OKS. image: the frame, RGB uint8[H, W, 3] at `size`, for the
    silhouettes (None: the bodies alone).
    """

    frame: int
    size: tuple[int, int]
    gt_rles: list[dict]
    gt_kp: np.ndarray
    gt_area: np.ndarray
    gt_height: np.ndarray
    gt_visible: np.ndarray
    gt_track: np.ndarray
    gt_whole_box: np.ndarray
    kp: np.ndarray
    box: np.ndarray
    track: np.ndarray
    bodies: Bodies
    pairs: list[tuple[int, int]] | None = None
    image: np.ndarray | None = None


@dataclass(frozen=True)
class _Seen:
    """A ground-truth person as the drift needs it from the previous scene: its visible mask bool[H, W] and
    whole-body box; the body drawn for it (its track, its index in the owner map int[H, W], its crop, posed
    and rest vertices float[V, 3])."""

    frame: int
    visible: np.ndarray
    whole_box: np.ndarray
    body_track: int
    owner_id: int
    owner: np.ndarray
    crop: DenseCrop
    posed: np.ndarray
    rest: np.ndarray


@dataclass
class Tally:
    """Everything scored so far: one dict per ground-truth person (`people`), one per overlapping pair
    (`pairs`), and the drift samples: uv float[N] (UV units) and cm float[N] (rest-mesh distance)."""

    people: list[dict] = field(default_factory=list)
    pairs: list[dict] = field(default_factory=list)
    uv: list[np.ndarray] = field(default_factory=list)
    cm: list[np.ndarray] = field(default_factory=list)


def _own_best(iou: np.ndarray) -> np.ndarray:
    """float[G]: each ground-truth person's IoU under the method's own Hungarian matching on IoU."""
    best = np.zeros(iou.shape[1])
    for p, g in best_pairs(iou):
        best[g] = iou[p, g]
    return best


class DenseScorer:
    """Renders each scene's bodies (one depth test for all, stages/dense) and adds its scores to `tally`.

    whole: crowd_synth track -> its whole extent and box (whole_references), moved into each frame to find
    the overlapping pairs; empty on photos (no pairs). Scenes of a video come in frame order for the drift.
    labels None: no UVs (the drift's UV distances are then 0, its centimetres stand). inflate_m: every body
    rendered that much larger, each vertex moved out along its normal (0: the fitted body as it is).
    segmenter: each scene's render cut to its people's silhouettes (stages/dense/silhouette.py), as the dense
    stage does, where the scene has its image; None: the bodies alone.
    """

    def __init__(self, model: BodyModel, labels: SurfaceLabels | None, raster: GlRaster | RayRaster,
                 whole: dict[int, tuple[np.ndarray, np.ndarray]] | None = None, min_overlap: int = 20,
                 drift_stride: int = 3, inflate_m: float = 0.0, segmenter: PersonSegmenter | None = None):
        self.model, self.labels, self.raster, self.segmenter = model, labels, raster, segmenter
        self.faces = np.asarray(model.faces, np.int64)
        self.whole = whole or {}
        self.min_overlap, self.stride, self.inflate_m = min_overlap, drift_stride, inflate_m
        self.rest = RestBodies(model)
        self.tally = Tally()
        self._prev: dict[int, _Seen] = {}

    def add(self, s: Scene) -> None:
        """Render the scene's bodies and score them: people, overlapping pairs, drift from the scene before."""
        posed, rest, crops, owner = self._render(s.bodies, s.size, s.image)
        gt = [mask_utils.decode(r).astype(bool) for r in s.gt_rles]
        pairs = s.pairs if s.pairs is not None else match_people(s.kp[:, :, :2], s.kp[:, :, 2] > 0, s.gt_kp,
                                                                 s.gt_area, min_oks=0.5)
        body_of = {int(t): i for i, t in enumerate(s.bodies.track)}
        person_of = {g: p for p, g in pairs}
        person = [person_of.get(g, -1) for g in range(len(gt))]  # per GT: the person found, -1 none
        body = [body_of.get(int(s.track[p]), -1) if p >= 0 else -1 for p in person]  # ...and its body
        self._people(s, gt, person, body, owner)
        self._occlusion(s, gt, body, posed, owner)
        self._drift(s, gt, body, posed, rest, crops, owner)

    def _render(self, b: Bodies, size: tuple[int, int], image: np.ndarray | None = None
                ) -> tuple[np.ndarray, list, list[DenseCrop], np.ndarray]:
        """(posed float[B, V, 3], rest vertices per body, crops, owner map int[H, W]) of one scene's bodies, cut
        to their silhouettes in image when there is one and a segmenter."""
        if not len(b.track):
            return np.zeros((0, 0, 3)), [], [], np.full(size[::-1], -1, np.int32)
        posed = grown(frame_vertices(self.model, b.shape, b.bone_rotvec, b.root_rotvec, b.translation, rest=self.rest),
                      self.faces, self.inflate_m)  # as the dense stage draws them with [dense] grow_cm
        rest = [r.vertices.cpu().numpy() for r in self.rest.get(b.shape)]
        frame = render_dense(posed, self.faces, b.focal, size, labels=self.labels, raster=self.raster)
        if self.segmenter is not None and image is not None:  # as the dense stage (video.DenseRenderer.rows)
            frame = order_by_colour(cut_to_silhouettes(frame, self.segmenter, image), frame, posed, self.faces,
                                    b.focal, image, self.raster, self.labels)
        return posed, rest, frame.people, owner_map(frame)

    def _people(self, s: Scene, gt: list[np.ndarray], person: list[int], body: list[int], owner: np.ndarray) -> None:
        """One record per ground-truth person: the IoU of its body's visible mask, of its person's box and
        keypoint hull (0 without), the same under each method's own IoU matching, and the shares of the
        ground truth the body misses and of the body outside the ground truth."""
        rle_gt = encode(gt)
        dense = iou_matrix(encode([owner == i for i in range(len(s.bodies.track))]), rle_gt)
        boxes = iou_matrix(encode([box_mask(x, s.size) for x in s.box]), rle_gt)
        hulls = iou_matrix(encode([hull_mask(k[:, :2], k[:, 2] >= HOUSE_THRESHOLD, s.size) for k in s.kp]), rle_gt)
        own = {"iou_dense_own": _own_best(dense), "iou_box_own": _own_best(boxes), "iou_hull_own": _own_best(hulls)}
        for g, (p, i) in enumerate(zip(person, body)):
            mask = owner == i if i >= 0 else np.zeros_like(gt[g])
            self.tally.people.append({
                "frame": s.frame, "gt_track": int(s.gt_track[g]), "height_px": float(s.gt_height[g]),
                "visible": float(s.gt_visible[g]), "matched": p >= 0, "body": i >= 0,
                "plausible": bool(s.bodies.plausible[i]) if i >= 0 else None,
                "iou_dense": float(dense[i, g]) if i >= 0 else 0.0,
                "iou_box": float(boxes[p, g]) if p >= 0 else 0.0, "iou_hull": float(hulls[p, g]) if p >= 0 else 0.0,
                **{k: float(v[g]) for k, v in own.items()},
                "missed": float((gt[g] & ~mask).sum() / max(gt[g].sum(), 1)) if i >= 0 else np.nan,
                "spilled": float((mask & ~gt[g]).sum() / max(mask.sum(), 1)) if i >= 0 else np.nan})

    def _occlusion(self, s: Scene, gt: list[np.ndarray], body: list[int], posed: np.ndarray, owner: np.ndarray
                   ) -> None:
        """One record per overlapping ground-truth pair (dense_masks.overlaps): the overlap pixels each rendered
        person holds (front_won, back_won), and the same among the pixels both bodies cover when rendered alone
        (order_front, order_back): there only the depth order decides, not whether a body reaches that far."""
        whole = [moved_mask(*self.whole[int(t)], wb, s.size) if int(t) in self.whole else None
                 for t, wb in zip(s.gt_track, s.gt_whole_box)]
        alone: dict[int, np.ndarray] = {}
        for f, k, pixels, agreement in overlaps(gt, whole, self.min_overlap):
            bf, bk = body[f], body[k]
            rec = {"frame": s.frame, "front": int(s.gt_track[f]), "back": int(s.gt_track[k]),
                   "feet_gap_px": float(s.gt_whole_box[f, 1] + s.gt_whole_box[f, 3]
                                        - s.gt_whole_box[k, 1] - s.gt_whole_box[k, 3]),
                   "front_height_px": float(s.gt_whole_box[f, 3]), "pixels": int(pixels.sum()),
                   "agreement": agreement, "bodies": min(bf, bk) >= 0,
                   "plausible": bool(s.bodies.plausible[[bf, bk]].all()) if min(bf, bk) >= 0 else None}
            rec["front_won"], rec["back_won"] = front_wins(owner, pixels, bf, bk)
            rec["order_front"] = rec["order_back"] = 0
            rec["nearer_fit"] = None
            if rec["bodies"]:
                for i in (bf, bk):
                    if i not in alone:
                        one = render_dense(posed[i:i + 1], self.faces, s.bodies.focal, s.size, raster=self.raster)
                        alone[i] = owner_map(one) == 0
                rec["order_front"], rec["order_back"] = front_wins(owner, pixels & alone[bf] & alone[bk], bf, bk)
                rec["nearer_fit"] = bool(s.bodies.translation[bf, 2] < s.bodies.translation[bk, 2])
            self.tally.pairs.append(rec)

    def _drift(self, s: Scene, gt: list[np.ndarray], body: list[int], posed: np.ndarray, rest: list[np.ndarray],
               crops: list[DenseCrop], owner: np.ndarray) -> None:
        """UV and rest-mesh distance between where the render puts a ground-truth body point in the previous
        frame and in this one, for points on the person's visible mask in both and rendered on the same track's
        body both times. The point's pixel here follows from the whole-body boxes (rigid cut-outs)."""
        seen = {}
        for g, i in enumerate(body):
            t = int(s.gt_track[g])
            if i < 0 or t < 0:
                continue
            track = int(s.bodies.track[i])
            now = seen[t] = _Seen(s.frame, gt[g], s.gt_whole_box[g], track, i, owner, crops[i], posed[i], rest[i])
            before = self._prev.get(t)
            if before is None or before.frame != s.frame - 1 or before.body_track != track:
                continue
            ys, xs = np.nonzero(before.visible[::self.stride, ::self.stride])
            xy0 = np.stack([xs, ys], 1) * self.stride
            xy1 = np.rint(moved_pixels(xy0, before.whole_box, now.whole_box)).astype(np.int64)
            w, h = s.size
            keep = (xy1[:, 0] >= 0) & (xy1[:, 0] < w) & (xy1[:, 1] >= 0) & (xy1[:, 1] < h)
            xy0, xy1 = xy0[keep], xy1[keep]
            keep = (before.owner[xy0[:, 1], xy0[:, 0]] == before.owner_id) & now.visible[xy1[:, 1], xy1[:, 0]] \
                & (owner[xy1[:, 1], xy1[:, 0]] == i)
            if not keep.any():
                continue
            uv0, p0 = surface_points(before.crop, before.posed, before.rest, self.faces, s.bodies.focal, s.size,
                                     xy0[keep])
            uv1, p1 = surface_points(now.crop, now.posed, now.rest, self.faces, s.bodies.focal, s.size, xy1[keep])
            self.tally.uv.append(np.linalg.norm(uv1 - uv0, axis=1))
            self.tally.cm.append(100 * np.linalg.norm(p1 - p0, axis=1))
        self._prev = seen


def whole_references(anns: list[dict]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """crowd_synth track -> (its whole extent bool[h, w] on a canvas the size of its largest whole-body box,
    that box on the canvas: 0, 0, w, h). anns: gt_coco.json's annotations. A person is a rigid cut-out, so
    every frame's visible mask, moved onto the canvas, shows part of one silhouette; their union is the
    silhouette wherever some frame shows it (a part hidden in every frame stays out). Boxes are whole pixels
    and small frames are blown up, so the union is ~1 px fat: on p05/p10/p20 it covers every visible mask
    (>= 99.7%) and has IoU 0.94-0.95 with the visible mask where the person shows whole."""
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for t in sorted({int(a["track_id"]) for a in anns}):
        mine = [a for a in anns if int(a["track_id"]) == t]
        big = max(mine, key=lambda a: a["bbox_full"][3])
        canvas = np.array([0.0, 0.0, *big["bbox_full"][2:]])
        size = (int(canvas[2]), int(canvas[3]))
        union = np.zeros(size[::-1], bool)
        for a in mine:
            x, y, w, h = a["bbox"]  # the visible part only: moving the whole frame's mask is ~10x slower
            seen = mask_utils.decode(a["segmentation"])[y:y + h, x:x + w].astype(bool)
            union |= moved_mask(seen, np.asarray(a["bbox_full"], np.float64) - [x, y, 0, 0], canvas, size)
        out[t] = (union, canvas)
    return out


def labelled_keypoints(anns: list[dict]) -> np.ndarray:
    """float64[G, 17, 3] COCO annotations' keypoints as a pose stage gives them, for a fit fed the ground truth:
    score 1 on every labelled keypoint (v 1 or 2: crowd_synth keeps a hidden one's true place), NaN where unlabelled."""
    kp = np.array([a["keypoints"] for a in anns], np.float64).reshape(-1, 17, 3)
    labelled = kp[:, :, 2] > 0
    kp[:, :, 2] = labelled
    kp[~labelled, :2] = np.nan
    return kp
