"""Plain DDIM inversion (Song et al. 2021; Dhariwal & Nichol 2021; as used by
Prompt-to-Prompt and diffusers' DDIMInverseScheduler).

Step j undoes sampling step j by evaluating eps at the *less* noisy latent with
the target timestep, x_t = inverse_step(x_prev, eps(x_prev, t_j)): the
approximation eps(x_t) ~ eps(x_prev) that the iterative inverters correct.
On Euler ancestral samplers eps is evaluated at the same sigma-space latent instead
(`Sampler.start`), the official codes' plain Euler inversion.
One UNet call per step (plus one for stochastic samplers' noise correction).
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
        z = sampler.start(x_prev, j)  # x_prev itself but for Euler (the same sigma-space latent)
        eps = model.predict_noise(z, sampler.timesteps[j], cond)
        x_t, r = self.residual(sampler, x_prev, z, eps, j, noise)
        return x_t, [r]
