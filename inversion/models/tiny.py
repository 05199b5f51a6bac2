"""Tiny random-weight models built from config in code (no download): `tiny-sd`,
`tiny-lcm` and the `tiny-if` cascade. They have the real architectures' shapes
(cross-attention layers, VAE, learned-variance IF UNets, LCM w-embedding), so
they prove plumbing and exactness; their images mean nothing.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, LCMScheduler, UNet2DConditionModel
from diffusers.models.attention_processor import AttnAddedKVProcessor
from transformers import T5Config, T5EncoderModel

from .cascade import Cascade
from .tokenizers import build_clip_tokenizer, build_t5_tokenizer, clip_text_encoder
from .unet_model import UNetModel, schedule_fields

SD_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)
IF_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)


def _sd_unet(time_cond_proj_dim: int | None = None) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        time_cond_proj_dim=time_cond_proj_dim,
    )


def _vae() -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=(32, 32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
    )


def _eval(*modules):
    for m in modules:
        m.eval().requires_grad_(False)


def tiny_sd(lcm: bool = False, device: str = "cpu", seed: int = 0) -> UNetModel:
    """SD-1.x-shaped: 64 px images, 8x8x4 latents, CLIP text encoder, DDIM (or LCM)."""
    torch.manual_seed(seed)
    tok = build_clip_tokenizer()
    text = clip_text_encoder(tok, hidden=32, intermediate=37, heads=4, layers=2)
    unet = _sd_unet(time_cond_proj_dim=32 if lcm else None)
    vae = _vae()
    _eval(text, unet, vae)
    base = DDIMScheduler(**SD_SCHEDULER)
    sched = LCMScheduler.from_config(base.config) if lcm else base
    name = "tiny-lcm" if lcm else "tiny-sd"
    return UNetModel(
        name=name,
        family="lcm" if lcm else "sd",
        sampler_kind="lcm" if lcm else "ddim",
        **schedule_fields(sched),
        device=torch.device(device),
        latent_channels=4,
        latent_scale=8,
        default_steps=4 if lcm else 50,
        default_guidance=8.0 if lcm else 1.0,
        default_edit_guidance=8.0 if lcm else 7.5,
        uses_cfg=not lcm,
        image_size=64,
        size_multiple=16,
        max_image_side=256,
        description=f"random-weight {'LCM' if lcm else 'SD-1.x'}-shaped model (64 px), for tests",
        unet_module=unet.to(device),
        text_encoder=text.to(device),
        tokenizer=tok,
        vae=vae.to(device),
        scaling_factor=vae.config.scaling_factor,
    )


def _if_unet(sr: bool) -> UNet2DConditionModel:
    extra = dict(class_embed_type="timestep", mid_block_scale_factor=1.414, time_embedding_act_fn="gelu", time_embedding_dim=32) if sr else {}
    unet = UNet2DConditionModel(
        sample_size=32 if sr else 16,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        in_channels=6 if sr else 3,
        out_channels=6,
        cross_attention_dim=32,
        encoder_hid_dim=32,
        attention_head_dim=8,
        addition_embed_type="text",
        addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift",
        act_fn="gelu",
        **extra,
    )
    unet.set_attn_processor(AttnAddedKVProcessor())
    return unet


def tiny_if(device: str = "cpu", seed: int = 0) -> Cascade:
    """DeepFloyd-IF-shaped two-stage pixel cascade: 16 px base, 16 -> 32 super-resolution."""
    torch.manual_seed(seed)
    tok = build_t5_tokenizer()
    text = T5EncoderModel(
        T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    )
    sched = DDIMScheduler(**IF_SCHEDULER)
    stages = []
    for sr in (False, True):
        unet = _if_unet(sr)
        _eval(unet, text)
        stages.append(
            UNetModel(
                name="tiny-if" + ("-sr" if sr else ""),
                family="if",
                sampler_kind="ddim",
                **schedule_fields(sched),
                device=torch.device(device),
                latent_channels=3,
                default_steps=50,
                default_guidance=1.0,
                image_size=32 if sr else 16,
                fixed_size=True,
                size_multiple=1,
                description="random-weight DeepFloyd-IF-shaped stage",
                unet_module=unet.to(device),
                text_encoder=text.to(device),
                tokenizer=tok,
            )
        )
    return Cascade(
        name="tiny-if",
        stages=stages,
        noise_levels=[100],
        align_corners=True,
        description="random-weight DeepFloyd-IF-shaped cascade (16 px -> 32 px), for tests",
    )
