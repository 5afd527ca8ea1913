"""Bottom-up pose with every heavy step on one torch device: FrameBatch -> PoseBatch in the pose actor.

The CPU path (bottomup.py) ships float16 maps [N, 57, h, w] from the network to a grouping actor that
upsamples, blurs and scans them with numpy/cv2. On a GPU those steps are a few kernels, and what a
frame really needs to leave the device is small: per part its peaks, per limb the scores of its
candidate pairs. `DeviceBottomUp` computes exactly those on the device, mirroring the numpy
semantics step by step (resize as to_net_input, cv2 cubic upsample and Gaussian blur, 3x3 maxima,
parabola refinement, PAF line integrals as paf.limb_scores_all), copies them to the host once per
batch, and runs only the Hungarian matching and assembly (paf.people_from_limbs) per frame on CPU.

Coordinates follow heatmap.py: pixel centres at integers, map pixel -> video pixel
x_vid = (x_map + 0.5) * k - 0.5 with k = stride * image / net * scale (as BottomUpGrouper).
"""
from __future__ import annotations

import warnings

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from stages.batches import FrameBatch, PoseBatch
from stages.pose.bottomup import net_sizes, people_batch, place_net
from stages.pose.paf import LIMBS, NUM_PARTS, people_from_limbs, samples_needed
from stages.pose.params import BottomUpParams, GroupingParams

STRIDE = 8  # TfPoseNet's output stride (MapBatch.stride)


# --- resize taps (host side, tiny): out[i] = sum_t w[i, t] * in[idx[i, t]] along one axis ---------

def _area_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """cv2 INTER_AREA when shrinking (computeResizeAreaTab): each output averages the input cells it
    covers, partial cells by their overlap. Returns (idx int64[n_out, T], w float32[n_out, T]),
    unused taps padded with weight 0 (adding 0 leaves a float sum unchanged)."""
    scale = 1.0 / (n_out / n_in)  # cv2's double 1 / inv_scale, not n_in / n_out: the last bit can differ
    rows = []
    for dx in range(n_out):
        f1 = dx * scale
        f2 = f1 + scale
        cell = min(scale, n_in - f1)
        s2 = min(int(np.floor(f2)), n_in - 1)
        s1 = min(int(np.ceil(f1)), s2)
        taps = [(s1 - 1, (s1 - f1) / cell)] if s1 - f1 > 1e-3 else []
        taps += [(s, 1.0 / cell) for s in range(s1, s2)]
        if f2 - s2 > 1e-3:
            taps.append((s2, min(f2 - s2, 1.0, cell) / cell))
        rows.append(taps)
    t = max(map(len, rows))
    idx = np.array([[s for s, _ in r] + [0] * (t - len(r)) for r in rows], np.int64)
    w = np.array([[a for _, a in r] + [0.0] * (t - len(r)) for r in rows], np.float32)
    return idx, w


def _cubic_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """cv2 INTER_CUBIC (a = -0.75, half-pixel centres, indices clamped at the border), 4 taps."""
    f = ((np.arange(n_out) + 0.5) * (1.0 / (n_out / n_in)) - 0.5).astype(np.float32)
    s = np.floor(f)
    t = (f - s).astype(np.float64)[:, None] + np.array([1.0, 0.0, -1.0, -2.0])  # distance to each tap
    a, d = -0.75, np.abs(t)
    w = np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a)
    idx = np.clip(s.astype(np.int64)[:, None] + np.arange(-1, 3), 0, n_in - 1)
    return idx, w.astype(np.float32)


def _linear_area_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """cv2 INTER_AREA when an axis enlarges: bilinear with cv2's 'area' fractions, 2 taps."""
    scale, inv = 1.0 / (n_out / n_in), n_out / n_in
    dx = np.arange(n_out)
    sx = np.floor(dx * scale).astype(np.int64)
    fx = (dx + 1) - (sx + 1) * inv
    fx = np.where(fx <= 0, 0.0, fx - np.floor(fx))
    edge = (sx < 0) | (sx >= n_in - 1)
    sx, fx = np.clip(sx, 0, n_in - 1), np.where(edge, 0.0, fx)
    return np.stack([sx, np.minimum(sx + 1, n_in - 1)], 1), np.stack([1 - fx, fx], 1).astype(np.float32)


