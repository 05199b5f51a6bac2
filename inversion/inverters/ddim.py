"""Plain DDIM inversion (Song et al. 2021; Dhariwal & Nichol 2021; as used by
Prompt-to-Prompt and diffusers' DDIMInverseScheduler).

Step j undoes sampling step j by evaluating eps at the *less* noisy latent with
the target timestep, x_t = inverse_step(x_prev, eps(x_prev, t_j)): the
approximation eps(x_t) ~ eps(x_prev) that the iterative inverters correct.
One UNet call per step (plus one for LCM noise correction).
"""

from __future__ import annotations

from .base import Inverter


class DDIMInverter(Inverter):
    name = "ddim"
    title = "DDIM inversion"
    paper = "Song et al., Denoising Diffusion Implicit Models, ICLR 2021"
    nfe_per_step = "1"
    params = {}

    def solve_step(self, model, x_prev, j, cond, sampler, noise, p, state):
        eps = model.predict_noise(x_prev, sampler.timesteps[j], cond)
        x_t, r = self.residual(sampler, x_prev, x_prev, eps, j, noise)
        return x_t, [r]
