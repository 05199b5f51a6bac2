"""Sampler math shared by every inverter, reconstruction and editor.

Notation: a = alphas_cumprod at a timestep; a sampling step j goes from the noise
level of `timesteps[j]` (a_j) to the next, less noisy level (a_next). Timesteps
are in sampling order (descending), as diffusers' schedulers give them.

Three samplers:
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
- Euler ancestral (SDXL-Turbo's, diffusers' EulerAncestralDiscreteScheduler): diffusers
  works in sigma space on X = x / sqrt(a) (X = x0 + sigma eps, sigma = sqrt((1 - a) / a);
  `scale_model_input` divides by sqrt(sigma^2 + 1) = 1 / sqrt(a), so the UNet sees our x)
  and steps X_next = x0 + sigma_down eps + sigma_up n; in our parametrisation that is
  x_next = sqrt(a_next) (x0 + sigma_down eps + sigma_up n). Its last step goes to
  sigma = 0 (a_next = 1) and takes no noise: x_0 = x0, with a recorded residual as LCM's.
  The other steps' noise is recorded and corrected as LCM's is.

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


def sigma_of(a: float) -> float:
    """Euler's noise level of DDPM level a: x / sqrt(a) = x0 + sigma eps."""
    return ((1 - a) / a) ** 0.5


def alpha_of(sigma: float) -> float:
    """The DDPM level of Euler's noise level sigma (the inverse of `sigma_of`)."""
    return 1 / (1 + sigma * sigma)


def ancestral_sigmas(sigma: float, sigma_next: float) -> tuple[float, float]:
    """(sigma_down, sigma_up) of an ancestral step from sigma to sigma_next (k-diffusion's and
    diffusers' split, eta 1): sigma_down^2 + sigma_up^2 = sigma_next^2."""
    up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
    return (sigma_next**2 - up**2) ** 0.5, up


STOCHASTIC = ("lcm", "euler_a")  # samplers that inject noise on every step but the last (it is recorded)


def ddim_move(x: torch.Tensor, eps: torch.Tensor, a_from: float, a_to: float) -> torch.Tensor:
    """Deterministic DDIM move between noise levels with a fixed eps (either direction)."""
    return a_to**0.5 * to_x0(x, eps, a_from) + (1 - a_to) ** 0.5 * eps