def net_input_taps(width: int, height: int, size: tuple[int, int]):
    """((x idx, x w), (y idx, y w), half_up) reproducing to_net_input's cv2.resize of a (width, height)
    frame; half_up: round .5 up, not to even (cv2's exact-2x shrink sums 4 pixels, adds 2, shifts).

    Measured against cv2 5.0 (tests/test_bottomup_torch.py checks the first two): shrinking
    (INTER_AREA: 640x429, 854x480, 960x540, 1280x720, 1920x1080, exact 2x) is bit-identical on real
    frames and on uniform noise (same float32 weights, sums in cv2's order). Enlarging (INTER_CUBIC,
    float arithmetic in cv2 5 too) differs by 1 grey level on 5e-5 of a real frame's pixels, 5e-4
    of noise's (sums ordered differently). A shrink where one axis enlarges (aspect-ratio rounding,
    e.g. 610x366 -> 608x368) uses cv2's 'area-linear' weights, which cv2 applies in fixed point: 1
    grey level on 13% of pixels. torch's own modes are further off: 'area' is adaptive pooling
    (whole-pixel bins), antialias=True a triangle filter, bicubic rounds nothing.
    """
    w, h = size
    if w >= width:  # to_net_input decides by width: cubic unless the width shrinks
        return _cubic_taps(width, w), _cubic_taps(height, h), False
    if h <= height:
        return _area_taps(width, w), _area_taps(height, h), (width, height) == (2 * w, 2 * h)
    return _linear_area_taps(width, w), _linear_area_taps(height, h), False


