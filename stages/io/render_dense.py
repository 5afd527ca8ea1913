"""`posepipe render --dense`: the dense table (stages/io/dense_table.py) drawn over the video.

Two looks, each person's visible pixels blended over the frame (70% colour), people occluding each other
as the render decided (every pixel belongs to at most one person):
- "iuv" (DensePose's IUV picture): the part I sets the hue (24 hues around the circle, neighbouring parts
  far apart), U the saturation and V the brightness, so the surface coordinates show as smooth ramps
  across each part, with thin iso-lines every 0.05 of U (light) and of V (dark), the contour lines of
  DensePose's own figures;
- "parts": each of the 24 parts one flat colour, a body-part segmentation.
Pure functions on numpy arrays (cv2 for the colour conversion and resizing); DenseLayer reads the table a
frame at a time, in frame order, as render.py decodes the video.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow as pa

from stages.io.dense_table import decode_png, iter_frames

STYLES = ("iuv", "parts")
ALPHA = 0.7  # colour over the video where a person is: the video stays readable under it
ISO_STEP = 0.05  # U and V iso-lines every this much of anny's texture atlas ([0, 1])
# Part i's hue: i * 7 / 24 of the circle (7 and 24 coprime), so parts with neighbouring numbers (a limb's
# front and back, left and right) get hues ~105 degrees apart while all 24 stay distinct.
_HUE = (np.arange(25) * 7 % 24) * 180 // 24  # cv2's hue runs 0..179
PART_COLOURS = cv2.cvtColor(np.stack([_HUE, np.full(25, 230), np.full(25, 255)], -1).astype(np.uint8)[None],
                            cv2.COLOR_HSV2RGB)[0]
PART_COLOURS[0] = 0  # background: never drawn


def part_colours(part: np.ndarray) -> np.ndarray:
    """uint8[h, w, 3] RGB of each pixel's part (0: black)."""
    return PART_COLOURS[part]


def iuv_colours(part: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """uint8[h, w, 3] RGB: hue from the part, saturation from U, brightness from V, iso-lines of both
    (module docstring). part uint8[h, w]; u, v float[h, w] in [0, 1]."""
    hsv = np.stack([_HUE[part], 90 + 165 * np.clip(u, 0, 1), 110 + 145 * np.clip(v, 0, 1)], -1).astype(np.uint8)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    for q, colour in ((u, 255), (v, 0)):
        band = np.floor(q / ISO_STEP)
        # A line where the band changes to the right or below, within one part (a part's own edge is not one).
        edge = np.zeros(part.shape, bool)
        edge[:, :-1] |= (band[:, 1:] != band[:, :-1]) & (part[:, 1:] == part[:, :-1])
        edge[:-1] |= (band[1:] != band[:-1]) & (part[1:] == part[:-1])
        rgb[edge & (part > 0)] = colour
    return rgb


@dataclass(frozen=True)
class Crop:
    """What is drawn of one person: box (x0, y0, x1, y1) video pixels; mask bool[h, w]; colour uint8[h, w, 3]."""

    box: tuple[int, int, int, int]
    mask: np.ndarray
    colour: np.ndarray


def _check(style: str) -> None:
    if style not in STYLES:
        raise ValueError(f"dense style {style!r}: one of {', '.join(STYLES)}")


def crops_of(rows: pa.Table, style: str) -> list[Crop]:
    """One frame's dense rows (box, pixels, mask, part and, for iuv, u and v) as coloured crops."""
    _check(style)
    out = []
    for r in rows.to_pylist():
        x0, y0, x1, y1 = r["box"]
        hw = (y1 - y0, x1 - x0)
        if r["mask"] is None or not r["pixels"]:
            continue
        part = decode_png(r["part"], "part", hw)
        colour = part_colours(part) if style == "parts" else \
            iuv_colours(part, decode_png(r["u"], "u", hw), decode_png(r["v"], "v", hw))
        out.append(Crop((x0, y0, x1, y1), decode_png(r["mask"], "mask", hw), colour))
    return out


def paint(image: np.ndarray, crops: list[Crop], scale: float = 1.0) -> np.ndarray:
    """A copy of `image` (RGB uint8 [H, W, 3]) with the crops blended in; scale: image pixels per video pixel
    (contact-sheet tiles), crops resized to it (nearest for the mask, area for the colours)."""
    img = np.ascontiguousarray(image).copy()
    h, w = img.shape[:2]
    for c in crops:
        x0, y0, x1, y1 = (int(round(v * scale)) for v in c.box)
        x1, y1 = min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        mask, colour = c.mask, c.colour
        if mask.shape != (y1 - y0, x1 - x0):
            size = (x1 - x0, y1 - y0)
            mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
            colour = cv2.resize(colour, size, interpolation=cv2.INTER_AREA)
        region = img[y0:y1, x0:x1]
        region[mask] = (ALPHA * colour[mask] + (1 - ALPHA) * region[mask]).astype(np.uint8)
    return img


class DenseLayer:
    """A video's dense rows for frames start .. stop-1, asked for in increasing frame order (as the video is
    decoded): at(frame) -> that frame's crops. Reads one row group at a time. OutputError at construction
    when the video has no dense table."""

    def __init__(self, out: str, video_id: str, style: str, start: int = 0, stop: int | None = None):
        _check(style)
        self.style = style
        columns = ["box", "pixels", "mask", "part", *(("u", "v") if style == "iuv" else ())]
        self._frames: Iterator[tuple[int, pa.Table]] = iter_frames(out, video_id, columns, start, stop)
        self._next = next(self._frames, None)  # reads the first row group: a missing table fails here
        self.painted = 0  # crops drawn so far

    def at(self, frame: int) -> list[Crop]:
        while self._next is not None and self._next[0] < frame:
            self._next = next(self._frames, None)
        if self._next is None or self._next[0] != frame:
            return []
        crops = crops_of(self._next[1], self.style)
        self.painted += len(crops)
        return crops
