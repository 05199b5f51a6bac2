"""The library's front door: invert an image, reconstruct it, measure it.

    from inversion import load_model, invert, reconstruct, evaluate
    model = load_model("shapes")
    inv = invert(model, "assets/shapes/example.png", "a red circle on a blue background", inverter="rnri", steps=20)
    image = reconstruct(model, inv)             # (1, 3, H, W) in [-1, 1]
    report, recon = evaluate(model, "assets/...", inv)  # psnr, ssim, latent_psnr, vae_psnr, lpips, nfe, seconds

Works the same on single-stage models and on pixel cascades (every stage is
inverted; super-resolution stages with their recorded condition noise).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import torch

from .errors import IncompatibleChoice
from .images import load_image, to_pil
from .inverters import get_inverter
from .metrics import image_metrics, latent_psnr, psnr
from .models.base import DiffusionModel
from .models.cascade import Cascade
from .models.oracle import OracleModel
from .result import CascadeInversion, Inversion
from .sampling import reconstruct_latent, sample

PSNR_CAP = 100.0  # identical images have infinite PSNR; JSON gets this cap instead


def input_tensor(model: DiffusionModel | Cascade, image, size: int | None = None, seed: int = 0) -> torch.Tensor:
    """The image as the model takes it: (1, 3, H, W) in [-1, 1]. The oracle draws a sample instead."""
    if isinstance(model, OracleModel):
        return model.sample_data(seed)
    return model.prepare_image(load_image(image), size)


def invert(
    model: DiffusionModel | Cascade,
    image,
    prompt: str = "",
    inverter: str = "ddim",
    steps: int | None = None,
    guidance: float | None = None,
    negative_prompt: str = "",
    seed: int = 0,
    size: int | None = None,
    progress=None,
    **params,
) -> Inversion | CascadeInversion:
    """Invert `image` (path, PIL, array or a prepared tensor) to noise along the model's sampler."""
    inv = get_inverter(inverter)
    x = image if isinstance(image, torch.Tensor) else input_tensor(model, image, size, seed)
    if isinstance(model, Cascade):
        return _invert_cascade(model, x, prompt, inv, steps, guidance, negative_prompt, seed, progress, params)
    if inv.needs_cascade:
        raise IncompatibleChoice(
            f"{inv.name} inverts the super-resolution stages of pixel cascades (shapes, tiny-if, deepfloyd-if); "
            f"{model.name} has a single stage. Pick another inverter or a cascade model."
        )
    steps = steps or model.default_steps
    cond = model.encode_prompt(prompt, guidance=guidance, negative=negative_prompt)
    start = time.perf_counter()
    x0 = model.encode_image(x)
    encode_s = time.perf_counter() - start
    result = inv.invert(model, x0, cond, steps, seed=seed, progress=progress, **params)
    result.negative_prompt = negative_prompt
    result.seconds += encode_s
    return result


def _invert_cascade(model: Cascade, x, prompt, inv, steps, guidance, negative_prompt, seed, progress, params) -> CascadeInversion:
    pyramid = model.pyramid(x.to(model.stages[-1].device))
    results = []
    for s, stage in enumerate(model.stages):
        stage_inv, stage_params = inv.for_stage(s, params)
        cond = stage.encode_prompt(prompt, guidance=guidance, negative=negative_prompt)
        noise = None
        if s > 0:
            noise = model.condition_noise(s, x.shape[0], seed)
            cond = cond.with_image(*model.sr_condition(s, pyramid[s - 1], noise))
        r = stage_inv.invert(stage, stage.encode_image(pyramid[s]), cond, steps or stage.default_steps, seed=seed + s, progress=progress, **stage_params)
        r.stage, r.condition_noise, r.negative_prompt = s, noise, negative_prompt
        results.append(r)
    return CascadeInversion(results)


@torch.no_grad()
def reconstruct(model: DiffusionModel | Cascade, inv: Inversion | CascadeInversion, progress=None) -> torch.Tensor:
    """Decode the inversion back to an image in [-1, 1].

    For a cascade each SR stage is conditioned on the previous stage's
    reconstruction with the recorded noise.
    """
    if isinstance(model, Cascade):
        return model.stages[-1].decode(_cascade_latents(model, inv, progress)[-1])
    if isinstance(inv, CascadeInversion):
        raise IncompatibleChoice(f"{model.name} has a single stage; this inversion is of a cascade")
    return model.decode(reconstruct_latent(model, inv, progress=progress))


def _cascade_latents(model: Cascade, inv, progress=None) -> list[torch.Tensor]:
    """Each stage's reconstruction, SR stages conditioned on the stage before's."""
    if not isinstance(inv, CascadeInversion):
        raise IncompatibleChoice(f"{model.name} is a cascade; this inversion has one stage")
    out, image = [], None
    for s, (stage, r) in enumerate(zip(model.stages, inv.stages)):
        cond = stage.encode_prompt(r.prompt, guidance=r.guidance, negative=r.negative_prompt)
        if s > 0:
            cond = cond.with_image(*model.sr_condition(s, image, r.condition_noise))
        out.append(reconstruct_latent(stage, r, cond, progress))
        image = stage.decode(out[-1])
    return out


