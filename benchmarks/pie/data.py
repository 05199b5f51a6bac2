"""PIE-Bench's files as its authors' scripts read them (PnPInversion, Ju et al., ICLR 2024).

The benchmark is a folder with `mapping_file.json` and `annotation_images/`. The mapping file is
one JSON object keyed by a 12-digit id; each item has `image_path` (under annotation_images/),
`original_prompt` and `editing_prompt` (the words that differ in [brackets]), `editing_instruction`,
`editing_type_id` ("0".."9"), `blended_word` ("<source word> <target word>", or "") and `mask`, the
edited region run-length encoded. Facts carried over from the authors' scripts (no code):
- the mask is a flat list of (start, length) pairs over the row-major 512 x 512 grid, 1 inside
  the runs; a run is clipped at the grid's end; after decoding, the first and last rows and columns
  are set to 1 ("to avoid annotation errors in boundary"), so the border always counts as edited;
- prompts lose their brackets (every "[" and "]" removed) before use;
- `blended_word` is split on single spaces: the first word is the source's, the second the target's;
- edited images go to `<output>/<method>/annotation_images/<image_path>`; the evaluator crops the
  rightmost, bottom 512 x 512 of a wider image (their scripts save a 4-panel strip), else reads it whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from inversion.errors import ImageError, ParameterError

SIDE = 512  # PIE-Bench's images and masks are 512 x 512
MAPPING = "mapping_file.json"
IMAGES = "annotation_images"
EDIT_TYPES = {  # editing_type_id -> name (the benchmark's README)
    "0": "random",
    "1": "change object",
    "2": "add object",
    "3": "delete object",
    "4": "change content",
    "5": "change pose",
    "6": "change color",
    "7": "change material",
    "8": "change background",
    "9": "change style",
}
FIELDS = ("image_path", "original_prompt", "editing_prompt", "editing_type_id", "blended_word", "mask")


def clean(prompt: str) -> str:
    """A prompt as the scripts use it: every bracket removed, nothing else touched."""
    return prompt.replace("[", "").replace("]", "")


@dataclass(frozen=True)
class Item:
    key: str
    image_path: str  # relative to annotation_images/
    original_prompt: str  # as annotated, brackets kept
    editing_prompt: str
    editing_type_id: str
    blended_word: str
    mask: tuple[int, ...]  # the run-length encoding, as stored
    editing_instruction: str = ""

    @property
    def source_prompt(self) -> str:
        return clean(self.original_prompt)

    @property
    def target_prompt(self) -> str:
        return clean(self.editing_prompt)

    @property
    def blend_pair(self) -> tuple[str, str] | None:
        """(source word, target word) from `blended_word`, or None where it is empty. One word
        serves both (the authors' scripts would fail on it; every PIE-Bench item has two)."""
        if self.blended_word == "":
            return None
        words = self.blended_word.split(" ")
        return words[0], words[1] if len(words) > 1 else words[0]

    def decoded_mask(self) -> np.ndarray:
        return decode_mask(self.mask)


def decode_mask(rle, shape: tuple[int, int] = (SIDE, SIDE)) -> np.ndarray:
    """The benchmark's mask: (H, W) float32 in {0, 1}, 1 = edited (border rows and columns included)."""
    h, w = shape
    n = h * w
    flat = np.zeros(n, np.float32)
    rle = [int(v) for v in rle]
    if len(rle) % 2:
        raise ParameterError(f"a PIE-Bench mask is a list of (start, length) pairs; this one has {len(rle)} numbers")
    for start, length in zip(rle[0::2], rle[1::2]):
        flat[start : start + max(0, min(length, n - start))] = 1
    mask = flat.reshape(h, w)
    mask[0, :] = mask[-1, :] = 1
    mask[:, 0] = mask[:, -1] = 1
    return mask


def encode_mask(mask: np.ndarray) -> list[int]:
    """(start, length) pairs of the runs of nonzero pixels of a mask, row-major (the inverse of
    `decode_mask` everywhere but the border, which decoding sets)."""
    flat = np.concatenate([[0], (np.asarray(mask).reshape(-1) > 0).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    return [int(v) for pair in zip(starts, ends - starts) for v in pair]


def read_items(data: Path) -> list[Item]:
    """Every item of `data`/mapping_file.json, in the file's order."""
    path = Path(data) / MAPPING
    if not path.is_file():
        raise ParameterError(f"no {MAPPING} in {data}: --data takes PIE-Bench's folder (mapping_file.json and annotation_images/)")
    try:
        table = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ParameterError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(table, dict):
        raise ParameterError(f"{path} must hold one JSON object keyed by item id")
    items = []
    for key, entry in table.items():
        missing = [f for f in FIELDS if not isinstance(entry, dict) or f not in entry]
        if missing:
            raise ParameterError(f"{path}: item {key} lacks {', '.join(missing)}")
        items.append(Item(str(key), entry["image_path"], entry["original_prompt"], entry["editing_prompt"], str(entry["editing_type_id"]),
                          entry["blended_word"], tuple(entry["mask"]), entry.get("editing_instruction", "")))
    return items


def source_image(data: Path, item: Item) -> Image.Image:
    """The item's image, 8-bit RGB, as the evaluator reads it (the benchmark's are 512 x 512)."""
    path = Path(data) / IMAGES / item.image_path
    if not path.is_file():
        raise ImageError(f"item {item.key}: no image at {path}")
    img = Image.open(path).convert("RGB")
    if img.size != (SIDE, SIDE):
        raise ImageError(f"item {item.key}: {path} is {img.size[0]}x{img.size[1]}; PIE-Bench's images (and masks) are {SIDE}x{SIDE}")
    return img


def output_path(out: Path, method: str, item: Item) -> Path:
    """Where PnPInversion's layout puts an edited image: <out>/<method>/annotation_images/<image_path>."""
    return Path(out) / method / IMAGES / item.image_path


def read_edit(path: Path) -> Image.Image:
    """An edited image as the evaluator reads it: the rightmost, bottom 512 x 512 of a wider one
    (the authors' scripts save instruction | source | reconstruction | edit), else the whole image."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if w != h:
        img = img.crop((w - SIDE, h - SIDE, w, h))
    return img
