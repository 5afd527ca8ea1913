"""The device path of bottom-up pose (stages/pose/bottomup_torch.py) against the numpy/cv2 path, on CPU
tensors with the real network and real frames: same people, same keypoints to float noise."""
from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from stages.batches import FrameBatch, PoseBatch
from stages.pose.bottomup import BottomUpGrouper, BottomUpNet, TorchForward, net_input_size, to_net_input
from stages.pose.params import BottomUpParams
from stages.pose.bottomup_torch import DeviceBottomUp, find_peaks_device, resize_to_net, smooth_heatmaps
from stages.pose.heatmap import find_peaks_stack
from stages.pose.paf import NUM_PARTS
from stages.pose.tfpose_net import TfPoseNet

PARAMS = BottomUpParams()
MODEL = "tfpose_mobilenet_v2_small_graph_opt.pb"


@pytest.fixture(scope="module")
def net(weights_dir):
    return TfPoseNet.from_bytes((weights_dir / MODEL).read_bytes())


@pytest.fixture(scope="module")
def photo(eval_dir) -> FrameBatch:
    """A COCO photo (640x429, 4 people with keypoints) and a black frame (nobody)."""
    rgb = np.ascontiguousarray(cv2.imread(str(eval_dir / "coco" / "000000196141.jpg"))[:, :, ::-1])
    return FrameBatch(video_id="photo", frame_index=np.array([0, 1]), time_s=np.array([0.0, 0.04]),
                      images=np.stack([rgb, np.zeros_like(rgb)]), scale=1.5)


@pytest.fixture(scope="module")
def crowd(eval_dir) -> FrameBatch:
    """The first 3 frames of a synthetic 20-person crowd (960x540)."""
    images = []
    with av.open(str(eval_dir / "crowd_synth" / "p20" / "video.mp4")) as container:
        for frame in container.decode(video=0):
            images.append(frame.to_ndarray(format="rgb24"))
            if len(images) == 3:
                break
    return FrameBatch(video_id="crowd", frame_index=np.arange(10, 13), time_s=np.arange(10, 13) / 25.0,
                      images=np.stack(images))


def _cpu_path(net, batch: FrameBatch, params: BottomUpParams = PARAMS) -> PoseBatch:
    return BottomUpGrouper(params)(BottomUpNet(TorchForward(net, device="cpu", dtype=torch.float32), params)(batch))


def _assert_same_people(a: PoseBatch, b: PoseBatch, score_tol: float = 2e-3) -> float:
    """Same frames, same people per frame, same found parts, keypoints close; returns the largest
    keypoint distance (video pixels). People are paired by distance, not by rank: two people of
    near-equal score may leave in either order."""
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.frame_time_s, b.frame_time_s)
    worst = 0.0
    for f in a.frames:
        ka, kb = a.keypoints[a.frame_index == f], b.keypoints[b.frame_index == f]
        assert len(ka) == len(kb), f"frame {f}: {len(ka)} vs {len(kb)} people"
        d = np.linalg.norm(ka[:, None, :, :2] - kb[None, :, :, :2], axis=-1)  # [Pa, Pb, 17]
        with np.errstate(invalid="ignore"):
            rows, cols = linear_sum_assignment(np.nan_to_num(np.nanmean(d, axis=2), nan=1e6) if d.size else d[..., 0])
        for i, j in zip(rows, cols):
            np.testing.assert_array_equal(np.isnan(ka[i, :, 0]), np.isnan(kb[j, :, 0]))
            np.testing.assert_allclose(ka[i, :, 2], kb[j, :, 2], atol=score_tol)  # part scores
            worst = max(worst, float(np.nanmax(d[i, j], initial=0.0)))
    return worst


def test_resize_matches_to_net_input(photo, crowd, eval_dir):
    """The device resize gives the network the bytes cv2 gives it: exact for INTER_AREA (the photo,
    the crowd, an exact 2x shrink), cubic enlarging (vtest, 480x360) off by 1 grey level on <0.01%."""
    with av.open(str(eval_dir / "videos" / "vtest.mp4")) as container:
        small = next(container.decode(video=0)).to_ndarray(format="rgb24")[None]
    twice = cv2.resize(crowd.images[0], (1312, 736), interpolation=cv2.INTER_AREA)[None]
    for images, exact in ((photo.images, True), (crowd.images[:1], True), (twice, True), (small, False)):
        h, w = images.shape[1:3]
        size = net_input_size(w, h, PARAMS.net_height, PARAMS.size_multiple)
        diff = np.abs(resize_to_net(torch.from_numpy(images), size).numpy() - to_net_input(images, size))
        assert diff.max() <= (0 if exact else 1) and (diff > 0).mean() < 1e-4, (images.shape, diff.max())


