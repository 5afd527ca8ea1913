"""The TFLite -> ONNX conversion of the silhouettes' model (stages/dense/tflite_onnx.py), on a small TFLite file
written here with the `tflite` package's flatbuffer builders: every operator the real model's segmentation uses
(float16 weights behind DEQUANTIZE, CONV_2D with SAME padding at stride 2 and a fused RELU6, DEPTHWISE_CONV_2D,
ADD with a fused RELU, PAD, RESIZE_BILINEAR with half-pixel centres), against the same network written in torch
with TF's padding spelled out by hand. (The real file's conversion was checked against Google's LiteRT:
docs/bodies.md.)"""
from __future__ import annotations

import importlib

import flatbuffers
import numpy as np
import onnxruntime as ort
import pytest
import tflite
import torch
import torch.nn.functional as F

from stages.dense.segment import PersonSegmenter
from stages.dense.tflite_onnx import tflite_to_onnx

OP = tflite.BuiltinOperator
OPTIONS = tflite.BuiltinOptions


def _table(b: flatbuffers.Builder, table: str, **fields) -> int:
    """One flatbuffer table of the TFLite schema: tflite.<table>, its fields by their schema names."""
    module = importlib.import_module(f"tflite.{table}")
    module.Start(b)
    for field, value in fields.items():
        getattr(module, "Add" + "".join(p.capitalize() for p in field.split("_")))(b, value)
    return module.End(b)


def _tables(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _ints(b: flatbuffers.Builder, values) -> int:
    return b.CreateNumpyVector(np.asarray(values, np.int32))


class _Model:
    """A TFLite model written tensor by tensor, operator by operator."""

    def __init__(self):
        self.b = flatbuffers.Builder(1 << 16)
        self.buffers = [_table(self.b, "Buffer")]  # buffer 0: the empty one, by convention
        self.tensors: list[int] = []
        self.ops: list[int] = []
        self.codes: list[int] = []

    def tensor(self, name: str, shape, value: np.ndarray | None = None) -> int:
        b, kind = self.b, 0  # FLOAT32
        buffer = 0
        if value is not None:
            kind = {np.float32: 0, np.float16: 1, np.int32: 2}[value.dtype.type]
            data = b.CreateNumpyVector(np.frombuffer(value.tobytes(), np.uint8))
            self.buffers.append(_table(b, "Buffer", data=data))
            buffer = len(self.buffers) - 1
        self.tensors.append(_table(b, "Tensor", shape=_ints(b, shape), type=kind, buffer=buffer,
                                   name=b.CreateString(name)))
        return len(self.tensors) - 1

    def op(self, code: int, ins: list[int], out: int, options: tuple[str, int] | None = None) -> None:
        if code not in self.codes:
            self.codes.append(code)
        fields = {"opcode_index": self.codes.index(code), "inputs": _ints(self.b, ins), "outputs": _ints(self.b, [out])}
        if options is not None:
            fields |= {"builtin_options_type": getattr(OPTIONS, options[0]), "builtin_options": options[1]}
        self.ops.append(_table(self.b, "Operator", **fields))

    def finish(self, inputs: list[int], outputs: list[int]) -> bytes:
        b = self.b
        codes = [_table(b, "OperatorCode", deprecated_builtin_code=min(c, 127), builtin_code=c, version=1)
                 for c in self.codes]
        graph = _table(b, "SubGraph", tensors=_tables(b, self.tensors), inputs=_ints(b, inputs),
                       outputs=_ints(b, outputs), operators=_tables(b, self.ops))
        model = _table(b, "Model", version=3, operator_codes=_tables(b, codes), subgraphs=_tables(b, [graph]),
                       buffers=_tables(b, self.buffers))
        b.Finish(model, file_identifier=b"TFL3")
        return bytes(b.Output())


def _network(rng: np.random.Generator):
    """(TFLite bytes, the weights): input [1, 12, 12, 3] -> "out" [1, 14, 14, 6]; a LOGISTIC on "other"."""
    w1 = rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float16)  # [O, kh, kw, I]
    b1 = rng.normal(0, 0.5, 4).astype(np.float32)
    dw = rng.normal(0, 0.5, (1, 3, 3, 4)).astype(np.float32)  # [1, kh, kw, C]
    db = rng.normal(0, 0.5, 4).astype(np.float32)
    pads = np.array([[0, 0], [1, 0], [0, 1], [0, 2]], np.int32)
    m = _Model()
    b = m.b
    x = m.tensor("input", [1, 12, 12, 3])
    w16, w32 = m.tensor("w1_16", w1.shape, w1), m.tensor("w1", w1.shape)
    m.op(OP.DEQUANTIZE, [w16], w32)
    t1 = m.tensor("t1", [1, 6, 6, 4])
    m.op(OP.CONV_2D, [x, w32, m.tensor("b1", [4], b1)], t1,
         ("Conv2DOptions", _table(b, "Conv2DOptions", padding=0, stride_w=2, stride_h=2, fused_activation_function=3,
                                  dilation_w_factor=1, dilation_h_factor=1)))
    t2 = m.tensor("t2", [1, 6, 6, 4])
    m.op(OP.DEPTHWISE_CONV_2D, [t1, m.tensor("dw", dw.shape, dw), m.tensor("db", [4], db)], t2,
         ("DepthwiseConv2DOptions", _table(b, "DepthwiseConv2DOptions", padding=0, stride_w=1, stride_h=1,
                                           depth_multiplier=1, dilation_w_factor=1, dilation_h_factor=1)))
    t3 = m.tensor("t3", [1, 6, 6, 4])
    m.op(OP.ADD, [t1, t2], t3, ("AddOptions", _table(b, "AddOptions", fused_activation_function=1)))
    t4 = m.tensor("t4", [1, 7, 7, 6])
    m.op(OP.PAD, [t3, m.tensor("pads", pads.shape, pads)], t4)
    out = m.tensor("out", [1, 14, 14, 6])
    size = np.array([14, 14], np.int32)
    m.op(OP.RESIZE_BILINEAR, [t4, m.tensor("size", [2], size)], out,
         ("ResizeBilinearOptions", _table(b, "ResizeBilinearOptions", half_pixel_centers=True)))
    other = m.tensor("other", [1, 6, 6, 4])
    m.op(OP.LOGISTIC, [t1], other)
    return m.finish([x], [out, other]), (w1, b1, dw, db)


