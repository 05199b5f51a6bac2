"""Real models, loaded by hub id with diffusers' own classes.

fp16 on CUDA, fp32 on CPU. Where weights cannot be fetched (no network, not in
the Hugging Face cache, gated licence not accepted), a `ModelError` says which
repository is missing and what to do. CI runs all of it offline on hub-layout fixtures
(tests/hub_fixtures.py): the real repositories' files and configs, tiny widths.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from .base import ModelError
from .cascade import Cascade
from .unet_model import UNetModel, schedule_fields

log = logging.getLogger("inversion")

REPOS = {
    "lcm-dreamshaper-v7": "SimianLuo/LCM_Dreamshaper_v7",
    "sd-1.5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd-1.4": "CompVis/stable-diffusion-v1-4",
    "sd-1.5-lcm-lora": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "deepfloyd-if": "DeepFloyd/IF-I-M-v1.0",
    "sdxl-turbo": "stabilityai/sdxl-turbo",
    "lcm-sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
}
LCM_LORA = "latent-consistency/lcm-lora-sdv1-5"
LCM_LORA_FILE = "pytorch_lora_weights.safetensors"  # named: offline, diffusers cannot guess it
LCM_DISTILLED_GUIDANCE = 8.5  # LatentConsistencyModelPipeline's default guidance_scale (a w-embedding, no CFG pass)
LCM_LORA_GUIDANCE = 1.5  # the LCM-LoRA card's advice: guidance 1 to 2 (real CFG on a LoRA'd UNet)
SD_GUIDANCE = 7.5  # Stable Diffusion's usual text-to-image guidance, for the edit branch
IF_STAGE_2 = "DeepFloyd/IF-II-M-v1.0"
TAESD = "madebyollin/taesd"  # AutoencoderTiny for SD 1.x latents: the live preview decoder
TAESDXL = "madebyollin/taesdxl"  # the same for SDXL latents
LCM_LORA_SDXL = "latent-consistency/lcm-lora-sdxl"  # same file name as the SD 1.5 LoRA's
SDXL_VAE_FP16 = "madebyollin/sdxl-vae-fp16-fix"  # SDXL's VAE fine-tuned not to overflow in fp16
SDXL_GUIDANCE = 5.0  # StableDiffusionXLPipeline's default guidance_scale, for the edit branch
TURBO_GUIDANCE = 1.0  # SDXL-Turbo's card: no classifier-free guidance (its guidance_scale 0.0 is our 1: the conditional prediction)


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
        raise ModelError(f"cannot load {name!r} ({repo}): {hint}. Offline, use 'shapes-lcm' or 'shapes'. [{type(e).__name__}: {text[:300]}]") from e


LOADED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")  # what the loaders read; safety checker, feature extractor, watermarker are skipped
SDXL_LOADED = (*LOADED, "text_encoder_2", "tokenizer_2")
SDXL = ("sdxl-turbo", "lcm-sdxl", "sdxl")
FP16_VARIANTS = {"sd-1.5", "sd-1.4", "sd-1.5-lcm-lora", "deepfloyd-if", *SDXL}  # repos with *.fp16.* weights: half the download on a GPU


def needed_files(name: str) -> list[tuple[str, str]]:
    """(repository, file or component folder) pairs that must be in the cache for `name` to load
    offline: each repository's model_index.json and, of the components it lists, those the loader reads."""
    repos = [(REPOS[name], SDXL_LOADED if name in SDXL else LOADED)]
    if name == "deepfloyd-if":
        repos = [(REPOS[name], ("unet", "text_encoder", "tokenizer", "scheduler")), (IF_STAGE_2, ("unet", "scheduler", "image_noising_scheduler"))]
    files = [(repo, part) for repo, parts in repos for part in ("model_index.json", *parts)]
    if name == "sd-1.5-lcm-lora":
        files.append((LCM_LORA, LCM_LORA_FILE))
    if name == "lcm-sdxl":
        files.append((LCM_LORA_SDXL, LCM_LORA_FILE))
    return files


def is_cached(name: str) -> bool:
    """Whether a real model's files are in the local cache (no network): the files it needs, and in
    each component folder its config and (for networks) weights, so a half-finished download is not
    offered as available."""
    from huggingface_hub import try_to_load_from_cache

    try:
        for repo, part in needed_files(name):
            if "." in part:  # a file
                if not isinstance(try_to_load_from_cache(repo, part), str):
                    return False
                continue
            index = try_to_load_from_cache(repo, "model_index.json")
            if not isinstance(index, str) or part not in json.loads(Path(index).read_text()):
                return False
            folder = Path(index).parent / part
            if not any(folder.glob("*config.json")):  # config.json, scheduler_config.json, tokenizer_config.json
                return False
            if part in ("unet", "vae", "text_encoder") and not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
                return False
    except (OSError, ValueError):  # an unreadable cache or a malformed id: not available
        return False
    return True


