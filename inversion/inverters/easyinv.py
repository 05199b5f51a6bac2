"""EasyInv (Zhang et al., "EasyInv: Toward Fast and Better DDIM Inversion", ICML 2025).

Plain DDIM inversion plus, inside a window of steps, a convex blend of the
current latent with the previous (possibly blended) one before it is pushed up:
    eps_i = eps(z_i, t_i)                                  (on the un-blended z_i)
    z~_i  = eta z_i + (1 - eta) z~_{i-1}    if start*N < i < (start+length)*N (so never at i = 0)
    z_{i+1} = inverse_step(z~_i, eps_i)
This is the ordering of the official SD-1.4 code (utilsV14.invert), which
produced the paper's SD numbers. Defaults (official code): SD eta 0.5, window
start 0.05, length 0.2 (i = 3..12 of 50); SDXL (the `sdxl` model, DDIM) eta 0.8, start
0.85, length 0.1 (the official SDXL code's). With 4-8 LCM or SDXL-Turbo steps those
windows hold no step, so for LCM and Euler ancestral samplers we use our own window
0.2..0.8 (stated as ours, not the paper's).
One UNet call per step.
"""

from __future__ import annotations

from .base import Inverter, Param


class EasyInvInverter(Inverter):
    name = "easyinv"
    title = "EasyInv"
    paper = "Zhang et al., EasyInv: Toward Fast and Better DDIM Inversion, ICML 2025"
    nfe_per_step = "1"
    params = {
        "eta": Param({"default": 0.5, "sdxl": 0.8}, float, 0.0, 1.0, "weight of the current latent in the blend (1 = plain DDIM)"),
        "inject_start": Param({"default": 0.05, "sdxl": 0.85, "lcm": 0.2, "euler_a": 0.2}, float, 0.0, 1.0, "window start, fraction of the steps"),
        "inject_length": Param({"default": 0.2, "sdxl": 0.1, "lcm": 0.6, "euler_a": 0.6}, float, 0.0, 1.0, "window length, fraction of the steps"),
    }

    def solve_step(self, model, x_prev, j, cond, sampler, noise, p, state):
        n = sampler.num_steps
        i = n - 1 - j  # ascending step index, as in the paper
        start = sampler.start(x_prev, j)  # x_prev itself but for Euler (the same sigma-space latent)
        eps = model.predict_noise(start, sampler.timesteps[j], cond)
        z = x_prev
        if p["inject_start"] * n < i < (p["inject_start"] + p["inject_length"]) * n:
            z = p["eta"] * x_prev + (1 - p["eta"]) * state["last"]
        state["last"] = z
        _, r = self.residual(sampler, x_prev, start, eps, j, noise)  # the DDIM residual at z_i
        return sampler.inverse_step(z, eps, j, noise), [r]
