"""Every inverter against the closed-form oracle, its cheap identities, LCM exactness, IterInv."""

import pytest
import torch

from inversion.inverters import INVERTERS, ParameterError, get_inverter
from inversion.inverters.renoise import auto_correlation_loss, regularise_noise
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
    """SD defaults at 50 steps blend steps i = 3..12: the trajectory matches DDIM up to latent 3, then departs."""
    ddim = invert(oracle, None, "", "ddim", steps=50)
    easy = invert(oracle, None, "", "easyinv", steps=50)
    assert torch.equal(easy.latents[:4], ddim.latents[:4])
    assert not torch.allclose(easy.latents[4], ddim.latents[4])
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
    scale = float(inv.latents.abs().max())
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


def test_noise_regularisation_whitens_correlated_noise():
    g = torch.Generator().manual_seed(0)
    white = torch.randn(1, 4, 32, 32, generator=g)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(1, 4, 34, 34, generator=g), 3, 1) * 3
    assert auto_correlation_loss(smooth, torch.Generator().manual_seed(1)) > 10 * auto_correlation_loss(white, torch.Generator().manual_seed(1))
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