def preview_decoder(device, dtype, repo: str = TAESD):
    """TAESD (TAESDXL for SDXL latents) where it loads (cache or network): live mode previews an edit
    with it at a fraction of the full VAE's cost; without it previews use the full VAE."""
    from diffusers import AutoencoderTiny

    try:
        return AutoencoderTiny.from_pretrained(repo, torch_dtype=dtype).to(device).eval().requires_grad_(False)
    except Exception as e:  # not cached offline, no network: not an error, previews are optional
        log.info("no preview decoder (%s): live previews use the full VAE [%s]", repo, type(e).__name__)
        return None


def _sd_bundle(name, pipe, sched, *, lcm: bool, device, dtype, description) -> UNetModel:
    distilled = bool(getattr(pipe.unet.config, "time_cond_proj_dim", None))
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor  # what it was trained at: SD 1.x 512 px, LCM Dreamshaper 768 px
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
        image_size=native,
        size_multiple=64,
        max_image_side=max(768, native),
        description=description,
        unet_module=pipe.unet.eval().requires_grad_(False),
        text_encoder=pipe.text_encoder.eval().requires_grad_(False),
        tokenizer=pipe.tokenizer,
        vae=pipe.vae.eval().requires_grad_(False),
        scaling_factor=pipe.vae.config.scaling_factor,
        prediction_type=sched.config.prediction_type,
        preview_vae=preview_decoder(device, dtype),
    )


