"""IterInv (Tang et al., "IterInv: Iterative Inversion for Pixel-Level T2I
Models", NeurIPS 2023 workshop) for pixel cascades such as DeepFloyd-IF.

Stage 1 (the base) is inverted by another inverter (`base_inverter`; the paper
uses null-text inversion, which only matters with guidance > 1 -- with the
guidance-1 inversions used here the best iterative inverter we have serves).
Each super-resolution stage is inverted per timestep by the paper's iterative
optimisation: with the (noise-augmented, upsampled) low-res condition
concatenated to the input, find z at level t such that one DDIM sampling step
from z lands on the already-inverted latent x_prev:
    z <- z - s_k * grad_z || step([z | y~], eps(z, t)) - x_prev ||^2,
starting from z = x_prev, `iterations` times (official: 21), with the step size
decaying s_k = lr * sqrt(linspace(1, lr_end, N))[k] (official: lr 0.3, lr_end 0.5).
Gradients flow through the UNet.

One adaptation, stated: the official plain gradient step diverges on our
schedules wherever the DDIM step's gain g^2 = a_{t'}/a_t exceeds ~1/lr (the
noisy end of a cosine schedule). We divide the gradient by 2 g^2 (Gauss-Newton
scaling of the dominant term of the step's Jacobian), so lr becomes a damping
factor in (0, 1] that means the same at every noise level (`precondition=False`
restores the official step). NFE per SR step: `iterations` forward passes,
each with a backward pass (about 3x the cost of a forward-only NFE).
"""

from __future__ import annotations

import math

import torch

from .base import SHARED_PARAMS, Inverter, Param

BASE_CHOICES = ("ddim", "easyinv", "fixed-point", "renoise", "rnri")


class IterInvInverter(Inverter):
    name = "iterinv"
    title = "IterInv (pixel cascades)"
    paper = "Tang et al., IterInv: Iterative Inversion for Pixel-Level T2I Models, NeurIPS 2023 workshop"
    nfe_per_step = "iterations (fwd+bwd) on SR stages"
    needs_cascade = True
    params = {
        "base_inverter": Param("fixed-point", str, choices=BASE_CHOICES, help="inverter for the base stage"),
        "iterations": Param(21, int, 1, 500, "gradient iterations per SR step (official 21)"),
        "lr": Param(0.3, float, 0.0, 10.0, "step size at the first step (official 0.3)"),
        "lr_end": Param(0.5, float, 0.0, 1.0, "step-size decay: s_k = lr * sqrt(linspace(1, lr_end, N))[k]"),
        "precondition": Param(True, bool, help="divide the gradient by 2 g^2, the DDIM step's squared gain"),
    }

    def for_stage(self, stage: int, params: dict):
        p = self.resolve_params("default", **params)
        if stage == 0:
            from . import get_inverter

            return get_inverter(p["base_inverter"]), {k: v for k, v in params.items() if k in SHARED_PARAMS}
        return self, params

    def calls_per_step(self, p: dict) -> int:
        return p["iterations"]

    def solve_step(self, model, x_prev, j, cond, sampler, noise, p, state):
        n = sampler.num_steps
        k = n - 1 - j
        size = p["lr"] * math.sqrt(1 + (p["lr_end"] - 1) * (k / max(1, n - 1)))
        if p["precondition"]:
            size /= 2 * sampler.alpha_next(j) / sampler.alpha(j)
        t = sampler.timesteps[j]
        z, res = sampler.start(x_prev, j).clone(), []
        with torch.enable_grad():
            for _ in range(p["iterations"]):
                z = z.detach().requires_grad_(True)
                eps = model.predict_noise(z, t, cond)
                loss = (sampler.step(z, eps, j, noise) - x_prev).pow(2).sum()
                (grad,) = torch.autograd.grad(loss, z)
                _, r = self.residual(sampler, x_prev, z.detach(), eps.detach(), j, noise)
                res.append(r)
                z = z.detach() - size * grad
        return z.detach(), res
