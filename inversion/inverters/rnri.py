"""RNRI: Regularized Newton-Raphson Inversion (Samuel et al., "Regularized
Newton Raphson Inversion for Text-to-Image Diffusion Models", 2023; ICLR 2025
as "Lightning-Fast Image Inversion and Editing ...", GNRI).

Each step is a root-finding problem on the implicit residual
    r(z) = z - F(z),   F(z) = inverse_step(x_prev, eps(z, t)) = A + c * eps(z),
regularised by the forward-process prior q(z_t | z_0) = N(sqrt(a_t) z_0, (1 - a_t) I)
so the solution stays in distribution. Newton-Raphson needs J_r = I - c J_eps;
the full UNet Jacobian is infeasible, so we approximate J_eps ~ kappa I:
- first iteration: kappa from a Gaussian model of the data with the image's
  own variance s^2 (exact for Gaussian data): kappa = sqrt(1-a)/(a s^2 + 1 - a);
  for a super-resolution stage s^2 is the variance left given its low-res condition;
- later iterations: the secant estimate from the last two UNet calls,
  kappa = <d eps, d z> / <d z, d z> (no extra NFE).
The regularised Newton step (ours: a Gauss-Newton step with this Jacobian model; the
paper states Newton-Raphson on the residual, the official code runs the scalar step of
`newton="l1"` below) minimises |r|^2/2 + lambda |z - mu_t|^2 / (2 (1 - a_t)):
    z <- z - (J r + lambda (z - mu_t)/(1 - a_t)) / (J^2 + lambda/(1 - a_t)),  J = 1 - c kappa.
It converges in 1-2 iterations per step (measured in the README). Where it does not -- the residual of
the last UNet call is larger than an earlier one's, as when the secant Jacobian is near singular and a
step overshoots -- the step returns F(z) of the best candidate evaluated instead of the untested Newton
iterate (ours: measured on shapes-lcm, one generated image in three had its first step diverge to a
latent 7 times too large).

`newton="l1"` runs the official code's variant instead: a scalar Newton step on
L(z) = mean|F(z) - z| + alpha/2 mean(((F(z) - mu_t)/sigma_t)^2) with the UNet
Jacobian dropped (z <- z + L sign(F(z) - z)), keeping the candidate F(z) with the
lowest L. The paper's "prompt-aware adjustment of the encoding" is not in the
public code and not specified precisely enough to reimplement; it is omitted.
On SDXL-Turbo's Euler ancestral sampler the defaults are the official code's: 2 iterations
per step, strength 0.6 (the last 2 of 4 steps, t = 249 -> 499), no guidance during inversion
(the model's guidance 1: the conditional prediction, their guidance_scale 0), and `l1` works in
Euler's sigma space as the official step does (the L1 term and the step on X = x / sqrt(a_t);
its 1/16384 is the mean over a 512 px SDXL latent). Ours there: the secant step stays the
default, and the noise is corrected (`noise_correction`, exact reconstruction) where the official
code replays its seeded noise list as drawn (`noise_correction=false`).
NFE per step: `iterations` at most (+1 for stochastic samplers' noise correction).

Host reads: the tolerance test decides whether the UNet is called again, so it is read on the
host once per iteration from the second to the last but one -- none at the default 2 iterations
(shapes' 4: two per step); at the last iteration it only picks F(z) or the Newton iterate, on the
device. The `l1` variant keeps its best candidate on the device. `begin` reads the data variance
once per inversion (the Gaussian Jacobian's constant, computed in double precision on the host).
"""

from __future__ import annotations

import torch

from .base import SHARED_PARAMS, Inverter, Param


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1).view(-1, *([1] * (a.dim() - 1)))


