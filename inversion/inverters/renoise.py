"""ReNoise (Garibi et al., "ReNoise: Real Image Inversion Through Iterative
Noising", ECCV 2024).

Per step, starting from z^(0) = x_prev, re-noise K times:
    eps_k = eps(z^(k), t),   z^(k+1) = inverse_step(x_prev, eps_k)
then average the last `average_last` noise estimates and take one final
inverse step with the average (the paper's averaging of the later estimates).
Optional noise regularisation (paper, after pix2pix-zero) pulls each estimate
towards white Gaussian noise: a patch-wise KL term against the first estimate
(lambda_kl) and a multi-scale auto-correlation term (lambda_ac, random rolls).
Noise correction, which makes stochastic samplers (LCM) reconstruct exactly,
is the shared `noise_correction` parameter. Paper defaults (SDXL-Turbo, 4
steps): K = 9 (at most 5 when t < 250), average estimates 8-10, lambda_ac 20,
lambda_kl 0.065, 4 regularisation steps; we keep those for LCM and use K = 4,
no regularisation for 50-step DDIM models (the paper's SD examples use K = 1).
NFE per step: K + 1 (+1 for LCM noise correction).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Inverter, Param


def auto_correlation_loss(n: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Multi-scale auto-correlation of a noise map (0 for white noise, in expectation)."""
    loss = n.new_zeros(())
    while True:
        h, w = n.shape[-2:]
        sh = int(torch.randint(1, max(2, h // 2), (1,), generator=gen))
        sw = int(torch.randint(1, max(2, w // 2), (1,), generator=gen))
        loss = loss + (n * torch.roll(n, sh, dims=-2)).mean().pow(2) + (n * torch.roll(n, sw, dims=-1)).mean().pow(2)
        if min(h, w) <= 8:
            return loss
        n = F.avg_pool2d(n, 2)


def patch_kl_loss(n: torch.Tensor, ref: torch.Tensor, patch: int = 4) -> torch.Tensor:
    """KL between per-patch Gaussians fitted to n and to the reference estimate."""
    patch = max(1, min(patch, *n.shape[-2:]))

    def stats(x):
        m = F.avg_pool2d(x, patch)
        v = (F.avg_pool2d(x * x, patch) - m * m).clamp_min(1e-6)
        return m, v

    m1, v1 = stats(n)
    m0, v0 = stats(ref)
    return (0.5 * (torch.log(v0 / v1) + (v1 + (m1 - m0) ** 2) / v0 - 1)).abs().sum()


def regularise_noise(eps: torch.Tensor, ref: torch.Tensor, p: dict, gen: torch.Generator) -> torch.Tensor:
    eps = eps.detach().clone()
    with torch.enable_grad():
        for _ in range(p["noise_reg_steps"]):
            if p["lambda_kl"] > 0:
                e = eps.requires_grad_(True)
                (g,) = torch.autograd.grad(patch_kl_loss(e, ref), e)
                eps = (e - p["lambda_kl"] * g.clamp(-100, 100)).detach()
            for _ in range(p["ac_rolls"]):
                e = eps.requires_grad_(True)
                (g,) = torch.autograd.grad(auto_correlation_loss(e, gen), e)
                eps = (e - p["lambda_ac"] / p["ac_rolls"] * g).detach()
    return eps


class ReNoiseInverter(Inverter):
    name = "renoise"
    title = "ReNoise"
    paper = "Garibi et al., ReNoise: Real Image Inversion Through Iterative Noising, ECCV 2024"
    nfe_per_step = "K + 1"
    params = {
        "renoise_steps": Param({"default": 4, "lcm": 9}, int, 0, 100, "K: re-noising iterations per step"),
        "first_step_max": Param(5, int, 0, 100, "K is capped at this where t < 250"),
        "average_last": Param({"default": 2, "lcm": 2}, int, 1, 100, "how many final noise estimates are averaged"),
        "noise_reg_steps": Param({"default": 0, "lcm": 4}, int, 0, 20, "noise-regularisation steps per estimate (0 = off)"),
        "lambda_ac": Param(20.0, float, 0.0, 1000.0, "auto-correlation weight"),
        "lambda_kl": Param(0.065, float, 0.0, 100.0, "patch-KL weight"),
        "ac_rolls": Param(5, int, 1, 50, "random rolls of the auto-correlation term"),
    }

    def solve_step(self, model, x_prev, j, cond, sampler, noise, p, state):
        t = sampler.timesteps[j]
        k_max = min(p["renoise_steps"], p["first_step_max"]) if t < 250 else p["renoise_steps"]
        gen = torch.Generator().manual_seed(7865 + j)
        z, raw, res, ref = x_prev, [], [], None
        for k in range(k_max + 1):
            eps = model.predict_noise(z, t, cond)
            ref = eps if ref is None else ref
            _, r = self.residual(sampler, x_prev, z, eps, j, noise)
            res.append(r)
            raw.append(eps)
            if p["noise_reg_steps"] and k > 0:
                eps = regularise_noise(eps, ref, p, gen)
            z = sampler.inverse_step(x_prev, eps, j, noise)
        if len(raw) > 1:  # average the raw later estimates, then regularise the average
            avg = torch.stack(raw[-p["average_last"] :]).mean(0)
            if p["noise_reg_steps"]:
                avg = regularise_noise(avg, ref, p, gen)
            z = sampler.inverse_step(x_prev, avg, j, noise)
        return z, res
