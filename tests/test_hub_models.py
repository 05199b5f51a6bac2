"""The real-model path on hub-layout fixtures: `load_model` runs unchanged on repositories with the
published files and configs (tests/hub_fixtures.py), then inverts, reconstructs and edits."""

import shutil
from dataclasses import replace

import pytest
import torch
from hub_fixtures import ALL, IF_STAGE_1, IF_STAGE_2, LCM_LORA, LORA_FILE, build_hub_cache, published, snapshot

from editing import edit, get_editor
from inversion.models import MODELS, is_available, load_model
from inversion.pipeline import evaluate, invert, reconstruct
from inversion.sampling import reconstruct_latent

SD_FAMILY = ("lcm-dreamshaper-v7", "sd-1.5", "sd-1.4", "sd-1.5-lcm-lora")
HUB = tuple(n for n, s in MODELS.items() if not s.offline)


@pytest.fixture
def hub(hub_cache, monkeypatch):
    """The fixture cache as this process's Hugging Face cache (diffusers and transformers read the
    constant at call time)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    return hub_cache


@pytest.mark.parametrize("name", SD_FAMILY)
def test_each_hub_model_loads_unchanged_and_inverts_reconstructs_and_edits(hub, name, cat_image):
    model = load_model(name)
    lcm = name in ("lcm-dreamshaper-v7", "sd-1.5-lcm-lora")
    assert model.sampler_kind == ("lcm" if lcm else "ddim") and model.device.type == "cpu" and model.dtype == torch.float32
    assert model.uses_cfg == (name != "lcm-dreamshaper-v7")  # the distilled model takes guidance as its w-embedding
    inv = invert(model, cat_image, "a cat sitting", "rnri", steps=4, size=128)
    report, recon = evaluate(model, cat_image, inv)
    assert recon.shape[-2:] == (64, 128) and report["nfe"] > 4 and torch.isfinite(recon).all()
    if lcm:  # the last step's recorded residual makes an LCM replay exact, whatever the weights
        assert report["latent_psnr"] > 40
    # (DDIM's replay is only as exact as the inverter on these random weights: accuracy is tested on the oracle and shapes)
    assert torch.allclose(reconstruct(model, inv), recon)
    p2p = get_editor("p2p")
    same = p2p.edit(model, inv, "a cat sitting", inv.guidance, p2p.resolve_params(model.defaults))
    scale = max(float(inv.latents.abs().max()), float(inv.noises.abs().max()) if inv.noises is not None else 0.0)  # LCM's noises amplify float32 batch differences
    # a no-op edit is the reconstruction, up to float32 rounding (batched and single UNet calls differ; on an AVX2-only
    # AMD EPYC the LCM models' difference is 1.5e-4 of the scale, within 1e-4 on the CPUs before)
    assert torch.allclose(same.latent, reconstruct_latent(model, inv), atol=1e-3 * scale)
    changed = edit(model, inv, "a dog sitting", editor="p2p")
    assert changed.image.shape == recon.shape and not torch.allclose(changed.image, recon, atol=1e-3)


def test_the_schedules_are_the_published_ones(hub):
    """Our timesteps are diffusers' own for the published scheduler configs (LCM: leading spacing
    over 50 original steps, offset 0; SD: DDIM built from the PNDM config, offset 1)."""
    from diffusers import DDIMScheduler, LCMScheduler

    lcm_config = published("SimianLuo/LCM_Dreamshaper_v7")["scheduler/scheduler_config.json"]
    reference = LCMScheduler.from_config(lcm_config)
    reference.set_timesteps(4)
    lcm = load_model("lcm-dreamshaper-v7")
    assert lcm.timesteps(4) == [int(t) for t in reference.timesteps] and lcm.timestep_scaling == 10.0
    sd_config = published("stable-diffusion-v1-5/stable-diffusion-v1-5")["scheduler/scheduler_config.json"]
    ddim = DDIMScheduler.from_config(sd_config, clip_sample=False, set_alpha_to_one=False)
    ddim.set_timesteps(10)
    sd = load_model("sd-1.5")
    assert sd.timesteps(10) == [int(t) for t in ddim.timesteps] and sd.final_alpha == pytest.approx(float(ddim.alphas_cumprod[0]))


def test_the_lcm_lora_is_fused_into_the_unet_with_its_alpha(hub):
    """The LoRA file (kohya names, fp16, an alpha per module) changes each target weight by
    alpha / rank * up @ down, computed here from the file itself."""
    from safetensors.torch import load_file

    lora = load_file(snapshot(hub, LCM_LORA) / LORA_FILE)
    base = load_model("sd-1.5").unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight
    fused = load_model("sd-1.5-lcm-lora").unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    down, up, alpha = (lora[f"{key}.{k}"].float() for k in ("lora_down.weight", "lora_up.weight", "alpha"))
    assert torch.allclose(fused, base + alpha / down.shape[0] * up @ down, atol=1e-3)


def test_hub_models_are_available_exactly_when_their_files_are_cached(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert not any(is_available(n) for n in HUB)
    build_hub_cache(tmp_path, ("SimianLuo/LCM_Dreamshaper_v7",))
    assert [n for n in HUB if is_available(n)] == ["lcm-dreamshaper-v7"]
    build_hub_cache(tmp_path, ("stable-diffusion-v1-5/stable-diffusion-v1-5",))
    assert not is_available("sd-1.5-lcm-lora")  # the LoRA's own repository is still missing
    build_hub_cache(tmp_path, (LCM_LORA,))
    assert is_available("sd-1.5") and is_available("sd-1.5-lcm-lora") and not is_available("sd-1.4")
    shutil.rmtree(snapshot(tmp_path, "SimianLuo/LCM_Dreamshaper_v7") / "unet")  # a download cut short
    assert not is_available("lcm-dreamshaper-v7")
    build_hub_cache(tmp_path, (IF_STAGE_1,))
    assert not is_available("deepfloyd-if")  # the super-resolution stage's repository is still missing
    build_hub_cache(tmp_path, (IF_STAGE_2,))
    assert is_available("deepfloyd-if")
    assert set(ALL) >= {"SimianLuo/LCM_Dreamshaper_v7", LCM_LORA, IF_STAGE_1, IF_STAGE_2}


def test_fp16_weights_load_as_the_variant_and_an_overflowing_vae_falls_back_to_float32(tmp_path, monkeypatch, cat_image):
    """On a GPU SD loads the *.fp16.* files (here the only UNet weights left); SD 1.x's VAE
    overflowing in fp16 (the classic black image) is redone in float32 with a warning."""
    import huggingface_hub.constants
    from PIL import Image

    from inversion.models.hub import load_sd

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    build_hub_cache(tmp_path, ("stable-diffusion-v1-5/stable-diffusion-v1-5",))
    (snapshot(tmp_path, "stable-diffusion-v1-5/stable-diffusion-v1-5") / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    model = load_sd("sd-1.5", device="cpu", dtype=torch.float16)
    assert model.unet.dtype == torch.float16 and model.vae.dtype == torch.float16
    z = model.encode_image(model.prepare_image(Image.open(cat_image), 128))
    with torch.no_grad():
        model.vae.post_quant_conv.bias.fill_(6.5e4)  # near fp16's largest value (65504): the next layer overflows
    with model.measure() as meter:
        image = model.decode(z)
    assert torch.isfinite(image).all() and model.vae.dtype == torch.float32
    assert any("float16" in w for w in meter.warnings)


def test_deepfloyd_if_loads_unchanged_and_inverts_reconstructs_and_edits(hub, cat_image):
    """IF-I-M + IF-II-M from the cache (reconstructed configs, spiece.model, fp32 weights on a CPU):
    a 64 px base stage and a 256 px super-resolution stage; DDIM and IterInv invert, evaluate and
    reconstruct; DiffEdit edits; P2P and MasaCtrl refuse IF's joint added-KV attention."""
    model = load_model("deepfloyd-if")
    assert [s.image_size for s in model.stages] == [64, 256] and model.noise_levels == [250]
    assert all(s.family == "if" and s.dtype == torch.float32 and s.unet.config.out_channels == 6 for s in model.stages)
    assert model.stages[1].text_encoder is model.stages[0].text_encoder  # one T5 for both stages (IF-II is loaded without its own)
    inv = invert(model, cat_image, "a cat", "ddim", steps=4)
    assert [i.x0.shape[-1] for i in inv.stages] == [64, 256]
    report, recon = evaluate(model, cat_image, inv)
    assert recon.shape == (1, 3, 256, 256) and torch.isfinite(recon).all() and report["nfe"] == 8
    assert torch.allclose(reconstruct(model, inv), recon)
    iterinv = invert(model, cat_image, "a cat", "iterinv", steps=4, iterations=2)
    report, recon = evaluate(model, cat_image, iterinv)
    assert recon.shape == (1, 3, 256, 256) and torch.isfinite(recon).all() and report["nfe"] > 8
    for editor in ("p2p", "masactrl"):
        with pytest.raises(ValueError, match="added-KV"):
            edit(model, inv, "a dog", editor=editor)
    edited = edit(model, inv, "a dog", editor="diffedit")
    assert edited.image.shape == (1, 3, 256, 256) and torch.isfinite(edited.image).all()


