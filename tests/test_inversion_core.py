"""Model interface, DDIM on the oracle, LCM noise recording, Inversion persistence."""

import math

import pytest
import torch

from inversion.inverters import get_inverter
from inversion.pipeline import evaluate, invert, reconstruct
from inversion.result import IncompatibleInversion, load_inversion
from inversion.sampling import reconstruct_latent


def test_oracle_ddim_psnr_rises_with_steps_and_exceeds_30db(oracle):
    psnrs = {}
    for steps in (10, 50):
        vals = []
        for seed in range(3):
            inv = invert(oracle, None, "", "ddim", steps=steps, seed=seed)
            vals.append(evaluate(oracle, oracle.sample_data(seed), inv)[0]["latent_psnr"])
        psnrs[steps] = sum(vals) / len(vals)
    assert psnrs[50] > psnrs[10] + 5
    assert psnrs[50] > 30


def test_oracle_is_the_exact_posterior_mean_for_one_component(oracle):
    """With one Gaussian component, E[x0|x_t] has a closed form we can check directly."""
    from dataclasses import replace

    single = replace(oracle, means=oracle.means[:1], names=oracle.names[:1])
    cond = single.encode_prompt("")
    x0 = single.sample_data(0, component=0)
    t = 500
    a = float(single.alphas_cumprod[t])
    noise = torch.randn_like(x0)
    xt = a**0.5 * x0 + (1 - a) ** 0.5 * noise
    eps = single.predict_noise(xt, t, cond)
    s2 = single.variance
    mu = single.means[0].float()
    post = mu + (a**0.5 * s2 / (a * s2 + 1 - a)) * (xt - a**0.5 * mu)
    assert torch.allclose(eps, (xt - a**0.5 * post) / (1 - a) ** 0.5, atol=1e-5)


def test_guidance_rows_in_one_batch_equal_separate_calls(tiny_sd):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = tiny_sd.encode_prompt(["a cat", "a dog"]).with_guidance([1.0, 5.0])
    with tiny_sd.measure() as meter:
        both = tiny_sd.predict_noise(x, 501, cond)
    assert meter.nfe == 1  # guidance rows and branches in one UNet batch
    assert tiny_sd.batch_layout(cond) == [(0, "u"), (1, "u"), (0, "c"), (1, "c")]
    for i in range(2):
        one = tiny_sd.predict_noise(x[i : i + 1], 501, cond.rows([i]))
        assert torch.allclose(both[i : i + 1], one, atol=1e-5)


def test_lcm_inversion_records_noise_that_retraces_every_step(tiny_lcm, cat_image):
    inv = invert(tiny_lcm, cat_image, "a cat", "ddim", steps=4)
    assert inv.sampler == "lcm" and inv.noises is not None
    sampler = tiny_lcm.sampler(4)
    cond = tiny_lcm.encode_prompt("a cat", guidance=inv.guidance)
    for j in range(sampler.num_steps):  # every step lands on its target (the last through its residual)
        x = inv.latent_before(j)
        eps = tiny_lcm.predict_noise(x, sampler.timesteps[j], cond)
        out = sampler.step(x, eps, j, inv.noise(j))
        scale = float(inv.latent_after(j).abs().max())
        assert float((out - inv.latent_after(j)).abs().max()) < 1e-5 * scale
    rec = reconstruct_latent(tiny_lcm, inv)
    assert torch.allclose(rec, inv.x0, atol=1e-4 * float(inv.latents.abs().max()))  # float32, on the trajectory scale
    report, _ = evaluate(tiny_lcm, cat_image, inv)
    assert report["latent_psnr"] > 60 and report["latent_psnr_uncorrected"] < report["latent_psnr"]


def test_lcm_without_the_recorded_noise_is_refused(tiny_lcm, cat_image):
    inv = invert(tiny_lcm, cat_image, "a cat", "ddim", steps=4)
    inv.noises = None
    with pytest.raises(IncompatibleInversion):
        reconstruct(tiny_lcm, inv)


def test_inversion_checks_timesteps(tiny_sd, cat_image):
    inv = invert(tiny_sd, cat_image, "a cat", "ddim", steps=5)
    with pytest.raises(IncompatibleInversion, match="same number of steps"):
        inv.check_compatible(tiny_sd.sampler(6))


