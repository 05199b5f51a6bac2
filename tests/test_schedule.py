"""Sampler math on its own: LCM's boundary scalings as diffusers computes them at every t, each
inverse step undoes its step for a fixed eps, eps_gain is the inverse step's derivative, and
malformed samplers are refused with a message."""

import pytest
import torch
from diffusers import DDIMScheduler, LCMScheduler

from inversion.schedule import Sampler, clamp_x0, ddim_move, lcm_boundary_scalings, to_x0

ALPHAS = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod.double()
TIMESTEPS = (999, 759, 259, 19, 3, 1)  # small t too: there c_skip is not ~0


def _sampler(kind, timesteps=TIMESTEPS):
    return Sampler(kind, timesteps, ALPHAS, float(ALPHAS[0]))


@pytest.mark.parametrize("t", [0, 1, 2, 3, 5, 19, 259, 999])
def test_lcm_boundary_scalings_equal_diffusers(t):
    ref = LCMScheduler().get_scalings_for_boundary_condition_discrete(torch.tensor(t))
    ours = lcm_boundary_scalings(t)
    assert ours[0] == pytest.approx(float(ref[0]), rel=1e-6, abs=1e-12) and ours[1] == pytest.approx(float(ref[1]), rel=1e-6, abs=1e-12)  # diffusers: float32


def test_lcm_denoised_is_the_consistency_function_and_ddim_denoised_is_x0():
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64), torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64)
    for j, t in enumerate(TIMESTEPS):
        a = float(ALPHAS[t])
        skip, out = lcm_boundary_scalings(t)
        x0 = (x - (1 - a) ** 0.5 * eps) / a**0.5
        assert torch.allclose(_sampler("lcm").denoised(x, eps, j), out * x0 + skip * x)
        assert torch.allclose(_sampler("ddim").denoised(x, eps, j), x0)


@pytest.mark.parametrize("kind", ["ddim", "lcm"])
def test_every_inverse_step_undoes_its_step_for_a_fixed_eps(kind):
    s = _sampler(kind)
    g = torch.Generator().manual_seed(1)
    for j in range(s.num_steps):
        x_prev, eps = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64), torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64)
        noise = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64) if s.takes_noise(j) else None
        x_t = s.inverse_step(x_prev, eps, j, noise)
        assert torch.allclose(s.step(x_t, eps, j, noise), x_prev, atol=1e-9), (kind, j)
        # and the noise that lands the step on x_prev is the one that was given (the last step: a zero residual)
        if s.stochastic:
            got = s.corrected_noise(x_t, eps, j, x_prev)
            assert torch.allclose(got, noise if noise is not None else torch.zeros_like(got), atol=1e-7), j


@pytest.mark.parametrize("kind", ["ddim", "lcm"])
def test_eps_gain_is_the_derivative_of_the_inverse_step(kind):
    s = _sampler(kind)
    g = torch.Generator().manual_seed(2)
    for j in range(s.num_steps):
        x_prev, eps, d = (torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
        noise = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64) if s.takes_noise(j) else None
        slope = (s.inverse_step(x_prev, eps + 1e-3 * d, j, noise) - s.inverse_step(x_prev, eps, j, noise)) / 1e-3
        assert torch.allclose(slope, s.eps_gain(j) * d, rtol=1e-6, atol=1e-9), (kind, j)


def test_ddim_move_and_clamp_x0():
    g = torch.Generator().manual_seed(3)
    x, eps = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    a, b = 0.3, 0.8
    y = ddim_move(x, eps, a, b)
    assert torch.allclose(to_x0(y, eps, b), to_x0(x, eps, a))  # the same clean estimate at the new level
    assert torch.allclose(ddim_move(y, eps, b, a), x)
    eps_c = clamp_x0(x, eps, a, 0.5)
    assert float(to_x0(x, eps_c, a).abs().max()) <= 0.5 + 1e-12
    inside = to_x0(x, eps, a).abs() <= 0.5
    assert torch.allclose(eps_c[inside], eps[inside])


def test_malformed_samplers_and_missing_noise_are_refused_with_a_message():
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        Sampler("euler", (999, 1), ALPHAS, 1.0)
    with pytest.raises(ValueError, match="strictly descending"):
        Sampler("ddim", (999, 999, 1), ALPHAS, 1.0)
    with pytest.raises(ValueError, match="strictly descending"):
        Sampler("ddim", (1, 999, 500), ALPHAS, 1.0)
    s = _sampler("lcm")
    x = torch.zeros(1, 4, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="LCM step 0 needs its recorded noise"):
        s.step(x, x, 0)
    with pytest.raises(ValueError, match="LCM inverse step 1 needs a noise sample"):
        s.inverse_step(x, x, 1)
    with pytest.raises(ValueError, match="^a deterministic sampler takes no noise$"):
        _sampler("ddim").corrected_noise(x, x, 0, x)
    assert _sampler("ddim").alpha_next(len(TIMESTEPS) - 1) == float(ALPHAS[0])


def test_predicted_noise_step_is_the_deterministic_consistency_step_and_its_inverse_and_gain_hold():
    from dataclasses import replace

    s = replace(_sampler("lcm"), predicted_noise=True)
    g = torch.Generator().manual_seed(4)
    for j in range(s.num_steps):
        x, eps, d = (torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64) for _ in range(3))
        a_next = s.alpha_next(j)
        want = a_next**0.5 * s.denoised(x, eps, j) + (1 - a_next) ** 0.5 * eps if s.takes_noise(j) else s.denoised(x, eps, j)
        assert torch.allclose(s.step(x, eps, j), want), j  # no noise given: eps is injected
        x_t = s.inverse_step(x, eps, j)
        assert torch.allclose(s.step(x_t, eps, j), x, atol=1e-9), j
        slope = (s.inverse_step(x, eps + 1e-3 * d, j) - s.inverse_step(x, eps, j)) / 1e-3
        assert torch.allclose(slope, s.eps_gain(j, noise_given=False) * d, rtol=1e-6, atol=1e-9), j
        if s.takes_noise(j):  # the gain differs from the one with a given noise
            assert abs(s.eps_gain(j, noise_given=False) - s.eps_gain(j)) > 1e-3
    # without predicted_noise a missing noise is still refused (a sampling bug, not a policy)
    with pytest.raises(ValueError, match="needs its recorded noise"):
        _sampler("lcm").step(x, eps, 0)


def test_a_tail_keeps_the_last_steps_and_their_levels():
    s = _sampler("lcm")
    t = s.tail(2)
    assert t.timesteps == TIMESTEPS[-2:] and t.final_alpha == s.final_alpha and t.kind == "lcm"
    assert t.alpha(0) == s.alpha(len(TIMESTEPS) - 2) and t.alpha_next(1) == s.alpha_next(len(TIMESTEPS) - 1)
    assert s.tail(len(TIMESTEPS)) == s
    for k in (0, len(TIMESTEPS) + 1):
        with pytest.raises(ValueError, match="a tail of 1 to 6 steps"):
            s.tail(k)
