"""Top-down MoveNet stage on real photos: crop geometry, batched == per-crop, accuracy with GT boxes,
crowd checks (duplicate / neighbour poses), empty frames and batches."""
from __future__ import annotations

import contextlib
import io

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from pycocotools.coco import COCO

from stages.batches import FrameBatch
from stages.eval.metrics import coco_keypoint_eval, match_people, mean_keypoint_error_px
from stages.pose.crops import apply_affine, crop_transforms, warp_crops
from stages.pose.graph_rewrite import make_batch_dynamic
from stages.pose.movenet import MoveNet
from stages.pose.params import TopDownParams
from stages.pose.topdown import TopDownKeypoints, low_confidence_mask

INPUT_SIZE = 192  # MoveNet Lightning's square input

MODEL = "movenet_singlepose_lightning_4_dequant_fp32.onnx"
SKIER = "000000000785.jpg"  # one person, box x, y, w, h below
SKIER_BOX = (280.79, 44.73, 218.7, 346.68)


@pytest.fixture(scope="module")
def model_bytes(weights_dir) -> bytes:
    return (weights_dir / MODEL).read_bytes()


@pytest.fixture(scope="module")
def movenet(model_bytes) -> MoveNet:
    return MoveNet(model_bytes, num_threads=2, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def coco(eval_dir) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(eval_dir / "coco" / "test_coco.json"))


def _photo(eval_dir, name: str) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(eval_dir / "coco" / name))[:, :, ::-1])


def _frames(*images: np.ndarray, scale: float = 1.0) -> FrameBatch:
    n = len(images)
    return FrameBatch(video_id="v", frame_index=np.arange(10, 10 + n, dtype=np.int64),
                      time_s=np.arange(n) * 0.04, images=np.stack(images), scale=scale)


def _xyxy(xywh) -> np.ndarray:
    b = np.array(xywh, np.float32).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)


def _gt_people(coco: COCO, image_id: int) -> list[dict]:
    return [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if a["num_keypoints"] > 0]


def _gt_crops(coco: COCO, eval_dir) -> np.ndarray:
    crops = []
    for img in coco.loadImgs(coco.getImgIds()):
        boxes = _xyxy([a["bbox"] for a in _gt_people(coco, img["id"])])
        A = crop_transforms(boxes, 1.25, INPUT_SIZE)[0]
        crops.append(warp_crops(_photo(eval_dir, img["file_name"]), A, INPUT_SIZE))
    return np.concatenate(crops)


