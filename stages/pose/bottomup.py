"""Bottom-up pose: network pass (FrameBatch -> MapBatch) and PAF grouping (MapBatch -> PoseBatch).

The two halves are separate stages so the network can sit on a GPU while grouping (CPU work that
grows slowly with the number of people) runs beside it; float16 maps travel between them.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import cv2
import numpy as np

from stages.batches import FrameBatch, MapBatch, PoseBatch
from stages.coco17 import keypoint_boxes
from stages.pose.heatmap import find_peaks_stack
from stages.pose.paf import NUM_PARTS, group_people
from stages.pose.params import BottomUpParams

if TYPE_CHECKING:  # torch is imported where it runs, so actors without a network skip it
    import torch


def net_input_size(width: int, height: int, net_height: int, multiple: int) -> tuple[int, int]:
    """(W, H) of the network input for a frame: height fixed, aspect ratio kept to within rounding."""
    w = max(multiple, round(width * net_height / height / multiple) * multiple)
    h = max(multiple, round(net_height / multiple) * multiple)
    return w, h


def net_sizes(width: int, height: int, params: BottomUpParams) -> list[tuple[int, int]]:
    """(W, H) network inputs of a frame's passes, coarsest first: the last one's map size is the output's."""
    heights = [params.net_height]
    if params.second_height:
        heights.append(height if params.second_height == "frame" else params.second_height)
    sizes = {net_input_size(width, height, h, params.size_multiple) for h in heights}
    return sorted(sizes, key=lambda size: size[1])


def average_maps(passes: list[np.ndarray]) -> np.ndarray:
    """float[N, C, h_i, w_i] maps of one batch at several input scales -> float[N, C, h, w], their
    mean at the last (finest) one's size; coarser maps are resized bicubically, pixel centres aligned,
    as every pass covers the whole frame."""
    if len(passes) == 1:
        return passes[0]  # as the network gave it (float16 from torch): MapBatch stores float16 anyway
    total = np.array(passes[-1], np.float32)
    h, w = total.shape[2:]
    for maps in passes[:-1]:
        for i, frame in enumerate(np.asarray(maps, np.float32)):
            # cv2 resizes channels-last images of up to 512 channels in one call
            total[i] += cv2.resize(frame.transpose(1, 2, 0), (w, h), interpolation=cv2.INTER_CUBIC).transpose(2, 0, 1)
    return total / len(passes)


