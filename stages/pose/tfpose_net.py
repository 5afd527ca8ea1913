"""Native torch port of the tf-pose-estimation ``mobilenet_v2_small`` network (bottom-up, PAFs).

`TfPoseNet.from_pb` rebuilds the TF1 frozen graph ``tfpose_mobilenet_v2_small_graph_opt.pb``
without TensorFlow (tensorboard ships the GraphDef protos), checking every attribute and edge that
matters while it builds the layers. With h, w = ceil(H/8), ceil(W/8):

    image [N, 3, H, W] BGR 0..255 (NCHW; weights are transposed, so channels_last works too)
    -> MobileNetV2 x0.5, per-frame normalisation: s8 [N, 16, h, w], s16 [N, 48, ceil(H/16), ceil(W/16)]
    -> feat = cat(s8, TF1-legacy bilinear resize of s16 to h x w)     [N, 64, h, w]
    -> 6 stages, each a PAF branch [N, 38, h, w] and a heatmap branch [N, 19, h, w] of 5
       separable convs; stages 2..6 read cat(paf, heat, feat)          [N, 121, h, w]
    -> cat(heat, paf) [N, 57, h, w]: OpenPose-18 heatmaps (18 = background), then PAFs

`TfPoseOnnx` (tfpose_onnx.py) runs the tf2onnx conversion of the same graph with onnxruntime.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tensorboard.compat.proto import graph_pb2, node_def_pb2
from torch import Tensor, nn

_TF_DTYPES = {1: np.float32, 3: np.int32}  # DT_FLOAT, DT_INT32: the only dtypes in this graph


def load_graph_def(source: str | Path | bytes) -> graph_pb2.GraphDef:
    """A frozen graph from its .pb path, or from the file's bytes."""
    graph = graph_pb2.GraphDef()
    graph.ParseFromString(source if isinstance(source, bytes) else Path(source).read_bytes())
    return graph


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) of one spatial dim; the odd pixel goes after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def resize_bilinear_legacy(x: Tensor, size: tuple[int, int]) -> Tensor:
    """TF1 ResizeBilinear, align_corners=False, half_pixel_centers=False: [N,C,h,w] -> [N,C,*size].

    Samples at src = dst * in / out. Neither F.interpolate convention does that (False is
    half-pixel, True is (in-1)/(out-1)); on this net either is off by ~0.3 in the output.
    """
    y0, y1, wy = _legacy_taps(x.shape[2], size[0], x)
    x0, x1, wx = _legacy_taps(x.shape[3], size[1], x)
    rows = torch.lerp(x.index_select(2, y0), x.index_select(2, y1), wy.view(-1, 1))
    return torch.lerp(rows.index_select(3, x0), rows.index_select(3, x1), wx)


