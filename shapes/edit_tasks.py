"""The edits the shapes benchmarks ask for, and how the judge scores them.

One task per held-out single-shape scene and editor: P2P and DiffEdit change the object's
colour and must keep its shape in place (mask IoU >= IOU_KEPT with the original object);
MasaCtrl changes its shape and must keep its colour. Shared by `evaluate` (success rates)
and `edit_bench` (what the edit preserves), so both judge the same thing.
"""

from __future__ import annotations

import numpy as np

from .judge import find_objects, mask_iou, nearest_colour
from .scenes import COLOURS, SHAPES, Scene, Shape, render

IOU_KEPT = 0.8


def colour_target(s: Scene) -> str:
    """The next colour after the object's that is neither its own nor in the background."""
    names = list(COLOURS)
    src = s.shapes[0].colour
    start = names.index(src)
    return next(c for c in names[start + 1 :] + names[:start] if c not in s.background and c != src)


def shape_target(s: Scene) -> str:
    i = SHAPES.index(s.shapes[0].kind)
    return SHAPES[(i + 1) % len(SHAPES)]


def edit_task(s: Scene, editor: str, size: int = 64) -> tuple[str, str, str, np.ndarray]:
    """(target prompt, wanted colour, wanted shape, edit region) for one scene and editor.

    The region is the object's mask, united with the new shape's for a shape change, at `size`
    pixels (the PIE-Bench export asks for 512)."""
    src = s.shapes[0]
    masks = render(s, size)[1]
    if editor == "masactrl":
        kind = shape_target(s)
        new = Scene((Shape(kind, src.colour, src.cx, src.cy, src.size),), s.background)
        region = masks[0] | render(new, size)[1][0]
        return s.caption.replace(f"{src.colour} {src.kind}", f"{src.colour} {kind}", 1), src.colour, kind, region
    colour = colour_target(s)
    return s.caption.replace(f"{src.colour} {src.kind}", f"{colour} {src.kind}", 1), colour, src.kind, masks[0]


def judge_edit(image: np.ndarray, colour: str, shape: str, editor: str, original_mask: np.ndarray) -> dict:
    """success, structure IoU (best matching object against the original mask), edited-region colour."""
    objs, _ = find_objects(image)
    hit = [o for o in objs if o.colour == colour and o.shape == shape]
    iou = max((mask_iou(o.mask, original_mask) for o in hit), default=0.0)
    success = bool(hit) and (editor == "masactrl" or iou >= IOU_KEPT)
    inside = image[original_mask]
    region = float(np.mean([nearest_colour(px) == colour for px in inside])) if len(inside) else 0.0
    return {"success": success, "structure_iou": iou, "region_colour": region}