def test_inversion_save_and_load_roundtrip(tiny_lcm, tiny_if, cat_image, tmp_path):
    inv = invert(tiny_lcm, cat_image, "a cat", "ddim", steps=4)
    inv.save(tmp_path / "inv.safetensors")
    back = load_inversion(tmp_path / "inv.safetensors")
    assert torch.equal(back.latents, inv.latents) and torch.equal(back.noises, inv.noises)
    assert back.timesteps == inv.timesteps and back.prompt == "a cat" and back.params == inv.params
    assert torch.equal(reconstruct(tiny_lcm, back), reconstruct(tiny_lcm, inv))
    casc = invert(tiny_if, cat_image, "a cat", "ddim", steps=3)
    casc.save(tmp_path / "c.safetensors")
    back = load_inversion(tmp_path / "c.safetensors")
    assert torch.equal(back.stages[1].condition_noise, casc.stages[1].condition_noise)
    assert torch.allclose(reconstruct(tiny_if, back), reconstruct(tiny_if, casc))


def test_load_inversion_rejects_other_files(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not an inversion"):
        load_inversion(tmp_path / "x.safetensors")


def test_cascade_reconstruction_uses_recorded_condition_noise(tiny_if, cat_image):
    """Changing the SR stage's augmentation noise changes its reconstruction (it is part of the state)."""
    inv = invert(tiny_if, cat_image, "a cat", "ddim", steps=4)
    ref = reconstruct(tiny_if, inv)
    inv.stages[1].condition_noise = torch.randn_like(inv.stages[1].condition_noise)
    assert not torch.allclose(reconstruct(tiny_if, inv), ref, atol=1e-3)


def test_evaluate_reports_the_contract(tiny_sd, cat_image):
    inv = invert(tiny_sd, cat_image, "a cat", "ddim", steps=4)
    report, recon = evaluate(tiny_sd, cat_image, inv)
    for k in ("model", "inverter", "steps", "nfe", "seconds", "psnr", "ssim", "latent_psnr", "vae_psnr", "lpips"):
        assert k in report
    assert report["nfe"] == 4 and report["steps"] == 4
    assert all(isinstance(report[k], float) and math.isfinite(report[k]) for k in ("psnr", "ssim", "latent_psnr", "vae_psnr"))
    assert recon.shape == tiny_sd.prepare_image(__import__("PIL").Image.open(cat_image)).shape


def test_unknown_inverter_and_parameters_are_explained():
    from inversion.inverters import ParameterError

    with pytest.raises(ParameterError, match="choose one of"):
        get_inverter("nope")
    with pytest.raises(ParameterError, match="has no parameter"):
        get_inverter("ddim").resolve_params("sd", bogus=1)


def test_static_thresholding_clamps_the_clean_estimate_and_only_it(tiny_if):
    from inversion.schedule import to_x0

    stage = tiny_if.stages[0]
    x, t, a = torch.randn(2, 3, 8, 8) * 1.5, 500, float(stage.alphas_cumprod[500])
    cond = stage.encode_prompt(["a cat", "a dog"])
    eps = stage.predict_noise(x, t, cond)
    stage.clip_x0 = 1.0
    try:
        clipped = stage.predict_noise(x, t, cond)
    finally:
        stage.clip_x0 = None
    x0 = to_x0(x, eps, a)
    assert torch.allclose(to_x0(x, clipped, a), x0.clamp(-1, 1), atol=1e-5)
    inside = x0.abs() < 1
    assert inside.any() and torch.allclose(clipped[inside], eps[inside], atol=1e-5)


def test_a_single_model_keeps_the_image_s_aspect_ratio_and_the_asked_size(tiny_sd, cat_image):
    """A portrait photo on an SD-shaped model is inverted as a portrait (it was squashed to a
    square), and `size` sets the long side (it was ignored)."""
    from PIL import Image

    portrait = Image.open(cat_image).transpose(Image.Transpose.ROTATE_90)  # 300 x 451
    inv = invert(tiny_sd, portrait, "a cat", "ddim", steps=2)
    assert inv.x0.shape[-2:] == (8, 6)  # 64 x 48 px at the model's 64 px long side, multiple of 16
    report, recon = evaluate(tiny_sd, portrait, inv)
    assert recon.shape[-2:] == (64, 48) and report["psnr"] > 0
    bigger = invert(tiny_sd, cat_image, "a cat", "ddim", steps=2, size=128)
    assert bigger.x0.shape[-2:] == (10, 16)  # 128 x 80 px
    assert evaluate(tiny_sd, cat_image, bigger)[1].shape[-2:] == (80, 128)  # evaluated at the size it was inverted