def _legacy_taps(size_in: int, size_out: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Lower/upper source index [size_out] (long) and weight of the upper one (like.dtype)."""
    src = torch.arange(size_out, dtype=torch.float32, device=like.device) * (size_in / size_out)
    low = src.floor()
    return low.long(), (low + 1).clamp(max=size_in - 1).long(), (src - low).to(like.dtype)


class SameConv2d(nn.Conv2d):
    """nn.Conv2d with TF 'SAME' padding: fixed and symmetric for stride 1 and an odd kernel; for
    stride 2 it depends on the input size (extra pixel bottom/right if even), so it is set per call."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, groups: int, bias: bool):
        self.dynamic = stride > 1 or kernel % 2 == 0
        pad = 0 if self.dynamic else (kernel - 1) // 2
        super().__init__(c_in, c_out, kernel, stride, pad, groups=groups, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.dynamic:
            (k_h, k_w), (s_h, s_w) = self.kernel_size, self.stride
            top, bottom = same_padding(x.shape[2], k_h, s_h)
            left, right = same_padding(x.shape[3], k_w, s_w)
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class FrameNorm(nn.Module):
    """FusedBatchNorm with is_training=True, as frozen in the backbone, applied per frame.

    TF normalises with the statistics of the batch it is fed (biased variance), so in a batch
    frames leak into each other. Here each frame uses its own per-channel mean/var over H, W
    (instance norm), which equals feeding the graph one frame at a time.
    """

    def __init__(self, weight: Tensor, bias: Tensor, eps: float):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(weight), nn.Parameter(bias), eps

    def forward(self, x: Tensor) -> Tensor:
        norm = frame_norm_per_frame if x.device.type == "cpu" else frame_norm_batched
        return norm(x, self.weight, self.bias, self.eps)


def frame_norm_per_frame(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """[N, C, H, W] -> same. One fused training-mode batch_norm per frame: on CPU (channels_last)
    2-4x faster than var_mean + addcmul or instance_norm; a GPU would pay launches per frame."""
    frames = [F.batch_norm(f, None, None, weight, bias, True, 0.0, eps) for f in x.split(1)]
    return frames[0] if len(frames) == 1 else torch.cat(frames)


def frame_norm_batched(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """[N, C, H, W] -> same, in batched kernels (GPUs); statistics in float32 for float16 inputs."""
    var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, correction=0)
    scale = weight.float().view(1, -1, 1, 1) * torch.rsqrt(var + eps)
    shift = bias.float().view(1, -1, 1, 1) - mean * scale
    return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))


class BackboneConv(nn.Module):
    """MobileNetV2 conv (no bias) -> FrameNorm -> optional ReLU6."""

    def __init__(self, conv: SameConv2d, norm: FrameNorm, relu6: bool):
        super().__init__()
        self.conv, self.norm, self.relu6 = conv, norm, relu6

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(self.conv(x))
        return F.relu6(x, inplace=True) if self.relu6 else x


class BackboneBlock(nn.Module):
    """Stem conv or inverted residual (expand, depthwise, project), plus the input if residual."""

    def __init__(self, layers: Sequence[BackboneConv], residual: bool):
        super().__init__()
        self.layers, self.residual = nn.Sequential(*layers), residual

    def forward(self, x: Tensor) -> Tensor:
        y = self.layers(x)
        return x + y if self.residual else y


class SeparableConv(nn.Module):
    """Refinement layer: 3x3 depthwise -> 1x1 pointwise with bias -> optional ReLU.

    The stored-statistics BatchNorm is folded into the pointwise weight/bias, and a 1x1 depthwise
    kernel (a per-channel scale) into the pointwise weight; then `depthwise` is None.
    """

    def __init__(self, depthwise: SameConv2d | None, pointwise: nn.Conv2d, relu: bool):
        super().__init__()
        self.depthwise, self.pointwise, self.relu = depthwise, pointwise, relu

    def forward(self, x: Tensor) -> Tensor:
        if self.depthwise is not None:
            x = self.depthwise(x)
        x = self.pointwise(x)
        return F.relu(x, inplace=True) if self.relu else x


class RefineStage(nn.Module):
    """Two branches on the same input: PAFs [N, 38, h, w] (graph 'L1'), heatmaps [N, 19, h, w] ('L2')."""

    def __init__(self, paf: Sequence[SeparableConv], heat: Sequence[SeparableConv]):
        super().__init__()
        self.paf, self.heat = nn.Sequential(*paf), nn.Sequential(*heat)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.paf(x), self.heat(x)


class TfPoseNet(nn.Module):
    """x [N, 3, H, W] float BGR 0..255 -> [N, 57, ceil(H/8), ceil(W/8)]: 19 heatmaps, then 38 PAFs.

    Frames are independent (per-frame normalisation), so any batch size gives each frame the
    output of running it alone. On CPU, `.to(memory_format=torch.channels_last)` (and a
    channels_last input) is ~1.4x faster than NCHW.
    """

    def __init__(self, blocks: Sequence[BackboneBlock], s8_index: int, stages: Sequence[RefineStage]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.s8_index = s8_index  # block whose output is the stride-8 feature; the last is stride 16
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected [N, 3, H, W] BGR, got {tuple(x.shape)}")
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.s8_index:
                s8 = x
        feat = torch.cat([s8, resize_bilinear_legacy(x, (s8.shape[2], s8.shape[3]))], dim=1)
        paf, heat = self.stages[0](feat)
        for stage in self.stages[1:]:
            paf, heat = stage(torch.cat([paf, heat, feat], dim=1))
        return torch.cat([heat, paf], dim=1)

    @classmethod
    def from_bytes(cls, data: bytes) -> TfPoseNet:
        """From the .pb file's contents (workers get model bytes, not paths)."""
        return cls.from_pb(data)

    @classmethod
    def from_pb(cls, source: str | Path | bytes) -> TfPoseNet:
        """From the .pb path or bytes; every layer is checked against the graph (ValueError)."""
        g = _Graph(load_graph_def(source))
        g.expect_inputs("MobilenetV2/Conv/Conv2D", ["image", None])
        blocks = [BackboneBlock([_backbone_conv(g, "MobilenetV2/Conv", depthwise=False)], residual=False)]
        outputs = ["MobilenetV2/Conv/Relu6"]
        pattern = re.compile(r"MobilenetV2/expanded_conv(?:_(\d+))?/project/Conv2D")
        for i in sorted(int(m.group(1) or 0) for m in map(pattern.fullmatch, g.nodes) if m):
            block, out = _inverted_residual(g, f"MobilenetV2/expanded_conv{f'_{i}' if i else ''}", outputs[-1])
            blocks.append(block)
            outputs.append(out)

        # feat = cat(stride-8 tensor, resize(last block, size = Shape(stride-8 tensor)[1:3]))
        g.expect_concat("feat_concat", [None, "base/layer_14/output/upsample"])
        s8_name = g.inputs("feat_concat")[0]
        resize = g.node("base/layer_14/output/upsample", "ResizeBilinear")
        if any(resize.attr[k].b for k in ("align_corners", "half_pixel_centers") if k in resize.attr):
            raise ValueError("ResizeBilinear: expected the TF1 legacy sampling")
        g.expect_inputs(resize.name, [outputs[-1], "strided_slice"])
        g.expect_inputs("strided_slice", ["Shape", None, None, None])
        g.expect_inputs("Shape", [s8_name])
        if [g.const(n).tolist() for n in g.inputs("strided_slice")[1:]] != [[1], [3], [1]]:
            raise ValueError("upsample: expected size = Shape(stride-8 feature)[1:3]")

        stages, stage_in, last = [], "feat_concat", {}
        while f"Openpose/MConv_Stage{len(stages) + 1}_L1_1_depthwise/depthwise" in g.nodes:
            s = len(stages) + 1
            if s > 1:  # stages 2.. read cat(PAF 'L1', heat 'L2', feat)
                stage_in = f"Openpose/MConv_Stage{s}_concat"
                g.expect_concat(stage_in, [last[1], last[2], "feat_concat"])
            paf, last[1] = _refine_branch(g, f"Openpose/MConv_Stage{s}_L1", stage_in)
            heat, last[2] = _refine_branch(g, f"Openpose/MConv_Stage{s}_L2", stage_in)
            stages.append(RefineStage(paf, heat))
        g.expect_concat("Openpose/concat_stage7", [last[2], last[1]])  # heatmaps first
        return cls(blocks, outputs.index(s8_name), stages)


class _Graph:
    """Name-indexed GraphDef: typed node lookup, input names without ':0', constants as numpy."""

    def __init__(self, graph_def: graph_pb2.GraphDef):
        self.nodes = {n.name: n for n in graph_def.node}

    def node(self, name: str, op: str) -> node_def_pb2.NodeDef:
        node = self.nodes.get(name)
        if node is None or node.op != op:
            raise ValueError(f"graph: expected {op} node {name!r}, found {node.op if node else None}")
        return node

    def inputs(self, name: str) -> list[str]:
        return [i.removesuffix(":0") for i in self.nodes[name].input]

    def expect_inputs(self, name: str, expected: Sequence[str | None]) -> None:
        """Check the wiring; None matches any input."""
        got = self.inputs(name)
        if len(got) != len(expected) or any(e is not None and e != i for e, i in zip(expected, got)):
            raise ValueError(f"graph: {name} has inputs {got}, expected {list(expected)}")

    def expect_concat(self, name: str, expected: Sequence[str | None]) -> None:
        """A ConcatV2 of `expected` along NHWC axis 3, the channels."""
        self.node(name, "ConcatV2")
        self.expect_inputs(name, [*expected, f"{name}/axis"])
        if int(self.const(f"{name}/axis")) != 3:
            raise ValueError(f"graph: {name} does not concatenate channels")

    def const(self, name: str) -> np.ndarray:
        tensor = self.node(name, "Const").attr["value"].tensor
        dtype = _TF_DTYPES[tensor.dtype]
        shape = [d.size for d in tensor.tensor_shape.dim]
        if tensor.tensor_content:
            return np.frombuffer(tensor.tensor_content, dtype=dtype).reshape(shape).copy()
        values = np.array(tensor.float_val if dtype is np.float32 else tensor.int_val, dtype=dtype)
        count = int(np.prod(shape))
        if values.size < count:  # TF repeats the last value (a filled tensor is stored as one value)
            values = np.concatenate([values, np.full(count - values.size, values[-1], dtype=dtype)])
        return values.reshape(shape)

    def conv(self, name: str, op: str) -> tuple[np.ndarray, int]:
        """Weight (TF layout) and stride of a Conv2D / DepthwiseConv2dNative node."""
        node = self.node(name, op)
        strides, dilations = list(node.attr["strides"].list.i), list(node.attr["dilations"].list.i)
        if node.attr["padding"].s != b"SAME" or node.attr["data_format"].s != b"NHWC":
            raise ValueError(f"{name}: expected SAME padding and NHWC")
        if dilations != [1, 1, 1, 1] or strides[0] != 1 or strides[3] != 1 or strides[1] != strides[2]:
            raise ValueError(f"{name}: unsupported strides {strides} / dilations {dilations}")
        return self.const(self.inputs(name)[1]), strides[1]

    def batch_norm(self, name: str, conv: str, is_training: bool) -> tuple[np.ndarray, ...]:
        """(gamma, beta, mean, variance, epsilon) of a FusedBatchNorm that reads `conv`."""
        node = self.node(name, "FusedBatchNorm")
        if node.attr["is_training"].b != is_training or node.attr["data_format"].s != b"NHWC":
            raise ValueError(f"{name}: expected is_training={is_training} and NHWC")
        self.expect_inputs(name, [conv, None, None, None, None])
        params = [self.const(i) for i in self.inputs(name)[1:]]
        return (*params, np.float32(node.attr["epsilon"].f))


def _activation(g: _Graph, name: str, src: str) -> bool:
    """Whether activation node `name` exists; if so it must read `src`."""
    if name in g.nodes:
        g.expect_inputs(name, [src])
    return name in g.nodes


def _same_conv(weight: np.ndarray, stride: int, depthwise: bool) -> SameConv2d:
    """From a TF kernel: HWIO -> torch OIHW; depthwise HW(C)(mult) -> (C*mult)1HW (TF order c*mult+m)."""
    k_h, k_w, c_in, c_out = weight.shape
    if depthwise:
        c_out *= c_in
        weight = weight.transpose(2, 3, 0, 1).reshape(c_out, 1, k_h, k_w)
    else:
        weight = weight.transpose(3, 2, 0, 1)
    conv = SameConv2d(c_in, c_out, k_h, stride, groups=c_in if depthwise else 1, bias=False)
    conv.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
    return conv


def _backbone_conv(g: _Graph, scope: str, depthwise: bool) -> BackboneConv:
    """`scope`/{Conv2D|depthwise} -> BatchNorm/FusedBatchNorm (batch statistics) [-> Relu6]."""
    conv_name = f"{scope}/depthwise" if depthwise else f"{scope}/Conv2D"
    weight, stride = g.conv(conv_name, "DepthwiseConv2dNative" if depthwise else "Conv2D")
    gamma, beta, mean, var, eps = g.batch_norm(f"{scope}/BatchNorm/FusedBatchNorm", conv_name, True)
    if mean.size or var.size:
        raise ValueError(f"{scope}: expected empty mean/variance (statistics taken from the input)")
    norm = FrameNorm(torch.from_numpy(gamma), torch.from_numpy(beta), float(eps))
    relu6 = _activation(g, f"{scope}/Relu6", f"{scope}/BatchNorm/FusedBatchNorm")
    return BackboneConv(_same_conv(weight, stride, depthwise), norm, relu6)


def _inverted_residual(g: _Graph, scope: str, block_in: str) -> tuple[BackboneBlock, str]:
    """MobileNetV2 block [expand] -> depthwise -> project [+ input]; returns it and its output name."""
    layers, layer_in = [], block_in
    for part in ("expand", "depthwise", "project"):
        if part == "expand" and f"{scope}/expand/Conv2D" not in g.nodes:
            continue
        conv_name = f"{scope}/{part}/depthwise" if part == "depthwise" else f"{scope}/{part}/Conv2D"
        g.expect_inputs(conv_name, [layer_in, None])
        layer = _backbone_conv(g, f"{scope}/{part}", depthwise=part == "depthwise")
        layers.append(layer)
        layer_in = f"{scope}/{part}/Relu6" if layer.relu6 else f"{scope}/{part}/BatchNorm/FusedBatchNorm"
    residual = f"{scope}/add" in g.nodes
    if residual:
        g.expect_inputs(f"{scope}/add", [layer_in, block_in])
    return BackboneBlock(layers, residual), f"{scope}/add" if residual else layer_in


def _refine_branch(g: _Graph, scope: str, branch_in: str) -> tuple[list[SeparableConv], str]:
    """`scope`_k_depthwise -> `scope`_k_pointwise (+ stored-statistics BN) [-> Relu], k = 1, 2, ..."""
    layers, layer_in = [], branch_in
    while f"{scope}_{len(layers) + 1}_depthwise/depthwise" in g.nodes:
        name = f"{scope}_{len(layers) + 1}"
        dw_name, pw_name = f"{name}_depthwise/depthwise", f"{name}_pointwise/Conv2D"
        g.expect_inputs(dw_name, [layer_in, None])
        g.expect_inputs(pw_name, [dw_name, None])
        dw, dw_stride = g.conv(dw_name, "DepthwiseConv2dNative")
        pw, pw_stride = g.conv(pw_name, "Conv2D")
        if pw.shape[:2] != (1, 1) or dw.shape[3] != 1 or pw_stride != 1:
            raise ValueError(f"{name}: expected a 1x1 pointwise conv after a multiplier-1 depthwise")
        bn_name = f"{name}_pointwise/BatchNorm/FusedBatchNorm"
        gamma, beta, mean, var, eps = (p.astype(np.float64) for p in g.batch_norm(bn_name, pw_name, False))
        scale = gamma / np.sqrt(var + eps)
        weight = pw[0, 0].T.astype(np.float64) * scale[:, None]  # [out, in]
        depthwise = None
        if dw.shape[:2] == (1, 1) and dw_stride == 1:
            weight = weight * dw[0, 0, :, 0][None, :]  # pw(dw(x)) = (W * dw) x: exact, nothing between
        else:
            depthwise = _same_conv(dw, dw_stride, depthwise=True)
        pointwise = nn.Conv2d(weight.shape[1], weight.shape[0], 1)
        pointwise.weight.data.copy_(torch.from_numpy(weight[:, :, None, None]))
        pointwise.bias.data.copy_(torch.from_numpy(beta - mean * scale))
        relu = _activation(g, f"{name}_pointwise/Relu", bn_name)
        layers.append(SeparableConv(depthwise, pointwise, relu))
        layer_in = f"{name}_pointwise/Relu" if relu else bn_name
    return layers, layer_in
