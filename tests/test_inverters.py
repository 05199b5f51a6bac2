"""Every inverter against the closed-form oracle, its cheap identities, LCM exactness, IterInv."""

import math

import pytest
import torch

from inversion.inverters import INVERTERS, ParameterError, get_inverter
from inversion.inverters.renoise import auto_correlation_loss, patch_kl_loss, regularise_noise
from inversion.pipeline import IncompatibleChoice, evaluate, invert

SINGLE_STAGE = [n for n, i in INVERTERS.items() if not i.needs_cascade]


def _oracle_psnr(oracle, name, steps, seeds=range(3), **params):
    vals = []
    for seed in seeds:
        inv = invert(oracle, None, "", name, steps=steps, seed=seed, **params)
        vals.append(evaluate(oracle, oracle.sample_data(seed), inv)[0]["latent_psnr"])
    return sum(vals) / len(vals)


def test_iterative_inverters_beat_ddim_by_10db_on_the_oracle(oracle):
    ddim = _oracle_psnr(oracle, "ddim", 10)
    for name in ("fixed-point", "renoise", "rnri"):
        assert _oracle_psnr(oracle, name, 10) >= ddim + 10, name


def test_rnri_converges_within_two_newton_iterations_on_most_steps(oracle):
    """Newton iterations until rms residual <= tolerance x rms(latent), per step."""
    tol, counts = 1e-3, []
    for seed in range(4):
        inv = invert(oracle, None, "", "rnri", steps=10, seed=seed, iterations=4, tolerance=tol)
        for res, x in zip(inv.residuals, inv.latents[:-1]):
            scale = float(x.pow(2).mean().sqrt())
            counts.append(next((k for k in range(1, len(res)) if res[k] <= tol * scale), 99))
    within_two = sum(c <= 2 for c in counts) / len(counts)
    assert within_two >= 0.9, counts


def test_one_plain_fixed_point_iteration_and_renoise_without_renoising_are_ddim(oracle):
    ref = invert(oracle, None, "", "ddim", steps=10)
    fp = invert(oracle, None, "", "fixed-point", steps=10, iterations=1, acceleration="none")
    rn = invert(oracle, None, "", "renoise", steps=10, renoise_steps=0)
    assert torch.allclose(fp.latents, ref.latents) and torch.allclose(rn.latents, ref.latents)


def test_renoise_iterates_are_fixed_point_iterates(oracle):
    """Without averaging or regularisation, ReNoise's K-th estimate is the (K+1)-th plain fixed-point iterate."""
    fp = invert(oracle, None, "", "fixed-point", steps=10, iterations=4, acceleration="none", tolerance=0)
    rn = invert(oracle, None, "", "renoise", steps=10, renoise_steps=3, average_last=1)
    assert torch.allclose(fp.latents, rn.latents, atol=1e-6)
    assert fp.nfe == rn.nfe == 40


def test_easyinv_blends_exactly_the_documented_window(oracle):
    """SD defaults at 50 steps blend steps i = 3..12 (0.05 * 50 < i < 0.25 * 50): every other step is
    a plain DDIM step from its own latent, every step in the window is not."""
    ddim = invert(oracle, None, "", "ddim", steps=50)
    easy = invert(oracle, None, "", "easyinv", steps=50)
    assert torch.equal(easy.latents[:4], ddim.latents[:4])
    sampler, cond = oracle.sampler(50), oracle.encode_prompt("")
    plain_step = []
    for i in range(50):  # ascending step i takes latent i to latent i + 1
        j = 49 - i
        eps = oracle.predict_noise(easy.latents[i], sampler.timesteps[j], cond)
        plain_step.append(torch.allclose(easy.latents[i + 1], sampler.inverse_step(easy.latents[i], eps, j), atol=1e-6))
    assert [i for i, plain in enumerate(plain_step) if not plain] == list(range(3, 13))
    plain = invert(oracle, None, "", "easyinv", steps=50, eta=1.0)
    assert torch.allclose(plain.latents, ddim.latents)
    assert easy.nfe == 50


def test_fixed_point_acceleration_beats_plain_iteration(oracle):
    plain = _oracle_psnr(oracle, "fixed-point", 10, iterations=3, acceleration="none", tolerance=0)
    anderson = _oracle_psnr(oracle, "fixed-point", 10, iterations=3, acceleration="anderson", tolerance=0)
    assert anderson > plain + 3


