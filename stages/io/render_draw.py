"""Drawing a frame's people on its image: 2D skeletons, track ids, boxes, the fitted 3D body projected.

Pure functions on numpy arrays (cv2 for anti-aliased lines and text); nothing here reads files.
Images are RGB uint8 (as VideoReader gives them), so the colours below are RGB.

Coordinates in the tables are video pixels, upright; `scale` (image pixels per video pixel) lets the
same rows be drawn on a shrunk copy (contact-sheet tiles). Line widths follow the image size, so a
tile and a full frame look alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# COCO's own skeleton (person_keypoints "skeleton", made 0-based): legs, hips, torso, arms, face.
EDGES: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)
HEAD = (0, 1, 2, 3, 4)  # nose, eyes, ears: where the track id goes
# Fixed palette indexed by track id (id % len), so a person keeps a colour for the whole video and
# across renders. Saturated hues only: grey means "no track id" and white-ish is the 3D body.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40), (128, 0, 0),
)
UNTRACKED = (150, 150, 150)
_AA = cv2.LINE_AA
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel positions, which matter on small tiles
_ONE = 1 << _SHIFT


def track_colour(track_id: int) -> tuple[int, int, int]:
    """The palette colour of a track id; grey for a row without one (negative id)."""
    return UNTRACKED if track_id < 0 else PALETTE[int(track_id) % len(PALETTE)]


def _dim(c: tuple[int, int, int]) -> tuple[int, int, int]:
    # Halfway to dark grey: still the track's hue, clearly weaker than a confident limb.
    return tuple(int(v * 0.45 + 40) for v in c)


def _pale(c: tuple[int, int, int]) -> tuple[int, int, int]:
    # White with a tint of the track: reads as "the same person's 3D body", not a second person.
    return tuple(int(v * 0.25 + 190) for v in c)


@dataclass(frozen=True)
class People:
    """2D rows of a video (or one frame), sorted by frame_index.

    track_id: int64[P], -1 = none; xy: float32[P, 17, 2] video pixels, NaN = not found;
    low: bool[P, 17] kp_low_conf; bbox, det_bbox: float32[P, 4] (det_bbox NaN when null).
    """

    frame_index: np.ndarray
    track_id: np.ndarray
    xy: np.ndarray
    low: np.ndarray
    bbox: np.ndarray
    det_bbox: np.ndarray

    def at(self, frame: int) -> "People":
        s = _rows_of(self.frame_index, frame)
        return People(self.frame_index[s], self.track_id[s], self.xy[s], self.low[s], self.bbox[s], self.det_bbox[s])

    def __len__(self) -> int:
        return len(self.frame_index)


@dataclass(frozen=True)
class Bodies:
    """Fitted bodies projected to the image: uv float32[B, 17, 2] video pixels, NaN = behind the camera."""

    frame_index: np.ndarray
    track_id: np.ndarray
    uv: np.ndarray

    def at(self, frame: int) -> "Bodies":
        s = _rows_of(self.frame_index, frame)
        return Bodies(self.frame_index[s], self.track_id[s], self.uv[s])

    def __len__(self) -> int:
        return len(self.frame_index)


def _rows_of(sorted_frames: np.ndarray, frame: int) -> slice:
    lo, hi = np.searchsorted(sorted_frames, [frame, frame + 1])
    return slice(int(lo), int(hi))


def project(joints: np.ndarray, focal: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Camera-frame points float[B, K, 3] (x right, y down, z forward) -> pixels float32[B, K, 2].

    The fit's camera (stages/body/fit.py): u = f x / z + W / 2, v = f y / z + H / 2, principal point
    at the frame centre of the upright (width, height). Points at z <= 0 cannot be seen: NaN.
    """
    j = np.asarray(joints, np.float64)
    f = np.asarray(focal, np.float64).reshape(-1, 1)
    z = j[..., 2]
    ok = np.isfinite(z) & (z > 1e-6)
    zs = np.where(ok, z, 1.0)
    uv = np.stack([f * j[..., 0] / zs + size[0] / 2, f * j[..., 1] / zs + size[1] / 2], -1)
    uv[~ok] = np.nan
    return uv.astype(np.float32)


def line_width(shape: tuple[int, ...]) -> int:
    """Limb width in pixels for an image of this shape: 4 on a 1080-wide frame, 1-2 on a tile."""
    return max(1, round(min(shape[0], shape[1]) / 270))


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]) * _ONE)), int(round(float(p[1]) * _ONE))


