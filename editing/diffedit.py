"""DiffEdit (Couairon et al., "DiffEdit: Diffusion-based semantic image editing
with mask guidance", ICLR 2023).

Mask: the clean latent is noised `mask_samples` times to the timestep at
`mask_strength`, and the noise predictions for the source and target prompts
(with guidance) are compared; |eps_tgt - eps_src| averaged over samples and
channels, clamped at `mask_clamp` x its mean, divided by that clamp and
thresholded at 0.5 gives a binary mask -- the same definition as diffusers'
StableDiffusionDiffEditPipeline.generate_mask (one UNet batch: 1 NFE). With
classifier-free guidance the guided difference is g (eps_tgt - eps_src) (the
unconditional halves, from one negative prompt, cancel) and the mask is scale-free,
so any nonzero `mask_guidance` gives the same mask (up to rounding); on a guidance-embedding LCM the
guidance is a UNet input and it matters.
Edit: start from the inverted latent at `encode_ratio` of the steps, denoise
with the target prompt, and after every step keep the edit inside the mask and
paste the background from the inversion at the *matching* level: the trajectory
latent at the step's target timestep, and the clean latent after the last step
(diffusers pastes the latent one level too noisy; noticeable at 4-8 LCM steps).
`background="reconstruction"` pastes the source branch's reconstruction instead
(both branches in one batch), so the result differs from the reconstruction
only inside the mask. Needs no attention control, so it runs on every model.
"""

from __future__ import annotations

import torch

from inversion.models.base import Conditioning
from inversion.params import Param
from inversion.sampling import sample

from .base import EditLatents, Editor
from .loop import run_branches, source_condition, target_condition


def strength_step(num_steps: int, strength: float) -> int:
    """The first sampling step at `strength` of the schedule (diffusers' get_timesteps)."""
    init = min(int(num_steps * strength), num_steps)
    return max(num_steps - init, 0)


@torch.no_grad()
def diffedit_mask(model, x0, source_cond: Conditioning, target_cond: Conditioning, timestep: int, noise: torch.Tensor, clamp_ratio: float = 3.0) -> torch.Tensor:
    """(1, 1, h, w) binary mask where the prompts disagree about the noise (one UNet batch)."""
    n = noise.shape[0]
    a = float(model.alphas_cumprod[timestep])
    xt = a**0.5 * x0.to(noise) + (1 - a) ** 0.5 * noise
    cond = Conditioning.cat([source_cond.rows([0] * n), target_cond.rows([0] * n)])
    eps = model.predict_noise(torch.cat([xt, xt]), timestep, cond)
    diff = (eps[n:] - eps[:n]).abs().mean(dim=(0, 1), keepdim=True)
    clamp = diff.mean() * clamp_ratio
    # identical predictions: nothing to edit (decided on the device: no host read)
    return torch.where(clamp == 0, torch.zeros_like(diff), (diff.clamp(0, clamp) / clamp > 0.5).float())


class DiffEdit(Editor):
    name = "diffedit"
    title = "DiffEdit"
    paper = "Couairon et al., DiffEdit: Diffusion-based semantic image editing with mask guidance, ICLR 2023"
    needs_attention = False
    params = {
        "mask_samples": Param(10, int, 1, 64, "noise samples averaged for the mask"),
        "mask_strength": Param(0.5, float, 0.0, 1.0, "noise level of the mask samples (fraction of the schedule)"),
        "mask_clamp": Param(3.0, float, 0.1, 100.0, "clamp at this multiple of the mean difference"),
        "mask_guidance": Param(-1.0, float, -1.0, 50.0, "guidance of the mask pass (-1: the edit's); with classifier-free guidance any nonzero value gives the same mask (up to rounding)"),
        "encode_ratio": Param({"default": 0.8, "lcm": 1.0, "euler_a": 1.0}, float, 0.0, 1.0, "how far along the inversion the edit starts"),
        "background": Param("inversion", str, choices=("inversion", "reconstruction"), help="where the unmasked region comes from"),
        "mask_seed": Param(0, int, 0, 2**31 - 1, "seed of the mask noise"),
    }

    def edit(self, model, inv, target_prompt, guidance, p, progress=None, region=None) -> EditLatents:
        n = inv.num_steps
        sampler = model.sampler_for(inv)
        inv.check_compatible(sampler, model.name)
        inv = inv.to(model.device)  # the background is pasted from the trajectory every step: one copy
        src = source_condition(model, inv)
        tgt = target_condition(model, target_prompt, guidance, inv)
        mg = guidance if p["mask_guidance"] < 0 else p["mask_guidance"]
        t_mask = sampler.timesteps[min(strength_step(n, p["mask_strength"]), n - 1)]
        if region is not None:
            mask = region.to(model.device).float()  # painted: no mask pass
        else:
            gen = torch.Generator().manual_seed(p["mask_seed"])
            noise = torch.randn((p["mask_samples"], *inv.x0.shape[1:]), generator=gen).to(model.device)
            mask = diffedit_mask(model, inv.x0.to(model.device), src.with_guidance(mg), tgt.with_guidance(mg), t_mask, noise, p["mask_clamp"])
        j0 = min(strength_step(n, p["encode_ratio"]), n - 1)
        source_latent = None
        if p["background"] == "inversion":

            def paste(j, x):
                return x * mask + inv.latent_after(j).to(x) * (1 - mask)

            x = run_branches(model, inv, tgt, inv.latent_before(j0), start=j0, after_step=paste, progress=progress)
        else:
            x = inv.z_T.to(model.device)
            if j0 > 0:  # the source branch alone until the target joins
                x = sample(model, x, src, sampler, inv.noises, stop=j0)

            def paste(j, x):
                x[1:2] = x[1:2] * mask + x[0:1] * (1 - mask)
                return x

            both = run_branches(model, inv, Conditioning.cat([src, tgt]), x.repeat(2, 1, 1, 1), start=j0, after_step=paste, progress=progress)
            x, source_latent = both[1:2], both[0:1]
        info = {"mask_timestep": int(t_mask), "start_step": j0, "mask_fraction": float(mask.mean()), "mask": "painted" if region is not None else "automatic"}
        return EditLatents(x, source_latent, p, mask, info)
