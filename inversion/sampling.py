"""Deterministic sampling and reconstruction from an `Inversion`.

DDIM runs eta = 0 and retraces the trajectory as closely as the inverter solved
it; LCM replays the inversion's recorded per-step noise (and the last step's
recorded residual), so its reconstruction is exact by construction.
"""

from __future__ import annotations

import torch

from .models.base import Conditioning, DiffusionModel
from .result import Inversion
from .schedule import Sampler


@torch.no_grad()
def sample(
    model: DiffusionModel,
    x: torch.Tensor,
    cond: Conditioning,
    sampler: Sampler,
    noises: torch.Tensor | None = None,
    progress=None,
    stop: int | None = None,
) -> torch.Tensor:
    """Run sampling steps 0..stop-1 (default: all) from x at timesteps[0].

    No host reads per step: the recorded noise goes to the device in one copy, and the noise
    predictions' finiteness is read once, at the end (`DiffusionModel.checked`)."""
    x = x.float().to(model.device)
    stop = sampler.num_steps if stop is None else stop
    noises = None if noises is None or not sampler.stochastic else noises[:stop].to(x)

    def run() -> torch.Tensor:
        y = x
        for j, t in enumerate(sampler.timesteps[:stop]):
            eps = model.predict_noise(y, t, cond)
            y = sampler.step(y, eps, j, None if noises is None else noises[j])
            if progress:
                progress(j + 1, stop, "sampling")
        return y

    return model.checked(run)


def inversion_condition(model: DiffusionModel, inv: Inversion, batch: int = 1) -> Conditioning:
    """The conditioning an inversion was made with (prompt, negative prompt, guidance)."""
    cond = model.encode_prompt([inv.prompt] * batch, guidance=inv.guidance, negative=inv.negative_prompt)
    return cond


def reconstruct_latent(model: DiffusionModel, inv: Inversion, cond: Conditioning | None = None, progress=None) -> torch.Tensor:
    """Sample from z_T with the inversion's prompt, guidance, timesteps and noise."""
    sampler = model.sampler_for(inv)
    inv.check_compatible(sampler, model.name)
    cond = cond if cond is not None else inversion_condition(model, inv)
    return sample(model, inv.z_T, cond, sampler, inv.noises, progress)