def test_device_path_matches_cpu_path(net, photo, crowd):
    """Measured here: the same people (4 + 0 in the photo, 20 in the crowd frames) with the same found
    parts; keypoints within 0.024 video px, part scores within 2.3e-4, person scores within 4e-5.
    What is left is the CPU path's float16 maps (MapBatch keeps ~3 digits; this path decodes the
    network's float32 output). 0.5 px and 2e-3 leave room for another CPU's kernels and are still
    far below the maps' 8 px stride (12 px in the photo, decoded at scale 1.5)."""
    device = DeviceBottomUp(net, PARAMS, device="cpu", dtype=torch.float32)
    for batch in (photo, crowd):
        ours, ref = device(batch), _cpu_path(net, batch)
        assert len(ref) >= (4 if batch is photo else 15)
        assert _assert_same_people(ours, ref) < 0.5
        np.testing.assert_array_equal(ours.frame_index, ref.frame_index)
        np.testing.assert_array_equal(ours.time_s, ref.time_s)
        np.testing.assert_allclose(ours.bbox, ref.bbox, atol=0.5)
        np.testing.assert_allclose(ours.score, ref.score, atol=2e-3)
        for f in ours.frames:  # best first within each frame
            assert (np.diff(ours.score[ours.frame_index == f]) <= 0).all()
    assert not (device(photo).frame_index == 1).any()  # the black frame: listed, nobody in it
    # Too few peak slots for the crowd: the batch is redone with enough, the people do not change.
    device.capacity = 2
    again = device(crowd)
    np.testing.assert_array_equal(again.keypoints, ours.keypoints)
    assert device.capacity >= 16


def test_two_scale_device_path_matches_cpu_path(net, crowd):
    """second_height = "frame": both paths run the network at 368 and at the frame's 540 (544) px and
    average the maps at the finer size; the same people come out (torch bicubic vs cv2 cubic for the
    coarse maps' resize, plus float16 maps on the CPU path)."""
    params = BottomUpParams(second_height="frame")
    ours, ref = DeviceBottomUp(net, params, device="cpu", dtype=torch.float32)(crowd), _cpu_path(net, crowd, params)
    assert len(ref) >= 10
    assert _assert_same_people(ours, ref, score_tol=5e-3) < 1.0


def test_peaks_match_find_peaks_stack(net, crowd):
    """On a crowd frame's maps: the device peak finder on cv2's upsampled, blurred maps gives
    find_peaks_stack's peaks exactly; with torch's own upsample and blur (maps within 2e-7: float
    sums in another order) the same peaks move by at most 3e-5 upsampled px, float32's resolution
    at x ~ 300; 1e-4 is the bound asserted."""
    maps = BottomUpNet(TorchForward(net, device="cpu", dtype=torch.float32), PARAMS)(crowd).maps
    heat = maps[0, :NUM_PARTS].astype(np.float32)  # [18, h, w]
    h, w = heat.shape[1:]
    up = PARAMS.upsample
    cv_up = cv2.GaussianBlur(cv2.resize(heat.transpose(1, 2, 0), (w * up, h * up), interpolation=cv2.INTER_CUBIC),
                             (0, 0), PARAMS.blur_sigma)
    ref = find_peaks_stack(cv_up, PARAMS.peak_threshold)
    assert sum(len(s) for _, s in ref) >= 100
    torch_up = smooth_heatmaps(torch.from_numpy(heat)[None], up, PARAMS.blur_sigma)
    np.testing.assert_allclose(torch_up[0].numpy().transpose(1, 2, 0), cv_up, atol=1e-5)
    for smooth, tol in ((torch.from_numpy(cv_up.transpose(2, 0, 1).copy())[None], 0.0), (torch_up, 1e-4)):
        xy, score, count = find_peaks_device(smooth, PARAMS.peak_threshold, capacity=64)
        for part, (ref_xy, ref_score) in enumerate(ref):
            assert count[0, part] == len(ref_xy)
            np.testing.assert_allclose(xy[0, part, : len(ref_xy)].numpy(), ref_xy, atol=tol)
            np.testing.assert_allclose(score[0, part, : len(ref_xy)].numpy(), ref_score, atol=1e-5)


def test_small_maps_blur_like_cv2():
    """Borders: a 2x3 map (the smallest a 16 px input gives) upsampled to 8x12 and blurred with a
    13-tap kernel reflects more than once, as cv2's BORDER_REFLECT_101 does."""
    heat = np.random.default_rng(0).random((2, 3, 4), np.float32)  # [h, w, K]
    ref = cv2.GaussianBlur(cv2.resize(heat, (12, 8), interpolation=cv2.INTER_CUBIC), (0, 0), 1.5)
    ours = smooth_heatmaps(torch.from_numpy(heat.transpose(2, 0, 1).copy())[None], 4, 1.5)[0]
    np.testing.assert_allclose(ours.numpy().transpose(1, 2, 0), ref, atol=1e-5)


def test_empty_batch(net):
    batch = FrameBatch(video_id="v", frame_index=np.zeros(0, np.int64), time_s=np.zeros(0),
                       images=np.zeros((0, 480, 640, 3), np.uint8))
    out = DeviceBottomUp(net, PARAMS, device="cpu", dtype=torch.float32)(batch)
    assert len(out) == 0 and len(out.frames) == 0 and out.keypoints.shape == (0, 17, 3)


def test_half_precision_keeps_the_people(weights_dir, net, photo):
    """float16 is what a CUDA pose actor runs; CPU float16 kernels compute the same format."""
    one = FrameBatch(video_id="photo", frame_index=photo.frame_index[:1], time_s=photo.time_s[:1],
                     images=photo.images[:1])
    full = DeviceBottomUp(net, PARAMS, device="cpu", dtype=torch.float32)(one)
    # a second module: DeviceBottomUp converts the one it is given in place
    half_net = TfPoseNet.from_bytes((weights_dir / MODEL).read_bytes())
    half = DeviceBottomUp(half_net, PARAMS, device="cpu", dtype=torch.float16)(one)
    assert len(half) == len(full) >= 4
    assert _assert_same_people(half, full, score_tol=0.02) < 3.0  # video pixels in a 640x429 photo
