"""The fast bottom-up grouping against the people the first implementation found on real frames.

tests/data/grouping_golden.npz holds, for frames of five real clips (vtest, crowd_synth p20 and p50,
the mmtracking and mmhuman3d demos), the people that commit 18d6e15's decoding (a dilation over the
whole upsampled map, one limb at a time) found in the ONNX network's maps. The faster decoding
(active window, neighbour gathers, all limbs at once, early rejection) must find the same people
with the same keypoints: it is an optimisation, not a change of method.
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from stages.pose.bottomup import decode_maps, net_input_size, to_net_input
from stages.pose.params import BottomUpParams
from stages.pose.tfpose_onnx import TfPoseOnnx

GOLDEN = Path(__file__).parent / "data" / "grouping_golden.npz"
CLIPS = {"vtest": "videos/vtest.mp4", "p50": "crowd_synth/p50/video.mp4", "p20": "crowd_synth/p20/video.mp4",
         "demo": "videos/mmtracking_demo.mp4", "mmh": "videos/mmhuman3d_multi_person_demo.mp4"}


@pytest.fixture(scope="module")
def onnx_forward(weights_dir):
    return TfPoseOnnx(weights_dir / "tfpose_mobilenet_v2_small.onnx", num_threads=2,
                      providers=["CPUExecutionProvider"])


def _frames(path: Path, wanted: set[int]) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0))
                         if i in wanted])


@pytest.mark.parametrize("clip", list(CLIPS))
def test_same_people_as_the_first_implementation(clip, eval_dir, onnx_forward):
    golden = np.load(GOLDEN)
    params = BottomUpParams()
    images = _frames(eval_dir / CLIPS[clip], set(golden[f"{clip}_frames"].tolist()))
    h, w = images.shape[1:3]
    maps = onnx_forward(to_net_input(images, net_input_size(w, h, params.net_height, params.size_multiple)))
    people = [decode_maps(m.astype(np.float16), params)[0] for m in maps]
    assert [len(p) for p in people] == golden[f"{clip}_counts"].tolist()
    got, expected = np.concatenate(people), golden[f"{clip}_keypoints"]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))  # the same parts found
    # Bit-identical here; the tolerance only allows for another CPU's onnxruntime kernels.
    np.testing.assert_allclose(got, expected, atol=1e-3, equal_nan=True)
