"""One output of a TFLite convolutional network as an ONNX graph, so onnxruntime runs it (CPU, or CUDA on a GPU).

The silhouettes' model is published as TFLite only (MediaPipe's pose_landmark_lite.tflite, segment.py), and
converting TFLite with the usual tools needs TensorFlow. Its segmentation output depends on six operators:
CONV_2D, DEPTHWISE_CONV_2D, ADD, PAD and RESIZE_BILINEAR, with float16 weights behind DEQUANTIZE; this module
converts exactly those (anything else is a ValueError naming it), keeping only the operators the chosen output
needs (here 232 of 320: the landmark heads are left out).

    onnx_bytes = tflite_to_onnx(tflite_bytes, "Identity_2", name="segmentation", sigmoid=True)

TFLite is NHWC with a batch of 1; the graph is NCHW inside with a free batch, one transpose in and one out:
float32[N, H, W, C] -> float32[N, H', W', C']. SAME padding becomes the explicit pads TFLite computes for the
tensor shapes in the file (TF's rule: the odd pixel at the end), and RESIZE_BILINEAR's half_pixel_centers /
align_corners become Resize's coordinate modes. `onnx` and `tflite` are imported inside, when a model loads.
"""
from __future__ import annotations

import numpy as np

_ACTIVATIONS = {0: None, 1: (0.0, None), 3: (0.0, 6.0)}  # NONE, RELU, RELU6 -> Clip bounds


