"""Real models, loaded by hub id with diffusers' own classes.

fp16 on CUDA, fp32 on CPU. Where weights cannot be fetched (no network, not in
the Hugging Face cache, gated licence not accepted), a `ModelError` says which
repository is missing and what to do. Nothing here runs in CI: CI has no network.
"""

from __future__ import annotations

import torch

from .base import ModelError
from .cascade import Cascade
from .unet_model import UNetModel, schedule_fields

REPOS = {
    "lcm-dreamshaper-v7": "SimianLuo/LCM_Dreamshaper_v7",
    "sd-1.5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd-1.4": "CompVis/stable-diffusion-v1-4",
    "sd-1.5-lcm-lora": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "deepfloyd-if": "DeepFloyd/IF-I-M-v1.0",
}
LCM_LORA = "latent-consistency/lcm-lora-sdv1-5"
LCM_DISTILLED_GUIDANCE = 8.5  # LatentConsistencyModelPipeline's default guidance_scale (a w-embedding, no CFG pass)
LCM_LORA_GUIDANCE = 1.5  # the LCM-LoRA card's advice: guidance 1 to 2 (real CFG on a LoRA'd UNet)
SD_GUIDANCE = 7.5  # Stable Diffusion's usual text-to-image guidance, for the edit branch
IF_STAGE_2 = "DeepFloyd/IF-II-M-v1.0"


def default_device() -> tuple[torch.device, torch.dtype]:
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.float16
    return torch.device("cpu"), torch.float32


def _from_pretrained(cls, repo: str, name: str, **kwargs):
    try:
        return cls.from_pretrained(repo, **kwargs)
    except Exception as e:  # OSError, hub errors, gated-repo errors all land here
        text = str(e)
        if "gated" in text.lower() or "401" in text or "403" in text:
            hint = (
                f"{repo} is gated: accept its licence on https://huggingface.co/{repo} while logged in, "
                "then run `hf auth login` (or set HF_TOKEN) on this machine"
            )
        else:
            hint = "this machine has no network access to the Hugging Face hub and the weights are not in its cache; run once with internet (or set HF_HOME to a cache that has them)"
        raise ModelError(f"cannot load {name!r} ({repo}): {hint}. Offline, use 'shapes', 'tiny-sd', 'tiny-lcm', 'tiny-if' or 'oracle'. [{type(e).__name__}: {text[:300]}]") from e


def needed_files(name: str) -> list[tuple[str, str]]:
    """(repository, file) pairs whose presence in the cache means `name` loads offline."""
    files = [(REPOS[name], "model_index.json")]
    if name == "sd-1.5-lcm-lora":
        files.append((LCM_LORA, "pytorch_lora_weights.safetensors"))
    if name == "deepfloyd-if":
        files.append((IF_STAGE_2, "model_index.json"))
    return files