def test_deepfloyd_if_schedules_are_its_pipelines_own(hub):
    """For the (reconstructed) scheduler configs: each stage steps through the timesteps IF's own
    pipelines take (DDPMScheduler, leading spacing) with its squared-cosine alphas, and the SR
    condition is noised as IFSuperResolutionPipeline noises it (image_noising_scheduler, level 250,
    bilinear upsampling with aligned corners)."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    model = load_model("deepfloyd-if")
    for stage, repo in zip(model.stages, (IF_STAGE_1, IF_STAGE_2)):
        reference = DDPMScheduler.from_config(published(repo)["scheduler/scheduler_config.json"])
        for n in (4, 10, 50):
            reference.set_timesteps(n)
            assert stage.timesteps(n) == [int(t) for t in reference.timesteps]
        assert torch.allclose(stage.alphas_cumprod.float(), reference.alphas_cumprod) and stage.final_alpha == 1.0
    noising = DDPMScheduler.from_config(published(IF_STAGE_2)["image_noising_scheduler/scheduler_config.json"])
    low, noise = torch.rand(1, 3, 64, 64) * 2 - 1, torch.randn(1, 3, 256, 256)
    cond, level = model.sr_condition(1, low, noise)
    up = F.interpolate(low, size=(256, 256), mode="bilinear", align_corners=True)
    assert level.tolist() == [250] and torch.allclose(cond, noising.add_noise(up, noise, level), atol=1e-5)


def _if_cache_copy(hub, tmp_path, monkeypatch):
    """The two IF repositories copied out of the session cache, to be changed by one test."""
    import huggingface_hub.constants

    for repo in (IF_STAGE_1, IF_STAGE_2):
        folder = f"models--{repo.replace('/', '--')}"
        shutil.copytree(hub / folder, tmp_path / folder, symlinks=True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def test_deepfloyd_if_loads_its_fp16_variant_files(hub, tmp_path, monkeypatch):
    """On a GPU the loader asks for IF's *.fp16.* files: here the only UNet and text-encoder weights
    left (the text encoder in two shards with its fp16 index), loaded as float16."""
    from inversion.models.hub import load_deepfloyd_if

    cache = _if_cache_copy(hub, tmp_path, monkeypatch)
    for repo in (IF_STAGE_1, IF_STAGE_2):
        snap = snapshot(cache, repo)
        for fp32 in [snap / "unet" / "diffusion_pytorch_model.safetensors", *(snap / "text_encoder").glob("model-*"), snap / "text_encoder" / "model.safetensors.index.json"]:
            fp32.unlink()
    model = load_deepfloyd_if(device="cpu", dtype=torch.float16)
    assert all(s.unet.dtype == torch.float16 and s.text_encoder.dtype == torch.float16 and s.dtype == torch.float16 for s in model.stages)
    stage = model.stages[0]
    eps = stage.predict_noise(torch.randn(1, 3, 64, 64), 500, stage.encode_prompt(["a cat"]))
    assert eps.shape == (1, 3, 64, 64) and torch.isfinite(eps).all()


def test_deepfloyd_if_reads_its_published_sentencepiece_tokenizer(hub):
    """The tokenizer is published as tokenizer/spiece.model (no tokenizer.json), built byte for byte the
    same on every run; transformers reads it through its SentencePiece path (the model's NFKC charsmap
    becomes the normalizer), appends the 100 sentinels, and the T5 encoder has a row for every id.
    Prompts of corpus words are one piece per word; they are padded to 77 and the padding is masked."""
    from hub_fixtures import spiece_model

    folder = snapshot(hub, IF_STAGE_1) / "tokenizer"
    assert sorted(p.name for p in folder.iterdir()) == ["special_tokens_map.json", "spiece.model", "tokenizer_config.json"]
    assert (folder / "spiece.model").read_bytes() == spiece_model() == spiece_model()
    stage = load_model("deepfloyd-if").stages[0]
    tok = stage.tokenizer
    assert type(tok).__name__ == "T5Tokenizer" and tok.vocab_file == str(folder / "spiece.model")
    assert type(tok.backend_tokenizer.normalizer).__name__ == "Precompiled"  # only a spiece.model carries it
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.bos_token_id) == (0, 1, 2, None)  # T5's layout
    assert len(tok) == 185 + 100 and tok.convert_tokens_to_ids(["<extra_id_99>", "<extra_id_0>"]) == [185, 284]
    assert stage.text_encoder.config.vocab_size == 384 >= len(tok)  # padded to a multiple of 128, as T5's 32,128 for 32,100
    ids = tok("a photo of a cat sitting on the grass").input_ids
    assert tok.convert_ids_to_tokens(ids) == ["▁a", "▁photo", "▁of", "▁a", "▁cat", "▁sitting", "▁on", "▁the", "▁grass", "</s>"]
    assert tok.convert_ids_to_tokens(tok("a Zebra, 42").input_ids) == ["▁a", "▁", "Z", "e", "b", "r", "a", ",", "▁", "4", "2", "</s>"]  # no <unk>
    batch = tok(["a cat"], padding="max_length", max_length=stage.max_tokens, truncation=True, return_tensors="pt")  # as _embed pads
    assert batch.input_ids.shape == (1, 77) and batch.input_ids[0, 3:].eq(tok.pad_token_id).all() and batch.attention_mask.sum() == 3
    embedded = stage.encode_prompt("a cat").text
    alone = stage.text_encoder(batch.input_ids[:, :3])[0]  # the three tokens without padding
    assert embedded.shape == (1, 77, 32) and torch.allclose(embedded[:, :3], alone, atol=1e-5)  # the mask hides the padding


@pytest.mark.parametrize("hidden", [("sentencepiece", "protobuf"), ("protobuf",)])
def test_deepfloyd_if_says_when_its_sentencepiece_tokenizer_needs_a_package(hub, monkeypatch, hidden):
    """transformers reads tokenizer/spiece.model only with `sentencepiece` and `protobuf`; without them
    it falls back to a tiktoken reader and fails, which the loader used to report as weights missing
    from the cache. Both are installed here, so their absence is simulated the way transformers and
    the loader probe for them: the modules hidden from `sys.modules` (`find_spec` and `import` then
    fail) and transformers' cached availability checks cleared."""
    import sys

    from transformers.utils import import_utils

    from inversion.models import ModelError
    from inversion.models.hub import _missing_sentencepiece

    probes = (import_utils.is_sentencepiece_available, import_utils.is_protobuf_available)
    modules = {"sentencepiece": "sentencepiece", "protobuf": "google.protobuf"}
    try:
        with monkeypatch.context() as m:
            for package in hidden:
                m.setitem(sys.modules, modules[package], None)
            for probe in probes:
                probe.cache_clear()
            assert _missing_sentencepiece() == list(hidden)
            assert import_utils.is_sentencepiece_available() == ("sentencepiece" not in hidden) and not import_utils.is_protobuf_available()
            with pytest.raises(ModelError, match=rf"SentencePiece model \(tokenizer/spiece.model\), which needs `pip install {' '.join(hidden)}`") as caught:
                load_model("deepfloyd-if")
            assert "tiktoken" in str(caught.value.__cause__).lower()  # transformers' own failure, read without the packages
    finally:
        for probe in probes:
            probe.cache_clear()
    assert not _missing_sentencepiece() and all(probe() for probe in probes)


