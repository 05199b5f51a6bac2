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
LCM_WEIGHTS = WEIGHTS.parent / "shapes_lcm.safetensors"
LCM_STEPS = 4  # per stage: 4 consistency steps on the base, 4 DDIM steps on the SR stage (README: measured)


def _read(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelError(f"the {what} weights are missing ({path}); train them with `python -m shapes.train` (see README)")
    return load_file(str(path))


def _part(raw: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v.float() for k, v in raw.items() if k.startswith(prefix)}


def _modules(lcm: bool, lcm_state: dict | None = None):
    """(tokenizer, text encoder, base UNet, SR UNet) from the shipped weights (`lcm_state`: the
    distilled base UNet's weights in memory instead of its file, as the distillation validates)."""
    raw = _read(WEIGHTS, "shapes")
    spec = json.loads((WEIGHTS.parent / "tokenizer.json").read_text())
    tok = CLIPTokenizer(vocab=spec["vocab"], merges=[tuple(m) for m in spec["merges"]], model_max_length=MAX_LENGTH)
    text = arch.text_encoder(tok)
    text.load_state_dict(_part(raw, "base.text."))
    sr = arch.sr_unet()
    sr.load_state_dict(_part(raw, "sr.unet."))
    if lcm:
        base = arch.base_unet(time_cond_proj_dim=arch.LCM_W_EMBED_DIM)
        base.load_state_dict(lcm_state if lcm_state is not None else _part(_read(LCM_WEIGHTS, "shapes-lcm"), "lcm.unet."))
    else:
        base = arch.base_unet()
        base.load_state_dict(_part(raw, "base.unet."))
    return tok, text, base, sr


def shapes(device: str = "cpu", lcm: bool = False, lcm_state: dict | None = None) -> Cascade:
    """`shapes` (20-step DDIM on both stages) or `shapes-lcm` (the consistency-distilled base
    stage, LCM sampler, guidance as the w-embedding; the same SR stage sampled with LCMScheduler's
    multistep rule -- x0 prediction, then fresh noise -- at 4 steps: it judges as 20 DDIM steps,
    and its recorded noise makes every inversion of it exact, as on the base stage)."""
    tok, text, base, sr = _modules(lcm, lcm_state)
    common = dict(
        family="shapes",
        device=torch.device(device),
        latent_channels=3,
        fixed_size=True,
        clip_x0=1.0,  # static thresholding: +13 points of judged generation at guidance 5
        size_multiple=1,
        vocabulary=arch.CAPTION_WORDS,
        text_encoder=text.eval().requires_grad_(False).to(device),
        tokenizer=tok,
    )
    steps = LCM_STEPS if lcm else 20
    guidance = arch.LCM_DEFAULT_GUIDANCE if lcm else 1.0
    base_stage = UNetModel(
        name="shapes-lcm" if lcm else "shapes",
        # the inverter with the most successful edits in the model's edit benchmark (shapes-lcm: RNRI, 67% of
        # the grid's edits against DDIM's 57%, at 44 UNet calls against ReNoise's 96; README)
        default_inverter="rnri",
        sampler_kind="lcm" if lcm else "ddim",
        **schedule_fields(arch.lcm_scheduler() if lcm else arch.scheduler()),
        default_steps=steps,
        default_guidance=guidance,
        default_edit_guidance=arch.LCM_DEFAULT_GUIDANCE if lcm else 3.0,
        uses_cfg=not lcm,
        image_size=arch.BASE_SIZE,
        description="our consistency-distilled small pixel model" if lcm else "our small trained pixel model",
        prediction_type=arch.LCM_PREDICTION if lcm else "epsilon",
        unet_module=base.eval().requires_grad_(False).to(device),
        **common,
    )
    sr_stage = UNetModel(
        name="shapes-sr",
        sampler_kind="lcm" if lcm else "ddim",
        **schedule_fields(arch.sr_lcm_scheduler() if lcm else arch.scheduler()),
        default_steps=steps,
        default_guidance=1.0,
        default_edit_guidance=3.0,
        image_size=arch.SR_SIZE,
        description="super-resolution stage of shapes",
        prediction_type=arch.SR_PREDICTION,
        unet_module=sr.eval().requires_grad_(False).to(device),
        **common,
    )
    what = "distilled to need only 4 steps" if lcm else "20 steps"
    return Cascade(
        name=base_stage.name,
        stages=[base_stage, sr_stage],
        noise_levels=[arch.SR_NOISE_LEVEL],
        align_corners=False,
        family="shapes",
        description=f"a small model we trained on a CPU to draw flat coloured shapes (circles, squares, triangles, stars and crosses) at 64 px, {what}",
    )