def test_crop_affine_round_trip_and_pixels(eval_dir):
    boxes = np.array([[10.3, 20.7, 110.1, 300.9], [-40, 5, 60, 45], [300, 200, 301, 260]], np.float32)
    A, A_inv = crop_transforms(boxes, margin=1.25, size=INPUT_SIZE)
    pts = np.random.default_rng(0).uniform(-50, 400, (3, 17, 2)).astype(np.float32)
    np.testing.assert_allclose(apply_affine(apply_affine(pts, A), A_inv), pts, atol=2e-3)
    # box centre -> crop centre (boxes are continuous coordinates, points are pixel centres: -0.5);
    # the longer side * margin spans the crop
    centre = ((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None] - 0.5
    np.testing.assert_allclose(apply_affine(centre, A)[:, 0], (INPUT_SIZE - 1) / 2, atol=1e-3)
    np.testing.assert_allclose(A[:, 0, 0], INPUT_SIZE / (1.25 * np.max(boxes[:, 2:] - boxes[:, :2], 1)), rtol=1e-6)
    # scale 1 with an integer shift: the warp copies pixels, so a point maps to the same pixel value
    rgb = _photo(eval_dir, SKIER)
    box = np.array([[300 - 76.8, 200 - 76.8, 300 + 76.8, 200 + 76.8]], np.float32)  # side 192 after margin
    A, _ = crop_transforms(box, 1.25, INPUT_SIZE)
    crop = warp_crops(rgb, A, INPUT_SIZE)[0]
    x, y = apply_affine(np.array([[[350.0, 170.0]]]), A)[0, 0]
    np.testing.assert_allclose([x, y], [146, 66], atol=1e-3)
    np.testing.assert_array_equal(crop[66, 146], rgb[170, 350])
    # outside the frame is black
    A, _ = crop_transforms(np.array([[-100, -100, 0, 0]], np.float32), 1.25, INPUT_SIZE)
    assert warp_crops(rgb, A, INPUT_SIZE)[0, :40, :40].max() == 0


def test_batched_equals_per_crop(model_bytes, movenet, coco, eval_dir):
    dynamic = onnx.load_from_string(make_batch_dynamic(model_bytes))
    assert dynamic.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    crops = _gt_crops(coco, eval_dir)  # 12 real person crops
    original = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    name = original.get_inputs()[0].name
    ref = np.concatenate([original.run(None, {name: c[None]})[0][:, 0] for c in crops])  # (y, x, s) normalised
    batched = movenet(crops)
    assert batched.shape == (len(crops), 17, 3)
    got = np.stack([(batched[..., 1] + 0.5) / INPUT_SIZE, (batched[..., 0] + 0.5) / INPUT_SIZE, batched[..., 2]], -1)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    single = np.concatenate([movenet(c[None]) for c in crops])
    np.testing.assert_allclose(batched, single, atol=1e-4 * INPUT_SIZE)
    chunked = movenet(crops, max_batch=5)  # chunks of 5, 5, 2
    np.testing.assert_allclose(chunked, batched, atol=1e-4 * INPUT_SIZE)
    assert movenet(crops[:0]).shape == (0, 17, 3)
    assert make_batch_dynamic(dynamic.SerializeToString()) == dynamic.SerializeToString()


def test_coco_photos_with_gt_boxes(movenet, coco, eval_dir):
    stage = TopDownKeypoints(movenet, TopDownParams())
    found, people, errors, results = 0, 0, [], []
    for img in coco.loadImgs(coco.getImgIds()):
        anns = _gt_people(coco, img["id"])
        boxes = _xyxy([a["bbox"] for a in anns])
        poses = stage(_frames(_photo(eval_dir, img["file_name"])), [(boxes, np.ones(len(boxes), np.float32))])
        assert poses.mode == "topdown" and np.all(np.diff(poses.score) <= 0)  # best first
        kp = poses.keypoints
        assert not np.isnan(kp).any()  # low-confidence joints keep x, y, score
        gt = np.array([a["keypoints"] for a in anns], np.float64).reshape(-1, 17, 3)
        pairs = match_people(kp[:, :, :2], np.ones(kp.shape[:2], bool), gt, [a["area"] for a in anns], min_oks=0.5)
        confident = ~low_confidence_mask(kp)
        found, people = found + len(pairs), people + len(anns)
        errors += [mean_keypoint_error_px(kp[:, :, :2], confident, gt, [pair]) for pair in pairs]
        results += [{"image_id": img["id"], "keypoints": k.ravel().tolist(), "score": float(s)}
                    for k, s in zip(kp, poses.score)]
    error = float(np.mean(errors))
    ap = coco_keypoint_eval(coco, results)["AP"]
    assert people == 12 and found >= 10, f"found {found}/{people}"
    assert error <= 15.0, f"mean keypoint error {error:.1f} px over {found} people"
    assert ap >= 0.5, f"COCO keypoint AP {ap:.3f} (error {error:.1f} px, found {found}/{people})"


def test_scale_maps_to_video_pixels(movenet, eval_dir):
    rgb = _photo(eval_dir, SKIER)
    box = _xyxy(SKIER_BOX)
    stage = TopDownKeypoints(movenet)
    full = stage(_frames(rgb), [(box, np.ones(1, np.float32))])
    half = cv2.resize(rgb, (rgb.shape[1] // 2, rgb.shape[0] // 2), interpolation=cv2.INTER_AREA)
    small = stage(_frames(half, scale=2.0), [((box + 0.5) / 2 - 0.5, np.ones(1, np.float32))])
    np.testing.assert_allclose(small.det_bbox, full.det_bbox, atol=1e-3)
    sure = (full.keypoints[0, :, 2] > 0.4) & (small.keypoints[0, :, 2] > 0.4)
    assert sure.sum() >= 8
    assert np.median(np.linalg.norm(small.keypoints[0, sure, :2] - full.keypoints[0, sure, :2], axis=-1)) < 6


def test_duplicate_box_keeps_one_person(movenet, eval_dir):
    box = _xyxy(SKIER_BOX)
    boxes = np.concatenate([box, box + np.array([5, 3, 5, 3], np.float32)])
    stage = TopDownKeypoints(movenet)
    poses = stage(_frames(_photo(eval_dir, SKIER)), [(boxes, np.array([0.7, 0.9], np.float32))])
    assert len(poses) == 1 and stage.last_dropped["duplicate"] == 1
    assert poses.det_score[0] in (np.float32(0.7), np.float32(0.9))
    np.testing.assert_allclose(poses.score, poses.det_score * poses.keypoints[:, :, 2].mean(1), rtol=1e-6)


def test_neighbour_pose_outside_its_box_is_dropped(movenet, eval_dir):
    # a narrow box beside the skier: MoveNet still returns the skier, mostly outside that box
    x, y, w, h = SKIER_BOX
    beside = np.array([[x + 0.7 * w, y, x + 1.2 * w, y + h]], np.float32)
    stage = TopDownKeypoints(movenet)
    poses = stage(_frames(_photo(eval_dir, SKIER)), [(beside, np.ones(1, np.float32))])
    assert len(poses) == 0 and stage.last_dropped == {"few_keypoints": 0, "outside_box": 1, "duplicate": 0}
    kept = TopDownKeypoints(movenet, TopDownParams(outside_box_fraction=1.0))
    assert len(kept(_frames(_photo(eval_dir, SKIER)), [(beside, np.ones(1, np.float32))])) == 1


def test_frames_without_detections(movenet, eval_dir):
    rgb = _photo(eval_dir, SKIER)
    box = _xyxy(SKIER_BOX)
    none = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    stage = TopDownKeypoints(movenet, TopDownParams(max_crops_per_call=1))  # chunks span frames
    poses = stage(_frames(rgb, np.zeros_like(rgb), rgb), [(box, np.ones(1, np.float32)), none,
                                                          (box, np.full(1, 0.5, np.float32))])
    np.testing.assert_array_equal(poses.frames, [10, 11, 12])
    np.testing.assert_array_equal(poses.frame_index, [10, 12])
    np.testing.assert_allclose(poses.keypoints[0], poses.keypoints[1], atol=1e-4)  # same crop, same pose
    np.testing.assert_allclose(poses.det_bbox, np.concatenate([box, box]))
    b = poses.bbox[0]  # around the confident keypoints, inside the (grown) detector box
    assert b[0] >= box[0, 0] - 30 and b[2] <= box[0, 2] + 30 and b[3] - b[1] > 0.6 * SKIER_BOX[3]
    # an all-empty batch
    empty = stage(_frames(rgb, rgb), [none, none])
    assert len(empty) == 0 and empty.keypoints.shape == (0, 17, 3) and empty.det_bbox.shape == (0, 4)
    np.testing.assert_array_equal(empty.frames, [10, 11])
    assert sum(stage.last_dropped.values()) == 0
    with pytest.raises(ValueError):
        stage(_frames(rgb), [none, none])


def test_low_confidence_mask():
    kp = np.zeros((2, 17, 3), np.float32)
    kp[0, :, 2] = np.linspace(0, 1, 17)
    kp[1, 3, 0] = np.nan
    kp[1, :, 2] = 0.9
    mask = low_confidence_mask(kp, 0.3)
    assert mask.shape == (2, 17)
    np.testing.assert_array_equal(mask[0], kp[0, :, 2] < 0.3)
    np.testing.assert_array_equal(np.flatnonzero(mask[1]), [3])
