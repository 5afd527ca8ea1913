"""What every person detector shares: frames in, per-frame boxes and scores out, and the geometry
around it (letterbox, the fine pass's size and merge, clipping, NMS).

Every detector (`rtmdet.py`, `yolox.py`) returns, per frame, boxes float32[n, 4] = (x1, y1, x2, y2)
in image pixels clipped to the image and scores float32[n], sorted by score, highest first; n may be 0.

RTMDet's input is dynamic, so on frames larger than its 320 px it runs a second, finer pass (the
frame's longer side at `fine_side` px) and adds the boxes of people the 320 px pass did not find.
The 320 px pass alone shrinks a 960x540 crowd frame 3x and finds 0.46 of the people at 44 per
frame; the two passes find 0.67 (benchmarks/detector_layouts.py). The first pass's boxes win where
both passes see a person: preferring the fine boxes finds more people in crowds (a 640 px pass
alone: 0.73) but lowered top-down AP on the COCO, OCHuman and CrowdPose photos (0.608 -> 0.548,
0.195 -> 0.181, 0.777 -> 0.740), whose people are large. SAHI-style tiles of the same pixel count
found fewer people than the whole-frame pass (0.68 for 2x1 tiles at the same cost): people cut at
the seams.
"""
from __future__ import annotations

import cv2
import numpy as np

from stages.pose.params import DetectorParams
from stages.coco17 import box_iou

Detections = tuple[np.ndarray, np.ndarray]  # boxes float32[n, 4] (x1, y1, x2, y2), scores float32[n]
NET_MULTIPLE = 32  # RTMDet's coarsest stride: its input sides must divide by it
# A frame whose longer side is at most this many times the first pass's input loses little there
# (a 480x360 frame is shrunk by 1.5); only larger frames get the fine pass.
FINE_PASS_FROM = 1.5


def empty_detections() -> Detections:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)


def letterbox(images_rgb: np.ndarray, size: int | tuple[int, int], pad_value: int = 114
              ) -> tuple[np.ndarray, float]:
    """uint8[N, H, W, 3] RGB -> (uint8[N, size_h, size_w, 3] BGR, r); size = side or (width, height).

    Keep-ratio resize by r = min(size_w / W, size_h / H) (cv2 INTER_LINEAR, as both detectors were
    trained), image at the top-left, `pad_value` right and bottom: network px = image px * r.
    """
    n, h, w = frames_shape(images_rgb)
    if h == 0 or w == 0:
        raise ValueError(f"cannot letterbox empty frames of size {w}x{h}")
    size_w, size_h = (size, size) if isinstance(size, int) else size
    r = min(size_w / w, size_h / h)
    # Half-up rounding like mmcv's rescale (Python's round() would send 212.5 to 212).
    new_w, new_h = min(size_w, max(1, int(w * r + 0.5))), min(size_h, max(1, int(h * r + 0.5)))
    out = np.full((n, size_h, size_w, 3), pad_value, np.uint8)
    for i in range(n):
        resized = cv2.resize(images_rgb[i], (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        out[i, :new_h, :new_w] = resized[:, :, ::-1]  # RGB -> BGR in the same copy
    return out, r


def fine_input(height: int, width: int, base: int, fine_side: int) -> tuple[int, int] | None:
    """(width, height) of the fine pass's input for a frame, or None where it is not run.

    The frame's longer side becomes fine_side (never more than the frame's own, rounded up to
    NET_MULTIPLE), the other side follows the aspect ratio, padded up to NET_MULTIPLE: a 960x540
    frame runs at 640x384, not on a 640x640 square of which 40% would be padding.
    """
    long_side = max(height, width)
    if fine_side <= 0 or long_side <= FINE_PASS_FROM * base:
        return None
    r = min(fine_side, -(-long_side // NET_MULTIPLE) * NET_MULTIPLE) / long_side
    up = lambda v: max(NET_MULTIPLE, -(-int(v * r + 0.5) // NET_MULTIPLE) * NET_MULTIPLE)
    return up(width), up(height)


def needs_fine_pass(first: Detections, r: float, below: float) -> bool:
    """Whether a frame's first-pass detections (image px, r = network px per image px) leave room
    for people the pass could not resolve: none found, boxes that touch, or a person under `below`
    network px tall."""
    boxes = first[0]
    if not len(boxes) or ((boxes[:, 3] - boxes[:, 1]) * r < below).any():
        return True
    iou = box_iou(boxes, boxes)
    np.fill_diagonal(iou, 0.0)
    return bool((iou > 0).any())


def add_missed(first: Detections, fine: Detections, overlap_iou: float, max_people: int) -> Detections:
    """The first pass's boxes plus the fine pass's boxes that overlap none of them by overlap_iou.

    Every first-pass box is kept as it is: where both passes see a person, the coarse view is the
    one the detector was trained at (320 px), and large people come out better there.
    """
    boxes, scores = fine
    if len(first[0]) and len(boxes):
        new = box_iou(boxes, first[0]).max(axis=1) < overlap_iou
        boxes, scores = boxes[new], scores[new]
    boxes, scores = np.concatenate([first[0], boxes]), np.concatenate([first[1], scores])
    order = np.argsort(-scores, kind="stable")[:max_people]
    return np.ascontiguousarray(boxes[order]), np.ascontiguousarray(scores[order])


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: boxes [n, 4] (x1, y1, x2, y2), scores [n] -> int64[k] kept indices, score desc.

    A box is dropped when its IoU with a higher-scoring kept box is > iou_threshold (OpenCV's
    `cv2.dnn.NMSBoxes`; callers pass the candidates above their score threshold).
    """
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    b = np.asarray(boxes, np.float64)
    xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), np.asarray(scores, np.float64).tolist(), 0.0, iou_threshold)
    return np.asarray(keep, np.int64).reshape(-1)


def frames_shape(images_rgb: np.ndarray) -> tuple[int, int, int]:
    if not isinstance(images_rgb, np.ndarray) or images_rgb.dtype != np.uint8 or images_rgb.ndim != 4 \
            or images_rgb.shape[3] != 3:
        got = f"{images_rgb.dtype} {images_rgb.shape}" if isinstance(images_rgb, np.ndarray) else type(images_rgb)
        raise ValueError(f"expected uint8 [N, H, W, 3] RGB frames, got {got}")
    n, h, w, _ = images_rgb.shape
    return n, h, w


def to_image(boxes: np.ndarray, scores: np.ndarray, r: float, height: int, width: int,
              params: DetectorParams) -> Detections:
    """Network-input boxes [n, 4] -> image px, clipped; slivers dropped, score desc, at most max_people."""
    boxes = boxes.astype(np.float32) / np.float32(r)
    np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
    # Sizes after clipping: a person mostly outside the frame leaves a sliver that no pose fits.
    big = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= params.min_box_size
    boxes, scores = boxes[big], scores[big].astype(np.float32)
    order = np.argsort(-scores, kind="stable")[: params.max_people]
    return np.ascontiguousarray(boxes[order]), np.ascontiguousarray(scores[order])
