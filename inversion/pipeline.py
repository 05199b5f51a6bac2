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
from .models.cascade import Cascade, as_cascade, base_stage
from .models.oracle import OracleModel
from .result import CascadeInversion, Inversion, packed, stage_inversions
from .sampling import reconstruct_latent, sample
from .schedule import STOCHASTIC

PSNR_CAP = 100.0  # identical images have infinite PSNR; JSON gets this cap instead


def input_tensor(model: DiffusionModel | Cascade, image, size: int | None = None, seed: int = 0) -> torch.Tensor:
    """The image as the model takes it: (1, 3, H, W) in [-1, 1]. The oracle draws a sample instead."""
    base = base_stage(model)
    if isinstance(base, OracleModel):
        return base.sample_data(seed)
    return as_cascade(model).prepare_image(load_image(image), size)


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
    """Invert `image` (path, PIL, array or a prepared tensor) to noise along the model's sampler,
    every stage of a cascade (SR stages with their recorded condition noise)."""
    inv = get_inverter(inverter)
    cascade = as_cascade(model)
    if inv.needs_cascade and not cascade.multistage:
        raise IncompatibleChoice(
            f"{inv.name} inverts the super-resolution stages of pixel cascades (shapes, tiny-if, deepfloyd-if); "
            f"{model.name} has a single stage. Pick another inverter or a cascade model."
        )
    x = image if isinstance(image, torch.Tensor) else input_tensor(model, image, size, seed)
    pyramid = cascade.pyramid(x.to(cascade.top.device))
    results = []
    for s, stage in enumerate(cascade.stages):
        stage_inv, stage_params = inv.for_stage(s, params)
        noise = cascade.condition_noise(s, x.shape[0], seed) if s > 0 else None
        cond = cascade.condition(s, prompt, guidance, negative_prompt, pyramid[s - 1] if s > 0 else None, noise)
        start = time.perf_counter()
        x0 = stage.encode_image(pyramid[s])
        encode_s = time.perf_counter() - start
        r = stage_inv.invert(stage, x0, cond, steps or stage.default_steps, seed=seed + s, progress=progress, **stage_params)
        r.stage, r.condition_noise, r.negative_prompt = s, noise, negative_prompt
        r.seconds += encode_s
        results.append(r)
    return packed(results, cascade.multistage)


def max_nfe(model: DiffusionModel | Cascade, inverter: str, steps: int | None = None, **params) -> int:
    """The most UNet calls `invert` can make with these choices (every stage), before running it."""
    inv = get_inverter(inverter)
    total = 0
    for s, stage in enumerate(as_cascade(model).stages):
        stage_inv, stage_params = inv.for_stage(s, params)
        total += stage_inv.max_nfe(stage, steps or stage.default_steps, **stage_params)
    return total


def _matching_stages(model, inv) -> tuple[Cascade, list[Inversion]]:
    cascade, stages = as_cascade(model), stage_inversions(inv)
    if len(stages) != len(cascade.stages):
        raise IncompatibleChoice(f"{model.name} has {len(cascade.stages)} stage(s); this inversion has {len(stages)}")
    return cascade, stages


@torch.no_grad()
def reconstruct(model: DiffusionModel | Cascade, inv: Inversion | CascadeInversion, progress=None) -> torch.Tensor:
    """Decode the inversion back to an image in [-1, 1]; each SR stage is conditioned on the
    previous stage's reconstruction with the recorded noise."""
    cascade, stages = _matching_stages(model, inv)
    return cascade.top.decode(stage_latents(cascade, stages, progress)[-1])


def stage_latents(cascade: Cascade, stages: list[Inversion], progress=None) -> list[torch.Tensor]:
    """Each stage's reconstruction, SR stages conditioned on the stage before's."""
    out, image = [], None
    for s, (stage, r) in enumerate(zip(cascade.stages, stages)):
        cond = cascade.condition(s, r.prompt, r.guidance, r.negative_prompt, image, r.condition_noise)
        out.append(reconstruct_latent(stage, r, cond, progress))
        image = stage.decode(out[-1])
    return out


@torch.no_grad()
def generate(model: DiffusionModel | Cascade, prompts: list[str], steps: int | None = None, guidance: float | None = None, seed: int = 0, size: int | None = None) -> torch.Tensor:
    """Text-to-image samples (B, 3, H, W) in [-1, 1]: every stage from seeded noise (SR stages
    conditioned on the stage before, with unguided SR as in the cascade's inversions)."""
    cascade = as_cascade(model)
    g = torch.Generator().manual_seed(seed)
    image = None
    for s, stage in enumerate(cascade.stages):
        side = stage.image_size if (s > 0 or size is None) else size
        noise = torch.randn((len(prompts), 3, side, side), generator=g) if s > 0 else None
        cond = cascade.condition(s, list(prompts), guidance if s == 0 else None, "", image, noise)
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
    top = as_cascade(model).top
    return _cap(psnr(top.decode(top.encode_image(x)), x))


