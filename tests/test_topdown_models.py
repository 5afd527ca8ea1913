"""The stronger top-down models on real photos: PP-TinyPose (heatmaps, 3:4 crops), MoveNet Thunder,
the PicoDet pedestrian detector, and the score scale they share with MoveNet Lightning."""
from __future__ import annotations

import contextlib
import io

import av
import cv2
import numpy as np
import onnxruntime as ort
import pytest
from pycocotools.coco import COCO

from stages.batches import FrameBatch
from stages.eval.metrics import coco_keypoint_eval
from stages.pose.crops import apply_affine, crop_transforms, warp_crops
from stages.coco17 import box_iou
from stages.pose.graph_rewrite import free_batch_dim
from stages.pose.params import DetectorParams, TopDownParams
from stages.pose.picodet import PICODET_FILE, PicoDetPedestrian
from stages.scores import HOUSE_THRESHOLD, to_house_scale
from stages.pose.topdown import TopDownKeypoints
from stages.pose.zoo import KEYPOINT_MODELS, build_keypoint_model

CPU = ["CPUExecutionProvider"]


@pytest.fixture(scope="module")
def coco(eval_dir) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(eval_dir / "coco" / "test_coco.json"))


def _model(weights_dir, name: str, **params):
    data = (weights_dir / KEYPOINT_MODELS[name][0]).read_bytes()
    return build_keypoint_model(TopDownParams(keypoint_model=name, **params), data, num_threads=2, providers=CPU)


@pytest.fixture(scope="module")
def tinypose(weights_dir):
    return _model(weights_dir, "tinypose")


def _photos(coco: COCO, eval_dir):
    """(image id, RGB photo, GT people with keypoints, their xyxy boxes) per COCO test photo."""
    for img in coco.loadImgs(coco.getImgIds()):
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])) if a["num_keypoints"] > 0]
        rgb = np.ascontiguousarray(cv2.imread(str(eval_dir / "coco" / img["file_name"]))[:, :, ::-1])
        xywh = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
        yield img["id"], rgb, anns, np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)


def _gt_box_ap(model, coco: COCO, eval_dir) -> float:
    stage = TopDownKeypoints(model, TopDownParams())
    results = []
    for image_id, rgb, _, boxes in _photos(coco, eval_dir):
        frames = FrameBatch(video_id="v", frame_index=np.array([image_id]), time_s=np.zeros(1), images=rgb[None])
        poses = stage(frames, [(boxes, np.ones(len(boxes), np.float32))])
        results += [{"image_id": image_id, "keypoints": k.ravel().tolist(), "score": float(s)}
                    for k, s in zip(poses.keypoints, poses.score)]
    return coco_keypoint_eval(coco, results)["AP"]


def test_three_four_crop_keeps_the_body_and_inverts():
    boxes = np.array([[100, 50, 160, 250], [0, 0, 300, 100]], np.float32)  # tall and wide
    A, A_inv = crop_transforms(boxes, 1.25, (192, 256))
    corners = np.array([[[-0.5, -0.5], [191.5, 255.5]]] * 2, np.float32)  # crop edges, pixel-centre coords
    edges = apply_affine(corners, A_inv) + 0.5  # -> continuous image coordinates
    w, h = edges[:, 1, 0] - edges[:, 0, 0], edges[:, 1, 1] - edges[:, 0, 1]
    np.testing.assert_allclose(w / h, 0.75, rtol=1e-5)  # the crop has the model's 3:4 shape
    np.testing.assert_allclose(h[0], 1.25 * 200, rtol=1e-5)  # tall box: its height sets the crop
    np.testing.assert_allclose(w[1], 1.25 * 300, rtol=1e-5)  # wide box: its width does
    np.testing.assert_allclose((edges[:, 0] + edges[:, 1]) / 2, (boxes[:, :2] + boxes[:, 2:]) / 2, atol=1e-3)