def test_sd_models_take_the_taesd_preview_decoder_from_the_cache_and_live_mode_uses_it(hub, cat_image, tmp_path, monkeypatch):
    """With madebyollin/taesd cached, an SD-family model previews with it (same size, in range);
    the app's live edits say decoder: preview, its other edits full; without it, no preview."""
    import huggingface_hub.constants

    from demo.engine import EditRequest, Engine, InversionRequest

    model = load_model("lcm-dreamshaper-v7")
    assert model.has_preview
    z = model.encode_image(model.prepare_image(__import__("PIL.Image", fromlist=["Image"]).open(cat_image)))
    quick, full = model.preview(z), model.decode(z)
    assert quick.shape == full.shape and quick.abs().max() <= 1 and not torch.allclose(quick, full)
    engine = Engine("lcm-dreamshaper-v7")
    req = EditRequest(InversionRequest(str(cat_image), "a cat sitting", "ddim", 4), "a dog sitting")
    assert engine.edit_record(engine.edit("s", req))["metrics"]["edit"]["decoder"] == "full"
    assert engine.edit_record(engine.edit("s", replace(req, preview=True)))["metrics"]["edit"]["decoder"] == "preview"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    build_hub_cache(tmp_path, ("SimianLuo/LCM_Dreamshaper_v7",))
    assert not load_model("lcm-dreamshaper-v7").has_preview  # previews fall back to the full VAE


