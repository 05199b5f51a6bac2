"""The Euler-ancestral sampler (SDXL-Turbo's): its step is diffusers' EulerAncestralDiscreteScheduler.step
given the same noise, its inverse, noise correction and eps gain hold, and on an Euler-sampled oracle
every inverter reconstructs exactly through the recorded noise, with the uncorrected figure reported;
the official RNRI settings and its sigma-space L1 step; ReNoise's official SDXL-Turbo defaults."""

import dataclasses

import pytest
import torch
from diffusers import EulerAncestralDiscreteScheduler

from inversion.inverters import INVERTERS, get_inverter
from inversion.pipeline import evaluate, invert, reconstruct
from inversion.schedule import Sampler, alpha_of, ancestral_sigmas, ddim_move, sigma_of, to_x0

# SDXL-Turbo's published scheduler config (tests/fixtures/hub/stabilityai--sdxl-turbo)
TURBO = {"beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000, "prediction_type": "epsilon",
         "steps_offset": 1, "timestep_spacing": "trailing", "interpolation_type": "linear"}


def turbo(steps=4):
    ref = EulerAncestralDiscreteScheduler.from_config(TURBO)
    ref.set_timesteps(steps)
    return ref, Sampler("euler_a", tuple(int(t) for t in ref.timesteps), ref.alphas_cumprod.double(), 1.0)