def _dashed(img: np.ndarray, a: np.ndarray, b: np.ndarray, colour, width: int, dash: float) -> None:
    """A dashed segment a -> b (cv2 has none): dashes of `dash` px with equal gaps."""
    length = float(np.hypot(*(b - a)))
    n = max(1, int(length // (2 * dash)))
    for k in range(n):
        t0, t1 = (2 * k) / (2 * n), (2 * k + 1) / (2 * n)
        cv2.line(img, _pt(a + (b - a) * t0), _pt(a + (b - a) * t1), colour, width, _AA, _SHIFT)


def label(img: np.ndarray, text: str, anchor: tuple[float, float], colour, width: int) -> None:
    """Text centred above `anchor`, dark outline so it reads on any background, kept inside the image."""
    font, fscale = cv2.FONT_HERSHEY_SIMPLEX, max(0.35, width / 3)  # ~30 px tall on a 1080-wide frame
    thick = max(1, width // 2)
    (tw, th), base = cv2.getTextSize(text, font, fscale, thick)
    x = int(np.clip(anchor[0] - tw / 2, 0, max(0, img.shape[1] - tw)))
    y = int(np.clip(anchor[1], th + 1, img.shape[0] - base - 1))
    cv2.putText(img, text, (x, y), font, fscale, (0, 0, 0), thick + 2, _AA)
    cv2.putText(img, text, (x, y), font, fscale, colour, thick, _AA)


def draw_person(img: np.ndarray, xy: np.ndarray, low: np.ndarray, track_id: int, width: int) -> None:
    """One 2D skeleton, in place: confident limbs solid, limbs touching a low-confidence joint dimmed
    and thinner, low-confidence joints hollow, missing (NaN) joints and their limbs not drawn."""
    colour = track_colour(track_id)
    found = np.isfinite(xy).all(-1)
    thin = max(1, width // 2)
    for a, b in EDGES:
        if found[a] and found[b]:
            weak = low[a] or low[b]
            cv2.line(img, _pt(xy[a]), _pt(xy[b]), _dim(colour) if weak else colour, thin if weak else width,
                     _AA, _SHIFT)
    r = (width + 2) * _ONE
    for k in np.flatnonzero(found):
        if low[k]:
            cv2.circle(img, _pt(xy[k]), r, colour, thin, _AA, _SHIFT)
        else:
            cv2.circle(img, _pt(xy[k]), r, colour, -1, _AA, _SHIFT)
            cv2.circle(img, _pt(xy[k]), r, (0, 0, 0), 1, _AA, _SHIFT)  # outline: joints stand out on the limb
    if track_id >= 0 and found.any():
        head = [k for k in HEAD if found[k]]
        pts = xy[head] if head else xy[found]
        label(img, str(int(track_id)), (float(pts[:, 0].mean()), float(pts[:, 1].min()) - 2.5 * (width + 2)),
               colour, width)


def draw_body(img: np.ndarray, uv: np.ndarray, track_id: int, width: int) -> None:
    """The fitted 3D body's keypoints projected, in place: a thin dashed pale skeleton over the 2D one,
    so where the fit and the detections disagree both are visible."""
    colour = _pale(track_colour(track_id))
    found = np.isfinite(uv).all(-1)
    thin = max(1, width // 2)
    for a, b in EDGES:
        if found[a] and found[b]:
            _dashed(img, uv[a].astype(np.float64), uv[b].astype(np.float64), colour, thin, dash=2.0 * width + 2)
    for k in np.flatnonzero(found):
        cv2.circle(img, _pt(uv[k]), thin * _ONE, colour, -1, _AA, _SHIFT)


def draw_box(img: np.ndarray, box: np.ndarray, colour, width: int) -> None:
    if np.isfinite(box).all():
        cv2.rectangle(img, _pt(box[:2]), _pt(box[2:]), colour, width, _AA, _SHIFT)


def draw_floor(img: np.ndarray, polylines: np.ndarray, width: int) -> None:
    """The floor grid the body fit assumed (ground.floor_grid, image pixels), thin and grey, under the people."""
    for line in polylines:
        ok = np.isfinite(line).all(1)
        pts = np.round(line[ok]).astype(np.int32)
        if len(pts) > 1:
            cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, (150, 150, 150), width, cv2.LINE_AA)


def draw_frame(image: np.ndarray, people: People, bodies: Bodies | None = None, boxes: bool = False,
               scale: float = 1.0, floor: np.ndarray | None = None) -> np.ndarray:
    """A copy of `image` (RGB uint8 [H, W, 3]) with one frame's people (and fitted bodies) drawn, over the
    floor grid (float[L, N, 2] video pixels, ground.floor_grid) when the fit found one.

    scale: image pixels per video pixel of the rows. With boxes, each person's detector box is drawn
    (top-down people); a bottom-up person has none, so its keypoint box is drawn instead, dimmed.
    """
    img = np.ascontiguousarray(image).copy()
    width = line_width(img.shape)
    if floor is not None:
        draw_floor(img, floor * scale, max(1, width // 2))
    for i in range(len(people)):
        tid = int(people.track_id[i])
        if boxes:
            det = people.det_bbox[i]
            colour = track_colour(tid)
            if np.isfinite(det).all():
                draw_box(img, det * scale, colour, max(1, width // 2))
            else:
                draw_box(img, people.bbox[i] * scale, _dim(colour), max(1, width // 2))
        draw_person(img, people.xy[i] * scale, people.low[i], tid, width)
    if bodies is not None:
        for i in range(len(bodies)):
            draw_body(img, bodies.uv[i] * scale, int(bodies.track_id[i]), width)
    return img


def pad_even(img: np.ndarray) -> np.ndarray:
    """Pad to even width and height (yuv420p encoders need them) by repeating the last row/column,
    so no pixel moves and keypoint coordinates stay valid."""
    h, w = img.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return img
    return np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