def is_cached(name: str) -> bool:
    """Whether a real model's files are already in the local cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return all(isinstance(try_to_load_from_cache(repo, f), str) for repo, f in needed_files(name))
    except (OSError, ValueError):  # an unreadable cache or a malformed id: not available
        return False


def _sd_bundle(name, pipe, sched, *, lcm: bool, device, dtype, description) -> UNetModel:
    distilled = bool(getattr(pipe.unet.config, "time_cond_proj_dim", None))
    return UNetModel(
        name=name,
        family="lcm" if lcm else "sd",
        sampler_kind="lcm" if lcm else "ddim",
        **schedule_fields(sched),
        device=device,
        dtype=dtype,
        latent_channels=4,
        latent_scale=8,
        default_steps=4 if lcm else 50,
        default_guidance=LCM_DISTILLED_GUIDANCE if distilled else 1.0,
        default_edit_guidance=LCM_DISTILLED_GUIDANCE if distilled else (LCM_LORA_GUIDANCE if lcm else SD_GUIDANCE),
        uses_cfg=not distilled,
        image_size=512,
        size_multiple=64,
        max_image_side=768,
        description=description,
        unet_module=pipe.unet.eval().requires_grad_(False),
        text_encoder=pipe.text_encoder.eval().requires_grad_(False),
        tokenizer=pipe.tokenizer,
        vae=pipe.vae.eval().requires_grad_(False),
        scaling_factor=pipe.vae.config.scaling_factor,
        prediction_type=sched.config.prediction_type,
    )


def load_sd(name: str, device=None, dtype=None) -> UNetModel:
    from diffusers import DDIMScheduler, LatentConsistencyModelPipeline, LCMScheduler, StableDiffusionPipeline

    dev, dt = default_device()
    device, dtype = device or dev, dtype or dt
    repo = REPOS[name]
    if name == "lcm-dreamshaper-v7":
        pipe = _from_pretrained(LatentConsistencyModelPipeline, repo, name, dtype=dtype, safety_checker=None, requires_safety_checker=False)
        sched = LCMScheduler.from_config(pipe.scheduler.config)
        desc = "LCM-distilled Dreamshaper v7 (SD-1.5 architecture), 4-8 steps, guidance as a w-embedding"
        lcm = True
    else:
        pipe = _from_pretrained(StableDiffusionPipeline, repo, name, dtype=dtype, safety_checker=None, requires_safety_checker=False)
        lcm = name.endswith("lcm-lora")
        if lcm:
            try:
                pipe.load_lora_weights(LCM_LORA)
            except Exception as e:
                raise ModelError(f"cannot load the LCM-LoRA {LCM_LORA} (needs `peft` and the hub or its cache): {e}") from e
            pipe.fuse_lora()
            sched = LCMScheduler.from_config(pipe.scheduler.config)
            desc = "Stable Diffusion 1.5 with the LCM-LoRA fused, 4-8 steps, classifier-free guidance ~1-2"
        else:
            sched = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False, set_alpha_to_one=False)
            desc = f"Stable Diffusion {name.split('-')[1]} with DDIM"
    pipe.to(device)
    return _sd_bundle(name, pipe, sched, lcm=lcm, device=device, dtype=dtype, description=desc)


def load_deepfloyd_if(device=None, dtype=None) -> Cascade:
    """DeepFloyd IF-I-M (64 px) + IF-II-M (64 -> 256 px), sharing the T5-XXL encoder. Gated."""
    from diffusers import DDIMScheduler, IFPipeline, IFSuperResolutionPipeline

    dev, dt = default_device()
    device, dtype = device or dev, dtype or dt
    variant = "fp16" if dtype == torch.float16 else None
    one = _from_pretrained(IFPipeline, REPOS["deepfloyd-if"], "deepfloyd-if", dtype=dtype, variant=variant, safety_checker=None, watermarker=None, requires_safety_checker=False)
    two = _from_pretrained(IFSuperResolutionPipeline, IF_STAGE_2, "deepfloyd-if", dtype=dtype, variant=variant, text_encoder=None, safety_checker=None, watermarker=None, requires_safety_checker=False)
    stages = []
    for pipe, size in ((one, 64), (two, 256)):
        pipe.to(device)
        sched = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False, thresholding=False, variance_type="fixed_small")
        stages.append(
            UNetModel(
                name="deepfloyd-if" if size == 64 else "deepfloyd-if-sr",
                family="if",
                sampler_kind="ddim",
                **schedule_fields(sched),
                device=device,
                dtype=dtype,
                latent_channels=3,
                default_steps=50,
                default_guidance=1.0,
                image_size=size,
                fixed_size=True,
                size_multiple=1,
                description="DeepFloyd IF stage",
                unet_module=pipe.unet.eval().requires_grad_(False),
                text_encoder=one.text_encoder.eval().requires_grad_(False),
                tokenizer=one.tokenizer,
                prediction_type=sched.config.prediction_type,
            )
        )
    return Cascade(name="deepfloyd-if", stages=stages, noise_levels=[250], align_corners=True, description="DeepFloyd IF-I-M + IF-II-M (64 -> 256 px); gated licence")
