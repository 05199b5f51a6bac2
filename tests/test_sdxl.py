"""SDXL-Turbo, SDXL + LCM-LoRA and SDXL on hub-layout fixtures (tests/hub_fixtures.py: the published
configs, tiny widths, SDXL's real depths and layer names): `load_model` runs unchanged; both text
encoders' embeddings, the pooled one and the size ids reach the UNet; every inverter reconstructs the
stochastic samplers exactly through its recorded noise; every editor runs and a no-op edit is the
reconstruction; fp16 takes the fp16-fix VAE or keeps SDXL's own in float32; the editors' SDXL layers."""

import pytest
import torch
from hub_fixtures import LCM_LORA_SDXL, LORA_FILE, SDXL_REPOS, SDXL_VAE_FP16, build_hub_cache, published, snapshot

from editing import edit, get_editor
from editing.attention import deep_levels, layer_registry, word_map_level
from inversion.inverters import INVERTERS
from inversion.models import is_available, load_model
from inversion.pipeline import evaluate, invert, reconstruct
from inversion.sampling import reconstruct_latent

NEW = ("sdxl-turbo", "lcm-sdxl", "sdxl")
SDXL_CACHE = (*SDXL_REPOS, LCM_LORA_SDXL, SDXL_VAE_FP16)
SIZE = 64  # the inputs' long side: 8 x 8 latents keep the 70-block UNets at milliseconds a call
PROMPT = "a cat sitting on the grass"


@pytest.fixture(scope="module")
def sdxl_cache(tmp_path_factory):
    return build_hub_cache(tmp_path_factory.mktemp("sdxl-hub"), SDXL_CACHE)


@pytest.fixture
def hub(sdxl_cache, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(sdxl_cache))
    return sdxl_cache


@pytest.fixture(scope="module")
def models(sdxl_cache):
    import huggingface_hub.constants

    real = huggingface_hub.constants.HF_HUB_CACHE
    huggingface_hub.constants.HF_HUB_CACHE = str(sdxl_cache)
    try:
        return {name: load_model(name) for name in NEW}
    finally:
        huggingface_hub.constants.HF_HUB_CACHE = real


def test_each_model_loads_unchanged_with_its_published_schedule_size_and_guidance(models):
    from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler, LCMScheduler

    turbo, lcm, base = (models[n] for n in NEW)
    assert (turbo.sampler_kind, lcm.sampler_kind, base.sampler_kind) == ("euler_a", "lcm", "ddim")
    assert (turbo.image_size, lcm.image_size, base.image_size) == (512, 1024, 1024)  # unet sample_size x 8, as published
    assert (turbo.default_steps, lcm.default_steps, base.default_steps) == (4, 4, 50)
    assert (turbo.default_guidance, turbo.default_edit_guidance) == (1.0, 1.0)  # SDXL-Turbo: no classifier-free guidance
    assert all(m.uses_cfg and m.zeros_for_empty_prompt and m.dtype == torch.float32 and m.vae.dtype == torch.float32 for m in models.values())
    reference = EulerAncestralDiscreteScheduler.from_config(published(SDXL_REPOS[0])["scheduler/scheduler_config.json"])
    reference.set_timesteps(4)
    assert turbo.timesteps(4) == [int(t) for t in reference.timesteps] == [999, 749, 499, 249] and turbo.final_alpha == 1.0
    base_config = published(SDXL_REPOS[1])["scheduler/scheduler_config.json"]
    ddim = DDIMScheduler.from_config(base_config, clip_sample=False, set_alpha_to_one=False)
    ddim.set_timesteps(10)
    assert base.timesteps(10) == [int(t) for t in ddim.timesteps] and base.final_alpha == pytest.approx(float(ddim.alphas_cumprod[0]))
    lcm_ref = LCMScheduler.from_config(base_config)
    lcm_ref.set_timesteps(4)
    assert lcm.timesteps(4) == [int(t) for t in lcm_ref.timesteps]


