"""Procedural scenes: one or two flat shapes in named colours on a plain or two-tone
background, each with its caption and exact per-object masks.

A world simple enough to judge by code (see `shapes.judge`), so the quality of
generation, inversion and editing can be measured offline. Scenes are drawn at
4x supersampling and area-averaged, so edges are anti-aliased; a mask marks the
pixels that the object covers by at least half.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 215, 40),
    "orange": (245, 135, 25),
    "purple": (140, 55, 185),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    cx: float  # centre, in [0, 1] image coordinates
    cy: float
    size: float  # side of the bounding square, as a fraction of the image


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    background: tuple[str, ...]  # one colour, or two (top half, bottom half)
    caption: str = field(default="")  # empty: the scene's own description

    def __post_init__(self) -> None:
        if not self.caption:
            object.__setattr__(self, "caption", self.describe())

    def describe(self) -> str:
        objs = " and ".join(f"a {s.colour} {s.kind}" for s in self.shapes)
        return f"{objs} on a {' and '.join(self.background)} background"


def shape_coverage(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean inside-test for a unit shape; u, v in [-1, 1] (v grows downwards)."""
    if kind == "circle":
        return u * u + v * v <= 1.0
    if kind == "square":
        return (np.abs(u) <= 0.88) & (np.abs(v) <= 0.88)
    if kind == "triangle":  # apex up, base at the bottom
        return (v <= 0.9) & (v >= -0.9) & (np.abs(u) <= (v + 0.9) / 1.8)
    if kind == "cross":
        arm = 0.36
        return ((np.abs(u) <= arm) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= arm) & (np.abs(u) <= 1.0))
    if kind == "star":  # five points, apex up; inside test by polygon winding
        pts = []
        for k in range(10):
            r = 1.0 if k % 2 == 0 else 0.45
            ang = -math.pi / 2 + k * math.pi / 5
            pts.append((r * math.cos(ang), r * math.sin(ang) + 0.1))
        return _inside_polygon(u, v, pts)
    raise ValueError(f"unknown shape {kind!r}; known: {', '.join(SHAPES)}")


def _inside_polygon(u: np.ndarray, v: np.ndarray, pts: list[tuple[float, float]]) -> np.ndarray:
    inside = np.zeros(u.shape, dtype=bool)
    n = len(pts)
    for i in range(n):
        (x1, y1), (x2, y2) = pts[i], pts[(i + 1) % n]
        crosses = (y1 > v) != (y2 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = (x2 - x1) * (v - y1) / (y2 - y1) + x1
        inside ^= crosses & (u < xint)
    return inside


def _area_downsample(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape[:2]
    return a.reshape(h // f, f, w // f, f, *a.shape[2:]).mean(axis=(1, 3))


def render(scene: Scene, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Render to (uint8 RGB image [size, size, 3], bool masks [n_shapes, size, size])."""
    big = size * SUPERSAMPLE
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float32)
    xx = (xx + 0.5) / big
    yy = (yy + 0.5) / big
    img = np.empty((big, big, 3), np.float32)
    bg = [np.array(COLOURS[c], np.float32) for c in scene.background]
    img[:] = bg[0]
    if len(bg) == 2:
        img[yy >= 0.5] = bg[1]
    masks = []
    for s in scene.shapes:
        half = s.size / 2
        cover = shape_coverage(s.kind, (xx - s.cx) / half, (yy - s.cy) / half)
        img[cover] = COLOURS[s.colour]
        masks.append(cover)
    # Later shapes occlude earlier ones: a mask keeps only what stays visible.
    for i in range(len(masks)):
        for later in masks[i + 1 :]:
            masks[i] = masks[i] & ~later
    image = np.clip(np.round(_area_downsample(img, SUPERSAMPLE)), 0, 255).astype(np.uint8)
    mask_arr = np.stack([_area_downsample(m.astype(np.float32), SUPERSAMPLE) >= 0.5 for m in masks]) if masks else np.zeros((0, size, size), bool)
    for i in range(len(mask_arr)):  # a pixel split exactly in half goes to the shape in front
        mask_arr[i] &= ~mask_arr[i + 1 :].any(axis=0) if i + 1 < len(mask_arr) else True
    return image, mask_arr


def random_scene(rng: random.Random, two_shape_prob: float = 0.35, two_tone_prob: float = 0.25) -> Scene:
    """Sample a scene: shapes never share the background's colour and do not overlap."""
    names = list(COLOURS)
    background = (rng.choice(names),)
    if rng.random() < two_tone_prob:
        background = (background[0], rng.choice([c for c in names if c != background[0]]))
    n = 2 if rng.random() < two_shape_prob else 1
    shapes: list[Shape] = []
    for _ in range(n):
        for _attempt in range(50):
            size = rng.uniform(0.3, 0.55) if n == 1 else rng.uniform(0.28, 0.4)
            cx = rng.uniform(size / 2 + 0.03, 1 - size / 2 - 0.03)
            cy = rng.uniform(size / 2 + 0.03, 1 - size / 2 - 0.03)
            if all(max(abs(cx - o.cx), abs(cy - o.cy)) > (size + o.size) / 2 + 0.02 for o in shapes):
                break
        else:
            break
        colour = rng.choice([c for c in names if c not in background and all(c != o.colour for o in shapes)])
        shapes.append(Shape(rng.choice(SHAPES), colour, cx, cy, size))
    scene = Scene(tuple(shapes), background)
    return Scene(scene.shapes, scene.background, scene.describe())


def is_held_out(scene: Scene) -> bool:
    """Held-out (colour, shape, background) triples, never shown in training.

    About one in eight triples is held out, chosen by a fixed hash so the split is
    stable; every colour, shape and background still appears in training.
    """
    for s in scene.shapes:
        key = f"{s.colour}|{s.kind}|{scene.background[0]}"
        if _stable_hash(key) % 8 == 0:
            return True
    return False


def _stable_hash(text: str) -> int:
    h = 2166136261
    for ch in text.encode():
        h = ((h ^ ch) * 16777619) & 0xFFFFFFFF
    return h


def scenes(seed: int, count: int, held_out: bool | None = None, single_shape: bool = False) -> list[Scene]:
    """`count` scenes from a seeded stream, optionally only held-out or only training ones."""
    rng = random.Random(seed)
    out: list[Scene] = []
    while len(out) < count:
        s = random_scene(rng, two_shape_prob=0.0 if single_shape else 0.35)
        if held_out is None or is_held_out(s) == held_out:
            out.append(s)
    return out