def randn(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_the_step_is_diffusers_euler_ancestral_step_given_the_same_noise(steps):
    """diffusers works on X = x / sqrt(a): scale_model_input(X) is our x (the UNet's input), and its step,
    with the noise its generator draws, times sqrt(a_next) is ours; the last step lands on x0."""
    ref, s = turbo(steps)
    assert s.timesteps == ((999, 749, 499, 249)[:: 4 // steps] if steps < 4 else (999, 749, 499, 249))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    big = x / s.alpha(0) ** 0.5
    for j, t in enumerate(ref.timesteps):
        assert torch.allclose(ref.scale_model_input(big, t), x, atol=1e-5)
        eps = torch.randn(2, 4, 8, 8, generator=g)
        noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(10 + j))
        big = ref.step(eps, t, big, generator=torch.Generator().manual_seed(10 + j)).prev_sample
        x = s.step(x.double(), eps.double(), j, noise.double() if s.takes_noise(j) else None).float()
        assert torch.allclose(big * s.alpha_next(j) ** 0.5, x, atol=1e-4, rtol=1e-5), j
    assert not s.takes_noise(steps - 1) and all(s.takes_noise(j) for j in range(steps - 1))


def test_sigma_and_alpha_conversions_and_the_ancestral_split():
    ref, s = turbo()
    for j, sigma in enumerate(ref.sigmas[:-1]):
        assert sigma_of(s.alpha(j)) == pytest.approx(float(sigma), rel=1e-6)
        assert alpha_of(sigma_of(s.alpha(j))) == pytest.approx(s.alpha(j), rel=1e-12)
    down, up = ancestral_sigmas(4.0, 3.0)
    assert down**2 + up**2 == pytest.approx(9.0) and down == pytest.approx(9 / 4)  # sigma_down = sigma_next^2 / sigma
    assert ancestral_sigmas(4.0, 0.0) == (0.0, 0.0)


def test_inverse_step_corrected_noise_and_eps_gain_hold_on_every_step():
    _, s = turbo()
    g = torch.Generator().manual_seed(1)
    for j in range(s.num_steps):
        x_prev, eps, d = randn(g, 1, 4, 8, 8), randn(g, 1, 4, 8, 8), randn(g, 1, 4, 8, 8)
        noise = randn(g, 1, 4, 8, 8) if s.takes_noise(j) else None
        x_t = s.inverse_step(x_prev, eps, j, noise)
        assert torch.allclose(s.step(x_t, eps, j, noise), x_prev, atol=1e-9), j
        got = s.corrected_noise(x_t, eps, j, x_prev)
        assert torch.allclose(got, noise if noise is not None else torch.zeros_like(got), atol=1e-8), j
        slope = (s.inverse_step(x_prev, eps + 1e-3 * d, j, noise) - x_t) / 1e-3
        assert torch.allclose(slope, s.eps_gain(j) * d, rtol=1e-6, atol=1e-9), j
        assert torch.allclose(s.denoised(x_t, eps, j), to_x0(x_t, eps, s.alpha(j)))
    # the last step's residual is additive, both ways
    r = randn(g, 1, 4, 8, 8)
    x_t = s.inverse_step(x_prev, eps, 3, r)
    assert torch.allclose(s.step(x_t, eps, 3, r), x_prev) and torch.allclose(s.corrected_noise(x_t, eps, 3, x_prev), r)


def test_predicted_noise_takes_the_ddim_move_and_start_keeps_the_sigma_space_latent():
    _, drawn = turbo()
    s = dataclasses.replace(drawn, predicted_noise=True)
    g = torch.Generator().manual_seed(2)
    for j in range(s.num_steps):
        x, eps, d = randn(g, 1, 4, 8, 8), randn(g, 1, 4, 8, 8), randn(g, 1, 4, 8, 8)
        a, a_next = s.alpha(j), s.alpha_next(j)
        assert torch.allclose(s.step(x, eps, j), ddim_move(x, eps, a, a_next))  # the output's noise is eps
        x_t = s.inverse_step(x, eps, j)
        assert torch.allclose(s.step(x_t, eps, j), x, atol=1e-9)
        slope = (s.inverse_step(x, eps + 1e-3 * d, j) - x_t) / 1e-3
        assert torch.allclose(slope, s.eps_gain(j, noise_given=False) * d, rtol=1e-6, atol=1e-9)
        assert torch.allclose(s.start(x, j) / a**0.5, x / a_next**0.5)  # X = x / sqrt(a) unchanged
    with pytest.raises(ValueError, match="Euler ancestral step 0 needs its recorded noise"):
        drawn.step(x, eps, 0)
    with pytest.raises(ValueError, match="Euler ancestral inverse step 1 needs a noise sample"):
        drawn.inverse_step(x, eps, 1)
    with pytest.raises(ValueError, match=r"Euler's last step goes to sigma 0 \(final alpha 1\), got final alpha 0.5"):
        Sampler("euler_a", (999, 499), drawn.alphas_cumprod, 0.5)
    assert Sampler("ddim", (999, 499), drawn.alphas_cumprod, 0.5).start(x, 0) is x


@pytest.fixture(scope="module")
def euler_oracle(oracle):
    """The closed-form oracle sampled with SDXL-Turbo's scheduler: Euler ancestral, trailing timesteps."""
    from inversion.models.unet_model import scheduler_timestep_fn

    ref, _ = turbo()
    return dataclasses.replace(oracle, name="oracle-euler", sampler_kind="euler_a", final_alpha=1.0, timestep_fn=scheduler_timestep_fn(ref), default_steps=4)


@pytest.mark.parametrize("name", [n for n in INVERTERS if n != "iterinv"])
def test_every_inverter_reconstructs_exactly_through_the_recorded_noise(euler_oracle, oracle, name):
    """Each step's noise and the last step's residual are recorded; without that residual, as diffusers
    samples, the error left is the inverter's own and `evaluate` reports it."""
    x = oracle.sample_data(1)
    inv = invert(euler_oracle, x, "", name, steps=4, strength=1.0)
    assert inv.sampler == "euler_a" and inv.timesteps == (999, 749, 499, 249) and inv.noises.shape[0] == 4
    assert torch.allclose(reconstruct(euler_oracle, inv), x, atol=1e-4)
    report, _ = evaluate(euler_oracle, x, inv)
    assert report["latent_psnr"] > 80 and 5 < report["latent_psnr_uncorrected"] <= report["latent_psnr"]
    assert 5 < report["psnr_uncorrected"] <= report["psnr"]


def test_the_iterative_inverters_beat_plain_euler_inversion_without_the_last_residual(euler_oracle, oracle):
    x = oracle.sample_data(2)
    bare = {n: evaluate(euler_oracle, x, invert(euler_oracle, x, "", n, steps=4, strength=1.0))[0]["latent_psnr_uncorrected"] for n in ("ddim", "fixed-point", "rnri")}
    assert bare["fixed-point"] > bare["ddim"] + 3 and bare["rnri"] > bare["ddim"] + 3, bare


def test_rnri_takes_the_official_sdxl_turbo_settings_on_euler_samplers(euler_oracle, oracle):
    """2 iterations per step on the last 2 of 4 steps (strength 0.6: t = 249 -> 499), plus one noise correction each."""
    p = get_inverter("rnri").resolve_params(euler_oracle.defaults)
    assert p["iterations"] == 2 and p["strength"] == 0.6 and p["l1_alpha"] == 0.1
    assert get_inverter("rnri").resolve_params(oracle.defaults)["strength"] == 1.0
    inv = invert(euler_oracle, oracle.sample_data(3), "", "rnri", steps=4)
    assert inv.timesteps == (499, 249) and inv.steps == 4 and inv.nfe == 2 * (2 + 1)


def test_rnri_l1_is_the_official_step_in_sigma_space(euler_oracle, oracle):
    """The official objective on X = x / sqrt(a): F = mean|f - Z| + alpha/2 mean(((f - z0) / sigma)^2), Z <- Z + F sign(f - Z),
    from Z = X_prev, keeping the candidate f of the lowest F; f = X_prev - eps (sigma_down - sigma) - n sigma_up."""
    x0 = oracle.sample_data(4)
    inv = invert(euler_oracle, x0, "", "rnri", steps=4, strength=1.0, newton="l1", iterations=3, noise_correction=False, seed=5)
    s = euler_oracle.sampler(4)
    cond = euler_oracle.encode_prompt([""])
    latents = [x0.double()]
    for j in reversed(range(4)):
        a, a_next, t = s.alpha(j), s.alpha_next(j), s.timesteps[j]
        sigma, sigma_next = sigma_of(a), sigma_of(a_next) if a_next < 1 else 0.0
        down, up = ancestral_sigmas(sigma, sigma_next)
        n = inv.noises[j].double() if s.takes_noise(j) else torch.zeros_like(latents[-1])
        big_prev = latents[-1] / a_next**0.5
        z, best, best_f = big_prev, None, None
        for _ in range(3):
            eps = euler_oracle.predict_noise((z * a**0.5).float(), t, cond).double()  # scale_model_input: X sqrt(a)
            f = big_prev - eps * (down - sigma) - n * up
            objective = (f - z).abs().mean() + 0.1 / 2 * ((f - x0.double()) / sigma).pow(2).mean()
            if best_f is None or objective < best_f:
                best, best_f = f, objective
            z = z + objective * torch.sign(f - z)
        latents.append(best * a**0.5)
    assert torch.allclose(inv.latents.double(), torch.stack(latents), atol=1e-4)


def test_renoise_takes_the_official_demo_settings_on_euler_samplers(euler_oracle):
    p = get_inverter("renoise").resolve_params(euler_oracle.defaults)
    assert (p["renoise_steps"], p["first_step_max"], p["average_last"], p["first_step_average"]) == (9, 5, 2, 5)
    assert (p["noise_reg_steps"], p["lambda_ac"], p["lambda_kl"], p["ac_rolls"], p["strength"]) == (4, 20.0, 0.065, 5, 1.0)
    easy = get_inverter("easyinv").resolve_params(euler_oracle.defaults)
    assert (easy["inject_start"], easy["inject_length"]) == (0.2, 0.6)  # a window that holds steps at 4 steps


def test_interpolation_and_concept_seeds_replay_euler_inversions(euler_oracle, oracle):
    """The recorded Euler noises are mixed as LCM's: the strip's ends are the two reconstructions, and a
    seed at strength 0 with the recorded noise reused is the reconstruction."""
    from editing import concept_seeds, interpolate, sample_seeds

    a = invert(euler_oracle, oracle.sample_data(6), "", "ddim", steps=4, strength=1.0)
    b = invert(euler_oracle, oracle.sample_data(7), "", "ddim", steps=4, strength=1.0)
    strip = interpolate(euler_oracle, a, b, frames=3)
    assert torch.allclose(strip.frames[0:1], reconstruct(euler_oracle, a), atol=1e-5)
    assert torch.allclose(strip.frames[-1:], reconstruct(euler_oracle, b), atol=1e-5)
    same = sample_seeds(euler_oracle, concept_seeds(euler_oracle, [a]), "", samples=1, strength=0.0, step_noise="reuse", guidance=a.guidance)
    assert torch.allclose(same.images, reconstruct(euler_oracle, a), atol=1e-5)