def tflite_to_onnx(data: bytes, output: str, name: str = "", sigmoid: bool = False) -> bytes:
    """ONNX bytes computing the TFLite model's tensor `output` (by name) from its first input; `name`: the ONNX
    output's name (default `output`); sigmoid: append one (a logits output as probabilities)."""
    import onnx
    import tflite
    from onnx import TensorProto, helper, numpy_helper

    model = tflite.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    codes = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    tensors = [graph.Tensors(i) for i in range(graph.TensorsLength())]
    index = {t.Name().decode(): i for i, t in enumerate(tensors)}
    if output not in index:
        raise ValueError(f"no tensor {output!r} in the TFLite model")
    producer = {}
    for i in range(graph.OperatorsLength()):
        for t in graph.Operators(i).OutputsAsNumpy():
            producer[int(t)] = i
    needed, stack = set(), [index[output]]
    while stack:  # the operators the output depends on
        t = stack.pop()
        if t in producer and producer[t] not in needed:
            needed.add(producer[t])
            stack += [int(x) for x in graph.Operators(producer[t]).InputsAsNumpy() if x >= 0]

    consts: dict[int, np.ndarray] = {}  # tensor -> value (float16 weights dequantized at conversion)
    nodes, inits = [], []

    def const(t: int) -> np.ndarray:
        if t in consts:
            return consts[t]
        buf = model.Buffers(tensors[t].Buffer())
        if buf.DataLength() == 0:
            raise ValueError(f"tensor {tensors[t].Name().decode()!r} is not a constant")
        dtype = {0: np.float32, 1: np.float16, 2: np.int32}[tensors[t].Type()]
        return np.frombuffer(buf.DataAsNumpy().tobytes(), dtype).reshape(tensors[t].ShapeAsNumpy())

    def shape(t: int) -> list[int]:
        return [int(x) for x in tensors[t].ShapeAsNumpy()]

    def init(value: np.ndarray, label: str) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), label))
        return label

    def activate(out: str, code: int, label: str) -> str:
        if code not in _ACTIVATIONS:
            raise ValueError(f"fused activation {code} at {label} is not supported")
        bounds = _ACTIVATIONS[code]
        if bounds is None:
            return out
        lo, hi = bounds
        args = [out, init(np.array(lo, np.float32), f"{label}_lo")] + (
            [init(np.array(hi, np.float32), f"{label}_hi")] if hi is not None else [])
        nodes.append(helper.make_node("Clip", args, [f"{label}_act"]))
        return f"{label}_act"

    def same_pads(size: list[int], kernel: list[int], stride: list[int], dilation: list[int]) -> list[int]:
        """TF's SAME padding for spatial sizes [H, W]: begins then ends, the odd pixel at the end."""
        begin, end = [], []
        for n, k, s, d in zip(size, kernel, stride, dilation):
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            begin.append(total // 2)
            end.append(total - total // 2)
        return begin + end

    name_of = {}  # tensor -> ONNX value name (NCHW)
    first = graph.Inputs(0)
    nodes.append(helper.make_node("Transpose", ["input"], ["input_nchw"], perm=[0, 3, 1, 2]))
    name_of[first] = "input_nchw"
    for i in sorted(needed):  # TFLite stores operators in execution order
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = codes.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        ins, out = [int(x) for x in op.InputsAsNumpy()], int(op.OutputsAsNumpy()[0])
        label = f"op{i}"
        if kind == "DEQUANTIZE":
            consts[out] = const(ins[0]).astype(np.float32)
            continue
        opts = op.BuiltinOptions()
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            o = tflite.Conv2DOptions() if kind == "CONV_2D" else tflite.DepthwiseConv2DOptions()
            o.Init(opts.Bytes, opts.Pos)
            w = const(ins[1]).astype(np.float32)  # [O, kh, kw, I] or [1, kh, kw, C * M]
            stride, dilation = [o.StrideH(), o.StrideW()], [o.DilationHFactor(), o.DilationWFactor()]
            group = 1
            if kind == "DEPTHWISE_CONV_2D":
                group = shape(ins[0])[3]
                w = w.transpose(3, 1, 2, 0)  # [C * M, kh, kw, 1]
            weight = init(w.transpose(0, 3, 1, 2), f"{label}_w")
            args = [name_of[ins[0]], weight] + ([init(const(ins[2]).astype(np.float32), f"{label}_b")]
                                                if len(ins) > 2 and ins[2] >= 0 else [])
            pads = same_pads(shape(ins[0])[1:3], list(w.shape[1:3]), stride, dilation) if o.Padding() == 0 \
                else [0, 0, 0, 0]  # Padding: 0 SAME, 1 VALID
            nodes.append(helper.make_node("Conv", args, [label], strides=stride, dilations=dilation, pads=pads,
                                          group=group, kernel_shape=list(w.shape[1:3])))
            name_of[out] = activate(label, o.FusedActivationFunction(), label)
        elif kind == "ADD":
            o = tflite.AddOptions()
            o.Init(opts.Bytes, opts.Pos)
            if any(t not in name_of for t in ins):
                raise ValueError(f"ADD of a constant at {label} is not supported")
            nodes.append(helper.make_node("Add", [name_of[ins[0]], name_of[ins[1]]], [label]))
            name_of[out] = activate(label, o.FusedActivationFunction(), label)
        elif kind == "PAD":
            p = const(ins[1]).astype(np.int64)[[0, 3, 1, 2]]  # NHWC rows -> NCHW
            nodes.append(helper.make_node("Pad", [name_of[ins[0]], init(np.r_[p[:, 0], p[:, 1]], f"{label}_p")],
                                          [label]))
            name_of[out] = label
        elif kind == "RESIZE_BILINEAR":
            o = tflite.ResizeBilinearOptions()
            o.Init(opts.Bytes, opts.Pos)
            mode = "align_corners" if o.AlignCorners() else "half_pixel" if o.HalfPixelCenters() else "asymmetric"
            scale = np.r_[1.0, 1.0, const(ins[1]) / np.array(shape(ins[0])[1:3])].astype(np.float32)
            nodes.append(helper.make_node("Resize", [name_of[ins[0]], "", init(scale, f"{label}_s")], [label],
                                          mode="linear", coordinate_transformation_mode=mode))
            name_of[out] = label
        else:
            raise ValueError(f"TFLite operator {kind} (at {label}) is not supported")
    result = name_of[index[output]]
    if sigmoid:
        nodes.append(helper.make_node("Sigmoid", [result], ["probabilities"]))
        result = "probabilities"
    name = name or output
    nodes.append(helper.make_node("Transpose", [result], [name], perm=[0, 2, 3, 1]))
    h, w, c = shape(first)[1:]
    oh, ow, oc = shape(index[output])[1:]
    onnx_graph = helper.make_graph(nodes, "tflite", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                   ["N", h, w, c])],
                                   [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", oh, ow, oc])], inits)
    converted = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(converted)
    return converted.SerializeToString()
