"""Is an inversion's noise noise? Statistics of z_T and of the recorded per-step noise.

An editor starts its target branch from what the inverter returned. Where z_T (or an LCM's
recorded step noise) is not a typical Gaussian sample -- too small, heavy-tailed, or carrying the
image -- the target branch cannot leave the source image, and the edit changes nothing. These
numbers tell that apart, per inversion:

- `z_T`: mean, std, excess kurtosis and the Kolmogorov-Smirnov distance of its values from N(0, 1)
  (not standardised first: a too-small z_T is far from N(0, 1));
- `implied_noise`: the noise z_T implies at its level, (z_T - sqrt(a_T) x0) / sqrt(1 - a_T), with
  the same statistics (on a schedule whose last level keeps some signal, SD's a(999) = 4.7e-3,
  z_T itself is not N(0, I); this is what should be);
- `step_noise`: the recorded noise of each LCM step that injects noise, with the same statistics;
- `carried`, where the model is given: which part carries the image. PSNR of the reconstruction
  (i) with fresh Gaussian step noise in place of the recorded one (z_T kept) and (ii) with a fresh
  z_T (the recorded step noise kept). High (i) and low (ii): z_T carries the image, as a
  deterministic inversion's does; the reverse: the step noise does, and z_T is a placeholder.

The normality check the tests use is `looks_gaussian` on the implied noise.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

KS_LIMIT = 0.05  # KS distance that counts as "not N(0, 1)"; the 1% critical value at n = 1,000 is 0.05
STD_LIMIT = 0.1  # |std - 1|
KURTOSIS_LIMIT = 1.0  # |excess kurtosis|


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def moments(x: torch.Tensor) -> dict:
    """mean, std, excess kurtosis and KS distance from N(0, 1) of a tensor's values."""
    v = x.detach().double().flatten().cpu()
    mean, std = float(v.mean()), float(v.std())
    z = (v - mean) / std if std > 0 else v - mean
    kurt = float(z.pow(4).mean() - 3) if std > 0 else math.nan
    s, _ = torch.sort(v)
    n = len(s)
    cdf = _normal_cdf(s)
    ks = float(torch.maximum(torch.arange(1, n + 1, dtype=torch.float64) / n - cdf, cdf - torch.arange(n, dtype=torch.float64) / n).max())
    return {"mean": mean, "std": std, "kurtosis": kurt, "ks": ks}


def looks_gaussian(stats: dict) -> bool:
    """Whether `moments` describe a sample that passes as N(0, 1)."""
    return stats["ks"] <= KS_LIMIT and abs(stats["std"] - 1) <= STD_LIMIT and abs(stats["kurtosis"]) <= KURTOSIS_LIMIT


def noise_statistics(inv, alphas_cumprod: torch.Tensor) -> dict:
    """The statistics of one stage's `Inversion` (see the module docstring), without model calls."""
    a = float(alphas_cumprod[inv.timesteps[0]])
    implied = (inv.z_T.double() - a**0.5 * inv.x0.double()) / (1 - a) ** 0.5
    out = {"z_T": moments(inv.z_T), "implied_noise": moments(implied), "t_start": int(inv.timesteps[0])}
    if inv.noises is not None:
        out["step_noise"] = [moments(inv.noises[j]) for j in range(inv.num_steps - 1)]  # the last step's is a residual
    return out


def noise_fields(inv, alphas_cumprod: torch.Tensor) -> dict:
    """The implied noise's figures under the names the CLI's JSON and the app's Compare give them."""
    n = noise_statistics(inv, alphas_cumprod)["implied_noise"]
    return {"noise_std": n["std"], "noise_kurtosis": n["kurtosis"], "noise_ks": n["ks"], "noise_gaussian": looks_gaussian(n)}


@torch.no_grad()
def carried(model, inv, x: torch.Tensor, seed: int = 1) -> dict:
    """PSNR of reconstructions with fresh step noise (z_T kept) and with a fresh z_T (step noise kept),
    against the input image `x`: which of the two carries the image (single-stage `Inversion` or the
    base stage of a cascade, whose SR stages are then replayed as recorded)."""
    from .metrics import psnr
    from .models.cascade import as_cascade
    from .pipeline import stage_latents
    from .result import stage_inversions

    cascade = as_cascade(model)
    stages = stage_inversions(inv)
    base = stages[0]
    g = torch.Generator().manual_seed(seed)
    fresh_z = torch.randn(base.z_T.shape, generator=g, dtype=torch.float64).to(base.z_T.dtype)
    out = {}
    variants = {"fresh_z_T": replace(base, latents=torch.cat([base.latents[:-1], fresh_z[None]]))}
    if base.noises is not None:
        noises = base.noises.clone()
        for j in range(base.num_steps - 1):
            noises[j] = torch.randn(noises[j].shape, generator=g, dtype=torch.float64).to(noises.dtype)
        variants["fresh_step_noise"] = replace(base, noises=noises)
    for name, variant in variants.items():
        latents = stage_latents(cascade, [variant, *stages[1:]])
        out[f"psnr_{name}"] = psnr(cascade.top.decode(latents[-1]), x)
    return out