def test_sdxl_conditioning_reaches_the_unet(models):
    """The UNet gets both encoders' penultimate hidden states side by side, text_encoder_2's pooled
    projection and the size ids (the latent's pixel size, no crop); with guidance, zeros for the empty
    negative prompt (force_zeros_for_empty_prompt) or the negative prompt's own embeddings."""
    model = models["sdxl-turbo"]
    seen = []
    handle = model.unet.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs), with_kwargs=True)
    try:
        cond = model.encode_prompt(PROMPT)
        x = torch.randn(1, 4, 8, 12, generator=torch.Generator().manual_seed(0))
        eps = model.predict_noise(x, 499, cond)
        guided = model.predict_noise(x, 499, model.encode_prompt(PROMPT, guidance=3.0))
        negative = model.encode_prompt(PROMPT, guidance=3.0, negative="blurry")
        model.predict_noise(x, 499, negative)
    finally:
        handle.remove()
    ids = [tok(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids for tok in (model.tokenizer, model.tokenizer_2)]
    one, two = model.text_encoder(ids[0], output_hidden_states=True), model.text_encoder_2(ids[1], output_hidden_states=True)
    added = seen[0]["added_cond_kwargs"]
    assert torch.allclose(seen[0]["encoder_hidden_states"], torch.cat([one.hidden_states[-2], two.hidden_states[-2]], -1))
    assert torch.allclose(added["text_embeds"], two.text_embeds) and added["text_embeds"].shape == (1, 32)
    assert added["time_ids"].tolist() == [[64, 96, 0, 0, 64, 96]]
    assert torch.equal(seen[1]["added_cond_kwargs"]["text_embeds"][0], torch.zeros(32)) and not seen[1]["encoder_hidden_states"][0].any()
    assert torch.allclose(seen[2]["added_cond_kwargs"]["text_embeds"][0], negative.uncond_pooled[0]) and negative.uncond_pooled.abs().sum() > 0
    assert not torch.allclose(eps, guided)
    # each part changes the prediction: a UNet that ignored one would fail here
    from dataclasses import replace

    for changed in (replace(cond, pooled=cond.pooled + 1), replace(cond, time_ids=torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]]))):
        assert not torch.allclose(model.predict_noise(x, 499, changed), eps, atol=1e-5)
    with pytest.raises(ValueError, match="needs SDXL's pooled text embedding"):
        model.predict_noise(x, 499, replace(cond, pooled=None))


@pytest.mark.parametrize("name", NEW)
def test_every_inverter_and_editor_runs_exact_where_noise_is_recorded_and_a_no_op_edit_is_the_reconstruction(models, cat_image, name):
    """Every inverter reconstructs the stochastic samplers (SDXL-Turbo's Euler ancestral, LCM) exactly
    through its recorded noise; on each inversion every editor's no-op edit (the source prompt at the
    inversion's guidance) is the reconstruction. Two steps keep it quick; four run below."""
    model = models[name]
    stochastic = name != "sdxl"
    for inverter in (n for n, inv in INVERTERS.items() if not inv.needs_cascade):
        inv = invert(model, cat_image, PROMPT, inverter, steps=2, size=SIZE, strength=1.0)
        assert inv.sampler == model.sampler_kind and (inv.noises is not None) == stochastic and inv.num_steps == 2
        rec = reconstruct_latent(model, inv)
        tol = 1e-4 * float(inv.latents.abs().max())  # float32 rounding of the trajectory's largest values
        if stochastic:  # exact, whatever the random weights
            assert torch.allclose(rec, inv.x0, atol=tol), inverter
        # a no-op edit batches its UNet calls where the replay does not: by up to 1.8e-4 of those values for lcm-sdxl
        # on an AVX2-only AMD EPYC (within 1e-4 on the CPUs before)
        edit_tol = 1e-3 * float(inv.latents.abs().max())
        for editor in ("p2p", "masactrl", "diffedit"):
            ed = get_editor(editor)
            p = ed.resolve_params(model.defaults, **({"background": "reconstruction"} if editor == "diffedit" else {}))
            same = ed.edit(model, inv, PROMPT, inv.guidance, p)
            assert torch.allclose(same.latent, rec, atol=edit_tol), (inverter, editor)
    changed = {e: edit(model, inv, "a dog sitting on the grass", e).image for e in ("p2p", "masactrl", "diffedit")}
    image = model.decode(rec)
    assert all(c.shape == image.shape == (1, 3, 64, 64) and torch.isfinite(c).all() and not torch.allclose(c, image, atol=1e-3) for c in changed.values())


@pytest.mark.parametrize("name", ["sdxl-turbo", "lcm-sdxl"])
def test_evaluate_reports_the_exact_and_the_uncorrected_reconstruction(models, cat_image, name):
    inv = invert(models[name], cat_image, PROMPT, "rnri", size=SIZE, strength=1.0)
    report, recon = evaluate(models[name], cat_image, inv)
    assert report["steps"] == 4 and report["latent_psnr"] > 60 and report["latent_psnr_uncorrected"] < report["latent_psnr"]
    assert report["psnr_uncorrected"] > 0 and torch.allclose(reconstruct(models[name], inv), recon)  # image space: the random VAE decides


def test_rnri_inverts_sdxl_turbo_as_the_official_demo(models, cat_image):
    inv = invert(models["sdxl-turbo"], cat_image, PROMPT, "rnri", size=SIZE)
    assert inv.timesteps == (499, 249) and inv.steps == 4 and inv.nfe == 6 and inv.params["iterations"] == 2