@torch.no_grad()
def generate(model: DiffusionModel | Cascade, prompts: list[str], steps: int | None = None, guidance: float | None = None, seed: int = 0, size: int | None = None) -> torch.Tensor:
    """Text-to-image samples (B, 3, H, W) in [-1, 1]: every stage from seeded noise (SR stages
    conditioned on the stage before, with unguided SR as in the cascade's inversions)."""
    stages = model.stages if isinstance(model, Cascade) else [model]
    g = torch.Generator().manual_seed(seed)
    image = None
    for s, stage in enumerate(stages):
        side = stage.image_size if (s > 0 or size is None) else size
        cond = stage.encode_prompt(list(prompts), guidance=guidance if s == 0 else None)
        if s > 0:
            cond = cond.with_image(*model.sr_condition(s, image, torch.randn((len(prompts), 3, side, side), generator=g)))
        sampler = stage.sampler(steps or stage.default_steps)
        lat = side // stage.latent_scale
        z = torch.randn((len(prompts), stage.latent_channels, lat, lat), generator=g)
        noises = torch.randn((sampler.num_steps, *z.shape), generator=g) if sampler.stochastic else None
        if noises is not None:
            noises[-1] = 0  # the last LCM step takes no noise
        image = stage.decode(sample(stage, z, cond, sampler, noises))
    return image


def _cap(v: float | None) -> float | None:
    if v is None:
        return None
    return PSNR_CAP if math.isinf(v) or v > PSNR_CAP else v


def codec_bound(model: DiffusionModel | Cascade, x: torch.Tensor) -> float:
    """PSNR of decode(encode(x)) vs x: the best any inverter can reach (identity codecs: the cap)."""
    top = model.stages[-1] if isinstance(model, Cascade) else model
    return _cap(psnr(top.decode(top.encode_image(x)), x))


def evaluate(model: DiffusionModel | Cascade, image, inv: Inversion | CascadeInversion, seed: int = 0, per_stage: bool = True) -> tuple[dict, torch.Tensor]:
    """(the JSON contract's numbers for one inversion (see DESIGN.md), the reconstruction).

    `per_stage` adds, for cascades, each SR stage reconstructed from the *true* low-res
    input (what it inverted): one more pass per SR stage.
    """
    x = image if isinstance(image, torch.Tensor) else input_tensor(model, image, seed=seed)
    top = model.stages[-1] if isinstance(model, Cascade) else model
    last = inv.stages[-1] if isinstance(inv, CascadeInversion) else inv
    start = time.perf_counter()
    if isinstance(model, Cascade):
        stage_latents = _cascade_latents(model, inv)
        recovered = stage_latents[-1]  # pixel stages: the image is the sampler's tensor
        recon = top.decode(recovered)
    else:
        recovered = reconstruct_latent(model, inv)
        recon = model.decode(recovered)
    recon_s = time.perf_counter() - start
    m = image_metrics(recon, x)
    report = {
        "model": model.name,
        "inverter": inv.inverter,
        "steps": inv.num_steps,
        "nfe": inv.nfe,
        "seconds": round(inv.seconds, 4),
        "reconstruct_seconds": round(recon_s, 4),
        "psnr": _cap(m["psnr"]),
        "ssim": m["ssim"],
        "lpips": m["lpips"],
        "latent_psnr": _cap(latent_psnr(recovered, last.x0)),
        "vae_psnr": codec_bound(model, x),
    }
    first = inv.stages[0] if isinstance(inv, CascadeInversion) else inv
    if first.sampler == "lcm" and first.noises is not None:
        # LCM reconstructs exactly through the last step's recorded residual; without it
        # (as diffusers samples) the error left is the inverter's own. For a cascade whose
        # base stage is an LCM (shapes-lcm) the latent figure is the base stage's, and the
        # image goes through the SR stages as usual.
        bare = replace(first, noises=first.noises.clone())
        bare.noises[-1] = 0
        if isinstance(model, Cascade):
            latents = _cascade_latents(model, CascadeInversion([bare, *inv.stages[1:]]))
            bare_latent, image = latents[0], top.decode(latents[-1])
        else:
            bare_latent = reconstruct_latent(model, bare)
            image = model.decode(bare_latent)
        report["latent_psnr_uncorrected"] = _cap(latent_psnr(bare_latent, first.x0))
        report["psnr_uncorrected"] = _cap(psnr(image, x))
    if isinstance(inv, CascadeInversion) and per_stage:
        report["stages"] = [_stage_report(model, inv, s, x, stage_latents[0]) for s in range(len(inv.stages))]
    return report, recon


def _stage_report(model: Cascade, inv: CascadeInversion, s: int, x: torch.Tensor, base_latent: torch.Tensor) -> dict:
    """Each stage on its own: SR stages conditioned on the true low-res input (what they inverted)."""
    stage, r = model.stages[s], inv.stages[s]
    if s == 0:
        rec = base_latent
    else:
        cond = stage.encode_prompt(r.prompt, guidance=r.guidance, negative=r.negative_prompt)
        cond = cond.with_image(*model.sr_condition(s, model.pyramid(x)[s - 1], r.condition_noise))
        rec = reconstruct_latent(stage, r, cond)
    return {"stage": s, "size": stage.image_size, "inverter": r.inverter, "nfe": r.nfe, "seconds": round(r.seconds, 4), "latent_psnr": _cap(latent_psnr(rec, r.x0))}


def save_image(x: torch.Tensor, path) -> None:
    to_pil(x).save(path)
