"""What every inverter shares: validated parameters with per-family defaults, the
step loop (timing, NFE, per-step noise and its correction, progress, residuals).

An inverter only decides how one step's implicit equation is solved:
given x_prev at the less noisy level, find x_t with step(x_t, eps(x_t)) = x_prev.
`solve_step` returns x_t and the residual of each candidate it evaluated,
r = rms(inverse_step(x_prev, eps(z)) - z) for the candidate z the UNet saw, so
convergence can be compared across inverters call for call.

No host reads in the step loop: on CUDA reading a device value (`float(t)`, `.item()`,
`.cpu()`, `if t:`) or copying host data to the device makes the host wait for every
queued kernel, so a read per UNet call would leave the GPU idle between calls. Residuals
stay 0-dim device tensors until the loop ends and are read to the host in one transfer
(with the latents and the recorded noise); the per-step noise is drawn up front and
copied to the device once; finiteness of the noise predictions is checked once per
inversion (`DiffusionModel.checked`). The only reads left inside the loop are convergence
tests that decide whether to call the UNet again (fixed-point's tolerance, RNRI's tolerance
beyond two iterations, ReNoise's divergence guard): each inverter documents its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from ..errors import Diverged
from ..models.base import Conditioning, DiffusionModel, NonFinite
from ..params import Param, ParameterError, resolve  # noqa: F401  (ParameterError: re-exported)
from ..result import Inversion
from ..schedule import Sampler

Progress = Callable[[int, int, str], None]

SHARED_PARAMS = {  # every inverter takes these
    "noise_correction": Param(True, bool, help="LCM, Euler ancestral: record the noise (last step: residual) that makes each step exact"),
    "strength": Param(1.0, float, 0.01, 1.0, "how much of the schedule is inverted: its last int(strength x steps) steps (1: to pure noise; RNRI's official demo 0.6)"),
    # On LCM "predicted": chosen by the edit benchmark for every inverter (python -m shapes.edit_bench --grid on
    # shapes-lcm; tests/test_shapes_lcm.py pins it): with drawn noise the exact solvers stop editing. On Euler
    # ancestral the official RNRI and ReNoise codes' fixed noise list (unmeasured here: no offline Euler model).
    "step_noise": Param(
        {"default": "drawn", "lcm": "predicted"}, str, choices=("drawn", "predicted"),
        help="LCM, Euler ancestral: the noise each step is inverted with: drawn (a seeded Gaussian per step, the official RNRI/ReNoise code's noise list) "
        "or predicted (the model's own eps at x_t: the deterministic, DDIM-like step)",
    ),
}


class Inverter:
    name: str = ""
    title: str = ""
    paper: str = ""
    nfe_per_step: str = ""
    params: dict[str, Param] = {}
    needs_cascade: bool = False

    def resolve_params(self, family: str | tuple[str, ...], **overrides) -> dict:
        return resolve({**SHARED_PARAMS, **self.params}, family, overrides, f"inverter {self.name!r}")

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
        sampler = model.sampler(num_steps, p["strength"])
        n = sampler.num_steps
        x0 = x0.float()
        # The per-step noise, drawn in the loop's order from one generator, on the device in one copy.
        gen = torch.Generator().manual_seed(seed)
        drawn = {j: torch.randn(x0.shape, generator=gen) for j in reversed(range(n)) if sampler.takes_noise(j)}
        if p["step_noise"] == "predicted" and sampler.stochastic:
            sampler, drawn = replace(sampler, predicted_noise=True), {}
        drawn = dict(zip(drawn, torch.stack(list(drawn.values())).to(x0).unbind())) if drawn else {}
        with model.measure() as meter:
            try:
                latents, noises, residuals = model.checked(lambda: self._run(model, x0, cond, sampler, drawn, p, progress))
            except NonFinite as e:
                with torch.no_grad():  # the failure path only: is the network finite on the clean input itself?
                    if not torch.isfinite(model.predict_noise(x0, sampler.timesteps[-1], cond)).all():
                        raise  # then the model or the input is at fault, not the iteration
                hint = (" With step_noise=drawn each step of this few-step sampler asks for a clean image that equals a noisy target, and the "
                        "exact solutions grow step after step; step_noise=predicted keeps every step well posed."
                        if sampler.stochastic and p["step_noise"] == "drawn" else "")
                raise Diverged(f"{self.name} diverged on {model.name} at {num_steps} steps: its iterates grew until the network overflowed "
                               f"(the image is not at fault).{hint} Try fewer steps or another inverter.") from e
        return Inversion(
            model=model.name,
            inverter=self.name,
            prompt=cond.prompts[0],
            guidance=float(cond.guidance[0]),
            sampler=sampler.kind,
            timesteps=sampler.timesteps,
            latents=latents,
            noises=noises,
            params=p,
            nfe=meter.nfe,
            seconds=meter.seconds,
            residuals=residuals,
            seed=seed,
            schedule_steps=num_steps if n < num_steps else 0,
        )

    def _run(self, model, x0, cond, sampler: Sampler, drawn: dict, p: dict, progress: Progress | None):
        """The step loop: (latents, noises, residuals) on the host, read once at the end."""
        n = sampler.num_steps
        latents = [x0]
        noises: list[torch.Tensor | None] = [None] * n
        residuals: list[list] = []
        state = self.begin(x0, cond)
        for k in range(n):
            j = n - 1 - k  # the sampling step this inversion step undoes
            noise = drawn.get(j)
            with torch.no_grad():
                x_t, res = self.solve_step(model, latents[-1], j, cond, sampler, noise, p, state)
                if sampler.stochastic and p["noise_correction"]:
                    eps = model.predict_noise(x_t, sampler.timesteps[j], cond)
                    noise = sampler.corrected_noise(x_t, eps, j, latents[-1])
                elif sampler.predicted_noise and sampler.takes_noise(j):  # the noise this step used, so a replay retraces it
                    noise = model.predict_noise(x_t, sampler.timesteps[j], cond)
            noises[j] = noise
            latents.append(x_t)
            residuals.append(res)
            if progress:
                progress(k + 1, n, f"{self.name} inversion")
        recorded = None
        if sampler.stochastic:
            recorded = torch.stack([torch.zeros_like(x0) if z is None else z for z in noises]).to("cpu", torch.float32)
        return torch.stack(latents).detach().cpu(), recorded, host_floats(residuals)

    def calls_per_step(self, p: dict) -> int:
        """The most UNet calls one step makes with parameters `p` (noise correction not included)."""
        return 1

    def max_nfe(self, model: DiffusionModel, num_steps: int, **overrides) -> int:
        """The most UNet calls an inversion of `model` at `num_steps` can make (an upper bound the app
        checks against its time budget before any work)."""
        p = self.resolve_params(model.defaults, **overrides)
        sampler = model.sampler(num_steps, p["strength"])
        correction = 1 if sampler.stochastic and (p["noise_correction"] or p["step_noise"] == "predicted") else 0
        return sampler.num_steps * (self.calls_per_step(p) + correction)

    def for_stage(self, stage: int, params: dict) -> tuple[Inverter, dict]:
        """Which inverter (and parameters) handles cascade stage `stage`; IterInv overrides."""
        return self, params

    def begin(self, x0, cond) -> dict:
        """Per-inversion state (RNRI's data variance, ReNoise's forward noise); override when needed."""
        return {}

    def solve_step(self, model, x_prev, j, cond, sampler: Sampler, noise, p, state) -> tuple[torch.Tensor, list[torch.Tensor | float]]:
        """(x_t, the residual of each UNet call): 0-dim device tensors (`residual`), read once per inversion."""
        raise NotImplementedError

    # ---- helpers --------------------------------------------------------------------
    @staticmethod
    def residual(sampler: Sampler, x_prev, z, eps, j, noise) -> tuple[torch.Tensor, torch.Tensor]:
        """F(z) = inverse_step(x_prev, eps(z)) and its residual rms(F(z) - z), a 0-dim tensor left on
        the device (the step loop reads all residuals to the host once, at its end)."""
        fz = sampler.inverse_step(x_prev, eps, j, noise)
        return fz, (fz - z).pow(2).mean().sqrt()

    @staticmethod
    def scale(x: torch.Tensor) -> torch.Tensor:
        """The latent's rms (1 where it is 0): what relative tolerances are measured against; on the device."""
        s = x.pow(2).mean().sqrt()
        return torch.where(s == 0, torch.ones_like(s), s)

    @staticmethod
    def within(r: torch.Tensor, bound: float, scale: torch.Tensor) -> torch.Tensor:
        """r <= bound x scale, on the device and in float64: the comparison the host made with Python
        floats (float32 values widened, the product in double), so every decision is the same."""
        return r.double() <= bound * scale.double()


def host_floats(residuals: list[list]) -> list[list[float]]:
    """Per-step lists of residuals (0-dim tensors or floats) as Python floats, in one device-to-host
    transfer: float32 values widened to float64 exactly, as float(tensor) gave them one by one."""
    flat = [r for step in residuals for r in step]
    tensors = [r for r in flat if isinstance(r, torch.Tensor)]
    values = iter(torch.stack([r.detach().double().reshape(()) for r in tensors]).cpu().tolist() if tensors else [])
    flat = [next(values) if isinstance(r, torch.Tensor) else float(r) for r in flat]
    out, i = [], 0
    for step in residuals:
        out.append(flat[i : i + len(step)])
        i += len(step)
    return out
