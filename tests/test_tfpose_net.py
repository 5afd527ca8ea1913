"""TfPoseNet (torch port built from the TF frozen graph) against the tf2onnx file on onnxruntime.

Inputs are the COCO eval photos, read BGR and resized with INTER_CUBIC like the pipeline does.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stages.pose.tfpose_net import (
    FrameNorm,
    SeparableConv,
    TfPoseNet,
    frame_norm_batched,
    frame_norm_per_frame,
    resize_bilinear_legacy,
    same_padding,
)
from stages.pose.tfpose_onnx import TfPoseOnnx

# W x H. 300, 203 and 321 are not multiples of 16: asymmetric SAME padding at the stride-2 layers
# and a stride-16 -> stride-8 resize that is not exactly 2x; 203 and 321 are odd as well.
SIZES = [(432, 368), (400, 300), (321, 203)]


@pytest.fixture(scope="module")
def net(weights_dir: Path) -> TfPoseNet:
    return TfPoseNet.from_bytes((weights_dir / "tfpose_mobilenet_v2_small_graph_opt.pb").read_bytes()).eval()


@pytest.fixture(scope="module")
def onnx(weights_dir: Path) -> TfPoseOnnx:
    return TfPoseOnnx(weights_dir / "tfpose_mobilenet_v2_small.onnx", num_threads=2, providers=["CPUExecutionProvider"])


def photos(eval_dir: Path, size: tuple[int, int]) -> np.ndarray:
    """The eval photos resized to size (W, H): float32 [N, H, W, 3] BGR 0..255."""
    paths = sorted((eval_dir / "coco").glob("*.jpg"))
    assert len(paths) >= 3, f"expected COCO photos in {eval_dir / 'coco'}"
    return np.stack([cv2.resize(cv2.imread(str(p)), size, interpolation=cv2.INTER_CUBIC) for p in paths]).astype(
        np.float32
    )


def run(net: torch.nn.Module, images: np.ndarray, channels_last: bool = False) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    with torch.inference_mode():
        return net(x).numpy()


def test_same_padding_puts_the_odd_pixel_after() -> None:
    assert same_padding(368, 3, 2) == (0, 1)
    assert same_padding(367, 3, 2) == (1, 1)
    assert same_padding(46, 3, 1) == (1, 1)
    assert same_padding(23, 1, 1) == (0, 0)


def test_resize_bilinear_legacy_samples_at_dst_times_in_over_out() -> None:
    x = torch.tensor([[0.0, 3.0], [6.0, 9.0]]).view(1, 1, 2, 2)
    # src = dst * 2/3 = 0, 0.67, 1.33 (clamped to the last pixel); F.interpolate gives other values
    expected = torch.tensor([[0.0, 2.0, 3.0], [4.0, 6.0, 7.0], [6.0, 8.0, 9.0]])
    torch.testing.assert_close(resize_bilinear_legacy(x, (3, 3))[0, 0], expected)


def test_graph_is_rebuilt_layer_for_layer(net: TfPoseNet) -> None:
    assert len(net.blocks) == 14 and net.s8_index == 6 and len(net.stages) == 6
    # 39 batch-statistics norms in the backbone; the 60 refinement norms are folded into convs
    assert sum(isinstance(m, FrameNorm) for m in net.modules()) == 39
    assert sum(isinstance(m, SeparableConv) for m in net.modules()) == 60


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_matches_onnxruntime(net: TfPoseNet, onnx: TfPoseOnnx, eval_dir: Path, size: tuple[int, int]) -> None:
    images = photos(eval_dir, size)
    ours, ref = run(net, images), onnx(images)
    assert ours.shape == ref.shape == (len(images), 57, math.ceil(size[1] / 8), math.ceil(size[0] / 8))
    for i, (a, b) in enumerate(zip(ours, ref)):
        diff = np.abs(a - b)
        # Typical max |diff| is 1e-5..7e-4. Photo 000000000785 at 432x368 is ill-conditioned: a
        # 1e-7 relative change at the stem moves its output by ~7e-4, and there onnxruntime is
        # 0.012 from a float64 run of this port, the port in float32 0.003 (diff 0.016).
        assert diff.max() <= 2e-2, f"frame {i}: max |diff| {diff.max():.4f}"
        assert np.quantile(diff, 0.999) <= 1e-3, f"frame {i}: 99.9th percentile {np.quantile(diff, 0.999):.2e}"


def test_frames_in_a_batch_are_independent(net: TfPoseNet, eval_dir: Path) -> None:
    images = photos(eval_dir, (432, 368))[:3]
    batched = run(net, images)
    for i in range(3):
        alone = run(net, images[i : i + 1])[0]
        assert np.abs(batched[i] - alone).max() < 1e-4


def test_channels_last_gives_the_same_output(net: TfPoseNet, eval_dir: Path) -> None:
    images = photos(eval_dir, (400, 300))[:2]
    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)  # .to() would change the fixture
    assert np.abs(run(net_cl, images, channels_last=True) - run(net, images)).max() < 1e-4


def test_norm_paths_agree() -> None:
    """The CPU path (batch_norm per frame) and the GPU path (batched var_mean) are one function."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 16, 23, 29, generator=gen) * torch.rand(3, 16, 1, 1, generator=gen) * 50 + 7
    weight, bias = torch.randn(16, generator=gen), torch.randn(16, generator=gen)
    per_frame = frame_norm_per_frame(x, weight, bias, 1e-3)
    torch.testing.assert_close(per_frame, frame_norm_batched(x, weight, bias, 1e-3), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(per_frame[1:2], frame_norm_per_frame(x[1:2], weight, bias, 1e-3))
