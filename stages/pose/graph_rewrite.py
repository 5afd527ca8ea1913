"""ONNX graph rewrites that make the shipped model files run batched.

Each function takes the model file (path or bytes) and returns rewritten bytes; `onnx` is imported
only inside them, when a model is built, so loading a config or a stage module never pays for it
(~1.6 s). Each rewrite keeps the network's arithmetic: tests compare the batched graph with the
original one crop or frame at a time.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def batchable_rtmdet_graph(path: str | Path) -> bytes | None:
    """The RTMDet end2end graph with its pre-NMS score gate made per frame; None if not possible.

    mmdeploy exported the gate as Where(Not(Less(ReduceMax(scores, axes=[1], keepdims=0), 0.05)),
    scores, 0) with scores [N, 2100, 1]: the condition is [N, 1], which broadcasts against
    [N, 2100, 1] only when N == 1. onnxruntime 1.32 fails any batch N > 1 there ("Attempting to
    broadcast an axis by a dimension other than 1. 8 by 2100"). With keepdims=1 the condition is
    [N, 1, 1]: per frame the same test as at N == 1, and the rest of the graph (TopK, NMS, gather)
    already carries the batch index. Measured on 8 crowd_synth p20 frames: batched dets equal
    per-frame dets bit for bit; with 2 threads a batch of 8 takes ~0.7x the time per frame of
    one call per frame, with 1 thread about the same (benchmarks/detector.py).
    Needs the `onnx` package to edit the graph; without it (or for a graph without this pattern)
    the caller runs one frame per call, which gives the same output.
    """
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(path))
    producer = {out: node for node in model.graph.node for out in node.output}
    fixed = 0
    for where in (node for node in model.graph.node if node.op_type == "Where"):
        gate = producer.get(where.input[0])
        while gate is not None and gate.op_type in ("Not", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"):
            gate = producer.get(gate.input[0])
        if gate is None or gate.op_type != "ReduceMax" or gate.input[0] != where.input[1]:
            continue
        for attr in gate.attribute:
            if attr.name == "keepdims" and attr.i == 0:
                attr.i = 1
                fixed += 1
    return model.SerializeToString() if fixed == 1 else None


def make_batch_dynamic(model_bytes: bytes) -> bytes:
    """MoveNet ONNX bytes with batch 1 -> the same network taking [B, S, S, 3] (uint8 for Lightning's
    S = 192, int32 for Thunder's S = 256) and giving float32[B, 1, 17, 3] (y, x normalised, score),
    B symbolic.

    The convolutional body is batch-agnostic; the decoding tail is not (GatherND indices built as
    [0, y, x], Reshapes to [1, ...], [17, -1]). The tail is rebuilt with batch-aware ops from the
    model's own constants (centre weighting, the dequantised coordinate grids, the 1.8 distance
    bias, the 1/48 scale), reproducing its arithmetic: centre = argmax(centre heatmap x weight);
    regressed joint = centre + regression at centre; joint cell = argmax(heat / (distance to the
    regressed joint + 1.8)); output = (cell + offset at cell) / 48 and the heat there as score.
    Raises ValueError if the graph is not the expected MoveNet layout. Already-dynamic input is returned.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(model_bytes)
    if model.graph.input[0].type.tensor_type.shape.dim[0].dim_param:
        return model_bytes
    model = onnx.shape_inference.infer_shapes(model)
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    shape = {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim) for v in g.value_info}
    try:
        centre_argmax, joint_argmax = [n for n in g.node if n.op_type == "ArgMax"]
        mul = producer[producer[centre_argmax.input[0]].input[0]]  # Reshape -> Mul(centre, weight)
        centre, centre_weight = producer[mul.input[0]].input[0], consts[mul.input[1]]
        div = producer[producer[joint_argmax.input[0]].input[0]]  # Reshape -> Div(heat, dist + bias)
        heat, dist_bias = div.input[0], consts[producer[div.input[1]].input[1]]
        h, w, k = shape[heat][1:]
        grids = [consts[n.input[0]][..., 0] for n in g.node if n.op_type == "Sub"
                 and consts.get(n.input[0], np.zeros(0)).shape == (h, w, 1)]
        # x grid varies along columns, y grid along rows (values are dequantised, not exact indices)
        grid_x, grid_y = sorted(grids, key=lambda a: -np.ptp(a, axis=1).max())
        gathers = {shape[n.output[0]]: n.input[0] for n in g.node if n.op_type == "GatherND"}
        regress, offset = gathers[(1, 2 * k)], gathers[(k, 2 * k)]
        out_scale = consts[next(n for n in g.node if n.op_type == "Mul" and n.input[1] in consts
                                and consts[n.input[1]].shape == (1, 1, 1, 2)).input[1]]
    except (KeyError, ValueError, IndexError, StopIteration) as err:
        raise ValueError(f"not the expected MoveNet graph: {err!r}") from err

    # Keep the body: every node the four head tensors depend on, in the original (topological) order.
    needed, stack = set(), [centre, heat, regress, offset]
    while stack:
        node = producer.get(stack.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            stack.extend(node.input)
    body = [n for n in g.node if id(n) in needed]

    hw, new_consts, nodes = h * w, {}, []

    def c(name: str, value) -> str:
        new_consts[f"bd/{name}"] = np.asarray(value)
        return f"bd/{name}"

    def op(kind: str, inputs: Sequence[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(kind, list(inputs), [f"bd/{out}"], name=f"bd/{out}", **attrs))
        return f"bd/{out}"

    i0, i1, width = c("i0", np.int64(0)), c("i1", np.int64(1)), c("w", np.int64(w))

    def cell(flat_idx: str, tag: str) -> tuple[str, str]:  # flat index -> float (row, col)
        row = op("Div", [flat_idx, width], f"{tag}_row_i")
        col = op("Sub", [flat_idx, op("Mul", [row, width], f"{tag}_rw")], f"{tag}_col_i")
        return op("Cast", [row], f"{tag}_row", to=1), op("Cast", [col], f"{tag}_col", to=1)

    # centre of the person: argmax of the weighted centre heatmap -> [B, 1]
    ctr = op("Mul", [op("Reshape", [centre, c("s_ctr", [-1, hw])], "ctr_flat"),
                     c("ctr_weight", centre_weight.reshape(1, hw))], "ctr_w")
    ctr_idx = op("ArgMax", [ctr], "ctr_idx", axis=1, keepdims=1)
    cy, cx = cell(ctr_idx, "ctr")
    # regressed joints at the centre: [B, HW, 2K] gathered at [B, 1] -> [B, K, 2] (y, x)
    reg_flat = op("Reshape", [regress, c("s_reg", [-1, hw, 2 * k])], "reg_flat")
    reg = op("Reshape", [op("GatherND", [reg_flat, ctr_idx], "reg_at", batch_dims=1),
                         c("s_k2", [-1, k, 2])], "reg")
    s_b11k = c("s_b11k", [-1, 1, 1, k])
    ry = op("Add", [cy, op("Gather", [reg, i0], "reg_y", axis=2)], "ry_k")  # [B, K]
    rx = op("Add", [cx, op("Gather", [reg, i1], "reg_x", axis=2)], "rx_k")
    # distance of every cell to each regressed joint [B, H, W, K]; heat / (distance + bias)
    dy = op("Sub", [c("grid_y", grid_y[..., None]), op("Reshape", [ry, s_b11k], "ry")], "dy")
    dx = op("Sub", [c("grid_x", grid_x[..., None]), op("Reshape", [rx, s_b11k], "rx")], "dx")
    d2 = op("Add", [op("Mul", [dy, dy], "dy2"), op("Mul", [dx, dx], "dx2")], "d2")
    denom = op("Add", [op("Sqrt", [d2], "dist"), c("bias", dist_bias)], "denom")
    s_hwk = c("s_hwk", [-1, hw, k])
    weighted = op("Reshape", [op("Div", [heat, denom], "weighted"), s_hwk], "weighted_flat")
    j_idx = op("ArgMax", [weighted], "j_idx", axis=1, keepdims=1)  # [B, 1, K]
    jy, jx = cell(j_idx, "j")
    score = op("GatherElements", [op("Reshape", [heat, s_hwk], "heat_flat"), j_idx], "score", axis=1)
    # offsets at each joint's cell: [B, HW, K, 2] gathered along HW -> [B, 1, K, 2] (y, x)
    j_idx2 = op("Expand", [op("Unsqueeze", [j_idx, c("ax3", [3])], "j_idx4"), c("s_1112", [1, 1, 1, 2])],
                "j_idx2")
    off_flat = op("Reshape", [offset, c("s_off", [-1, hw, k, 2])], "off_flat")
    off = op("GatherElements", [off_flat, j_idx2], "off", axis=1)
    y = op("Add", [jy, op("Gather", [off, i0], "off_y", axis=3)], "y")  # [B, 1, K]
    x = op("Add", [jx, op("Gather", [off, i1], "off_x", axis=3)], "x")
    yx = op("Concat", [op("Unsqueeze", [y, c("ax3b", [3])], "y4"), op("Unsqueeze", [x, c("ax3c", [3])], "x4")],
            "yx", axis=3)
    out_name = g.output[0].name
    nodes.append(helper.make_node("Concat", [op("Mul", [yx, c("out_scale", out_scale)], "yx_n"),
                                             op("Unsqueeze", [score, c("ax3d", [3])], "score4")],
                                  [out_name], name="bd/output", axis=3))

    used = {i for n in body for i in n.input}
    inits = [t for t in g.initializer if t.name in used]
    inits += [numpy_helper.from_array(v, name) for name, v in new_consts.items()]
    # the input keeps its element type: uint8 for Lightning, int32 for Thunder
    inp = helper.make_tensor_value_info(g.input[0].name, g.input[0].type.tensor_type.elem_type,
                                        ["batch", h * 4, w * 4, 3])
    out = helper.make_tensor_value_info(out_name, onnx.TensorProto.FLOAT, ["batch", 1, k, 3])
    graph = helper.make_graph(body + nodes, g.name, [inp], [out], inits)
    new = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    onnx.checker.check_model(new)
    return new.SerializeToString()


def free_batch_dim(model_bytes: bytes) -> bytes:
    """A static batch-1 convolutional graph (PP-TinyPose, PicoDet) made to take any batch.

    Their converters baked batch 1 into constants: Reshape targets [1, ...] (the channel shuffles of
    Lite-HRNet and LCNet) and Resize output sizes [1, C, H, W]. Each Reshape target's leading 1
    becomes -1 (the other dims are fixed, so -1 is the batch), and each Resize by sizes becomes a
    Resize by the same per-axis scales (the upsamplings are by whole factors, so nearest and linear
    sampling land on the same source pixels). Per-sample arithmetic is unchanged: every other op
    of these graphs (Conv, Add, ReduceMean over H and W, ...) treats samples independently.
    Raises ValueError for a graph whose batch cannot be freed this way (e.g. a Reshape that mixes
    the batch into other axes).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(model_bytes))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    shape = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
             for v in [*g.value_info, *g.input, *g.output]}
    used_by: dict[str, int] = {}
    for node in g.node:
        for name in node.input:
            used_by[name] = used_by.get(name, 0) + 1
    for node in g.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            target = numpy_helper.to_array(inits[node.input[1]]).copy()
            if target[0] != 1 or (target[1:] <= 0).any() or shape.get(node.input[0], [0])[0] != 1:
                raise ValueError(f"Reshape {node.name or node.output[0]}: target {target.tolist()} "
                                 "does not keep the batch axis")
            target[0] = -1
            name = f"{node.input[1]}/batch_free"
            if name not in inits:
                inits[name] = numpy_helper.from_array(target, name)
                g.initializer.append(inits[name])
            node.input[1] = name
        elif node.op_type == "Resize" and len(node.input) == 4 and node.input[3] in inits:
            sizes = numpy_helper.to_array(inits[node.input[3]])
            src = shape.get(node.input[0])
            if not src or len(src) != len(sizes) or sizes[0] != 1 or 0 in src:
                raise ValueError(f"Resize {node.name or node.output[0]}: sizes {sizes.tolist()} from {src}")
            scales = np.array([1.0, *(sizes[1:] / np.array(src[1:], np.float64))], np.float32)
            name = f"{node.output[0]}/scales"
            g.initializer.append(numpy_helper.from_array(scales, name))
            node.input[2], node.input[3] = name, ""
            del node.input[3]
    for v in [*g.input, *g.output]:
        v.type.tensor_type.shape.dim[0].dim_param = "batch"
    del g.value_info[:]  # inferred with batch 1: let the runtime infer them again
    used = {name for node in g.node for name in node.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.checker.check_model(model)
    return model.SerializeToString()