class RNRIInverter(Inverter):
    name = "rnri"
    title = "RNRI (regularised Newton-Raphson)"
    paper = "Samuel et al., Regularized Newton Raphson Inversion for Text-to-Image Diffusion Models (GNRI, ICLR 2025)"
    nfe_per_step = "<= iterations (2; shapes 4)"
    params = {
        # shapes: 2 iterations leave its clamped pixel denoiser at ~30 dB, 4 reach ~50 dB (measured)
        "iterations": Param({"default": 2, "shapes": 4}, int, 1, 50, "Newton iterations (UNet calls) per step at most"),
        "tolerance": Param(1e-3, float, 0.0, 1.0, "stop once rms residual <= tolerance x rms(latent)"),
        "prior_weight": Param(1e-5, float, 0.0, 10.0, "lambda: weight of the forward-process prior"),
        "newton": Param("secant", str, choices=("secant", "l1"), help="secant: ours, a regularised Gauss-Newton step with a secant Jacobian; l1: the official code's scalar L1 step"),
        "l1_alpha": Param(0.1, float, 0.0, 10.0, "prior weight of the l1 variant (official default 0.1)"),
        # the official demo (SDXL-Turbo, Euler ancestral) inverts the last 2 of its 4 steps (strength 0.6)
        "strength": Param({"default": 1.0, "euler_a": 0.6}, float, 0.01, 1.0, SHARED_PARAMS["strength"].help),
    }

    def calls_per_step(self, p: dict) -> int:
        return p["iterations"]

    def begin(self, x0, cond):
        # The Gaussian Jacobian needs the variance of what the model does not know: given a
        # super-resolution stage's low-res condition, that is the residual, not the image
        # (+3 to 5 dB on the shapes SR stage).
        spread = x0 - cond.image if cond.image is not None else x0 - x0.mean()
        return {"x0": x0, "data_var": float(spread.pow(2).mean())}

    def solve_step(self, model, x_prev, j, cond, sampler, noise, p, state):
        t, a = sampler.timesteps[j], sampler.alpha(j)
        mu, var = a**0.5 * state["x0"], 1 - a
        if p["newton"] == "l1":
            return self._l1(model, x_prev, j, cond, sampler, noise, p, t, mu, var)
        c = sampler.eps_gain(j, noise is not None)
        kappa = torch.full((x_prev.shape[0],) + (1,) * (x_prev.dim() - 1), (1 - a) ** 0.5 / (a * state["data_var"] + 1 - a), device=x_prev.device)
        lam = p["prior_weight"] / var
        z, res, last = sampler.start(x_prev, j), [], None
        scale = self.scale(x_prev)
        final = p["iterations"] - 1
        best_r, best_f = torch.full((), float("inf"), device=x_prev.device), None
        for k in range(p["iterations"]):
            eps = model.predict_noise(z, t, cond)
            f, r = self.residual(sampler, x_prev, z, eps, j, noise)
            res.append(r)
            last_best = r <= best_r  # (False for NaN)
            best_f = f if best_f is None else torch.where(r < best_r, f, best_f)  # the first of equal residuals stays
            best_r = torch.where(r < best_r, r, best_r)
            if last is not None:
                dz, de = z - last[0], eps - last[1]
                kappa = torch.where(_dot(dz, dz) > 0, _dot(de, dz) / _dot(dz, dz).clamp_min(1e-30), kappa)
            converged = self.within(r, p["tolerance"], scale) if k > 0 else None
            if converged is not None and k < final and bool(converged):  # the one host read per iteration
                return f, res
            jac = 1 - c * kappa
            resid = z - f
            last = (z, eps)
            z = z - (jac * resid + lam * (z - mu)) / (jac * jac + lam)
            if converged is not None and k == final:  # no further call depends on it: decided on the device
                z = torch.where(converged, f, z)
        # a Newton iteration whose residual grew (a secant Jacobian near singular overshoots) is not trusted:
        # then F of the best candidate evaluated, not the step from the last one (on the device, no read)
        trust = last_best if converged is None else last_best | converged  # a converged last call returns its F(z) (above)
        return torch.where(trust, z, best_f), res

    def _l1(self, model, x_prev, j, cond, sampler, noise, p, t, mu, var):
        # Euler: the official objective's L1 term and step are on X = x / sqrt(a) (the prior term is the same in both)
        unscale = sampler.alpha(j) ** -0.5 if sampler.kind == "euler_a" else 1.0
        z, res, best, best_obj = sampler.start(x_prev, j), [], None, None
        for _ in range(p["iterations"]):
            eps = model.predict_noise(z, t, cond)
            f, r = self.residual(sampler, x_prev, z, eps, j, noise)
            res.append(r)
            objective = unscale * (f - z).abs().mean() + p["l1_alpha"] / 2 * ((f - mu).pow(2) / var).mean()
            if best_obj is None:
                best, best_obj = f, objective
            else:  # the lowest objective so far (the first on ties, none on NaN), kept on the device
                better = objective < best_obj
                best, best_obj = torch.where(better, f, best), torch.where(better, objective, best_obj)
            z = z + objective / unscale * torch.sign(f - z)
        return best, res