def evaluate(model: DiffusionModel | Cascade, image, inv: Inversion | CascadeInversion, seed: int = 0, per_stage: bool = True,
             codec: float | None = None) -> tuple[dict, torch.Tensor]:
    """(the JSON contract's numbers for one inversion (see docs/ARCHITECTURE.md), the reconstruction).

    `per_stage` adds, for cascades, each SR stage reconstructed from the *true* low-res
    input (what it inverted): one more pass per SR stage. `codec`: the image's codec bound when the
    caller knows it already (it depends on the image alone; the app remembers it per image).
    """
    cascade, stages = _matching_stages(model, inv)
    start = time.perf_counter()
    latents = stage_latents(cascade, stages)
    recon = cascade.top.decode(latents[-1])
    recon_s = time.perf_counter() - start
    x = image if isinstance(image, torch.Tensor) else input_tensor(model, image, size=max(recon.shape[-2:]), seed=seed)  # at the size it was inverted
    m = image_metrics(recon, x)
    report = {
        "model": model.name,
        "inverter": inv.inverter,
        "steps": inv.steps,
        "nfe": inv.nfe,
        "seconds": round(inv.seconds, 4),
        "reconstruct_seconds": round(recon_s, 4),
        "psnr": _cap(m["psnr"]),
        "ssim": m["ssim"],
        "lpips": m["lpips"],
        "latent_psnr": _cap(latent_psnr(latents[-1], stages[-1].x0)),
        "vae_psnr": codec_bound(model, x) if codec is None else codec,
        # what was used, echoed: the model's defaults where none were given
        "seed": stages[0].seed,
        "guidance": stages[0].guidance,
        "negative_prompt": stages[0].negative_prompt,
        "size": list(x.shape[-2:]),
    }
    report.update(_uncorrected(cascade, stages, x))
    if cascade.multistage and per_stage:
        report["stages"] = [_stage_report(cascade, stages, s, x, latents[0]) for s in range(len(stages))]
    return report, recon


def uncorrected_stages(stages: list[Inversion]) -> list[Inversion] | None:
    """The stages with every stochastic stage's (LCM, Euler ancestral) last recorded residual removed
    (the last step sampled as diffusers samples it); None when no stage has one."""
    if not any(s.sampler in STOCHASTIC and s.noises is not None for s in stages):
        return None
    bare = []
    for s in stages:
        if s.sampler in STOCHASTIC and s.noises is not None:
            s = replace(s, noises=s.noises.clone())
            s.noises[-1] = 0
        bare.append(s)
    return bare


@torch.no_grad()
def reconstruct_uncorrected(model: DiffusionModel | Cascade, inv: Inversion | CascadeInversion) -> torch.Tensor | None:
    """The reconstruction without the last step's recorded residual (None for samplers without one):
    what separates inverters on a stochastic sampler, whose recorded noise makes every reconstruction exact."""
    cascade, stages = _matching_stages(model, inv)
    bare = uncorrected_stages(stages)
    return None if bare is None else cascade.top.decode(stage_latents(cascade, bare)[-1])


def _uncorrected(cascade: Cascade, stages: list[Inversion], x: torch.Tensor) -> dict:
    """Stochastic samplers (LCM, Euler ancestral) reconstruct exactly through the last step's
    recorded residual; without it (as diffusers samples) the error left is the inverter's own.
    Every such stage loses its last residual; for a cascade (shapes-lcm) the latent figure is
    the base stage's and the image goes through the SR stages."""
    bare = uncorrected_stages(stages)
    if bare is None:
        return {}
    latents = stage_latents(cascade, bare)
    return {"latent_psnr_uncorrected": _cap(latent_psnr(latents[0], stages[0].x0)), "psnr_uncorrected": _cap(psnr(cascade.top.decode(latents[-1]), x))}


def _stage_report(cascade: Cascade, stages: list[Inversion], s: int, x: torch.Tensor, base_latent: torch.Tensor) -> dict:
    """Each stage on its own: SR stages conditioned on the true low-res input (what they inverted)."""
    stage, r = cascade.stages[s], stages[s]
    if s == 0:
        rec = base_latent
    else:
        cond = cascade.condition(s, r.prompt, r.guidance, r.negative_prompt, cascade.pyramid(x)[s - 1], r.condition_noise)
        rec = reconstruct_latent(stage, r, cond)
    return {"stage": s, "size": stage.image_size, "inverter": r.inverter, "nfe": r.nfe, "seconds": round(r.seconds, 4), "latent_psnr": _cap(latent_psnr(rec, r.x0))}


def save_image(x: torch.Tensor, path) -> None:
    to_pil(x).save(path)
