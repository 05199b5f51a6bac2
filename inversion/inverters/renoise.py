"""ReNoise (Garibi et al., "ReNoise: Real Image Inversion Through Iterative
Noising", ECCV 2024).

Per step, starting from z^(0) = x_prev, re-noise K times:
    eps_k = eps(z^(k), t),   z^(k+1) = inverse_step(x_prev, eps_k)
then average the raw estimates of the averaging range and take one final inverse
step with the (regularised) average. As the official code: the range is the last
`average_last` estimates, and on the first step (t < 250, where K is capped at
`first_step_max`) the first `first_step_average` estimates (official (0, 5), our
default for LCM samplers; the sixth estimate the official code computes there is
unused, so we skip it).
Noise regularisation (the paper's, after pix2pix-zero) pulls an estimate towards
white Gaussian noise, and applies only to the estimates in the averaging range
and to the average: a patch-wise KL term (4x4 patches per channel, unbiased
variances, no factor 1/2) against eps_opt, the prediction at the forward-noised
input add_noise(z0, n, t) with one noise n per inversion, and an auto-correlation
term summed per channel over that channel's own random shifts at every scale.
Ours, not the official code's: a guard against divergence (a residual ten times the first
stops the step at its best candidate; not triggered on our models so far), a guard on the
regularisation (an estimate it drives to NaN or to ten times the larger of its own and eps_opt's
RMS, at least 1, is kept unregularised: the KL step, clipped at 100 per element, overshoots where
eps_opt's patches have almost no variance, as on random weights, and the auto-correlation step
then grows geometrically), and patch
variances computed in two passes -- the one-pass E[x^2] - m^2 went negative on shapes-lcm's
large noise estimates (|eps| ~ 50 at t = 759) and the KL turned NaN. Noise correction, which
makes stochastic samplers (LCM) reconstruct exactly, is
the shared `noise_correction` parameter: ours solves for the noise exactly, where
the official code moves the noise at most 10 normalised gradient steps of 1.8
towards it (a bounded correction; README). Paper defaults (SDXL-Turbo, 4 steps):
K = 9, averaging (8, 10), lambda_ac 20, lambda_kl 0.065, 4 regularisation steps,
5 rolls; they are our defaults on SDXL-Turbo's Euler ancestral sampler (the official demo's
model, with the official strength 1: every step inverted) and on LCM samplers, and we use
K = 4, no regularisation for 50-step DDIM models (the paper's SD examples use K = 1).
NFE per step: K + 1 (+1 for eps_opt when regularising, +1 for LCM noise correction).

Host reads: the divergence guard decides whether the UNet is called again, so it is read on the
host once per re-noising iteration but the last (on CUDA each read waits for that iteration's
UNet call); at the last iteration, and for the average's finiteness, the guard only picks the
returned latent, which is done on the device, as is the best candidate. The auto-correlation
shifts are drawn from a CPU generator (host values, no device read).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.base import Conditioning
from .base import Inverter, Param

KL_PATCH = 4  # the official patch side
DIVERGED = 10.0  # a residual this many times the first one's is divergence (ours: the official code has no guard)
KL_GRAD_CLIP = 100.0  # the official clip of the KL gradient
FIRST_STEP_T = 250  # below this timestep the official first-step settings apply
SEED = 7865  # the official run seed; per-step generators are SEED + step


def auto_correlation_loss(n: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """pix2pix-zero's pair loss: per channel, at every scale down to 8 px, the squared mean of
    the map times itself rolled by a random shift in [0, side / 2) (one shift for both axes)."""
    loss = n.new_zeros(())
    for c in range(n.shape[1]):
        x = n[:, c : c + 1]
        while True:
            shift = int(torch.randint(0, max(1, x.shape[-2] // 2), (1,), generator=gen))
            loss = loss + (x * torch.roll(x, shift, dims=-2)).mean().pow(2) + (x * torch.roll(x, shift, dims=-1)).mean().pow(2)
            if x.shape[-2] <= 8:
                break
            x = F.avg_pool2d(x, 2)
    return loss


def patch_kl_loss(n: torch.Tensor, ref: torch.Tensor, patch: int = KL_PATCH) -> torch.Tensor:
    """sum over patches and channels of |KL(N(n's patch) || N(ref's patch))|, unbiased variances."""
    patch = max(2, min(patch, *n.shape[-2:]))
    count = patch * patch

    def stats(x):
        x = x[..., : x.shape[-2] // patch * patch, : x.shape[-1] // patch * patch]  # whole patches, as avg_pool2d
        m = F.avg_pool2d(x, patch)
        centred = x - m.repeat_interleave(patch, -2).repeat_interleave(patch, -1)  # two-pass: no cancellation
        return m, F.avg_pool2d(centred * centred, patch) * count / (count - 1)

    m1, v1 = stats(n)
    m0, v0 = stats(ref)
    eps = 1e-6
    return (torch.log((v0 + eps) / (v1 + eps)) + (v1 + (m1 - m0) ** 2) / (v0 + eps) - 1).abs().sum()


def regularise_noise(eps: torch.Tensor, ref: torch.Tensor, p: dict, gen: torch.Generator) -> torch.Tensor:
    """The regularised estimate; the estimate itself where the regularisation diverged (ours)."""
    start = eps.detach()
    eps = regularised(start.clone(), ref, p, gen)
    scale = torch.maximum(start.pow(2).mean(), ref.pow(2).mean()).clamp_min(1.0).sqrt()
    diverged = ~torch.isfinite(eps).all() | (eps.pow(2).mean().sqrt() > DIVERGED * scale)
    return torch.where(diverged, start, eps)  # decided on the device


def regularised(eps: torch.Tensor, ref: torch.Tensor, p: dict, gen: torch.Generator) -> torch.Tensor:
    with torch.enable_grad():
        for _ in range(p["noise_reg_steps"]):
            if p["lambda_kl"] > 0:
                e = eps.requires_grad_(True)
                (g,) = torch.autograd.grad(patch_kl_loss(e, ref), e)
                eps = (e - p["lambda_kl"] * g.clamp(-KL_GRAD_CLIP, KL_GRAD_CLIP)).detach()
            if p["lambda_ac"] > 0:
                for _ in range(p["ac_rolls"]):
                    e = eps.requires_grad_(True)
                    (g,) = torch.autograd.grad(auto_correlation_loss(e, gen), e)
                    eps = (e - p["lambda_ac"] / p["ac_rolls"] * g).detach()
    return eps


class ReNoiseInverter(Inverter):
    name = "renoise"
    title = "ReNoise"
    paper = "Garibi et al., ReNoise: Real Image Inversion Through Iterative Noising, ECCV 2024"
    nfe_per_step = "K + 1 (+1 with noise regularisation)"
    params = {
        "renoise_steps": Param({"default": 4, "lcm": 9, "euler_a": 9}, int, 0, 100, "K: re-noising iterations per step"),
        "first_step_max": Param(5, int, 0, 100, f"K is capped at this where t < {FIRST_STEP_T}"),
        "average_last": Param({"default": 2, "lcm": 2, "euler_a": 2}, int, 1, 100, "how many final noise estimates are averaged"),
        "first_step_average": Param({"default": 0, "lcm": 5, "euler_a": 5}, int, 0, 100, f"where t < {FIRST_STEP_T}: average the first this many estimates (official 5; 0 = as other steps)"),
        "noise_reg_steps": Param({"default": 0, "lcm": 4, "euler_a": 4}, int, 0, 20, "noise-regularisation steps per estimate (0 = off)"),
        "lambda_ac": Param(20.0, float, 0.0, 1000.0, "auto-correlation weight"),
        "lambda_kl": Param(0.065, float, 0.0, 100.0, "patch-KL weight"),
        "ac_rolls": Param(5, int, 1, 50, "random rolls of the auto-correlation term"),
    }

    def begin(self, x0, cond) -> dict:
        """The clean input and one forward noise per inversion: eps_opt's input at each t."""
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(SEED)).to(x0)
        return {"x0": x0, "noise": noise}

    def calls_per_step(self, p: dict) -> int:
        return p["renoise_steps"] + 1  # eps_opt rides in the first call's batch

    def averaging_range(self, t: int, p: dict) -> tuple[int, int]:
        """(first, last + 1) of the averaged estimates k = 0..K at timestep t."""
        k = min(p["renoise_steps"], p["first_step_max"]) if t < FIRST_STEP_T else p["renoise_steps"]
        if t < FIRST_STEP_T and p["first_step_average"]:
            return 0, min(k + 1, p["first_step_average"])
        return max(0, k + 1 - p["average_last"]), k + 1

    def solve_step(self, model, x_prev, j, cond, sampler, noise, p, state):
        t = sampler.timesteps[j]
        first, stop = self.averaging_range(t, p)
        gen = torch.Generator().manual_seed(SEED + j)
        regularise = p["noise_reg_steps"] > 0
        z, averaged, res, ref = sampler.start(x_prev, j), [], [], None  # x_prev itself but for Euler (the same sigma-space latent)
        best_r, best_z = torch.full((), float("inf"), device=x_prev.device), z  # the fallback if the iteration diverges
        kept = None  # at the last iteration: whether the guard passed, and the best candidate before it
        for k in range(stop):
            if k == 0 and regularise:  # eps at z^(0) and eps_opt in one UNet batch
                a = sampler.alpha(j)
                fwd = a**0.5 * state["x0"] + (1 - a) ** 0.5 * state["noise"]
                pair = cond.memo("renoise pair", lambda: Conditioning.cat([cond, cond]))  # one per inversion: its device copies too
                eps, ref = model.predict_noise(torch.cat([z, fwd]), t, pair).chunk(2)
            else:
                eps = model.predict_noise(z, t, cond)
            _, r = self.residual(sampler, x_prev, z, eps, j, noise)
            res.append(r)
            passed = self.within(r, DIVERGED, res[0])  # False also for NaN
            if k < stop - 1:
                if not bool(passed):  # ours: stop and keep the best candidate (the one host read per iteration)
                    return best_z, res
            else:  # no further call depends on it: decided on the device, below
                kept = (passed, best_z)
            better = r < best_r  # strictly: the first of equal residuals stays, as min() kept it
            best_r, best_z = torch.where(better, r, best_r), torch.where(better, z, best_z)
            if k >= first:
                averaged.append(eps)
                if regularise:
                    eps = regularise_noise(eps, ref, p, gen)
            z = sampler.inverse_step(x_prev, eps, j, noise)
        if len(averaged) > 1 or (regularise and averaged):
            avg = torch.stack(averaged).mean(0)
            if regularise:
                avg = regularise_noise(avg, ref, p, gen)
            z = torch.where(torch.isfinite(avg).all(), sampler.inverse_step(x_prev, avg, j, noise), best_z)
        passed, before = kept
        return torch.where(passed, z, before), res