def test_a_cpu_loads_the_fp32_files_and_a_gpu_the_fp16_variant(tmp_path, monkeypatch):
    """The path CPU users take: `load_model` on a machine without CUDA reads the float32 files, even
    where fp16 variant files sit beside them (the fixture's fp16 UNet is marked to tell them apart),
    and loads from fp32 files alone; asked for float16 (a GPU), the same cache gives the fp16 variant."""
    import huggingface_hub.constants
    from safetensors.torch import load_file, save_file

    from inversion.models.hub import load_sd

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    build_hub_cache(tmp_path, ("stable-diffusion-v1-5/stable-diffusion-v1-5",))
    unet_dir = snapshot(tmp_path, "stable-diffusion-v1-5/stable-diffusion-v1-5") / "unet"
    half = unet_dir / "diffusion_pytorch_model.fp16.safetensors"
    tensors = load_file(half)
    key = "conv_in.bias"
    tensors[key] = torch.full_like(tensors[key], 0.5)  # only the fp16 file holds this value
    save_file(tensors, half)
    assert not torch.cuda.is_available()
    cpu = load_model("sd-1.5")
    assert cpu.unet.dtype == torch.float32 and not torch.all(cpu.unet.state_dict()[key] == 0.5)
    gpu_like = load_sd("sd-1.5", device="cpu", dtype=torch.float16)
    assert gpu_like.unet.dtype == torch.float16 and torch.all(gpu_like.unet.state_dict()[key] == 0.5)
    for f in list(tmp_path.rglob("*.fp16.safetensors")):
        f.unlink()
    assert load_model("sd-1.5").unet.dtype == torch.float32  # fp32 files alone suffice on a CPU
