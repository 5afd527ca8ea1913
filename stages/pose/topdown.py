"""Top-down pose: detector boxes -> square crops -> MoveNet Lightning (one batched call) -> people.

    boxes float[n, 4] xyxy (image px) --crop_transforms--> A, A_inv float32[n, 2, 3]
    frames uint8[N, H, W, 3] --warp_crops--> crops uint8[n, 192, 192, 3] RGB
    crops --MoveNet--> float32[n, 17, 3] (x, y in crop px, score) --A_inv--> image px --scale--> video px
    --crowd checks (few keypoints, pose outside its box, duplicate pose)--> PoseBatch(mode="topdown")

Coordinates use the pixel-centre convention of the bottom-up stage (pixel i spans [i - 0.5, i + 0.5]);
detector boxes are continuous (x2 = x1 + w), so a box's centre is the same in either convention.
The shipped MoveNet ONNX is a tf2onnx conversion with batch 1 baked into its decoding tail;
`make_batch_dynamic` replaces that tail with a batch-aware one, so every crop of a frame batch goes
through one onnxruntime call.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import helper, numpy_helper

from stages.batches import NUM_KEYPOINTS, FrameBatch, PoseBatch
from stages.eval.metrics import shared_oks
from stages.pose.onnx_session import onnx_session

INPUT_SIZE = 192  # MoveNet Lightning's square input
DROP_REASONS = ("few_keypoints", "outside_box", "duplicate")
# COCO-17 index of each keypoint's mirror image (left <-> right), for flip test.
FLIP_PAIRS = np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15])


def crop_transforms(boxes: np.ndarray, margin: float = 1.25, size: int = INPUT_SIZE
                    ) -> tuple[np.ndarray, np.ndarray]:
    """boxes float[n, 4] xyxy -> (A float32[n, 2, 3] image px -> crop px, A_inv float32[n, 2, 3]).

    The crop is the square of side s = margin * max(w, h) centred on the box (MoveNet was trained
    on square person crops with context; a non-square crop would squash the body). With k = size / s
    and crop left edge x0 = cx - s/2, pixel centres map as x_crop = k * (x_img + 0.5 - x0) - 0.5.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    centre = (b[:, :2] + b[:, 2:]) / 2
    side = np.maximum(margin * np.max(b[:, 2:] - b[:, :2], axis=1), 1e-3)  # a degenerate box still inverts
    k = size / side
    origin = centre - side[:, None] / 2  # [n, 2] top-left corner (continuous coordinates)
    a = np.zeros((len(b), 2, 3))
    a[:, 0, 0] = a[:, 1, 1] = k
    a[:, :, 2] = k[:, None] * (0.5 - origin) - 0.5
    a_inv = np.zeros_like(a)
    a_inv[:, 0, 0] = a_inv[:, 1, 1] = 1 / k
    a_inv[:, :, 2] = (0.5 / k)[:, None] + origin - 0.5
    return a.astype(np.float32), a_inv.astype(np.float32)


