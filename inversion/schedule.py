"""Sampler math shared by every inverter, reconstruction and editor.

Notation: a = alphas_cumprod at a timestep; a sampling step j goes from the noise
level of `timesteps[j]` (a_j) to the next, less noisy level (a_next). Timesteps
are in sampling order (descending), as diffusers' schedulers give them.

Two samplers:
- DDIM (eta = 0): x_next = sqrt(a_next) * x0(x, eps) + sqrt(1 - a_next) * eps.
  With eps held fixed the update is symmetric, so the inverse step (from x_next
  back to level a_j) is the same formula with the levels swapped.
- LCM (multistep consistency sampling): D = c_out * x0(x, eps) + c_skip * x, then
  x_next = sqrt(a_next) * D + sqrt(1 - a_next) * n with fresh noise n on every step
  but the last (where x_next = D). We record n, so sampling is reproducible, and
  "noise correction" picks the n that makes a step land exactly on its target.
  The last step takes no noise, so its correction is recorded as an additive
  residual instead (x_0 = D + r): with it an LCM reconstruction is exact, and
  the size of r is the inverter's own error on that step.

An inverter's job is the implicit equation of each step: find x_t such that
step(x_t, eps(x_t)) = x_prev. `inverse_step` solves it for a *fixed* eps; the
inverters differ in how they choose that eps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


def to_x0(x: torch.Tensor, eps: torch.Tensor, a: float) -> torch.Tensor:
    return (x - (1 - a) ** 0.5 * eps) / a**0.5


def clamp_x0(x: torch.Tensor, eps: torch.Tensor, a: float, bound: float) -> torch.Tensor:
    """The eps whose clean estimate is x0 clamped to [-bound, bound] (Imagen's static
    thresholding, Saharia et al. 2022): keeps guided pixel samples in the data range."""
    x0 = to_x0(x, eps, a).clamp(-bound, bound)
    return (x - a**0.5 * x0) / (1 - a) ** 0.5


LCM_SIGMA_DATA = 0.5  # the data scale in LCM's boundary condition (diffusers' LCMScheduler default)
LCM_TIMESTEP_SCALING = 10.0  # LCMScheduler's timestep_scaling: c_skip(t) ~ 0 for every t >= 1


def lcm_boundary_scalings(t, timestep_scaling: float = LCM_TIMESTEP_SCALING, sigma_data: float = LCM_SIGMA_DATA):
    """(c_skip, c_out) of the consistency function f(x, t) = c_skip x + c_out x0(x, t), as
    LCMScheduler defines them: f(x, 0) = x at the boundary. `t` a number or a tensor."""
    s = t * timestep_scaling
    c_skip = sigma_data**2 / (s**2 + sigma_data**2)
    c_out = s / (s**2 + sigma_data**2) ** 0.5
    return c_skip, c_out


def ddim_move(x: torch.Tensor, eps: torch.Tensor, a_from: float, a_to: float) -> torch.Tensor:
    """Deterministic DDIM move between noise levels with a fixed eps (either direction)."""
    return a_to**0.5 * to_x0(x, eps, a_from) + (1 - a_to) ** 0.5 * eps


@dataclass(frozen=True)
class Sampler:
    """A sampler bound to one run's timesteps (sampling order)."""

    kind: str  # "ddim" or "lcm"
    timesteps: tuple[int, ...]
    alphas_cumprod: torch.Tensor  # float64, the training schedule
    final_alpha: float  # level after the last step
    timestep_scaling: float = LCM_TIMESTEP_SCALING
    # LCM only: a step with no noise given injects the eps it was given instead (the deterministic,
    # DDIM-like consistency step). Inverters solve each step this way under step_noise="predicted".
    predicted_noise: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("ddim", "lcm"):
            raise ValueError(f"unknown sampler {self.kind!r}")
        if any(b >= a for a, b in zip(self.timesteps, self.timesteps[1:])):
            raise ValueError(f"timesteps must be strictly descending, got {self.timesteps}")

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def stochastic(self) -> bool:
        return self.kind == "lcm"

    def tail(self, k: int) -> Sampler:
        """The last k steps (an inversion of strength < 1 starts at timesteps[-k], as img2img does)."""
        if not 1 <= k <= self.num_steps:
            raise ValueError(f"a tail of 1 to {self.num_steps} steps, got {k}")
        return replace(self, timesteps=self.timesteps[self.num_steps - k :])

    def alpha(self, j: int) -> float:
        return float(self.alphas_cumprod[self.timesteps[j]])

    def alpha_next(self, j: int) -> float:
        return self.alpha(j + 1) if j + 1 < self.num_steps else float(self.final_alpha)

    def takes_noise(self, j: int) -> bool:
        """Whether sampling step j injects noise (LCM: every step but the last)."""
        return self.stochastic and j < self.num_steps - 1

    def _lcm_scalings(self, j: int) -> tuple[float, float]:
        return lcm_boundary_scalings(self.timesteps[j], self.timestep_scaling)

    def denoised(self, x: torch.Tensor, eps: torch.Tensor, j: int) -> torch.Tensor:
        """The step's clean estimate: x0 for DDIM, the consistency output for LCM."""
        x0 = to_x0(x, eps, self.alpha(j))
        if self.kind == "ddim":
            return x0
        c_skip, c_out = self._lcm_scalings(j)
        return c_out * x0 + c_skip * x

    def step(self, x: torch.Tensor, eps: torch.Tensor, j: int, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Sampling step j: from level timesteps[j] to the next one."""
        a, a_next = self.alpha(j), self.alpha_next(j)
        if self.kind == "ddim":
            return ddim_move(x, eps, a, a_next)
        d = self.denoised(x, eps, j)
        if not self.takes_noise(j):
            return d if noise is None else d + noise  # the final step's recorded residual
        if noise is None:
            if not self.predicted_noise:
                raise ValueError(f"LCM step {j} needs its recorded noise")
            noise = eps
        return a_next**0.5 * d + (1 - a_next) ** 0.5 * noise

    def inverse_step(self, x_prev: torch.Tensor, eps: torch.Tensor, j: int, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Solve step(x_t, eps, j, noise) = x_prev for x_t, with eps held fixed."""
        a, a_next = self.alpha(j), self.alpha_next(j)
        if self.kind == "ddim":
            return ddim_move(x_prev, eps, a_next, a)
        d_target = x_prev
        if self.takes_noise(j):
            if noise is None:
                if not self.predicted_noise:
                    raise ValueError(f"LCM inverse step {j} needs a noise sample")
                noise = eps
            d_target = (x_prev - (1 - a_next) ** 0.5 * noise) / a_next**0.5
        c_skip, c_out = self._lcm_scalings(j)
        # D = c_out * (x - sqrt(1-a) eps) / sqrt(a) + c_skip * x, linear in x for fixed eps.
        return (d_target + c_out * (1 - a) ** 0.5 / a**0.5 * eps) / (c_out / a**0.5 + c_skip)

    def eps_gain(self, j: int, noise_given: bool = True) -> float:
        """dF/d(eps) of the inverse step: F(z) = inverse_step(x_prev, eps(z), j, noise) is affine in
        eps (`noise_given=False` with `predicted_noise`: the injected noise is eps too)."""
        a, a_next = self.alpha(j), self.alpha_next(j)
        if self.kind == "ddim":
            return (1 - a) ** 0.5 - (a / a_next) ** 0.5 * (1 - a_next) ** 0.5
        c_skip, c_out = self._lcm_scalings(j)
        gain = c_out * (1 - a) ** 0.5 / a**0.5
        if self.takes_noise(j) and not noise_given and self.predicted_noise:
            gain -= ((1 - a_next) / a_next) ** 0.5
        return gain / (c_out / a**0.5 + c_skip)

    def corrected_noise(self, x_t: torch.Tensor, eps: torch.Tensor, j: int, x_prev: torch.Tensor) -> torch.Tensor:
        """The noise that makes step j from x_t (with eps = eps(x_t)) land exactly on x_prev.

        For LCM's last, noise-free step this is the additive residual x_prev - D instead.
        """
        if not self.stochastic:
            raise ValueError("a deterministic sampler takes no noise")
        if not self.takes_noise(j):
            return x_prev - self.denoised(x_t, eps, j)
        a_next = self.alpha_next(j)
        return (x_prev - a_next**0.5 * self.denoised(x_t, eps, j)) / (1 - a_next) ** 0.5
