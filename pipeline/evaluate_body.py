"""The body fit scored on real photos: each predicted person's fitted body, projected back into the
image, against the COCO ground truth, next to the 2D keypoints it was fitted to.

A body fit can only lose accuracy against its own 2D input where the input is right, and it can
gain some where the input is wrong (a body has bone lengths and joint limits); on a photo there
is no 3D ground truth, so the projected body's 2D PCK is what a photo can tell about the fit.

    results (COCO, per predicted person) -> one BodyFitter.fit per image (each person its own track,
    frame 0) -> the body's COCO-17 keypoints projected with the fit's camera -> COCO results again
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO

from pipeline.config import Config
from pipeline.evaluate import match_images, predict_images
from stages.body.fit import BodyFitter
from stages.body.load import load_body_model
from stages.body.params import FitParams
from stages.body.rig import BodyModel
from stages.body.skeleton import project
from stages.eval.metrics import pck_torso


def image_size(gt: COCO, image_id: int, images_dir: Path) -> tuple[int, int]:
    """(W, H) of an image: the GT's width/height, else the image file's (COCO files may omit them)."""
    info = gt.loadImgs(image_id)[0]
    if "width" in info and "height" in info:
        return int(info["width"]), int(info["height"])
    bgr = cv2.imread(str(images_dir / info["file_name"]))
    if bgr is None:
        raise FileNotFoundError(f"{images_dir / info['file_name']}: image missing or unreadable")
    return bgr.shape[1], bgr.shape[0]


def projected(joints: np.ndarray, focal: float, size: tuple[int, int]) -> np.ndarray:
    """float[B, 17, 3] camera-frame joints -> float[B, 17, 2] pixels, with the camera the fit used
    (principal point at the image centre), through the fit's own projection so nothing differs."""
    j = torch.as_tensor(joints, dtype=torch.float64)
    center = torch.tensor([[size[0] / 2, size[1] / 2]], dtype=torch.float64).expand(len(j), 2)
    return project(j, torch.full((len(j),), focal, dtype=torch.float64), center).numpy()


def fit_results(results: list[dict], gt: COCO, images_dir: Path, model: BodyModel | None = None,
                params: FitParams = FitParams()) -> list[dict]:
    """COCO results of the people the fit took: keypoints = the fitted body's projected COCO-17
    keypoints, each with its 2D score (so PCK counts the same keypoints as for the 2D input), plus
    "reproj_px" (the fit's mean reprojection error) and "source" (the index in `results`).
    People the fit skipped (too few confident keypoints) are left out:
    len(results) - len(fit_results(...)) of them."""
    if model is None:
        from stages.body.anny_body import AnnyBody

        model = AnnyBody()
    fitter = BodyFitter(model, params)
    by_image: dict[int, list[int]] = {}
    for i, r in enumerate(results):
        by_image.setdefault(int(r["image_id"]), []).append(i)
    out = []
    for image_id, idx in sorted(by_image.items()):
        kp = np.array([results[i]["keypoints"] for i in idx], np.float32).reshape(-1, 17, 3)
        # COCO writes a keypoint not found as (0, 0, 0): NaN keeps it out of the fit's person size.
        kp[kp[..., 2] <= 0, :2] = np.nan
        size = image_size(gt, image_id, images_dir)
        video = f"image-{image_id}"  # one "video" per photo: no person warm-starts from another photo
        fit = fitter.fit(video, kp, np.arange(len(idx), dtype=np.int64), np.zeros(len(idx), np.int64), size)
        fitter.close(video)
        uv = projected(fit.joints, fit.focal, size)
        for row, xy, err in zip(fit.rows, uv, fit.reproj_px):
            src = results[idx[row]]
            score = np.asarray(src["keypoints"], np.float64).reshape(17, 3)[:, 2:]
            out.append({**src, "keypoints": np.concatenate([xy, score], 1).reshape(-1).tolist(),
                        "reproj_px": float(err), "source": idx[row]})
    return out


def pck_report(gt: COCO, results: list[dict], thr: float = 0.1) -> dict:
    """PCK@thr x torso over every labelled GT keypoint, people matched as pipeline.evaluate matches
    them (OKS > 0.5, one-to-one); a GT person or keypoint without a matched prediction is a miss.

    Returns {"thr", "pck": over the predicted keypoints (score > 0), as pipeline.evaluate counts them,
    "pck_all": every keypoint of each matched person (a fitted body places all 17), "people_found",
    "people_gt", "predictions"}.
    """
    matches = match_images(gt, results)
    g = np.concatenate([m.gt for m in matches])
    mask = g[:, :, 2] > 0

    def pck(all_joints: bool) -> float:
        pred = np.concatenate([m.matched_xy(all_joints) for m in matches])
        return pck_torso(np.nan_to_num(pred, nan=1e9), g[:, :, :2], mask, thr)[0]  # NaN: far = a miss

    return {"thr": thr, "pck": pck(False), "pck_all": pck(True), "people_found": sum(len(m.pairs) for m in matches),
            "people_gt": sum(len(m.anns) for m in matches), "predictions": len(results)}


def evaluate_body(config: Config, gt_path: Path, images_dir: Path, model: BodyModel | None = None,
                  thr: float = 0.1) -> dict:
    """The config's 2D pose stages on a COCO-17 keypoint set, a body fitted to every predicted person
    (the config's body model and [mesh.fit]), both scored by pck_report. Returns {"pose_2d": report of
    the 2D results, "body": report of the fitted bodies' projections, "fitted", "skipped": people,
    "median_reproj_px": over the fitted people}."""
    gt = COCO(str(gt_path))
    results = predict_images(config, gt, images_dir)
    if model is None:
        model = load_body_model(config.mesh.body_model, config.mesh.body_model_path)
    fitted = fit_results(results, gt, images_dir, model, config.mesh.fit)
    errors = [r["reproj_px"] for r in fitted]
    return {"pose_2d": pck_report(gt, results, thr), "body": pck_report(gt, fitted, thr), "fitted": len(fitted),
            "skipped": len(results) - len(fitted),
            "median_reproj_px": float(np.median(errors)) if errors else float("nan")}