@pytest.mark.parametrize("name", SINGLE_STAGE)
def test_every_inverter_reconstructs_lcm_exactly_through_its_recorded_noise(tiny_lcm, cat_image, name):
    inv = invert(tiny_lcm, cat_image, "a cat", name, steps=4)
    report, _ = evaluate(tiny_lcm, cat_image, inv)
    scale = max(float(inv.latents.abs().max()), float(inv.noises.abs().max()))  # the random model amplifies float32 rounding through the noises
    assert report["latent_psnr"] > 70, report  # float32 rounding only
    from inversion.sampling import reconstruct_latent

    assert torch.allclose(reconstruct_latent(tiny_lcm, inv), inv.x0, atol=1e-4 * scale)


def test_iterinv_beats_ddim_on_the_super_resolution_stage(tiny_if, cat_image):
    ddim, _ = evaluate(tiny_if, cat_image, invert(tiny_if, cat_image, "a cat", "ddim", steps=6))
    iterinv, _ = evaluate(tiny_if, cat_image, invert(tiny_if, cat_image, "a cat", "iterinv", steps=6, iterations=10))
    assert iterinv["stages"][1]["inverter"] == "iterinv" and iterinv["stages"][0]["inverter"] == "fixed-point"
    assert iterinv["stages"][1]["latent_psnr"] > ddim["stages"][1]["latent_psnr"] + 1


def test_iterinv_needs_a_cascade(tiny_sd, cat_image):
    with pytest.raises(IncompatibleChoice, match="cascade"):
        invert(tiny_sd, cat_image, "a cat", "iterinv", steps=3)


def test_auto_correlation_is_summed_per_channel_in_closed_form():
    """Constant 8x8 channels (one scale): every shift gives mean(c * c) = c^2, two axes each,
    so the loss is 2 * sum_c c^4 -- not 2 * (mean_c c^2)^2, the square of the mean over channels."""
    x = torch.stack([torch.full((8, 8), 1.0), torch.full((8, 8), 2.0)])[None]
    assert auto_correlation_loss(x, torch.Generator().manual_seed(0)).item() == pytest.approx(2 * (1 + 16))
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1  # +-1: every roll's mean is +-1
    assert auto_correlation_loss(checker[None, None], torch.Generator().manual_seed(3)).item() == pytest.approx(2.0)
    sixteen = torch.ones(1, 1, 16, 16)  # two scales: 16 px and, pooled, 8 px
    assert auto_correlation_loss(sixteen, torch.Generator().manual_seed(0)).item() == pytest.approx(4.0)


def test_patch_kl_matches_the_gaussian_kl_per_patch_without_a_half():
    g = torch.Generator().manual_seed(0)
    n, ref = torch.randn(1, 2, 8, 8, generator=g), 2 + 3 * torch.randn(1, 2, 8, 8, generator=g)
    expected = 0.0
    for c in range(2):
        for i in range(0, 8, 4):
            for j in range(0, 8, 4):
                a, b = n[0, c, i : i + 4, j : j + 4].flatten(), ref[0, c, i : i + 4, j : j + 4].flatten()
                v1, v0, m1, m0 = a.var().item(), b.var().item(), a.mean().item(), b.mean().item()  # unbiased, as the official code
                expected += abs(math.log(v0 / v1) + (v1 + (m1 - m0) ** 2) / v0 - 1)
    assert patch_kl_loss(n, ref).item() == pytest.approx(expected, rel=1e-4)
    e = n.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(patch_kl_loss(e, ref), e)
    assert patch_kl_loss(n - 0.065 * grad.clamp(-100, 100), ref) < patch_kl_loss(n, ref)  # one step lowers it
    p = get_inverter("renoise").resolve_params("lcm", lambda_ac=0.0, noise_reg_steps=1)
    out = regularise_noise(n, ref, p, torch.Generator().manual_seed(0))  # the inverter's own KL step
    assert patch_kl_loss(out, ref) < patch_kl_loss(n, ref)


def test_noise_regularisation_whitens_correlated_noise():
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(1, 4, 34, 34, generator=g), 3, 1) * 3
    p = get_inverter("renoise").resolve_params("lcm")
    out = regularise_noise(smooth, smooth, p, torch.Generator().manual_seed(2))
    assert auto_correlation_loss(out, torch.Generator().manual_seed(1)) < auto_correlation_loss(smooth, torch.Generator().manual_seed(1))


def test_parameters_are_validated_with_clear_messages():
    fp = get_inverter("fixed-point")
    with pytest.raises(ParameterError, match="out of range"):
        fp.resolve_params("sd", iterations=0)
    with pytest.raises(ParameterError, match="must be one of"):
        fp.resolve_params("sd", acceleration="magic")
    with pytest.raises(ParameterError, match="must be int"):
        fp.resolve_params("sd", iterations="many")
    assert get_inverter("ddim").resolve_params("lcm", noise_correction="false")["noise_correction"] is False
    assert get_inverter("renoise").resolve_params("lcm")["renoise_steps"] == 9
    assert get_inverter("renoise").resolve_params("sd")["renoise_steps"] == 4


