"""Load `shapes`, our small trained cascade, from the weights shipped in assets/shapes/."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import CLIPTokenizer

from . import shapes_arch as arch
from .base import ModelError
from .cascade import Cascade
from .tokenizers import MAX_LENGTH
from .unet_model import UNetModel, schedule_fields

WEIGHTS = Path(__file__).resolve().parents[2] / "assets" / "shapes" / "shapes.safetensors"


def shapes(device: str = "cpu") -> Cascade:
    if not WEIGHTS.is_file():
        raise ModelError(f"the shapes weights are missing ({WEIGHTS}); train them with `python -m shapes.train` (see README)")
    raw = load_file(str(WEIGHTS))
    spec = json.loads((WEIGHTS.parent / "tokenizer.json").read_text())
    tok = CLIPTokenizer(vocab=spec["vocab"], merges=[tuple(m) for m in spec["merges"]], model_max_length=MAX_LENGTH)

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v.float() for k, v in raw.items() if k.startswith(prefix)}

    text = arch.text_encoder(tok)
    text.load_state_dict(part("base.text."))
    base, sr = arch.base_unet(), arch.sr_unet()
    base.load_state_dict(part("base.unet."))
    sr.load_state_dict(part("sr.unet."))
    sched = arch.scheduler()
    stages = []
    for unet, size, name in ((base, arch.BASE_SIZE, "shapes"), (sr, arch.SR_SIZE, "shapes-sr")):
        stages.append(
            UNetModel(
                name=name,
                family="shapes",
                sampler_kind="ddim",
                **schedule_fields(sched),
                device=torch.device(device),
                latent_channels=3,
                default_steps=20,
                default_guidance=1.0,
                default_edit_guidance=3.0,
                image_size=size,
                fixed_size=True,
                clip_x0=1.0,  # static thresholding: +13 points of judged generation at guidance 5
                size_multiple=1,
                description="our small trained pixel model",
                prediction_type=arch.SR_PREDICTION if name == "shapes-sr" else "epsilon",
                unet_module=unet.eval().requires_grad_(False).to(device),
                text_encoder=text.eval().requires_grad_(False).to(device),
                tokenizer=tok,
            )
        )
    return Cascade(
        name="shapes",
        stages=stages,
        noise_levels=[arch.SR_NOISE_LEVEL],
        align_corners=False,
        family="shapes",
        description="our small trained text-to-image cascade of flat shapes (32 px -> 64 px), trained on CPU",
    )