def _reference(x: np.ndarray, w1, b1, dw, db) -> np.ndarray:
    """The same network in torch, NCHW; TF's SAME padding worked out by hand for these sizes."""
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    # 12 px, kernel 3, stride 2 -> 6 px: (6 - 1) * 2 + 3 - 12 = 1 pixel of padding, at the end (TF's rule).
    t1 = F.conv2d(F.pad(t, (0, 1, 0, 1)), torch.from_numpy(w1.astype(np.float32)).permute(0, 3, 1, 2),
                  torch.from_numpy(b1), stride=2).clamp(0, 6)
    # 6 px, kernel 3, stride 1: 2 pixels, one each side.
    t2 = F.conv2d(F.pad(t1, (1, 1, 1, 1)), torch.from_numpy(dw).permute(3, 0, 1, 2), torch.from_numpy(db), groups=4)
    t3 = (t1 + t2).clamp(min=0)
    t4 = F.pad(t3, (0, 1, 1, 0, 0, 2))  # W: 0 before, 1 after; H: 1 before; C: 2 after
    out = F.interpolate(t4, size=(14, 14), mode="bilinear", align_corners=False)  # half-pixel centres
    return out.permute(0, 2, 3, 1).numpy()


def test_the_converted_graph_computes_what_the_tflite_network_does():
    rng = np.random.default_rng(7)
    data, weights = _network(rng)
    converted = tflite_to_onnx(data, "out", name="y", sigmoid=False)
    session = ort.InferenceSession(converted, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["y"]
    x = rng.uniform(0, 1, (3, 12, 12, 3)).astype(np.float32)  # a batch of 3: the file says 1
    got = session.run(["y"], {"input": x})[0]
    want = np.concatenate([_reference(x[i:i + 1], *weights) for i in range(3)])
    assert got.shape == (3, 14, 14, 6) and np.abs(want).max() > 1
    np.testing.assert_allclose(got, want, atol=1e-4)
    # sigmoid=True: probabilities of the same values; only what "out" needs is converted (LOGISTIC is not)
    probs = ort.InferenceSession(tflite_to_onnx(data, "out", "p", sigmoid=True), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(probs.run(["p"], {"input": x})[0], 1 / (1 + np.exp(-want)), atol=1e-5)


def test_what_it_cannot_convert_is_named():
    data, _ = _network(np.random.default_rng(0))
    with pytest.raises(ValueError, match="TFLite operator LOGISTIC"):
        tflite_to_onnx(data, "other")
    with pytest.raises(ValueError, match="no tensor 'missing'"):
        tflite_to_onnx(data, "missing")
    with pytest.raises(ValueError, match="no tensor 'Identity_2'"):
        PersonSegmenter(data)  # a TFLite file, but not the model: no segmentation tensor