def warp_crops(image_rgb: np.ndarray, A: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """uint8[H, W, 3], A float[n, 2, 3] -> uint8[n, size, size, 3]; outside the frame is black,
    as MoveNet's own pipeline pads (a replicated edge would paint phantom limbs)."""
    out = np.empty((len(A), size, size, 3), np.uint8)
    for i, a in enumerate(A):
        cv2.warpAffine(image_rgb, a.astype(np.float64), (size, size), dst=out[i], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return out


def apply_affine(points: np.ndarray, A: np.ndarray) -> np.ndarray:
    """points float[n, K, 2], A float[n, 2, 3] -> float32[n, K, 2] (A @ [x, y, 1] per point)."""
    return (np.einsum("nkj,nij->nki", points, A[:, :, :2]) + A[:, None, :, 2]).astype(np.float32)


def make_batch_dynamic(model_bytes: bytes) -> bytes:
    """MoveNet ONNX bytes with batch 1 -> the same network taking uint8[B, 192, 192, 3] and giving
    float32[B, 1, 17, 3] (y, x normalised, score), B symbolic.

    The convolutional body is batch-agnostic; the decoding tail is not (GatherND indices built as
    [0, y, x], Reshapes to [1, ...], [17, -1]). The tail is rebuilt with batch-aware ops from the
    model's own constants (centre weighting, the dequantised coordinate grids, the 1.8 distance
    bias, the 1/48 scale), reproducing its arithmetic: centre = argmax(centre heatmap x weight);
    regressed joint = centre + regression at centre; joint cell = argmax(heat / (distance to the
    regressed joint + 1.8)); output = (cell + offset at cell) / 48 and the heat there as score.
    Raises ValueError if the graph is not the expected MoveNet layout. Already-dynamic input is returned.
    """
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
    inp = helper.make_tensor_value_info(g.input[0].name, onnx.TensorProto.UINT8, ["batch", h * 4, w * 4, 3])
    out = helper.make_tensor_value_info(out_name, onnx.TensorProto.FLOAT, ["batch", 1, k, 3])
    graph = helper.make_graph(body + nodes, g.name, [inp], [out], inits)
    new = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    onnx.checker.check_model(new)
    return new.SerializeToString()


class MoveNet:
    """onnxruntime on the batch-dynamic MoveNet Lightning: crops uint8[B, 192, 192, 3] RGB ->
    float32[B, 17, 3] = (x, y) in crop pixels (pixel centres) and score in [0, 1]."""

    def __init__(self, path_or_bytes: str | Path | bytes, num_threads: int = 1,
                 providers: Sequence[str] | None = None, max_batch: int = 64):
        data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
        self.session = onnx_session(make_batch_dynamic(data), num_threads, providers)
        self.input_name = self.session.get_inputs()[0].name
        self.max_batch = max_batch

    def __call__(self, crops: np.ndarray, max_batch: int | None = None) -> np.ndarray:
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"expected uint8 [B, {INPUT_SIZE}, {INPUT_SIZE}, 3], got {crops.dtype} {crops.shape}")
        step = max(1, max_batch or self.max_batch)  # bounds activation memory (~1 MB per crop)
        out = np.zeros((len(crops), NUM_KEYPOINTS, 3), np.float32)
        for s in range(0, len(crops), step):
            yxs = self.session.run(None, {self.input_name: np.ascontiguousarray(crops[s:s + step])})[0][:, 0]
            # normalised [0, 1] over the crop's extent -> pixel centres
            out[s:s + step, :, 0] = yxs[:, :, 1] * INPUT_SIZE - 0.5
            out[s:s + step, :, 1] = yxs[:, :, 0] * INPUT_SIZE - 0.5
            out[s:s + step, :, 2] = yxs[:, :, 2]
        return out


@dataclass(frozen=True)
class TopDownParams:
    crop_margin: float = 1.25  # crop side / longer box side (MoveNet's recipe)
    low_confidence: float = 0.3  # keypoints scoring below are flagged low-confidence (occluded), kept
    min_keypoints: int = 3  # confident keypoints needed to keep a person
    duplicate_oks: float = 0.8  # two poses in a frame with OKS above this are one person: keep the better
    outside_box_fraction: float = 0.5  # drop when more than this share of confident keypoints is outside
    outside_box_expand: float = 0.15  # ... the detector box grown by this fraction of its size per side
    # Crops per model call (bounds activation memory). 20 real crops in one call vs 20 calls, on
    # this 2-core CPU: 0.72x at 2 threads, 1.13x at 1 thread (no gain without threads to fill);
    # benchmarks/topdown_batching.py.
    max_crops_per_call: int = 64
    # Average each crop's pose with its mirror image's (the usual top-down test-time flip), at twice
    # the keypoint-model cost. Off by default: measured AP +0.013 on eval/coco, -0.019 on OCHuman
    # and -0.012 on CrowdPose, since in a crowded crop the mirror pass can centre another person.
    flip_test: bool = False


def low_confidence_mask(keypoints: np.ndarray, threshold: float) -> np.ndarray:
    """float[P, 17, 3] -> bool[P, 17]: True where the score is below threshold or x is NaN."""
    return (keypoints[..., 2] < threshold) | np.isnan(keypoints[..., 0])


def _inside_fraction(xy: np.ndarray, ok: np.ndarray, boxes: np.ndarray, expand: float) -> np.ndarray:
    """Share of the ok keypoints inside each grown box: xy [n, K, 2], ok bool[n, K], boxes [n, 4] -> [n]."""
    pad = expand * (boxes[:, 2:] - boxes[:, :2])
    lo, hi = (boxes[:, :2] - pad)[:, None], (boxes[:, 2:] + pad)[:, None]
    inside = np.all((xy >= lo) & (xy <= hi), axis=-1) & ok
    return inside.sum(1) / np.maximum(ok.sum(1), 1)


class TopDownKeypoints:
    """FrameBatch + per-frame detector boxes -> PoseBatch(mode="topdown"), all crops in one model call
    (chunked at params.max_crops_per_call). `last_dropped` counts the people dropped by the last call."""

    def __init__(self, model: MoveNet, params: TopDownParams = TopDownParams()):
        self.model = model
        self.params = params
        self.last_dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)

    def __call__(self, frames: FrameBatch, detections: Sequence[tuple[np.ndarray, np.ndarray]]) -> PoseBatch:
        """detections: per frame (boxes float[n, 4] xyxy, scores float[n]) in frame-batch image px."""
        if len(detections) != len(frames):
            raise ValueError(f"{len(detections)} detection lists for {len(frames)} frames")
        p = self.params
        per_frame = [np.asarray(b, np.float32).reshape(-1, 4) for b, _ in detections]
        boxes = np.concatenate([*per_frame, np.zeros((0, 4), np.float32)])  # [n, 4], n over all frames
        det_score = np.concatenate([np.asarray(s, np.float32).reshape(-1) for _, s in detections]
                                   + [np.zeros(0, np.float32)])
        if len(det_score) != len(boxes):
            raise ValueError(f"{len(det_score)} detector scores for {len(boxes)} boxes")
        frame_of = np.repeat(np.arange(len(frames), dtype=np.int64), [len(b) for b in per_frame])  # [n]
        A, A_inv = crop_transforms(boxes, p.crop_margin)
        kps = np.zeros((len(boxes), NUM_KEYPOINTS, 3), np.float32)
        # Warp and infer chunk by chunk: crops of several frames share a call, memory stays bounded.
        for s in range(0, len(boxes), p.max_crops_per_call):
            sl = slice(s, s + p.max_crops_per_call)
            crops = np.concatenate([warp_crops(frames.images[f], A[sl][frame_of[sl] == f])
                                    for f in np.unique(frame_of[sl])])
            kps[sl] = self._infer(crops)
        kps[:, :, :2] = apply_affine(kps[:, :, :2], A_inv)
        # Person score: how sure the detector is times how sure MoveNet is on average over all 17
        # joints (a crop of a background object still returns 17 joints, at low scores).
        score = det_score * kps[:, :, 2].mean(1)  # [n]

        keep, order = self._crowd_filter(kps, boxes, score, frame_of)
        idx = order[keep[order]]
        # image px -> video px, as the bottom-up stage maps its pixel centres
        to_vid = lambda v: (v + 0.5) * frames.scale - 0.5
        out_kp = kps[idx].copy()
        out_kp[:, :, :2] = to_vid(out_kp[:, :, :2])
        out_det = to_vid(boxes[idx]).astype(np.float32)
        confident = out_kp[:, :, 2] >= p.low_confidence
        xy = np.where(confident[..., None], out_kp[:, :, :2], np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows fall back to the det box below
            bbox = np.concatenate([np.nanmin(xy, 1), np.nanmax(xy, 1)], 1)
        bbox = np.where((confident.sum(1) >= 2)[:, None], bbox, out_det).astype(np.float32)
        fi = frame_of[idx]
        return PoseBatch(
            video_id=frames.video_id, frames=frames.frame_index, frame_time_s=frames.time_s,
            frame_index=frames.frame_index[fi], time_s=frames.time_s[fi], keypoints=out_kp,
            bbox=bbox, score=score[idx].astype(np.float32), det_bbox=out_det,
            det_score=det_score[idx], mode="topdown",
        )

    def _infer(self, crops: np.ndarray) -> np.ndarray:
        """uint8[B, S, S, 3] -> float32[B, 17, 3] crop px; with flip_test, averaged with the
        mirrored crops' poses (mirrored back, left/right swapped), all in one model call."""
        if not self.params.flip_test:
            return self.model(crops, max_batch=self.params.max_crops_per_call)
        both = self.model(np.concatenate([crops, crops[:, :, ::-1]]), max_batch=self.params.max_crops_per_call)
        plain, mirrored = both[: len(crops)], both[len(crops):, FLIP_PAIRS]
        mirrored[:, :, 0] = crops.shape[2] - 1 - mirrored[:, :, 0]  # pixel centres: x -> S - 1 - x
        return (plain + mirrored) / 2

    def _crowd_filter(self, kps: np.ndarray, boxes: np.ndarray, score: np.ndarray, frame_of: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """-> (keep bool[n], order int[n]: frame by frame, best person first). Updates last_dropped.

        MoveNet returns the person nearest the crop centre, so in a crowd a box can come back with
        its neighbour's pose. Such a pose lies mostly outside its own box, or repeats a pose already
        kept: the second is resolved like NMS, visiting people by how well they fit their own box
        (then by score) and dropping any whose OKS with a kept one exceeds duplicate_oks.
        """
        p = self.params
        dropped = dict.fromkeys(DROP_REASONS, 0)
        conf = kps[:, :, 2] >= p.low_confidence
        fit = _inside_fraction(kps[:, :, :2], conf, boxes, p.outside_box_expand)
        keep = conf.sum(1) >= p.min_keypoints
        dropped["few_keypoints"] = int((~keep).sum())
        outside = keep & (fit < 1 - p.outside_box_fraction)
        dropped["outside_box"] = int(outside.sum())
        keep &= ~outside
        area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
        orders = []
        for f in np.unique(frame_of):
            members = np.flatnonzero(frame_of == f)
            if keep[members].sum() > 1:
                sub = members[keep[members]]
                oks = shared_oks(kps[sub, :, :2], conf[sub], area[sub], p.min_keypoints)
                kept: list[int] = []
                for j in np.lexsort((-score[sub], -fit[sub])):
                    if any(oks[j, i] > p.duplicate_oks for i in kept):
                        keep[sub[j]] = False
                        dropped["duplicate"] += 1
                    else:
                        kept.append(j)
            orders.append(members[np.argsort(-score[members], kind="stable")])
        self.last_dropped = dropped
        return keep, (np.concatenate(orders) if orders else np.zeros(0, np.int64))
