"""DDIM inversion and reconstruction against diffusers' own schedulers and pipeline."""

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, LCMScheduler, StableDiffusionPipeline

from inversion.images import load_image
from inversion.inverters import get_inverter
from inversion.models.tiny import SD_SCHEDULER
from inversion.sampling import reconstruct_latent


def _close(a, b, rel=1e-4):
    """Equal up to float32 rounding, which depends on the CPU's kernels: on an AVX2-only AMD EPYC the inverse
    scheduler's 10 steps with guidance differ from ours by 1.2e-5 of the scale (within 1e-5 on the CPUs before)."""
    scale = float(b.abs().max())
    assert float((a - b).abs().max()) <= rel * scale + 1e-7, float((a - b).abs().max())


def _encode(model, cat_image, prompt="a cat", guidance=1.0):
    x = model.prepare_image(load_image(cat_image))
    return model.encode_image(x), model.encode_prompt(prompt, guidance=guidance)


def _unet_eps(model, z, t, cond, guidance):
    if guidance == 1.0:
        return model.unet(z, t, encoder_hidden_states=cond.text).sample
    u, c = model.unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([cond.uncond, cond.text])).sample.chunk(2)
    return u + guidance * (c - u)


def test_ddim_inversion_matches_diffusers_inverse_scheduler(tiny_sd, cat_image):
    for guidance in (1.0, 3.0):
        z0, cond = _encode(tiny_sd, cat_image, guidance=guidance)
        ours = get_inverter("ddim").invert(tiny_sd, z0, cond, 10)
        inv = DDIMInverseScheduler.from_config(DDIMScheduler(**SD_SCHEDULER).config)
        inv.set_timesteps(10)
        z = z0.clone()
        ref = [z]
        with torch.no_grad():
            for t in inv.timesteps:
                z = inv.step(_unet_eps(tiny_sd, z, t, cond, guidance), t, z).prev_sample
                ref.append(z)
        assert ours.latents.shape[0] == len(ref) == 11
        for k in range(11):
            _close(ours.latents[k], ref[k])
        assert list(ours.timesteps) == sorted(int(t) for t in inv.timesteps)[::-1]
        assert ours.nfe == 10


def test_ddim_reconstruction_matches_diffusers_pipeline(tiny_sd, cat_image):
    """Our sampler from z_T equals StableDiffusionPipeline(latents=z_T, ...) with and without CFG."""
    pipe = StableDiffusionPipeline(
        vae=tiny_sd.vae, text_encoder=tiny_sd.text_encoder, tokenizer=tiny_sd.tokenizer, unet=tiny_sd.unet,
        scheduler=DDIMScheduler(**SD_SCHEDULER), safety_checker=None, feature_extractor=None,
        image_encoder=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    for guidance in (1.0, 4.0):
        z0, cond = _encode(tiny_sd, cat_image, guidance=guidance)
        inv = get_inverter("ddim").invert(tiny_sd, z0, cond, 8)
        ours = reconstruct_latent(tiny_sd, inv)
        ref = pipe(prompt_embeds=cond.text, negative_prompt_embeds=cond.uncond, latents=inv.z_T.clone(),
                   num_inference_steps=8, guidance_scale=guidance, output_type="latent").images
        _close(ours, ref)


@pytest.mark.parametrize("scaling", [10.0, 0.01])
def test_lcm_step_matches_diffusers_with_the_same_noise(tiny_lcm, scaling):
    """Our LCM step, fed the noise diffusers' generator would draw, equals LCMScheduler.step,
    also with a scheduler whose boundary-condition timestep scaling is not LCM's usual 10 (0.01: small
    enough that c_skip is visible at these timesteps; at 10 it is below 1e-6 for t >= 20)."""
    from dataclasses import replace

    from inversion.models.unet_model import schedule_fields

    sched = LCMScheduler.from_config(DDIMScheduler(**SD_SCHEDULER).config, timestep_scaling=scaling)
    sched.set_timesteps(4)
    model = replace(tiny_lcm, **schedule_fields(sched))
    assert model.timestep_scaling == scaling
    sampler = model.sampler(4)
    assert list(sampler.timesteps) == [int(t) for t in sched.timesteps]
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    cond = tiny_lcm.encode_prompt("a cat")
    for j, t in enumerate(sched.timesteps):
        with torch.no_grad():
            eps = model.predict_noise(x, int(t), cond)
        ref = sched.step(eps, t, x, generator=torch.Generator().manual_seed(j)).prev_sample
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(j))
        ours = sampler.step(x, eps, j, noise if sampler.takes_noise(j) else None)
        _close(ours, ref)
        x = ours