def test_tinypose_batched_equals_one_crop_per_call(weights_dir, tinypose, coco, eval_dir):
    crops = np.concatenate([warp_crops(rgb, crop_transforms(boxes, 1.25, tinypose.input_size)[0], tinypose.input_size)
                            for _, rgb, _, boxes in _photos(coco, eval_dir)])[:6]
    original = ort.InferenceSession(str(weights_dir / KEYPOINT_MODELS["tinypose"][0]), providers=CPU)
    x = ((crops.astype(np.float32) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).astype(np.float32)
    ref = np.concatenate([original.run(None, {"image": c.transpose(2, 0, 1)[None]})[0] for c in x])
    np.testing.assert_allclose(tinypose.heatmaps(crops), ref, atol=1e-5)
    np.testing.assert_allclose(tinypose.heatmaps(crops, max_batch=4), ref, atol=1e-5)
    assert tinypose(crops[:0]).shape == (0, 17, 3)
    with pytest.raises(ValueError, match="expected uint8"):
        tinypose(np.zeros((1, 192, 192, 3), np.uint8))  # MoveNet's square crop


def test_free_batch_dim_refuses_a_graph_that_mixes_the_batch(weights_dir):
    # PicoDet's head reshapes [1, 4, 6400, 8]-like tensors to [6400, 8]: the batch cannot be freed
    with pytest.raises(ValueError, match="does not keep the batch axis"):
        free_batch_dim((weights_dir / PICODET_FILE).read_bytes())


@pytest.mark.parametrize("name, floor", [("tinypose", 0.78), ("thunder", 0.70)])
def test_stronger_models_on_coco_gt_boxes(weights_dir, tinypose, coco, eval_dir, name, floor):
    # MANIFEST (standalone script, GT boxes): TinyPose 0.816, Thunder 0.774, Lightning 0.601
    model = tinypose if name == "tinypose" else _model(weights_dir, name)
    ap = _gt_box_ap(model, coco, eval_dir)
    assert ap >= floor, f"{name}: COCO AP with GT boxes {ap:.3f}"


def test_decoders_all_place_the_joints(weights_dir, coco, eval_dir):
    """Every heatmap decoder gives usable poses; the refinements are no worse than argmax."""
    aps = {d: _gt_box_ap(_model(weights_dir, "tinypose", decoder=d), coco, eval_dir)
           for d in ("argmax", "parabola", "soft_argmax", "dark")}
    assert min(aps.values()) >= 0.7, aps
    assert max(aps["parabola"], aps["soft_argmax"], aps["dark"]) >= aps["argmax"], aps


def test_scores_share_the_house_scale(weights_dir, tinypose, coco, eval_dir):
    """At the house threshold every model passes about the share of visible joints Lightning does."""
    lightning = _model(weights_dir, "lightning")
    passed = {}
    for name, model in (("lightning", lightning), ("tinypose", tinypose)):
        scores, visible = [], []
        for _, rgb, anns, boxes in _photos(coco, eval_dir):
            A, _ = crop_transforms(boxes, 1.25, model.input_size)
            raw = model(warp_crops(rgb, A, model.input_size))[:, :, 2].ravel()
            scores.append(to_house_scale(raw, model.raw_threshold))  # as TopDownKeypoints maps them
            visible.append(np.array([a["keypoints"] for a in anns]).reshape(-1, 17, 3)[:, :, 2].ravel() == 2)
        s, v = np.concatenate(scores), np.concatenate(visible)
        assert 0.0 <= s.min() and s.max() <= 1.0
        passed[name] = float((s[v] >= HOUSE_THRESHOLD).mean())
    # raw TinyPose peaks pass 0.98 of them at 0.3 (benchmarks/joint_scores.py): uncalibrated, every
    # joint would look confident
    assert abs(passed["tinypose"] - passed["lightning"]) < 0.12, passed
    raw = np.linspace(0, 1, 101)
    mapped = to_house_scale(raw, 0.68)
    assert np.all(np.diff(mapped) >= 0) and mapped[0] == 0 and mapped[-1] == 1
    np.testing.assert_allclose(to_house_scale(np.array([0.68]), 0.68), HOUSE_THRESHOLD, rtol=1e-6)
    np.testing.assert_array_equal(to_house_scale(raw, HOUSE_THRESHOLD), raw.astype(np.float32))


def test_picodet_finds_the_coco_test_people(weights_dir, coco, eval_dir):
    detector = PicoDetPedestrian(weights_dir / PICODET_FILE, DetectorParams(), num_threads=2, providers=CPU)
    found = total = 0
    for _, rgb, _, gt_boxes in _photos(coco, eval_dir):
        (boxes, scores), = detector(rgb[None])
        assert boxes.dtype == np.float32 and np.all(np.diff(scores) <= 0) and np.all(scores > 0.3)
        assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= rgb.shape[1]) and np.all(boxes[:, 3] <= rgb.shape[0])
        iou = box_iou(gt_boxes, boxes)
        found += int((iou.max(axis=1, initial=0) >= 0.5).sum())
        total += len(gt_boxes)
        # NMS ran: no two kept boxes overlap more than its IoU 0.6
        self_iou = box_iou(boxes, boxes) - np.eye(len(boxes))
        assert self_iou.max(initial=0) <= 0.6 + 1e-6
    assert total == 12 and found >= 11, f"{found}/{total}"
    # the empty right part of a crowd_synth background: nobody (a uniform frame, unlike any real one,
    # gives a whole-frame box at ~0.6: stages/pose/picodet.py)
    with av.open(str(eval_dir / "crowd_synth" / "p01" / "video.mp4")) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    (boxes, _), = detector(np.ascontiguousarray(frame[None, :, 660:]))
    assert len(boxes) == 0
    assert detector(np.zeros((0, 240, 320, 3), np.uint8)) == []


def test_config_choices_match_what_the_code_builds():
    import typing

    from stages.pose.heatmap_decode import DECODERS
    from stages.pose.zoo import DETECTOR_FILES

    hints = typing.get_type_hints(TopDownParams)
    assert typing.get_args(hints["decoder"]) == DECODERS
    assert set(typing.get_args(hints["keypoint_model"])) == set(KEYPOINT_MODELS)
    assert set(typing.get_args(typing.get_type_hints(DetectorParams)["model"])) == set(DETECTOR_FILES)