def test_renoise_regularises_only_the_averaged_estimates_against_eps_at_the_forward_noised_input(oracle, monkeypatch):
    import inversion.inverters.renoise as renoise_mod

    seen, batches = [], []
    real_reg, real_predict = renoise_mod.regularise_noise, oracle.predict_noise

    def reg(eps, ref, p, gen):
        seen.append(ref.clone())
        return real_reg(eps, ref, p, gen)

    def predict(x, t, cond):
        batches.append((x.clone(), t))
        return real_predict(x, t, cond)

    monkeypatch.setattr(renoise_mod, "regularise_noise", reg)
    monkeypatch.setattr(oracle, "predict_noise", predict)
    inv = invert(oracle, None, "", "renoise", steps=5, renoise_steps=4, average_last=2, noise_reg_steps=1, first_step_average=0)
    monkeypatch.undo()
    assert len(seen) == 5 * 3  # per step: estimates k = 3, 4 (the averaged ones) and their average
    firsts = [(x, t) for x, t in batches if x.shape[0] == 2]
    assert len(firsts) == 5 and len(batches) == 5 * 5  # K + 1 calls per step, eps_opt batched with the first
    noise = torch.randn(inv.x0.shape, generator=torch.Generator().manual_seed(renoise_mod.SEED))
    for x, t in firsts:
        a = float(oracle.alphas_cumprod[t])
        assert torch.allclose(x[1:], a**0.5 * inv.x0 + (1 - a) ** 0.5 * noise, atol=1e-5)


def test_renoise_first_step_averages_the_first_estimates_as_the_official_code():
    rn = get_inverter("renoise")
    p = rn.resolve_params("lcm")
    assert rn.averaging_range(249, p) == (0, 5) and rn.averaging_range(499, p) == (8, 10)  # official (0, 5) and (8, 10)
    assert rn.averaging_range(249, rn.resolve_params("sd")) == (3, 5)  # DDIM models: the last two everywhere


def test_renoise_survives_large_estimates_and_divergence(oracle, monkeypatch):
    """Patch variances stay exact on large noise (one-pass E[x^2] - m^2 went negative: NaN), and an
    iteration whose residual explodes stops at its best candidate instead of turning NaN."""
    g = torch.Generator().manual_seed(0)
    big = 50 + torch.randn(1, 3, 32, 32, generator=g)
    assert torch.isfinite(patch_kl_loss(big, torch.randn(1, 3, 32, 32, generator=g)))
    p = get_inverter("renoise").resolve_params("lcm")
    spiky = torch.randn(1, 3, 32, 32, generator=g) * 3
    spiky[0, :, 5, 5] = 54.0  # the largest estimate seen on shapes-lcm
    assert torch.isfinite(regularise_noise(spiky, torch.randn(1, 3, 32, 32, generator=g), p, torch.Generator().manual_seed(1))).all()
    real = oracle.predict_noise
    calls = []

    def exploding(x, t, cond):
        calls.append(t)
        return real(x, t, cond) * (1 + 10.0 ** len(calls))  # each estimate far worse than the last

    monkeypatch.setattr(oracle, "predict_noise", exploding)
    inv = invert(oracle, oracle.sample_data(0), "", "renoise", steps=3, renoise_steps=9)
    assert torch.isfinite(inv.latents).all() and len(calls) < 3 * 10  # stopped early, never NaN


def test_renoise_keeps_an_estimate_its_regularisation_would_blow_up():
    """eps_opt with almost no patch variance (random weights) drives the clipped KL step and then
    the auto-correlation step to NaN; the estimate stays as it was. A sane case is regularised."""
    from inversion.inverters.renoise import ReNoiseInverter, regularise_noise

    p = ReNoiseInverter().resolve_params("lcm")
    g = torch.Generator().manual_seed(0)
    eps = 0.1 * torch.randn(1, 4, 8, 16, generator=g)
    flat = 1e-4 * torch.randn(1, 4, 8, 16, generator=g)
    assert torch.equal(regularise_noise(eps, flat, p, torch.Generator().manual_seed(1)), eps)
    noise = torch.randn(1, 4, 8, 16, generator=g)
    out = regularise_noise(noise, torch.randn(1, 4, 8, 16, generator=g), p, torch.Generator().manual_seed(1))
    assert torch.isfinite(out).all() and not torch.equal(out, noise)
