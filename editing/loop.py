"""The editing sampler: source and target branches denoised together, one UNet
batch per step, both replaying the inversion's timesteps and recorded noise.

The source branch is the reconstruction: it starts from z_T with the
inversion's prompt and guidance, so its attention (what editors inject into
the target) comes from the image as the inverter recovered it, and an edit that
changes nothing equals the reconstruction exactly. `pin_source=True` resets the
source row to the inverted trajectory after every step instead (Direct
Inversion, Ju et al., ICLR 2024): injected features then come from the input's
own trajectory even when the inverter is inexact (DDIM, EasyInv).

No host reads per step: the trajectory and the recorded noise reach the device in one copy
per edit (`Inversion.to`), controllers keep their index and weight tensors there, and checks
a controller makes on the device are read once, after the loop (`Controller.finish`).
"""

from __future__ import annotations

import torch

from inversion.models.base import Conditioning, DiffusionModel
from inversion.result import Inversion

from .attention import Controller, controlled

BRANCHES = ("src", "tgt")


def source_condition(model: DiffusionModel, inv: Inversion) -> Conditioning:
    """The source branch's conditioning: the inversion's own prompt, guidance and negative prompt."""
    return model.encode_prompt(inv.prompt, guidance=inv.guidance, negative=inv.negative_prompt)


def target_condition(model: DiffusionModel, prompt: str, guidance: float, inv: Inversion) -> Conditioning:
    """The target branch's conditioning: the edit's prompt and guidance, the inversion's negative prompt."""
    return model.encode_prompt(prompt, guidance=guidance, negative=inv.negative_prompt)


def edit_both(model: DiffusionModel, inv: Inversion, target_prompt: str, guidance: float, controller: Controller,
              pin_source: bool = False, after_step=None, progress=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(target, source): both branches from z_T under an attention controller -- the skeleton
    P2P and MasaCtrl share; they supply the controller and, optionally, a hook after each step."""
    cond = Conditioning.cat([source_condition(model, inv), target_condition(model, target_prompt, guidance, inv)])
    with controlled(model.unet, controller):
        x = run_branches(model, inv, cond, inv.z_T.repeat(2, 1, 1, 1), controller=controller, pin_source=pin_source, after_step=after_step, progress=progress)
    controller.finish()
    return x[1:2], x[0:1]


@torch.no_grad()
def run_branches(
    model: DiffusionModel,
    inv: Inversion,
    cond: Conditioning,
    x: torch.Tensor,
    start: int = 0,
    controller: Controller | None = None,
    pin_source: bool = False,
    after_step=None,
    progress=None,
) -> torch.Tensor:
    """Sample rows of `x` (row 0 = source, row 1 = target when present) from step `start` to the end."""
    sampler = model.sampler_for(inv)
    inv.check_compatible(sampler, model.name)
    names = BRANCHES if len(cond) == 2 else ("tgt",) if len(cond) == 1 else None
    if names is None:
        raise ValueError("one or two branches")
    layout = [(names[i], role) for i, role in model.batch_layout(cond)]
    x = x.float().to(model.device)
    inv = inv.to(model.device)  # the trajectory and noise in one copy, not one per step
    for j in range(start, sampler.num_steps):
        if controller is not None:
            controller.begin_step(j, sampler.num_steps, layout, tuple(x.shape[-2:]))
        eps = model.predict_noise(x, sampler.timesteps[j], cond)
        noise = inv.noise(j)
        x = sampler.step(x, eps, j, None if noise is None or not sampler.stochastic else noise.to(x).expand_as(x))
        if pin_source and names == BRANCHES:
            x[0:1] = inv.latent_after(j).to(x)
        if after_step is not None:
            x = after_step(j, x)
        if progress:
            progress(j + 1 - start, sampler.num_steps - start, "editing")
    return x
