"""What every inverter shares: validated parameters with per-family defaults, the
step loop (timing, NFE, per-step noise and its correction, progress, residuals).

An inverter only decides how one step's implicit equation is solved:
given x_prev at the less noisy level, find x_t with step(x_t, eps(x_t)) = x_prev.
`solve_step` returns x_t and the residual of each candidate it evaluated,
r = rms(inverse_step(x_prev, eps(z)) - z) for the candidate z the UNet saw, so
convergence can be compared across inverters call for call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..models.base import Conditioning, DiffusionModel
from ..params import Param, ParameterError, resolve  # noqa: F401  (ParameterError: re-exported)
from ..result import Inversion
from ..schedule import Sampler

Progress = Callable[[int, int, str], None]


class Inverter:
    name: str = ""
    title: str = ""
    paper: str = ""
    nfe_per_step: str = ""
    params: dict[str, Param] = {}
    needs_cascade: bool = False

    def resolve_params(self, family: str | tuple[str, ...], **overrides) -> dict:
        base = {"noise_correction": Param(True, bool, help="LCM: record the noise (last step: residual) that makes each step exact")}
        return resolve({**base, **self.params}, family, overrides, f"inverter {self.name!r}")

    # ---- the step loop --------------------------------------------------------------
    def invert(
        self,
        model: DiffusionModel,
        x0: torch.Tensor,
        cond: Conditioning,
        num_steps: int,
        seed: int = 0,
        progress: Progress | None = None,
        **overrides,
    ) -> Inversion:
        p = self.resolve_params(model.defaults, **overrides)
        sampler = model.sampler(num_steps)
        n = sampler.num_steps
        gen = torch.Generator().manual_seed(seed)
        x0 = x0.float()
        latents = [x0]
        noises = torch.zeros((n, *x0.shape)) if sampler.stochastic else None
        residuals: list[list[float]] = []
        with model.measure() as meter:
            state = self.begin(model, x0, cond, sampler, p)
            for k in range(n):
                j = n - 1 - k  # the sampling step this inversion step undoes
                noise = torch.randn(x0.shape, generator=gen).to(x0) if sampler.takes_noise(j) else None
                with torch.no_grad():
                    x_t, res = self.solve_step(model, latents[-1], j, cond, sampler, noise, p, state)
                    if sampler.stochastic and p["noise_correction"]:
                        eps = model.predict_noise(x_t, sampler.timesteps[j], cond)
                        noise = sampler.corrected_noise(x_t, eps, j, latents[-1])
                if noise is not None:
                    noises[j] = noise.cpu()
                latents.append(x_t)
                residuals.append(res)
                if progress:
                    progress(k + 1, n, f"{self.name} inversion")
        return Inversion(
            model=model.name,
            inverter=self.name,
            prompt=cond.prompts[0],
            guidance=float(cond.guidance[0]),
            sampler=sampler.kind,
            timesteps=sampler.timesteps,
            latents=torch.stack([x.cpu() for x in latents]),
            noises=noises,
            params=p,
            nfe=meter.nfe,
            seconds=meter.seconds,
            residuals=residuals,
            seed=seed,
        )

    def for_stage(self, stage: int, params: dict) -> tuple[Inverter, dict]:
        """Which inverter (and parameters) handles cascade stage `stage`; IterInv overrides."""
        return self, params

    def begin(self, model, x0, cond, sampler, p) -> dict:
        """Per-inversion state (e.g. EasyInv's previous latent); override when needed."""
        return {}

    def solve_step(self, model, x_prev, j, cond, sampler: Sampler, noise, p, state) -> tuple[torch.Tensor, list[float]]:
        raise NotImplementedError

    # ---- helpers --------------------------------------------------------------------
    @staticmethod
    def residual(sampler: Sampler, x_prev, z, eps, j, noise) -> tuple[torch.Tensor, float]:
        """F(z) = inverse_step(x_prev, eps(z)) and its residual rms(F(z) - z)."""
        fz = sampler.inverse_step(x_prev, eps, j, noise)
        return fz, float((fz - z).pow(2).mean().sqrt())

    @staticmethod
    def scale(x: torch.Tensor) -> float:
        """The latent's rms: what relative tolerances are measured against."""
        return float(x.pow(2).mean().sqrt()) or 1.0
