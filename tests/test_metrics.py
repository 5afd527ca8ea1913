"""stages.eval.metrics against the peer-test numbers stored in shared/eval/expected/ (loaded at test time).

Set POSEPIPE_EVAL to the eval folder (the one holding expected/ and coco/) to use another copy.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from conftest import EVAL
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from stages.eval import metrics as M

EXPECTED = EVAL / "expected"  # a missing folder fails the tests that read it (conftest)


def load(name: str) -> dict:
    return json.loads((EXPECTED / name).read_text())


# ----------------------------------------------------------------------------- mmpose recipes

@pytest.mark.parametrize("case", range(3))
def test_keypoint_pck_accuracy(case: int) -> None:
    spec = load("keypoint_pck_accuracy.json")
    c = spec["cases"][case]
    inp, exp, tol = c["inputs"], c["expected"], spec["tolerance"]
    acc, avg, cnt = M.keypoint_pck_accuracy(
        np.array(inp["pred"]), np.array(inp["gt"]), np.array(inp["mask"]), inp["thr"],
        np.array(inp["norm_factor"]))
    np.testing.assert_allclose(acc, exp["acc"], atol=tol)
    assert avg == pytest.approx(exp["avg_acc"], abs=tol)
    assert cnt == exp["cnt"]


def test_keypoint_auc() -> None:
    spec = load("keypoint_auc.json")
    inp = spec["inputs"]
    auc = M.keypoint_auc(np.array(inp["pred"]), np.array(inp["gt"]), np.array(inp["mask"]),
                         inp["norm_factor"], num_thrs=inp["num_thrs"])
    assert auc == pytest.approx(spec["expected"]["AUC"], abs=spec["tolerance"])


def test_keypoint_epe_nme() -> None:
    spec = load("keypoint_epe_nme.json")
    inp, tol = spec["inputs"], spec["tolerance"]
    pred, gt, mask = np.array(inp["pred"]), np.array(inp["gt"]), np.array(inp["mask"])
    assert M.keypoint_epe(pred, gt, mask) == pytest.approx(spec["expected"]["EPE"], abs=tol)
    nme = M.keypoint_nme(pred, gt, mask, np.array(inp["nme_normalize_factor"]))
    assert nme == pytest.approx(spec["expected"]["NME"], abs=tol)


def test_pose_pck_accuracy_heatmap() -> None:
    spec = load("pose_pck_accuracy_heatmap.json")
    inp, exp, tol = spec["inputs"], spec["expected"], spec["tolerance"]

    def heatmaps(peaks: dict) -> np.ndarray:
        hm = np.zeros(inp["heatmap_shape"], np.float32)
        for ch, (row, col) in peaks.items():
            hm[0, int(ch), row, col] = 1.0
        return hm

    acc, avg, cnt = M.pose_pck_accuracy(heatmaps(inp["output_peaks"]), heatmaps(inp["target_peaks"]),
                                        np.array(inp["mask"]), thr=0.05)
    np.testing.assert_allclose(acc, exp["acc"], atol=tol)
    assert avg == pytest.approx(exp["avg_acc"], abs=tol)
    assert cnt == exp["cnt"]


def test_keypoint_mpjpe() -> None:
    spec = load("keypoint_mpjpe.json")
    inp, exp, tol = spec["inputs"], spec["expected"], spec["tolerance"]
    pred, gt, mask = np.array(inp["pred"]), np.array(inp["gt"]), np.array(inp["mask"])
    assert M.mpjpe(pred, gt, mask) == pytest.approx(exp["MPJPE"], abs=tol)
    assert M.p_mpjpe(pred, gt, mask) == pytest.approx(exp["P_MPJPE"], abs=tol)
    assert M.n_mpjpe(pred, gt, mask) == pytest.approx(exp["N_MPJPE_scale"], abs=tol)


# ----------------------------------------------------------------------------- COCO OKS AP

@pytest.fixture(scope="module")
def coco_spec() -> dict:
    return load("coco_metric_topdown_alignment.json")


@pytest.fixture(scope="module")
def coco_gt(coco_spec: dict):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(EVAL / coco_spec["gt"]))


@pytest.mark.parametrize("case", ["case1_bbox_keypoint_oks_nms", "case2_bbox_rle_oks_nms",
                                  "case3_two_preds_per_gt_bbox_keypoint_soft_oks_nms"])
def test_coco_stored_results(coco_spec: dict, coco_gt, case: str) -> None:
    c = coco_spec["cases"][case]
    results = c["coco_results"]
    before = json.dumps(results)
    stats = M.coco_keypoint_eval(coco_gt, results)
    assert json.dumps(results) == before, "evaluation must not modify the caller's results"
    assert list(stats) == list(M.COCO_STAT_KEYS)
    for key, want in c["expected"].items():
        assert stats[key] == pytest.approx(want, abs=1e-7), key


def test_coco_identity_pycocotools(coco_spec: dict, coco_gt) -> None:
    # GT as predictions, scores 1.0; the two num_keypoints=0 annotations become all-zero
    # detections that pycocotools keeps as tied false positives -> AP 0.8939.., not 1.0.
    results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"],
                "score": 1.0} for a in coco_gt.dataset["annotations"]]
    assert len(results) == 14
    stats = M.coco_keypoint_eval(EVAL / coco_spec["gt"], results)  # path form too
    for key, want in coco_spec["identity_check"]["recomputed_pycocotools"].items():
        assert stats[key] == pytest.approx(want, abs=1e-7), key
    # Dropping the empty detections (what xtcocotools does) gives the upstream 1.0.
    kept = [r for r in results if any(r["keypoints"][2::3])]
    assert all(v == 1.0 for v in M.coco_keypoint_eval(coco_gt, kept).values())


def test_coco_max_dets_and_empty(coco_spec: dict, coco_gt, capsys) -> None:
    results = coco_spec["cases"]["case1_bbox_keypoint_oks_nms"]["coco_results"]
    # pycocotools' summarize() only reads maxDets == 20; ours must follow max_dets instead.
    big = M.coco_keypoint_eval(coco_gt, results, max_dets=100)
    assert big["AP"] == pytest.approx(coco_spec["cases"]["case1_bbox_keypoint_oks_nms"]["expected"]["AP"])
    one = M.coco_keypoint_eval(coco_gt, results, max_dets=1)
    assert 0 < one["AR"] < big["AR"]
    assert M.coco_keypoint_eval(coco_gt, []) == {k: 0.0 for k in M.COCO_STAT_KEYS}
    # image_ids restricts the evaluation exactly as params.imgIds does in plain pycocotools.
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), "keypoints")
        ev.params.imgIds = [785, 40083]
        ev.evaluate(), ev.accumulate(), ev.summarize()
    sub = M.coco_keypoint_eval(coco_gt, results, image_ids=[40083, 785])
    np.testing.assert_allclose(list(sub.values()), ev.stats, atol=1e-12)
    assert sub != M.coco_keypoint_eval(coco_gt, results)
    assert capsys.readouterr().out == ""


# ----------------------------------------------------------------------------- OKS, matching

def _person(rng: np.random.Generator, offset: float = 0.0) -> np.ndarray:
    gt = np.zeros((17, 3))
    gt[:, :2] = rng.uniform(0, 100, (17, 2)) + offset
    gt[:, 2] = 2
    return gt


def test_oks_matrix_basic() -> None:
    rng = np.random.default_rng(0)
    gt = np.stack([_person(rng), _person(rng, offset=1000.0)])
    area = np.array([5000.0, 5000.0])
    oks = M.oks_matrix(gt[:, :, :2], gt, area)
    assert oks.shape == (2, 2)
    np.testing.assert_allclose(np.diag(oks), 1.0)
    assert oks[0, 1] < 1e-12 and oks[1, 0] < 1e-12

    # Unlabelled GT joints are ignored, wherever the prediction puts them.
    pred = gt[:1, :, :2].copy()
    pred[0, :5] += 500
    g = gt[:1].copy()
    g[0, :5, 2] = 0
    assert M.oks_matrix(pred, g, area[:1])[0, 0] == pytest.approx(1.0)
    # A GT with nothing labelled matches nothing; a missing (NaN) prediction counts as far.
    g[0, :, 2] = 0
    assert M.oks_matrix(pred, g, area[:1])[0, 0] == 0.0
    pred = gt[:1, :, :2].copy()
    pred[0, 0] = np.nan
    assert M.oks_matrix(pred, gt[:1], area[:1])[0, 0] == pytest.approx(16 / 17)
    assert M.oks_matrix(np.zeros((0, 17, 2)), gt, area).shape == (0, 2)


def test_oks_matrix_matches_pycocotools(coco_gt) -> None:
    anns = [a for a in coco_gt.dataset["annotations"] if a["num_keypoints"] > 0]
    gt = np.array([a["keypoints"] for a in anns], float).reshape(-1, 17, 3)
    pred = gt[:, :, :2] * np.array([0.98, 1.02])
    ours = M.oks_matrix(pred, gt, [a["area"] for a in anns])
    ev = COCOeval(coco_gt, coco_gt, "keypoints")  # only for its computeOks on one image
    img = 197388
    g_img = [a for a in anns if a["image_id"] == img]
    ev._gts = {(img, 1): g_img}
    ev._dts = {(img, 1): [{"keypoints": list(np.c_[p, np.ones(17)].ravel()), "score": 1.0}
                          for p, a in zip(pred, anns) if a["image_id"] == img]}
    ev.params.maxDets = [20]
    idx = [i for i, a in enumerate(anns) if a["image_id"] == img]
    np.testing.assert_allclose(ev.computeOks(img, 1), ours[np.ix_(idx, idx)], rtol=1e-12)


def test_match_people_and_error() -> None:
    rng = np.random.default_rng(1)
    gt = np.stack([_person(rng), _person(rng, 300.0), _person(rng, 600.0)])
    area = np.full(3, 8000.0)
    # Predictions in another order, shifted 2 px; one extra far-away person; GT 1 missed.
    pred = np.stack([gt[2, :, :2], gt[0, :, :2], gt[0, :, :2] + 5000]) + np.array([2.0, 0.0])
    valid = np.ones((3, 17), bool)
    valid[0, 3] = False
    pred[0, 3] = 1e9  # ignored because invalid
    pairs = M.match_people(pred, valid, gt, area, min_oks=0.1)
    assert pairs == [(0, 2), (1, 0)]
    assert M.mean_keypoint_error_px(pred, valid, gt, pairs) == pytest.approx(2.0)
    assert np.isnan(M.mean_keypoint_error_px(pred, valid, gt, []))
    assert M.match_people(np.zeros((0, 17, 2)), np.zeros((0, 17), bool), gt, area) == []


# ----------------------------------------------------------------------------- PCKh / torso / misc

def test_pckh_and_torso() -> None:
    rng = np.random.default_rng(2)
    gt = np.stack([_person(rng) for _ in range(2)])[:, :, :2]
    mask = np.ones((2, 17), bool)
    torso = M.torso_size(gt, mask)
    np.testing.assert_allclose(torso, np.linalg.norm(gt[:, 5] - gt[:, 12], axis=-1))
    # Fallback diagonal when left_shoulder is unlabelled; 0 (skipped) when neither exists.
    m2 = mask.copy()
    m2[0, 5] = False
    m2[1, [5, 6]] = False
    t2 = M.torso_size(gt, m2)
    assert t2[0] == pytest.approx(np.linalg.norm(gt[0, 6] - gt[0, 11])) and t2[1] == 0.0

    pred = gt.copy()
    pred[0, 0] += [0.1 * torso[0], 0]   # within 0.2 torso
    pred[0, 1] += [0.3 * torso[0], 0]   # outside
    overall, per_joint = M.pck_torso(pred, gt, mask)
    assert overall == pytest.approx(33 / 34)
    assert per_joint[1] == 0.5 and per_joint[0] == 1.0
    overall, per_joint = M.pck_torso(pred, gt, m2)  # instance 1 not scorable
    assert per_joint[1] == 0.0 and per_joint[5] == -1.0

    head = np.array([10.0, 0.0])
    pred = gt.copy()
    pred[0, :, 0] += 5.0   # exactly 0.5 * head: counts (MPII uses <=)
    pred[0, 2, 0] += 1.0
    overall, per_joint = M.pckh(pred, gt, mask, head)
    assert overall == pytest.approx(16 / 17) and per_joint[2] == 0.0
    np.testing.assert_allclose(M.head_size_from_box([[0, 0, 3, 4]]), [3.0])
    joints = np.zeros((1, 16, 2))
    joints[0, 9] = [0, 6]
    np.testing.assert_allclose(M.mpii_head_size(joints), [6.0])


def test_mpjpe_alignments_recover_transforms() -> None:
    rng = np.random.default_rng(3)
    gt = rng.normal(size=(4, 17, 3))
    mask = np.ones((4, 17), bool)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rot = q * np.sign(np.linalg.det(q))  # proper rotation
    pred = 1.7 * gt @ rot.T + np.array([3.0, -1.0, 2.0])
    assert M.p_mpjpe(pred, gt, mask) == pytest.approx(0.0, abs=1e-9)
    assert M.n_mpjpe(gt * 0.5, gt, mask) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        M.mpjpe(gt, gt, np.zeros_like(mask))