def load_sd(name: str, device=None, dtype=None) -> UNetModel:
    from diffusers import DDIMScheduler, LatentConsistencyModelPipeline, LCMScheduler, StableDiffusionPipeline

    dev, dt = default_device()
    device, dtype = device or dev, dtype or dt
    repo = REPOS[name]
    if name == "lcm-dreamshaper-v7":
        pipe = _from_pretrained(LatentConsistencyModelPipeline, repo, name, dtype=dtype, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        sched = LCMScheduler.from_config(pipe.scheduler.config)
        desc = "LCM-distilled Dreamshaper v7 (SD-1.5 architecture), 4-8 steps, guidance as a w-embedding"
        lcm = True
    else:
        variant = "fp16" if dtype == torch.float16 and name in FP16_VARIANTS else None
        pipe = _from_pretrained(StableDiffusionPipeline, repo, name, dtype=dtype, variant=variant, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        lcm = name.endswith("lcm-lora")
        if lcm:
            try:
                pipe.load_lora_weights(LCM_LORA, weight_name=LCM_LORA_FILE)
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


def sdxl_vae_fp16(device):
    """madebyollin/sdxl-vae-fp16-fix in fp16 where it loads (cache or network), else None: SDXL's own
    VAE overflows in fp16 (its config sets force_upcast), so without the fix it runs in float32."""
    from diffusers import AutoencoderKL

    try:
        return AutoencoderKL.from_pretrained(SDXL_VAE_FP16, torch_dtype=torch.float16).to(device)
    except Exception as e:  # not cached offline, no network: the float32 fallback
        log.info("no %s: SDXL's VAE runs in float32 [%s]", SDXL_VAE_FP16, type(e).__name__)
        return None


def load_sdxl(name: str, device=None, dtype=None):
    """SDXL-Turbo (Euler ancestral, trailing spacing, 512 px, no guidance), SDXL base with DDIM, or
    SDXL base with the LCM-LoRA fused (`lcm-sdxl`). Why the LoRA rather than the distilled UNet of
    latent-consistency/lcm-sdxl: it is the LCM configuration the official ReNoise code runs on SDXL,
    and it shares the 7 GB base download with `sdxl` (the LoRA adds 394 MB, a second UNet 5 GB)."""
    from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler, LCMScheduler, StableDiffusionXLPipeline

    from .sdxl import SDXLModel

    dev, dt = default_device()
    device, dtype = device or dev, dtype or dt
    repo = REPOS[name]
    variant = "fp16" if dtype == torch.float16 else None
    vae = sdxl_vae_fp16(device) if dtype == torch.float16 else None
    extra = {"vae": vae} if vae is not None else {}
    pipe = _from_pretrained(StableDiffusionXLPipeline, repo, name, dtype=dtype, variant=variant, add_watermarker=False, **extra)
    if name == "lcm-sdxl":
        try:
            pipe.load_lora_weights(LCM_LORA_SDXL, weight_name=LCM_LORA_FILE)
        except Exception as e:
            raise ModelError(f"cannot load the LCM-LoRA {LCM_LORA_SDXL} (needs `peft` and the hub or its cache): {e}") from e
        pipe.fuse_lora()
        pipe.unload_lora_weights()  # the fused weights stay; the adapter layers go (one matmul per layer, not three)
    pipe.to(device)
    if vae is None and pipe.vae.dtype != torch.float32:
        pipe.vae.to(torch.float32)  # fp16 without the fix overflows (black images): the float32 fallback
    if name == "sdxl-turbo":
        sched = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
        kind, family, steps, guidance, edit_guidance = "euler_a", "sdxl-turbo", 4, TURBO_GUIDANCE, TURBO_GUIDANCE
        desc = "SDXL-Turbo: 1-4 steps, Euler ancestral (recorded noise), no classifier-free guidance"
    elif name == "lcm-sdxl":
        sched = LCMScheduler.from_config(pipe.scheduler.config)
        kind, family, steps, guidance, edit_guidance = "lcm", "lcm-sdxl", 4, 1.0, LCM_LORA_GUIDANCE
        desc = "SDXL with the LCM-LoRA fused, 4-8 steps, classifier-free guidance ~1-2"
    else:
        sched = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False, set_alpha_to_one=False)
        kind, family, steps, guidance, edit_guidance = "ddim", "sdxl", 50, 1.0, SDXL_GUIDANCE
        desc = "Stable Diffusion XL base 1.0 with DDIM"
    fields = schedule_fields(sched)
    if kind == "euler_a":
        fields["final_alpha"] = 1.0  # Euler's last sigma is 0
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor  # SDXL 1024 px, SDXL-Turbo 512 px
    return SDXLModel(
        name=name, family=family, sampler_kind=kind, **fields, device=device, dtype=dtype, latent_channels=4, latent_scale=8,
        default_steps=steps, default_guidance=guidance, default_edit_guidance=edit_guidance, uses_cfg=True,
        image_size=native, size_multiple=64, max_image_side=max(768, native), description=desc,
        unet_module=pipe.unet.eval().requires_grad_(False), text_encoder=pipe.text_encoder.eval().requires_grad_(False), tokenizer=pipe.tokenizer,
        text_encoder_2=pipe.text_encoder_2.eval().requires_grad_(False), tokenizer_2=pipe.tokenizer_2,
        zeros_for_empty_prompt=bool(pipe.config.get("force_zeros_for_empty_prompt", True)),
        vae=pipe.vae.eval().requires_grad_(False), scaling_factor=pipe.vae.config.scaling_factor,
        prediction_type=sched.config.prediction_type, preview_vae=preview_decoder(device, dtype, TAESDXL),
    )


SENTENCEPIECE = (("sentencepiece", "sentencepiece"), ("protobuf", "google.protobuf"))  # (pip package, module) transformers reads a spiece.model with


def _missing_sentencepiece() -> list[str]:
    import importlib

    missing = []
    for package, module in SENTENCEPIECE:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    return missing


def _t5_tokenizer_error(repo: str, error: ModelError) -> ModelError:
    """IF's published tokenizer is a SentencePiece model (tokenizer/spiece.model, no tokenizer.json);
    without `sentencepiece` and `protobuf` transformers cannot read it and fails with a message about
    tiktoken, which `_from_pretrained` reported as weights missing from the cache."""
    from huggingface_hub import try_to_load_from_cache

    missing = _missing_sentencepiece()
    spm_only = isinstance(try_to_load_from_cache(repo, "tokenizer/spiece.model"), str) and not isinstance(try_to_load_from_cache(repo, "tokenizer/tokenizer.json"), str)
    if missing and (spm_only or "tiktoken" in str(error) or "sentencepiece" in str(error).lower()):
        return ModelError(f"cannot load 'deepfloyd-if' ({repo}): its T5 tokenizer is a SentencePiece model (tokenizer/spiece.model), which needs `pip install {' '.join(missing)}`")
    return error


def load_deepfloyd_if(device=None, dtype=None) -> Cascade:
    """DeepFloyd IF-I-M (64 px) + IF-II-M (64 -> 256 px), sharing the T5-XXL encoder. Gated. The stage
    sizes are IF's (model card: 64, 256 px), not read from the UNet configs (IF-II's `sample_size` is unverified)."""
    from diffusers import DDIMScheduler, IFPipeline, IFSuperResolutionPipeline

    dev, dt = default_device()
    device, dtype = device or dev, dtype or dt
    variant = "fp16" if dtype == torch.float16 else None
    try:
        one = _from_pretrained(IFPipeline, REPOS["deepfloyd-if"], "deepfloyd-if", dtype=dtype, variant=variant, safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False)
    except ModelError as e:
        raise _t5_tokenizer_error(REPOS["deepfloyd-if"], e) from e.__cause__
    two = _from_pretrained(IFSuperResolutionPipeline, IF_STAGE_2, "deepfloyd-if", dtype=dtype, variant=variant, text_encoder=None, tokenizer=None, safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False)
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