def to_net_input(images_rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8[N, H, W, 3] RGB -> float32[N, h, w, 3] BGR raw 0..255 (what the network was trained on)."""
    w, h = size
    shrinking = w < images_rgb.shape[2]
    # INTER_AREA averages when shrinking (no aliasing on 1080p input); cubic, as upstream, when enlarging.
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    out = np.empty((len(images_rgb), h, w, 3), np.float32)
    for i, img in enumerate(images_rgb):
        # cvtColor, not img[:, :, ::-1]: resize copies a reversed view slowly (1.2 vs 2.8 ms per 480x360
        # frame, the same bytes out).
        out[i] = cv2.resize(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), (w, h), interpolation=interp)
    return out


def place_net(net: torch.nn.Module, device: str, half: bool, dtype: torch.dtype | None = None):
    """(net in inference mode on the device, channels-last, device, dtype): float16 on CUDA when
    `half`, else float32; `dtype` forces a precision anywhere (tests check float16 on CPU)."""
    import torch  # here, not at the top: the sink and decode actors import this module's params only

    device = torch.device(device)
    if dtype is None:
        dtype = torch.float16 if (half and device.type == "cuda") else torch.float32
    return net.eval().to(device, dtype).to(memory_format=torch.channels_last), device, dtype


class TorchForward:
    """Runs a torch module on BGR batches: one call per batch, inference mode, channels-last,
    float16 on CUDA (`half`); `dtype` forces a precision anywhere (tests check float16 on CPU)."""

    def __init__(self, net: torch.nn.Module, device: str = "cpu", half: bool = True,
                 dtype: torch.dtype | None = None):
        self.net, self.device, self.dtype = place_net(net, device, half, dtype)

    def __call__(self, images_bgr: np.ndarray) -> np.ndarray:
        """float32[N, H, W, 3] -> float16[N, C, h, w]."""
        # On a CPU one frame at a time is 10-25% faster per frame than a batch (cache-sized
        # activations; benchmarks/tfpose_backends.py); a GPU takes the whole batch in one call.
        chunks = np.split(images_bgr, len(images_bgr)) if self.device.type == "cpu" else [images_bgr]
        import torch

        with torch.inference_mode():
            # A permuted NHWC tensor is already channels-last in memory: no copy before the net.
            out = [self.net(torch.from_numpy(c).to(self.device, self.dtype).permute(0, 3, 1, 2)) for c in chunks]
            return torch.cat(out).to(torch.float16).cpu().numpy()


class BottomUpNet:
    """FrameBatch -> MapBatch with any forward callable float32[N,H,W,3] BGR -> [N,57,h,w]."""

    def __init__(self, forward: Callable[[np.ndarray], np.ndarray], params: BottomUpParams):
        self.forward = forward
        self.params = params

    def __call__(self, batch: FrameBatch) -> MapBatch:
        n, h, w, _ = batch.images.shape
        sizes = net_sizes(w, h, self.params)
        size = sizes[-1]
        if n:
            maps = average_maps([self.forward(to_net_input(batch.images, s)) for s in sizes])
        else:
            maps = np.zeros((0, 57, 1, 1))
        return MapBatch(
            video_id=batch.video_id, frame_index=batch.frame_index, time_s=batch.time_s,
            maps=np.asarray(maps, np.float16), net_size=size, image_size=(w, h), scale=batch.scale,
        )


def _active_window(heat: np.ndarray, params: BottomUpParams) -> tuple[slice, slice] | None:
    """Rows and columns of heat float32[h, w, K] (map pixels) outside which the upsampled, blurred
    maps cannot exceed the peak threshold; None when they exceed it nowhere.

    Bicubic interpolation (a = -0.75) weighs a 4x4 neighbourhood with |weights| summing to at most
    1.375 per axis (1.89 in 2D), and the Gaussian's weights are positive and sum to 1: an upsampled,
    blurred value is at most 1.89x the largest |value| within 2 + blur radius map pixels. So only map
    pixels above half the threshold can make peaks. The window is their bounding box grown by twice
    that reach (plus the 3x3 peak test): inside, crop and full map give the same bytes (the border
    rules act only at the map's own edges or beyond the reach), so peaks come out bit-identical while
    a frame with a few people upsamples a fraction of it.
    """
    near = (np.abs(heat) > 0.5 * params.peak_threshold).any(axis=2)
    rows, cols = np.flatnonzero(near.any(axis=1)), np.flatnonzero(near.any(axis=0))
    if not len(rows):
        return None
    radius = (_gaussian_ksize(params.blur_sigma) // 2 + 1) / params.upsample  # blur + peak test, map pixels
    margin = 2 * (2 + int(np.ceil(radius))) + 1
    h, w = near.shape
    return (slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h)),
            slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w)))


def _gaussian_ksize(sigma: float) -> int:
    """The kernel size cv2.GaussianBlur picks for a float image and ksize (0, 0)."""
    return (int(round(sigma * 8 + 1)) | 1) if sigma > 0 else 1


def decode_maps(maps: np.ndarray, params: BottomUpParams) -> tuple[np.ndarray, np.ndarray]:
    """People of one frame from its network output.

    maps: float[57, h, w] (18 part heatmaps + background, then 38 PAF channels).
    Returns (keypoints float32[M, 17, 3] in map pixels, COCO-17; score float32[M]).
    """
    heat = np.ascontiguousarray(maps[:NUM_PARTS].transpose(1, 2, 0), np.float32)
    pafs = maps[NUM_PARTS + 1 :].astype(np.float32)
    up = params.upsample
    window = _active_window(heat, params)
    if window is None:
        return group_people([np.zeros((0, 2), np.float32)] * NUM_PARTS, [np.zeros(0, np.float32)] * NUM_PARTS,
                            pafs, params.grouping)
    crop = heat[window]
    h, w = crop.shape[:2]
    # Peaks are found on upsampled, smoothed maps: stride 8 alone would quantise a 1080p frame to
    # ~20 px, and the blur keeps one maximum per blob so parabola refinement has a clean top.
    heat_up = cv2.resize(crop, (w * up, h * up), interpolation=cv2.INTER_CUBIC)
    if params.blur_sigma > 0:
        heat_up = cv2.GaussianBlur(heat_up, (0, 0), params.blur_sigma)
    peaks = find_peaks_stack(heat_up.reshape(h * up, w * up, NUM_PARTS), params.peak_threshold,
                             origin=(window[1].start * up, window[0].start * up))
    peaks_xy = [(xy + 0.5) / up - 0.5 for xy, _ in peaks]  # back to map pixels, where the PAFs live
    peak_scores = [score for _, score in peaks]
    keypoints, score = group_people(peaks_xy, peak_scores, pafs, params.grouping)
    order = np.argsort(-score, kind="stable")  # people leave each frame best first
    return keypoints[order], score[order]


class BottomUpGrouper:
    """MapBatch -> PoseBatch: peaks, PAF limb scores, Hungarian matching and assembly per frame."""

    def __init__(self, params: BottomUpParams):
        self.params = params

    def __call__(self, batch: MapBatch) -> PoseBatch:
        people = [decode_maps(maps, self.params) for maps in batch.maps]
        return people_batch(batch.video_id, batch.frame_index, batch.time_s, people,
                            (batch.stride, batch.net_size, batch.image_size, batch.scale))


def people_batch(video_id: str, frame_index: np.ndarray, time_s: np.ndarray,
                 people: list[tuple[np.ndarray, np.ndarray]], geometry: tuple) -> PoseBatch:
    """PoseBatch of frames' people found in map pixels, moved to video pixels.

    people[i]: frame i's (keypoints float32[P, 17, 3] in map pixels, score float32[P]), best first;
    geometry: (stride, net_size (W, H), image_size (W, H), scale) as in MapBatch.
    """
    stride, net_size, image_size, scale = geometry
    # map pixel -> video pixel: x_vid = (x_map + 0.5) * k - 0.5, k = stride * image/net * scale
    k = np.array([stride * image_size[0] / net_size[0] * scale, stride * image_size[1] / net_size[1] * scale],
                 np.float32)
    kps, scores, frame_of = [], [], []
    for i, (kp, score) in enumerate(people):
        kp[:, :, :2] = (kp[:, :, :2] + 0.5) * k - 0.5
        kps.append(kp)
        scores.append(score)
        frame_of.append(np.full(len(kp), i, np.int64))
    idx = np.concatenate(frame_of) if frame_of else np.zeros(0, np.int64)
    keypoints = np.concatenate(kps) if kps else np.zeros((0, 17, 3), np.float32)
    return PoseBatch(
        video_id=video_id, frames=frame_index, frame_time_s=time_s,
        frame_index=frame_index[idx], time_s=time_s[idx],
        keypoints=keypoints.astype(np.float32), bbox=keypoint_boxes(keypoints[:, :, :2]),
        score=(np.concatenate(scores) if scores else np.zeros(0)).astype(np.float32),
    )
