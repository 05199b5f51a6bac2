"""The shapes world as a PIE-Bench folder, so the runner (and PnPInversion's evaluator) can read it.

Each held-out single-shape scene of `shapes.edit_bench`'s stream (same seed: the same scenes) gives
two items, the two edits that benchmark asks for (`shapes.edit_tasks`): a colour change (PIE-Bench's
type 6, "change color"; the region is the object's mask) and a shape change (type 1, "change
object"; the old and the new shape's masks together). Images and masks are drawn at 512 px (the
benchmark's size; exact masks, anti-aliased images), saved as PNG (JPEG would smear flat colours);
prompts bracket the changed word; `blended_word` names the object in both prompts, as PIE-Bench's do.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from .data import IMAGES, MAPPING, SIDE, encode_mask

SEED = 41  # shapes.edit_bench's stream of held-out scenes
FOLDERS = {"6": "6_change_attribute_color", "1": "1_change_object"}


def bracketed(source: str, target: str) -> tuple[str, str]:
    """Both prompts with the words that differ (same position) in [brackets]."""
    a, b = source.split(" "), target.split(" ")
    if len(a) != len(b):
        return source, target
    return " ".join(f"[{x}]" if x != y else x for x, y in zip(a, b)), " ".join(f"[{y}]" if x != y else y for x, y in zip(a, b))


def export(out: Path, count: int = 50, seed: int = SEED) -> Path:
    """Write `count` scenes (2 items each) to `out`; returns the mapping file's path."""
    from shapes.edit_tasks import edit_task
    from shapes.scenes import render, scenes

    out = Path(out)
    table = {}
    for n, scene in enumerate(scenes(seed, count, held_out=True, single_shape=True)):
        obj = scene.shapes[0]
        image = render(scene, SIDE)[0]
        for type_id, editor, verb in (("6", "p2p", "make the {k} {v}"), ("1", "masactrl", "turn the {k} into a {v}")):
            target, colour, kind, region = edit_task(scene, editor, SIDE)
            key = f"{type_id}{n:011d}"
            path = f"{FOLDERS[type_id]}/{key}.png"
            (out / IMAGES / FOLDERS[type_id]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(out / IMAGES / path)
            original, editing = bracketed(scene.caption, target)
            table[key] = {
                "image_path": path,
                "original_prompt": original,
                "editing_prompt": editing,
                "editing_instruction": verb.format(k=obj.kind, v=colour if type_id == "6" else kind),
                "editing_type_id": type_id,
                "blended_word": f"{obj.kind} {kind}",
                "mask": encode_mask(region),
            }
    path = out / MAPPING
    path.write_text(json.dumps(table, indent=1))
    return path
