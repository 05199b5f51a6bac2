"""PIE-Bench's metric networks as tiny random repositories in a Hugging Face cache, the LPIPS
SqueezeNet files on disk, and a small dataset in PIE-Bench's exact format, all built in code.

The metric repositories follow `tests/hub_fixtures.py`: `models--ORG--NAME/snapshots/<rev>/` with
`refs/main`, the config files of `tests/fixtures/hub/` (reconstructed, see docs/hub_fixtures.md)
with only widths made tiny (depths kept: the structure distance reads block 11 of 12), random
weights under the real file names. The dataset is shapes scenes rendered at 512 px with their exact
masks, run-length encoded as the benchmark encodes them (written out here, not by the exporter).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub_fixtures import PUBLISHED, merged, snapshot, write_json  # noqa: E402

DINO, CLIP = "facebook/dino-vitb8", "openai/clip-vit-large-patch14"
TINY_DINO = {"hidden_size": 24, "intermediate_size": 48, "num_attention_heads": 2}  # 12 blocks: the published depth
TINY_CLIP = {
    "projection_dim": 16,
    "text_config": {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2, "projection_dim": 16},
    "vision_config": {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2, "projection_dim": 16},
}
# torchvision's squeezenet1_1.features: index -> (in, squeeze, expand1x1, expand3x3), written out
# here from torchvision's definition so the loader's own table is checked against it
SQUEEZENET_FIRES = {3: (64, 16, 64, 64), 4: (128, 16, 64, 64), 6: (128, 32, 128, 128), 7: (256, 32, 128, 128),
                    9: (256, 48, 192, 192), 10: (384, 48, 192, 192), 11: (384, 64, 256, 256), 12: (512, 64, 256, 256)}  # fmt: skip
LPIPS_CHANNELS = (64, 128, 256, 384, 384, 512, 512)


def _published(repo: str, name: str) -> dict:
    return json.loads((PUBLISHED / repo.replace("/", "--") / name).read_text())


def dino_repo(cache: Path) -> Path:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(1)
    snap = snapshot(cache, DINO)
    config = merged(_published(DINO, "config.json"), TINY_DINO)
    ViTModel(ViTConfig(**config), add_pooling_layer=False).save_pretrained(snap)
    write_json(snap / "config.json", config)
    return snap


def clip_repo(cache: Path) -> Path:
    from transformers import CLIPConfig, CLIPModel

    from inversion.models.tokenizers import WORDS, clip_vocab

    torch.manual_seed(2)
    snap = snapshot(cache, CLIP)
    vocab, merges = clip_vocab(tuple(WORDS))
    config = merged(_published(CLIP, "config.json"), TINY_CLIP)
    config["text_config"]["vocab_size"] = len(vocab)
    config["text_config"]["eos_token_id"] = vocab["<|endoftext|>"]  # the in-code vocabulary's ids, not CLIP's
    config["text_config"]["bos_token_id"] = vocab["<|startoftext|>"]
    config["text_config"]["pad_token_id"] = vocab["<|endoftext|>"]
    CLIPModel(CLIPConfig(**config)).save_pretrained(snap)
    write_json(snap / "config.json", config)
    for name in ("preprocessor_config.json", "tokenizer_config.json", "special_tokens_map.json"):
        write_json(snap / name, _published(CLIP, name))
    (snap / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (snap / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return snap


def lpips_files(folder: Path) -> tuple[Path, Path]:
    """Random weights in torchvision's squeezenet1_1 layout and LPIPS's linear-head layout."""
    g = torch.Generator().manual_seed(3)
    folder.mkdir(parents=True, exist_ok=True)
    state = {"features.0.weight": torch.randn(64, 3, 3, 3, generator=g) * 0.2, "features.0.bias": torch.randn(64, generator=g) * 0.1}
    for i, (cin, sq, e1, e3) in SQUEEZENET_FIRES.items():
        for name, cout, cin_, k in (("squeeze", sq, cin, 1), ("expand1x1", e1, sq, 1), ("expand3x3", e3, sq, 3)):
            state[f"features.{i}.{name}.weight"] = torch.randn(cout, cin_, k, k, generator=g) * (2 / (cin_ * k * k)) ** 0.5
            state[f"features.{i}.{name}.bias"] = torch.randn(cout, generator=g) * 0.01
    state["classifier.1.weight"] = torch.randn(1000, 512, 1, 1, generator=g) * 0.01  # present in the real file, unused
    state["classifier.1.bias"] = torch.zeros(1000)
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate(LPIPS_CHANNELS)}
    backbone, linear = folder / "squeezenet1_1-b8a52dc0.pth", folder / "squeeze.pth"
    torch.save(state, backbone)
    torch.save(lin, linear)
    return backbone, linear


def metric_cache(root: Path) -> dict:
    """Build everything the metrics load; returns the environment to set (HF_HUB_CACHE, LPIPS files)."""
    cache = Path(root) / "hub"
    dino_repo(cache)
    clip_repo(cache)
    backbone, linear = lpips_files(Path(root) / "lpips")
    return {"HF_HUB_CACHE": str(cache), "PIE_LPIPS_BACKBONE": str(backbone), "PIE_LPIPS_LINEAR": str(linear)}


def rle(mask: np.ndarray) -> list[int]:
    """PIE-Bench's encoding, written out: (start, length) of every run of 1s in row-major order."""
    flat = mask.reshape(-1).astype(bool)
    out, i, n = [], 0, flat.size
    while i < n:
        if flat[i]:
            j = i
            while j < n and flat[j]:
                j += 1
            out += [i, j - i]
            i = j
        else:
            i += 1
    return out


def pie_dataset(root: Path, count: int = 1, seed: int = 41) -> tuple[Path, dict]:
    """A PIE-Bench folder of held-out single-shape scenes: per scene a colour change (type 6, the
    object's mask) and a shape change (type 1, old and new shapes' masks). Returns (folder, masks by key)."""
    from shapes.scenes import COLOURS, SHAPES, Scene, Shape, render, scenes

    root = Path(root)
    table, masks = {}, {}
    for n, s in enumerate(scenes(seed, count, held_out=True, single_shape=True)):
        obj = s.shapes[0]
        image, obj_masks = render(s, 512)
        colour = next(c for c in COLOURS if c != obj.colour and c not in s.background)
        kind = SHAPES[(SHAPES.index(obj.kind) + 1) % len(SHAPES)]
        new_mask = render(Scene((Shape(kind, obj.colour, obj.cx, obj.cy, obj.size),), s.background), 512)[1][0]
        rest = s.caption.split(f"{obj.colour} {obj.kind}", 1)[1]
        for type_id, folder, mask, src, tgt, blend in (
            ("6", "6_change_attribute_color", obj_masks[0], f"a [{obj.colour}] {obj.kind}", f"a [{colour}] {obj.kind}", f"{obj.kind} {obj.kind}"),
            ("1", "1_change_object", obj_masks[0] | new_mask, f"a {obj.colour} [{obj.kind}]", f"a {obj.colour} [{kind}]", f"{obj.kind} {kind}"),
        ):
            key = f"{type_id}{n:011d}"
            path = f"{folder}/{key}.png"
            (root / "annotation_images" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / "annotation_images" / path)
            table[key] = {"image_path": path, "original_prompt": src + rest, "editing_prompt": tgt + rest, "editing_instruction": "",
                          "editing_type_id": type_id, "blended_word": blend, "mask": rle(mask)}
            masks[key] = mask
    (root / "mapping_file.json").write_text(json.dumps(table))
    return root, masks
