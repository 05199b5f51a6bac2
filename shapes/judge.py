"""A judge in code for the shapes world: find the objects in an image and name
their colour and shape, so generation and edits can be scored without people.

Background: the border colours (top and bottom halves separately, for two-tone
scenes). Objects: connected regions that differ from the local background.
Colour: nearest named colour to the region's median. Shape: the template
(rendered into the region's bounding box by the same code that draws scenes)
with the highest IoU against the region's mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy import ndimage

from .scenes import COLOURS, SHAPES, shape_coverage

_NAMES = list(COLOURS)
_RGB = np.array([COLOURS[c] for c in _NAMES], np.float32)
FOREGROUND_DISTANCE = 70.0  # RGB distance from the background that counts as object


@dataclass
class Found:
    colour: str
    shape: str
    mask: np.ndarray  # bool (H, W)
    score: float  # template IoU of the chosen shape

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def nearest_colour(rgb) -> str:
    d = ((_RGB - np.asarray(rgb, np.float32)) ** 2).sum(1)
    return _NAMES[int(d.argmin())]


def background(image: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Per-pixel background colour and its name(s), from the image border."""
    h, w, _ = image.shape
    img = image.astype(np.float32)
    halves = []
    for rows in (slice(0, h // 2), slice(h // 2, h)):
        part = img[rows]
        border = np.concatenate([part[0 if rows.start == 0 else -1], part[:, 0], part[:, -1]])
        halves.append(np.median(border, axis=0))
    names = tuple(nearest_colour(c) for c in halves)
    bg = np.empty_like(img)
    if names[0] == names[1]:
        bg[:] = (halves[0] + halves[1]) / 2
        return bg, names[:1]
    bg[: h // 2], bg[h // 2 :] = halves[0], halves[1]
    return bg, names


@cache
def _extent(kind: str) -> tuple[float, float, float, float]:
    """The unit template's own bounding box (u0, u1, v0, v1), measured on a fine grid."""
    g = np.linspace(-1.2, 1.2, 961, dtype=np.float32)
    vv, uu = np.meshgrid(g, g, indexing="ij")
    inside = shape_coverage(kind, uu, vv)
    return float(uu[inside].min()), float(uu[inside].max()), float(vv[inside].min()), float(vv[inside].max())


def template_iou(mask: np.ndarray, kind: str) -> float:
    """IoU of the mask with the template stretched onto the mask's bounding box (pixel edges)."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    u0, u1, v0, v1 = _extent(kind)
    yy, xx = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]].astype(np.float32) + 0.5
    u = u0 + (xx - x0) / (x1 - x0) * (u1 - u0)
    v = v0 + (yy - y0) / (y1 - y0) * (v1 - v0)
    tpl = shape_coverage(kind, u, v)
    return float((tpl & mask).sum() / max(1, (tpl | mask).sum()))


def find_objects(image: np.ndarray, min_area: int | None = None) -> tuple[list[Found], tuple[str, ...]]:
    """Objects (largest first) and the background colour name(s) of an RGB uint8 image."""
    h, w, _ = image.shape
    min_area = min_area if min_area is not None else max(4, h * w // 200)
    bg, names = background(image)
    dist = np.sqrt(((image.astype(np.float32) - bg) ** 2).sum(-1))
    labels, n = ndimage.label(dist > FOREGROUND_DISTANCE)
    found = []
    for k in range(1, n + 1):
        mask = labels == k
        if mask.sum() < min_area:
            continue
        colour = nearest_colour(np.median(image[mask], axis=0))
        scores = {s: template_iou(mask, s) for s in SHAPES}
        shape = max(scores, key=scores.get)
        found.append(Found(colour, shape, mask, scores[shape]))
    found.sort(key=lambda f: -f.area)
    return found, names


def has(image: np.ndarray, colour: str, shape: str) -> bool:
    """Whether the image shows a `colour` `shape` (the generation criterion)."""
    objs, _ = find_objects(image)
    return any(o.colour == colour and o.shape == shape for o in objs)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))