def test_the_editors_use_sdxls_levels_and_masactrls_official_sdxl_layer(models, cat_image):
    """70 transformer blocks under SDXL's names; word maps and P2P's self-attention at the deepest level
    (16x16 at SDXL-Turbo's 512 px, 32x32 at SDXL's 1024: the official codes' 16x16 level); MasaCtrl's
    start layer 0.625 x 70 rounds to block 44, the official SDXL script's first start layer."""
    for name in ("sdxl-turbo", "sdxl"):
        layers = layer_registry(models[name].unet)
        assert max(i.block_order for i in layers) + 1 == 70 and {i.level for i in layers} == {1, 2}
        assert word_map_level(layers) == 2 and deep_levels(layers) == {2}
        assert {i.side for i in layers if i.level == 2} == {16 if name == "sdxl-turbo" else 32}
    inv = invert(models["sdxl-turbo"], cat_image, PROMPT, "ddim", size=128, strength=1.0)  # maps of 2 x 4 at the deepest level
    out = edit(models["sdxl-turbo"], inv, "a dog sitting on the grass", "masactrl", mask_word="cat", mask_target_word="dog")
    assert out.info["start_block"] == 44 and out.info["blocks"] == 70 and out.mask is not None


def test_the_lcm_lora_is_fused_into_the_sdxl_unet_with_its_alpha(models, hub):
    from safetensors.torch import load_file

    lora = load_file(snapshot(hub, LCM_LORA_SDXL) / LORA_FILE)
    path = ("down_blocks", 1, "attentions", 0, "transformer_blocks", 1, "attn2", "to_k")
    base, fused = models["sdxl"].unet, models["lcm-sdxl"].unet
    for part in path:
        base, fused = (base[part], fused[part]) if isinstance(part, int) else (getattr(base, part), getattr(fused, part))
    key = "lora_unet_" + "_".join(map(str, path))
    down, up, alpha = (lora[f"{key}.{k}"].float() for k in ("lora_down.weight", "lora_up.weight", "alpha"))
    assert torch.allclose(fused.weight, base.weight + alpha / down.shape[0] * up @ down, atol=1e-3)


def repo_copy(cache, repo: str, into, link: bool = False) -> None:
    """One fixture repository of `cache` in another cache: a symbolic link, or a copy to damage."""
    import shutil

    name = f"models--{repo.replace('/', '--')}"
    if link:
        (into / name).symlink_to(cache / name, target_is_directory=True)
    else:
        shutil.copytree(cache / name, into / name)


def test_fp16_takes_the_fp16_fix_vae_or_keeps_sdxls_own_in_float32(hub, tmp_path, monkeypatch):
    import huggingface_hub.constants
    from safetensors.torch import load_file

    from inversion.models.hub import load_sdxl

    model = load_sdxl("sdxl-turbo", device="cpu", dtype=torch.float16)
    weights = load_file(snapshot(hub, SDXL_VAE_FP16) / "diffusion_pytorch_model.safetensors")
    assert model.unet.dtype == torch.float16 and model.vae.dtype == torch.float16
    assert torch.allclose(model.vae.decoder.conv_out.weight.float(), weights["decoder.conv_out.weight"].float(), atol=1e-3)
    image = model.decode(torch.randn(1, 4, 4, 4))
    assert image.dtype == torch.float32 and torch.isfinite(image).all()
    # without the fix in the cache: SDXL-Turbo's own VAE (its fp16 variant file), in float32
    repo_copy(hub, SDXL_REPOS[0], tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    (snapshot(tmp_path, SDXL_REPOS[0]) / "unet" / "diffusion_pytorch_model.safetensors").unlink()  # the fp16 variant is all there is
    own = load_sdxl("sdxl-turbo", device="cpu", dtype=torch.float16)
    assert own.unet.dtype == torch.float16 and own.vae.dtype == torch.float32 and own.text_encoder_2.dtype == torch.float16


def test_sdxl_models_are_available_exactly_when_their_files_are_cached(sdxl_cache, tmp_path, monkeypatch):
    import shutil

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert not any(is_available(n) for n in NEW)
    repo_copy(sdxl_cache, SDXL_REPOS[0], tmp_path)
    assert [n for n in NEW if is_available(n)] == ["sdxl-turbo"]  # the fp16-fix VAE is optional
    repo_copy(sdxl_cache, SDXL_REPOS[1], tmp_path, link=True)
    assert is_available("sdxl") and not is_available("lcm-sdxl")  # the LoRA's own repository is still missing
    repo_copy(sdxl_cache, LCM_LORA_SDXL, tmp_path, link=True)
    assert all(is_available(n) for n in NEW)
    shutil.rmtree(snapshot(tmp_path, SDXL_REPOS[0]) / "text_encoder_2")  # a download cut short
    assert not is_available("sdxl-turbo")