def _resample(x: torch.Tensor, dim: int, idx: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Apply taps idx/w [n_out, T] along `dim` of x. Taps are summed one at a time, in cv2's order,
    rather than gathered into an x T-sized tensor: 1/T of the memory and the same float rounding."""
    shape = [1] * x.ndim
    shape[dim] = -1
    out = x.index_select(dim, idx[:, 0]) * w[:, 0].view(shape)
    for t in range(1, idx.shape[1]):
        out = out + x.index_select(dim, idx[:, t]) * w[:, t].view(shape)
    return out


def resize_to_net(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8[N, H, W, 3] RGB -> float32[N, h, w, 3] BGR with integer values 0..255, as to_net_input.

    Horizontal pass then vertical, rounded once at the end (cv2 rounds its uint8 result once too).
    """
    (xi, xw), (yi, yw), half_up = net_input_taps(frames.shape[2], frames.shape[1], size)
    dev = frames.device
    x = _resample(frames.float(), 2, torch.from_numpy(xi).to(dev), torch.from_numpy(xw).to(dev))
    x = _resample(x, 1, torch.from_numpy(yi).to(dev), torch.from_numpy(yw).to(dev))
    x = x.flip(-1)
    return (x.add_(0.5).floor_() if half_up else x.round_()).clamp_(0, 255)


# --- peaks ------------------------------------------------------------------------------------------

def _reflect101(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-n axis padded by `pad` each side, cv2 BORDER_REFLECT_101 (any n >= 1,
    unlike F.pad(mode='reflect'), which needs pad < n)."""
    i = np.arange(-pad, n + pad)
    period = max(2 * (n - 1), 1)
    i = np.abs(i) % period
    return torch.from_numpy(np.where(i >= n, period - i, i) if n > 1 else np.zeros_like(i)).to(device)


def smooth_heatmaps(heat: torch.Tensor, upsample: int, blur_sigma: float) -> torch.Tensor:
    """float32[N, K, h, w] -> float32[N, K, h*up, w*up]: cv2.resize INTER_CUBIC x upsample, then
    cv2.GaussianBlur(sigma) as decode_maps does, on the whole map (decode_maps crops to an active
    window only to save CPU time; it argues that the crop gives the same values)."""
    n, k, h, w = heat.shape
    if upsample != 1:  # torch bicubic uses a = -0.75 and clamped indices, as cv2
        heat = F.interpolate(heat, size=(h * upsample, w * upsample), mode="bicubic", align_corners=False)
    if blur_sigma <= 0:
        return heat
    ksize = int(round(blur_sigma * 8 + 1)) | 1  # what cv2 picks for a float image and ksize (0, 0)
    kernel = torch.from_numpy(cv2.getGaussianKernel(ksize, blur_sigma).astype(np.float32)).to(heat.device)
    x = heat.reshape(n * k, 1, *heat.shape[2:])
    pad = ksize // 2
    # Separable, rows first as cv2's sepFilter2D; reflect-101 borders, cv2's default.
    x = F.conv2d(x.index_select(3, _reflect101(x.shape[3], pad, x.device)), kernel.view(1, 1, 1, -1))
    x = F.conv2d(x.index_select(2, _reflect101(x.shape[2], pad, x.device)), kernel.view(1, 1, -1, 1))
    return x.view(heat.shape)


def _vertex(left: torch.Tensor, mid: torch.Tensor, right: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """heatmap._vertex in float64 (as numpy): a flat top's small curvature amplifies float32 error."""
    left, mid, right = left.double(), mid.double(), right.double()
    curvature = left - 2.0 * mid + right
    ok = inside & (curvature < 0)
    return torch.where(ok, 0.5 * (left - right) / torch.where(ok, curvature, -1.0), 0.0).clamp(-0.5, 0.5)


def find_peaks_device(smooth: torch.Tensor, threshold: float, capacity: int):
    """Local maxima of every channel, as heatmap.find_peaks_stack, padded to a fixed count.

    smooth: float32[N, K, H, W]. A peak exceeds `threshold` and no 3x3 neighbour is higher (ties
    kept; max_pool2d's -inf padding = no outside neighbours). Returns (xy float32[N, K, M, 2] refined
    by a parabola per axis, score float32[N, K, M] descending with ties in raster order, -inf in
    unused slots, count int64[N, K] true number of peaks, which may exceed M = min(capacity, H*W)).
    """
    n, k, h, w = smooth.shape
    is_peak = (smooth >= F.max_pool2d(smooth, 3, stride=1, padding=1)) & (smooth > threshold)
    count = is_peak.sum(dim=(2, 3))
    flat = smooth.reshape(n, k, h * w)
    masked = torch.where(is_peak.reshape(n, k, h * w), flat, -torch.inf)
    _, idx = masked.topk(min(capacity, h * w), dim=-1)
    # topk's order among equal scores is unspecified: raster order first, then a stable sort by score.
    idx = idx.sort(dim=-1).values
    score, order = masked.gather(-1, idx).sort(dim=-1, descending=True, stable=True)
    idx = idx.gather(-1, order)
    rows, cols = idx // w, idx % w

    def at(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return flat.gather(-1, r.clamp(0, h - 1) * w + c.clamp(0, w - 1))

    mid = flat.gather(-1, idx)
    dx = _vertex(at(rows, cols - 1), mid, at(rows, cols + 1), (cols > 0) & (cols < w - 1))
    dy = _vertex(at(rows - 1, cols), mid, at(rows + 1, cols), (rows > 0) & (rows < h - 1))
    xy = torch.stack([cols + dx, rows + dy], dim=-1).float()
    return torch.where(torch.isfinite(score)[..., None], xy, 0.0), score, count


# --- limbs ------------------------------------------------------------------------------------------

def limb_scores_device(pafs: torch.Tensor, xy: torch.Tensor, real: torch.Tensor,
                       params: GroupingParams) -> torch.Tensor:
    """PAF line integral of every candidate pair of every limb, as paf.limb_scores_all.

    pafs: float32[N, 2L, h, w] (limb l in channels 2l, 2l + 1); xy: float32[N, 18, M, 2] peaks in map
    pixels; real: bool[N, 18, M] slots holding a peak. Returns float32[N, L, M, M]: pair (i, j) of
    limb l = (peak i of part a, peak j of part b); its score where valid, -inf where not (the
    matcher never reads an invalid pair's score). All pairs of a padded M x M grid are scored, no
    early rejection: on a GPU a dense grid costs less than finding which pairs to skip. Memory grows
    as M^2: the sample grid and its samples take 2 x N * L * M^2 * S * 8 bytes, 400 MB for a batch of
    8 frames of a crowd with 128 peaks of one part (M = 128).
    """
    n, _, h, w = pafs.shape
    limbs = torch.from_numpy(LIMBS).to(pafs.device)
    a, b = xy[:, limbs[:, 0], :, None], xy[:, limbs[:, 1], None, :]  # [N, L, M, 1, 2], [N, L, 1, M, 2]
    vec = b - a  # [N, L, M, M, 2]
    length = vec.norm(dim=-1)
    unit = vec / length.clamp_min(1e-6)[..., None]
    t = torch.linspace(0.0, 1.0, params.num_samples, device=pafs.device)
    points = a[..., None, :] + t[:, None] * vec[..., None, :]  # [N, L, M, M, S, 2]
    # grid_sample, align_corners=True, border padding: bilinear at pixel-centre coordinates clamped
    # to the map, the same samples as paf._bilinear_taps.
    grid = points / torch.tensor([max(w - 1, 1), max(h - 1, 1)], device=pafs.device) * 2 - 1
    num_limbs, m, s = len(LIMBS), xy.shape[2], params.num_samples
    field = F.grid_sample(pafs.reshape(n * num_limbs, 2, h, w), grid.reshape(n * num_limbs, m * m, s, 2),
                          mode="bilinear", padding_mode="border", align_corners=True)
    field = field.view(n, num_limbs, 2, m, m, s)
    proj = field[:, :, 0] * unit[..., :1] + field[:, :, 1] * unit[..., 1:]  # [N, L, M, M, S]
    score = proj.mean(dim=-1) + (0.5 * h / length.clamp_min(1e-6) - 1.0).clamp(max=0.0)
    # The agreeing share compared as a count: k / S >= fraction is exact in Python floats, as in numpy.
    valid = ((score > 0) & ((proj > params.sample_threshold).sum(dim=-1) >= samples_needed(params)) & (length > 1e-6)
             & real[:, limbs[:, 0], :, None] & real[:, limbs[:, 1], None, :])
    return torch.where(valid, score, -torch.inf)


# --- the stage --------------------------------------------------------------------------------------

class DeviceBottomUp:
    """FrameBatch -> PoseBatch: resize, network, peaks and limb scores on `device`; matching on CPU.

    Precision as TorchForward: float16 network on CUDA when `half`, else float32; `dtype` forces one.
    Resize, upsample, blur and scores run in float32 whatever the network's precision.
    Peaks are kept in M slots per (frame, part), M a power of two sized from the previous batch: the
    one device->host copy per batch says the true counts, and a batch with more peaks than slots is
    redone from its maps with enough (a second copy, only when a crowd grows).
    """

    def __init__(self, net: torch.nn.Module, params: BottomUpParams, device: str = "cpu", half: bool = True,
                 dtype: torch.dtype | None = None):
        self.net, self.device, self.dtype = place_net(net, device, half, dtype)
        self.params = params
        self.capacity = 16  # peak slots per part and frame (M)

    def _small(self, smooth: torch.Tensor, pafs: torch.Tensor) -> tuple[np.ndarray, ...]:
        """Everything grouping needs from the device, in one copy: (count int[N, 18], xy float32[N, 18,
        M, 2] map pixels, score float32[N, 18, M], limb score float32[N, L, M, M])."""
        up = self.params.upsample
        xy, score, count = find_peaks_device(smooth, self.params.peak_threshold, self.capacity)
        xy = (xy + 0.5) / up - 0.5  # upsampled -> map pixels, where the PAFs live
        limbs = limb_scores_device(pafs, xy, torch.isfinite(score), self.params.grouping)
        parts = [count.float(), xy, score, limbs]
        host = torch.cat([p.reshape(-1) for p in parts]).cpu().numpy()
        out = []
        for p in parts:
            out.append(host[: p.numel()].reshape(p.shape))
            host = host[p.numel():]
        return (out[0].astype(np.int64), *out[1:])

    def _maps(self, images: torch.Tensor, sizes: list[tuple[int, int]]) -> torch.Tensor:
        """uint8[N, H, W, 3] on the device -> float32[N, 57, h, w]: one network call per input size
        (the whole batch each), coarser maps resized to the finest and averaged (as `average_maps`)."""
        passes = []
        for size in sizes:
            x = resize_to_net(images, size).to(self.dtype).permute(0, 3, 1, 2)  # NHWC memory = channels-last
            passes.append(self.net(x).float())
        h, w = passes[-1].shape[2:]
        resized = [F.interpolate(m, size=(h, w), mode="bicubic", align_corners=False)
                   for m in passes[:-1]]
        return torch.stack([*resized, passes[-1]]).mean(0) if resized else passes[-1]

    def __call__(self, batch: FrameBatch) -> PoseBatch:
        n, height, width, _ = batch.images.shape
        sizes = net_sizes(width, height, self.params)
        size = sizes[-1]
        frames: list[tuple[np.ndarray, np.ndarray]] = []
        if n:
            with torch.inference_mode():
                with warnings.catch_warnings():
                    # Frames from Ray's object store are read-only; they are only read here (copied
                    # to the device, or converted to float on a CPU), so torch's warning is moot.
                    warnings.filterwarnings("ignore", "The given NumPy array is not writable")
                    images = torch.from_numpy(batch.images).to(self.device)  # uint8: the only big upload
                maps = self._maps(images, sizes)
                smooth = smooth_heatmaps(maps[:, :NUM_PARTS], self.params.upsample, self.params.blur_sigma)
                pafs = maps[:, NUM_PARTS + 1:]
                count, xy, score, limbs = self._small(smooth, pafs)
                if count.max() > xy.shape[2]:  # more peaks than slots: redo with enough of them
                    self.capacity = 1 << int(count.max() - 1).bit_length()
                    count, xy, score, limbs = self._small(smooth, pafs)
            # Size the next batch's slots by this one's crowd (shrinks after a crowd too).
            self.capacity = max(8, 1 << int(max(count.max(), 1) - 1).bit_length())
            frames = [self._people(count[i], xy[i], score[i], limbs[i]) for i in range(n)]
        # From here on as BottomUpGrouper: video pixels, boxes.
        return people_batch(batch.video_id, batch.frame_index, batch.time_s, frames,
                            (STRIDE, size, (width, height), batch.scale))

    def _people(self, count: np.ndarray, xy: np.ndarray, score: np.ndarray,
                limbs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One frame's people from its peaks and limb scores (host arrays of `_small`, frame axis
        dropped): (keypoints float32[P, 17, 3] in map pixels, score float32[P]), best first."""
        peaks_xy = [xy[p, : count[p]] for p in range(NUM_PARTS)]
        peak_scores = [score[p, : count[p]] for p in range(NUM_PARTS)]
        scored = []
        for s in (limbs[limb, : count[a], : count[b]] for limb, (a, b) in enumerate(LIMBS)):
            scored.append((s, np.isfinite(s)))
        kp, person = people_from_limbs(peaks_xy, peak_scores, scored, self.params.grouping)
        order = np.argsort(-person, kind="stable")  # people leave each frame best first (decode_maps)
        return kp[order], person[order]