@dataclass(frozen=True)
class Sampler:
    """A sampler bound to one run's timesteps (sampling order)."""

    kind: str  # "ddim", "lcm" or "euler_a"
    timesteps: tuple[int, ...]
    alphas_cumprod: torch.Tensor  # float64, the training schedule
    final_alpha: float  # level after the last step
    timestep_scaling: float = LCM_TIMESTEP_SCALING
    # Stochastic samplers: a step with no noise given takes the deterministic, DDIM-like step instead,
    # whose output carries the given eps as its noise (LCM: eps injected; Euler ancestral: DDIM's move).
    # Inverters solve each step this way under step_noise="predicted".
    predicted_noise: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("ddim", *STOCHASTIC):
            raise ValueError(f"unknown sampler {self.kind!r}")
        if self.kind == "euler_a" and self.final_alpha != 1:
            raise ValueError(f"Euler's last step goes to sigma 0 (final alpha 1), got final alpha {self.final_alpha}")
        if any(b >= a for a, b in zip(self.timesteps, self.timesteps[1:])):
            raise ValueError(f"timesteps must be strictly descending, got {self.timesteps}")

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def stochastic(self) -> bool:
        return self.kind in STOCHASTIC

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
        """Whether sampling step j injects noise (LCM, Euler ancestral: every step but the last)."""
        return self.stochastic and j < self.num_steps - 1

    def _lcm_scalings(self, j: int) -> tuple[float, float]:
        return lcm_boundary_scalings(self.timesteps[j], self.timestep_scaling)

    def start(self, x_prev: torch.Tensor, j: int) -> torch.Tensor:
        """The first iterate of inversion step j (where plain inversion evaluates eps): the less noisy
        latent itself for DDIM and LCM; for Euler the same sigma-space latent X = x / sqrt(a) taken to
        the noisier level, x_prev sqrt(a_j / a_next), as the official Euler inversions (ReNoise, RNRI)
        start from z_{t'} and the UNet sees it through `scale_model_input`."""
        if self.kind != "euler_a":
            return x_prev
        return x_prev * (self.alpha(j) / self.alpha_next(j)) ** 0.5

    def _ancestral(self, j: int) -> tuple[float, float]:
        """Euler ancestral step j's (sigma_down, sigma_up)."""
        return ancestral_sigmas(sigma_of(self.alpha(j)), sigma_of(self.alpha_next(j)))

    def denoised(self, x: torch.Tensor, eps: torch.Tensor, j: int) -> torch.Tensor:
        """The step's clean estimate: x0 for DDIM and Euler, the consistency output for LCM."""
        x0 = to_x0(x, eps, self.alpha(j))
        if self.kind != "lcm":
            return x0
        c_skip, c_out = self._lcm_scalings(j)
        return c_out * x0 + c_skip * x

    def step(self, x: torch.Tensor, eps: torch.Tensor, j: int, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Sampling step j: from level timesteps[j] to the next one."""
        a, a_next = self.alpha(j), self.alpha_next(j)
        if self.kind == "ddim":
            return ddim_move(x, eps, a, a_next)
        if self.kind == "euler_a":
            return self._euler_step(x, eps, j, noise)
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
        if self.kind == "euler_a":
            return self._euler_inverse(x_prev, eps, j, noise)
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
        ddim_gain = (1 - a) ** 0.5 - (a / a_next) ** 0.5 * (1 - a_next) ** 0.5
        if self.kind == "ddim":
            return ddim_gain
        if self.kind == "euler_a":
            if not self.takes_noise(j):
                return (1 - a) ** 0.5
            if not noise_given and self.predicted_noise:
                return ddim_gain
            return (1 - a) ** 0.5 - a**0.5 * self._ancestral(j)[0]
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
        if self.kind == "euler_a":
            down, up = self._ancestral(j)
            return (x_prev / a_next**0.5 - to_x0(x_t, eps, self.alpha(j)) - down * eps) / up
        return (x_prev - a_next**0.5 * self.denoised(x_t, eps, j)) / (1 - a_next) ** 0.5

    # ---- Euler ancestral ----------------------------------------------------------------
    def _euler_step(self, x: torch.Tensor, eps: torch.Tensor, j: int, noise: torch.Tensor | None) -> torch.Tensor:
        """x_next = sqrt(a_next) (x0 + sigma_down eps + sigma_up n): diffusers' step on X = x / sqrt(a)."""
        a, a_next = self.alpha(j), self.alpha_next(j)
        x0 = to_x0(x, eps, a)
        if not self.takes_noise(j):
            return x0 if noise is None else x0 + noise  # the final step's recorded residual
        if noise is None:
            if not self.predicted_noise:
                raise ValueError(f"Euler ancestral step {j} needs its recorded noise")
            return ddim_move(x, eps, a, a_next)
        down, up = self._ancestral(j)
        return a_next**0.5 * (x0 + down * eps + up * noise)

    def _euler_inverse(self, x_prev: torch.Tensor, eps: torch.Tensor, j: int, noise: torch.Tensor | None) -> torch.Tensor:
        """The x_t whose Euler ancestral step lands on x_prev: its clean estimate, noised back to level a."""
        a, a_next = self.alpha(j), self.alpha_next(j)
        if not self.takes_noise(j):
            x0 = x_prev if noise is None else x_prev - noise
        elif noise is None:
            if not self.predicted_noise:
                raise ValueError(f"Euler ancestral inverse step {j} needs a noise sample")
            return ddim_move(x_prev, eps, a_next, a)
        else:
            down, up = self._ancestral(j)
            x0 = x_prev / a_next**0.5 - down * eps - up * noise
        return a**0.5 * x0 + (1 - a) ** 0.5 * eps
