"""Bottom-up stage on real photos: network backends agree on the decoded people, precision, scale."""
from __future__ import annotations

import contextlib
import io

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from stages.batches import FrameBatch
from stages.pose.bottomup import BottomUpGrouper, BottomUpNet, TorchForward, net_input_size
from stages.pose.params import BottomUpParams
from stages.eval.metrics import match_people
from stages.pose.tfpose_net import TfPoseNet
from stages.pose.tfpose_onnx import TfPoseOnnx

PARAMS = BottomUpParams()
PHOTO = "000000196141.jpg"  # 5 people, 4 of them with keypoints


@pytest.fixture(scope="module")
def torch_net(weights_dir):
    return TfPoseNet.from_bytes((weights_dir / "tfpose_mobilenet_v2_small_graph_opt.pb").read_bytes())


@pytest.fixture(scope="module")
def onnx_forward(weights_dir):
    return TfPoseOnnx(weights_dir / "tfpose_mobilenet_v2_small.onnx", num_threads=2,
                      providers=["CPUExecutionProvider"])


def _frames(rgb: np.ndarray, scale: float = 1.0) -> FrameBatch:
    return FrameBatch(video_id="photo", frame_index=np.array([0, 1]), time_s=np.array([0.0, 0.04]),
                      images=np.stack([rgb, np.zeros_like(rgb)]), scale=scale)


def _photo(eval_dir, name=PHOTO) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(eval_dir / "coco" / name))[:, :, ::-1])


def _people(forward, frames: FrameBatch):
    return BottomUpGrouper(PARAMS)(BottomUpNet(forward, PARAMS)(frames))


def test_finds_the_annotated_people(eval_dir, torch_net):
    rgb = _photo(eval_dir)
    poses = _people(TorchForward(torch_net), _frames(rgb))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(eval_dir / "coco" / "test_coco.json"))
    image_id = next(i for i in gt.getImgIds() if gt.loadImgs(i)[0]["file_name"] == PHOTO)
    anns = [a for a in gt.loadAnns(gt.getAnnIds(imgIds=image_id)) if a["num_keypoints"] > 0]
    g = np.array([a["keypoints"] for a in anns], np.float64).reshape(-1, 17, 3)
    first = poses.frame_index == 0
    kp = poses.keypoints[first]
    pairs = match_people(kp[:, :, :2], kp[:, :, 2] > 0, g, np.array([a["area"] for a in anns]), min_oks=0.5)
    assert len(pairs) >= len(anns) - 1
    # the black frame is processed and has nobody in it
    np.testing.assert_array_equal(poses.frames, [0, 1])
    assert not (poses.frame_index == 1).any()
    # people come best first, scores in [0, 1], boxes around the keypoints
    assert (np.diff(poses.score[first]) <= 0).all() and (poses.score <= 1).all()
    assert (poses.bbox[:, 0] <= np.nanmin(kp[:, :, 0], axis=1)).all()


def test_torch_and_onnx_decode_the_same_people(eval_dir, torch_net, onnx_forward):
    frames = _frames(_photo(eval_dir))
    a = _people(TorchForward(torch_net), frames)
    b = _people(onnx_forward, frames)
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(np.isnan(a.keypoints[:, :, 0]), np.isnan(b.keypoints[:, :, 0]))
    np.testing.assert_allclose(a.keypoints, b.keypoints, atol=0.5)  # image pixels / score units


def test_half_precision_keeps_the_decoded_keypoints(eval_dir, weights_dir, torch_net):
    # float16 is what a CUDA pose actor runs; CPU float16 kernels compute the same format.
    frames = _frames(_photo(eval_dir, "000000000785.jpg"))
    full = _people(TorchForward(torch_net), frames)
    # a second module: TorchForward converts the one it is given in place
    half_net = TfPoseNet.from_bytes((weights_dir / "tfpose_mobilenet_v2_small_graph_opt.pb").read_bytes())
    half = _people(TorchForward(half_net, dtype=torch.float16), frames)
    assert len(full) == len(half) == 1
    both = (full.keypoints[0, :, 2] > 0.2) & (half.keypoints[0, :, 2] > 0.2)
    assert both.sum() >= 10
    err = np.linalg.norm(full.keypoints[0, both, :2] - half.keypoints[0, both, :2], axis=1)
    assert err.max() < 3.0, err  # pixels in a 640x425 photo


def test_scale_maps_shrunk_frames_back_to_video_pixels(eval_dir, torch_net):
    rgb = _photo(eval_dir)
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    full = _people(TorchForward(torch_net), _frames(rgb))
    shrunk = _people(TorchForward(torch_net), _frames(small, scale=2.0))
    assert len(full) == len(shrunk) >= 4
    # the network sees nearly the same input either way; coordinates must land in the same place
    as_gt = np.nan_to_num(full.keypoints.copy())
    as_gt[:, :, 2] = full.keypoints[:, :, 2] > 0
    area = (full.bbox[:, 2] - full.bbox[:, 0]) * (full.bbox[:, 3] - full.bbox[:, 1])
    pairs = match_people(shrunk.keypoints[:, :, :2], shrunk.keypoints[:, :, 2] > 0, as_gt, area, min_oks=0.5)
    assert len(pairs) == len(full)
    d = [np.abs(shrunk.keypoints[p, :, :2] - full.keypoints[g, :, :2]) for p, g in pairs]
    assert np.nanmedian(np.stack(d)) < 1.5


def test_net_input_keeps_aspect_ratio():
    assert net_input_size(640, 480, 368, 16) == (496, 368)
    assert net_input_size(1080, 1920, 368, 16) == (208, 368)
    assert net_input_size(1920, 1080, 368, 16) == (656, 368)


def test_second_pass_at_the_frames_height_finds_more_of_a_crowd(eval_dir, onnx_forward):
    """crowd_synth p20 (960x540, 20 people), frames 0-3: GT people with visible_fraction >= 0.5
    matched at OKS > 0.5. One 368 px pass shrinks the frames to 0.68x and finds about a quarter of
    them; adding a pass at the frame's own 540 px (maps averaged) finds more: measured here 18 -> 26
    of 60 (benchmarks/crowd_scaling.py over 50 frames: recall 0.23 -> 0.45)."""
    import av

    seq = eval_dir / "crowd_synth" / "p20"
    with av.open(str(seq / "video.mp4")) as container:
        images = [f.to_ndarray(format="rgb24") for _, f in zip(range(4), container.decode(video=0))]
    frames = FrameBatch(video_id="p20", frame_index=np.arange(4), time_s=np.arange(4) / 25.0, images=np.stack(images))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(seq / "gt_coco.json"))
    found = {}
    for second in (0, "frame"):
        params = BottomUpParams(second_height=second)
        net = BottomUpNet(onnx_forward, params)
        maps = net(frames)
        assert maps.net_size == ((656, 368) if second == 0 else (960, 544))
        poses = BottomUpGrouper(params)(maps)
        found[second] = total = 0
        for f in range(4):
            anns = gt.loadAnns(gt.getAnnIds(imgIds=f + 1))
            g = np.array([a["keypoints"] for a in anns], np.float64).reshape(-1, 17, 3)
            visible = [a["visible_fraction"] >= 0.5 for a in anns]
            kp = poses.keypoints[poses.frame_index == f]
            pairs = match_people(kp[:, :, :2], kp[:, :, 2] > 0, g, np.array([a["area"] for a in anns]), min_oks=0.5)
            found[second] += sum(visible[gi] for _, gi in pairs)
            total += sum(visible)
    report = f"found {found} of {total}"
    assert total >= 50, report
    assert found["frame"] >= found[0] + 0.08 * total, report
