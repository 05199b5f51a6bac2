"""Fixed-point inversion with acceleration (Pan et al., "Effective Real Image
Editing with Accelerated Iterative Diffusion Inversion", ICCV 2023 -- AIDI).

Each step solves z = F(z) = inverse_step(x_prev, eps(z, t)) by iteration from
z^0 = x_prev (Euler: `Sampler.start`; so the first iterate is plain DDIM inversion). Accelerations:
- "anderson" (default, ours): Anderson mixing over the last `window` iterates,
  the classical acceleration AIDI cites; it solves the small least-squares
  problem min ||sum_i a_i g_i|| (sum a_i = 1) on the residuals g = F(z) - z.
- "average": AIDI's own empirical acceleration, z^{k+1} = (F(z^k) + F(z^{k-1})) / 2.
- "none": plain iteration z^{k+1} = F(z^k).
Stops early once rms(F(z) - z) <= `tolerance` x rms(x_prev).
NFE per step: `iterations` at most (+1 for LCM noise correction).

Host reads: the tolerance test decides whether the UNet is called again, so it is read on
the host once per iteration from the second to the last but one (on CUDA each read waits for
that iteration's UNet call); at the last iteration it only picks F(z) or the accelerated
iterate, which is done on the device. Everything else (residuals, rms(x_prev), Anderson's
solve) stays on the device.
"""

from __future__ import annotations

import torch

from .base import Inverter, Param


def anderson_mix(zs: list[torch.Tensor], fs: list[torch.Tensor], ridge: float = 1e-10) -> torch.Tensor:
    """Type-II Anderson step from iterates z_i and their images F(z_i), per batch row."""
    b = zs[-1].shape[0]
    g = torch.stack([(f - z).reshape(b, -1) for z, f in zip(zs, fs)], dim=-1).double()  # (B, D, m+1)
    f = torch.stack([f.reshape(b, -1) for f in fs], dim=-1).double()
    dg, df = g[..., 1:] - g[..., :-1], f[..., 1:] - f[..., :-1]
    gram = dg.transpose(1, 2) @ dg
    gram = gram + ridge * gram.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-30)[:, None, None] * torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    # solve_ex: linalg.solve's result without its error check, a host read on CUDA (the ridge keeps gram regular)
    gamma = torch.linalg.solve_ex(gram, dg.transpose(1, 2) @ g[..., -1:], check_errors=False).result
    out = f[..., -1:] - df @ gamma
    return out.reshape(zs[-1].shape).to(zs[-1].dtype)


class FixedPointInverter(Inverter):
    name = "fixed-point"
    title = "Fixed-point iteration (accelerated)"
    paper = "Pan et al., Effective Real Image Editing with Accelerated Iterative Diffusion Inversion, ICCV 2023"
    nfe_per_step = "<= iterations"
    params = {
        "iterations": Param({"default": 5, "lcm": 4, "euler_a": 4}, int, 1, 100, "UNet calls per step at most"),
        "acceleration": Param("anderson", str, choices=("anderson", "average", "none"), help="anderson (ours, the default) or average (AIDI's empirical acceleration) or none"),
        "window": Param(2, int, 1, 8, "Anderson history length"),
        "tolerance": Param(1e-4, float, 0.0, 1.0, "stop once rms residual <= tolerance x rms(latent)"),
    }

    def calls_per_step(self, p: dict) -> int:
        return p["iterations"]

    def solve_step(self, model, x_prev, j, cond, sampler, noise, p, state):
        t = sampler.timesteps[j]
        z, zs, fs, res = sampler.start(x_prev, j), [], [], []
        scale = self.scale(x_prev)
        last = p["iterations"] - 1
        for k in range(p["iterations"]):
            eps = model.predict_noise(z, t, cond)
            f, r = self.residual(sampler, x_prev, z, eps, j, noise)
            res.append(r)
            zs, fs = (zs + [z])[-(p["window"] + 1) :], (fs + [f])[-(p["window"] + 1) :]
            converged = self.within(r, p["tolerance"], scale) if k > 0 else None
            if converged is not None and k < last and bool(converged):  # the one host read per iteration
                return f, res
            if p["acceleration"] == "anderson" and len(zs) > 1:
                z = anderson_mix(zs, fs)
            elif p["acceleration"] == "average" and len(fs) > 1:
                z = 0.5 * (fs[-1] + fs[-2])
            else:
                z = f
            if converged is not None and k == last:  # no further call depends on it: decided on the device
                z = torch.where(converged, f, z)
        return z, res
