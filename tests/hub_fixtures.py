"""Every hub model of the registry as a tiny repository in a Hugging Face cache, built in code.

The real-model path (`inversion/models/hub.py`) cannot download anything here, so
these fixtures give it files with the real repositories' layout: the cache's
`models--ORG--NAME/snapshots/<rev>/` + `refs/main`, the real `model_index.json`
class names (safety checker, feature extractor and watermarker entries
included), every config file with the real repository's keys and values, and
only the widths and depths (channels, layers, vocabularies) made tiny. Weights
are random. `load_model(name)` then runs unchanged against the cache.

`REAL` holds the configs as published; `TINY` the only keys changed, and why (`TINY_IF` for
DeepFloyd IF, whose config files are reconstructions). Where each real file was read is in
`docs/hub_fixtures.md`.

    python tests/hub_fixtures.py DIR     # build the whole cache in DIR (HF_HUB_CACHE=DIR to use it)
"""

from __future__ import annotations

import hashlib
import json
import string
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PUBLISHED = Path(__file__).parent / "fixtures" / "hub"  # the real repositories' config files, as published

# Widths and depths made tiny; every other key stays as published. Depths that name
# attention layers (layers_per_block, the block types) stay real, so the editors see
# SD's layer names: down_blocks.{0,1,2}.attentions.{0,1}, up_blocks.{1,2,3}.attentions.{0,1,2}.
TINY = {
    "unet/config.json": {"block_out_channels": [32, 32, 64, 64], "cross_attention_dim": 32, "sample_size": 16},  # native 128 px
    "vae/config.json": {"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "sample_size": 128},
    "text_encoder/config.json": {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2, "projection_dim": 32},
    "safety_checker/config.json": {
        "projection_dim": 32,
        "text_config": {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 1},
        "text_config_dict": {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 1},
        "vision_config": {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 1, "patch_size": 8, "image_size": 32},
        "vision_config_dict": {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 1, "patch_size": 8, "image_size": 32},
    },
}


# SDXL (SDXL-Turbo and SDXL base): widths made tiny, every depth and size kept -- the transformer depths
# (1, 2, 10 per level) and layers per block give the editors SDXL's 70 transformer blocks under their
# real names. Heads become 1-2 (SDXL's attention_head_dim lists head counts), the cross-attention
# width is the two text encoders' hidden sizes side by side (32 + 32), and the added-embedding input is
# 6 time ids x addition_time_embed_dim + text_encoder_2's projection (6 x 8 + 32; published 6 x 256 + 1280).
SDXL_TEXT = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2, "projection_dim": 32}
SDXL_UNET = {"block_out_channels": [32, 32, 64], "attention_head_dim": [1, 1, 2], "cross_attention_dim": 64, "addition_time_embed_dim": 8,
             "projection_class_embeddings_input_dim": 80}
TINY_SDXL = {  # sample_size stays published (SDXL-Turbo 64: 512 px, SDXL 128: 1024 px): the editors' levels follow it
    "unet/config.json": SDXL_UNET,
    "vae/config.json": TINY["vae/config.json"],
    "text_encoder/config.json": SDXL_TEXT,
    "text_encoder_2/config.json": SDXL_TEXT,
}


def revision(repo: str) -> str:
    """A stable 40-hex-digit commit id per repository (the cache needs one)."""
    return hashlib.sha1(repo.encode()).hexdigest()


def snapshot(cache: Path, repo: str) -> Path:
    """The repository's snapshot folder in `cache`, with `refs/main` pointing at it."""
    folder = Path(cache) / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(revision(repo))
    snap = folder / "snapshots" / revision(repo)
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def merged(published: dict, tiny: dict) -> dict:
    """The published config with the tiny widths put in (nested dicts merged key by key)."""
    out = dict(published)
    for k, v in tiny.items():
        if k in published or not k.endswith("_dict"):
            out[k] = merged(published[k], v) if isinstance(v, dict) and isinstance(published.get(k), dict) else v
    return out


def published(repo: str) -> dict[str, dict]:
    """Every published config file of `repo`, by its path in the repository."""
    root = PUBLISHED / repo.replace("/", "--")
    return {str(f.relative_to(root)): json.loads(f.read_text()) for f in sorted(root.rglob("*.json"))}


def save_weights(module, folder: Path, variants: tuple[str, ...]) -> None:
    """Weights under the real file names, fp32 and the fp16 variant where the real repo has one."""
    for variant in variants:
        module.to(torch.float16 if variant == "fp16" else torch.float32).save_pretrained(folder, variant=variant or None)
    module.to(torch.float32)


def clip_tokenizer(folder: Path, files: dict[str, dict]) -> None:
    """vocab.json and merges.txt (CLIP's BPE files) of our in-code vocabulary, beside the published
    tokenizer_config.json and special_tokens_map.json (special-token ids moved to our vocabulary;
    SDXL's tokenizer_2 pads with "!", which is id 0 in ours as in CLIP's)."""
    from inversion.models.tokenizers import WORDS, clip_vocab

    vocab, merges = clip_vocab(tuple(WORDS))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        data = dict(files[f"{folder.name}/{name}"])
        if "added_tokens_decoder" in data:
            data["added_tokens_decoder"] = {str(vocab[t["content"]]): t for t in data["added_tokens_decoder"].values()}
        write_json(folder / name, data)


def component(kind: str, config: dict, vocab_size: int):
    """A randomly initialised model of the class `kind` names, built from `config`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if kind == "UNet2DConditionModel":
        unet = UNet2DConditionModel.from_config(config)
        with torch.no_grad():  # random UNets predict noise of std ~0.3 unrelated to the input; a small
            unet.conv_out.weight.mul_(0.1)  # last layer keeps sampling in range (not a claim about quality)
        return unet
    if kind == "AutoencoderKL":
        return AutoencoderKL.from_config(config)
    fields = {k: v for k, v in config.items() if not k.startswith("_")}
    if kind in ("CLIPTextModel", "CLIPTextModelWithProjection"):
        return {"CLIPTextModel": CLIPTextModel, "CLIPTextModelWithProjection": CLIPTextModelWithProjection}[kind](CLIPTextConfig(**{**fields, "vocab_size": vocab_size}))
    if kind == "StableDiffusionSafetyChecker":
        return StableDiffusionSafetyChecker(CLIPConfig(**{k: v for k, v in fields.items() if not k.endswith("_dict")}))
    raise ValueError(f"no fixture for {kind}")


def sd_repo(cache: Path, repo: str, *, fp16: bool) -> Path:
    """A Stable-Diffusion-layout repository (SD 1.x, LCM Dreamshaper; SDXL with its second text encoder
    and tokenizer): the published config files, tiny random weights for every model component
    model_index.json lists."""
    from inversion.models.tokenizers import WORDS, clip_vocab

    torch.manual_seed(int(revision(repo)[:8], 16))
    snap = snapshot(cache, repo)
    files = published(repo)
    vocab_size = len(clip_vocab(tuple(WORDS))[0])
    variants = ("", "fp16") if fp16 else ("",)
    tiny = TINY_SDXL if repo in SDXL_REPOS else TINY
    for path, data in files.items():
        if path.startswith("tokenizer"):
            continue
        config = merged(data, tiny.get(f"{repo}/{path}", tiny.get(path, {})))
        if path.endswith("/config.json"):
            kind = files["model_index.json"][path.split("/")[0]][1]
            if kind.startswith("CLIPTextModel"):
                config["vocab_size"] = vocab_size
            save_weights(component(kind, config, vocab_size), snap / path.split("/")[0], variants)
        write_json(snap / path, config)  # after save_pretrained: the published key set, not this version's
    for folder in sorted({path.split("/")[0] for path in files if path.startswith("tokenizer")}):
        clip_tokenizer(snap / folder, files)
    return snap


def lcm_lora_repo(cache: Path, sd_snapshot: Path, repo: str = "latent-consistency/lcm-lora-sdv1-5") -> Path:
    """latent-consistency/lcm-lora-sdv1-5 (or lcm-lora-sdxl, on the SDXL base): a LoRA for the tiny
    UNet in the published file's format (kohya key names over diffusers module names, an fp16 alpha
    per module; attention, resnet and resampler layers), under the published file name."""
    from diffusers import UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_kohya
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    torch.manual_seed(int(revision(repo)[:8], 16))
    snap = snapshot(cache, repo)
    unet = UNet2DConditionModel.from_pretrained(sd_snapshot / "unet")
    targets = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj"]
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights="gaussian"))
    layers = convert_state_dict_to_kohya(get_peft_model_state_dict(unet))
    save_file({"lora_unet_" + k: v.to(torch.float16).contiguous() for k, v in layers.items()}, snap / LORA_FILE)  # fp16, as published
    return snap


# DeepFloyd IF: widths made tiny; every block type, depth and both stage sizes (64 px, 256 px) kept.
# A key `ORG/NAME/path` applies to that repository only (the two UNets differ); `path` to both.
TINY_IF = {
    "DeepFloyd/IF-I-M-v1.0/unet/config.json": {
        "block_out_channels": [32, 32, 64, 64], "cross_attention_dim": 64, "encoder_hid_dim": 32, "attention_head_dim": 8, "addition_embed_type_num_heads": 2,
    },
    "DeepFloyd/IF-II-M-v1.0/unet/config.json": {  # 256 px: the narrowest top levels keep a 4-step inversion at a few seconds on one thread
        "block_out_channels": [8, 16, 32, 32, 64], "norm_num_groups": 8, "cross_attention_dim": 64, "encoder_hid_dim": 32, "attention_head_dim": 8,
        "addition_embed_type_num_heads": 2, "time_embedding_dim": 64,
    },
    "text_encoder/config.json": {"d_model": 32, "d_kv": 8, "d_ff": 37, "num_heads": 4, "num_layers": 2, "num_decoder_layers": 2},  # vocab_size: t5_vocab_size
    "safety_checker/config.json": {
        "projection_dim": 32,
        "text_config": {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 1, "projection_dim": 32},
        "vision_config": {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 1, "patch_size": 8, "image_size": 32, "projection_dim": 32},
    },
}
IF_STAGE_1, IF_STAGE_2 = "DeepFloyd/IF-I-M-v1.0", "DeepFloyd/IF-II-M-v1.0"


SPIECE_SEED = 0  # sentencepiece's random generator: fixed, though this unigram training gives the same bytes with any seed (checked)
SPIECE_CHARS = string.ascii_letters + string.digits + string.punctuation  # pieces of their own: any ASCII prompt tokenizes without <unk>


def spiece_model() -> bytes:
    """A tiny T5-style SentencePiece model, trained here (byte-identical on every build; tested).

    T5's layout: a unigram model with `<pad>`=0, `</s>`=1, `<unk>`=2 and no BOS, NFKC normalization;
    the 100 `<extra_id_N>` sentinels are not in the file (transformers appends them, as for the real
    one). Corpus: our word list (`inversion.models.tokenizers.WORDS`) in sentences of eight words, in
    eight rotations, so each word is one piece (`▁cat`); every ASCII letter, digit and punctuation
    mark is a piece too, so other words spell out. 185 pieces: the 3 specials, `▁`, 87 words, 94 characters.
    """
    import io

    import sentencepiece as spm

    from inversion.models.tokenizers import WORDS

    words = list(dict.fromkeys(WORDS))
    corpus = [" ".join((words[r:] + words[:r])[i : i + 8]) for r in range(8) for i in range(0, len(words), 8)]
    out = io.BytesIO()
    spm.set_random_generator_seed(SPIECE_SEED)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=out, model_type="unigram", vocab_size=4 + len(words) + len(SPIECE_CHARS),
        hard_vocab_limit=False, required_chars=SPIECE_CHARS, character_coverage=1.0, normalization_rule_name="nmt_nfkc",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        num_threads=1, minloglevel=2,
    )  # fmt: skip
    return out.getvalue()


def t5_tokenizer(folder: Path, files: dict[str, dict]):
    """The tokenizer as published: `spiece.model` (trained here, `spiece_model`) beside the published
    tokenizer_config.json and special_tokens_map.json, no tokenizer.json. Returns it as transformers
    reads it (spiece.model's pieces, then the 100 sentinels in reverse: `<extra_id_0>` is the last id)."""
    from transformers import T5Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(spiece_model())
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        write_json(folder / name, files[f"tokenizer/{name}"])
    return T5Tokenizer.from_pretrained(folder)


def t5_vocab_size(tokens: int) -> int:
    """T5's embedding rows: the tokenizer's ids padded up to a multiple of 128 (google/t5-v1_1-xxl:
    32,000 pieces + 100 sentinels = 32,100 ids, 32,128 rows; the fixture: 285 ids, 384 rows)."""
    return -(-tokens // 128) * 128


def if_component(kind: str, config: dict):
    """A randomly initialised IF component of the class `kind` names."""
    from diffusers.pipelines.deepfloyd_if.safety_checker import IFSafetyChecker
    from diffusers.pipelines.deepfloyd_if.watermark import IFWatermarker
    from transformers import CLIPConfig, T5Config, T5EncoderModel

    fields = {k: v for k, v in config.items() if not k.startswith("_")}
    if kind == "T5EncoderModel":
        return T5EncoderModel(T5Config(**fields))
    if kind == "IFSafetyChecker":
        return IFSafetyChecker(CLIPConfig(**fields))
    if kind == "IFWatermarker":
        marker = IFWatermarker()
        marker.watermark_image.copy_(torch.randint(0, 256, marker.watermark_image.shape))  # an RGBA image
        return marker
    return component(kind, config, 0)


def if_repo(cache: Path, repo: str) -> Path:
    """A DeepFloyd IF repository (IFPipeline or IFSuperResolutionPipeline): the config files in
    tests/fixtures/hub (reconstructed, see docs/hub_fixtures.md), tiny random weights for every
    model component model_index.json lists: fp32 and fp16 variants as published (text encoder in
    shards, watermarker fp32 only)."""
    torch.manual_seed(int(revision(repo)[:8], 16))
    snap = snapshot(cache, repo)
    files = published(repo)
    vocab_size = t5_vocab_size(len(t5_tokenizer(snap / "tokenizer", files)))
    for path, data in files.items():
        if path.startswith("tokenizer/"):
            continue
        config = merged(data, TINY_IF.get(f"{repo}/{path}", TINY_IF.get(path, {})))
        folder = path.split("/")[0]
        if path.endswith("/config.json"):
            kind = files["model_index.json"][folder][1]
            if kind == "T5EncoderModel":
                config["vocab_size"] = vocab_size
            module = if_component(kind, config)
            for variant in ("", "fp16") if kind != "IFWatermarker" else ("",):
                dtype = torch.float16 if variant else torch.float32
                size = sum(p.numel() * p.element_size() for p in module.to(dtype).parameters())
                shard = {"max_shard_size": int(size * 0.6)} if kind == "T5EncoderModel" else {}  # two shards, as published
                module.to(dtype).save_pretrained(snap / folder, variant=variant or None, **shard)
        write_json(snap / path, config)  # after save_pretrained: the published key set, not this version's
    return snap


TAESD = "madebyollin/taesd"
TINY_TAESD = {"encoder_block_out_channels": [16, 16, 16, 16], "decoder_block_out_channels": [16, 16, 16, 16]}


def taesd_repo(cache: Path) -> Path:
    """madebyollin/taesd: diffusers' AutoencoderTiny (the live preview decoder), config at the root."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(int(revision(TAESD)[:8], 16))
    snap = snapshot(cache, TAESD)
    config = merged(published(TAESD)["config.json"], TINY_TAESD)
    save_weights(AutoencoderTiny.from_config(config), snap, ("",))
    write_json(snap / "config.json", config)
    return snap


SDXL_VAE_FP16 = "madebyollin/sdxl-vae-fp16-fix"


def sdxl_vae_fp16_repo(cache: Path) -> Path:
    """madebyollin/sdxl-vae-fp16-fix: an AutoencoderKL at the repository's root (fp32 weight file)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(int(revision(SDXL_VAE_FP16)[:8], 16))
    snap = snapshot(cache, SDXL_VAE_FP16)
    config = merged(published(SDXL_VAE_FP16)["config.json"], TINY["vae/config.json"])
    save_weights(AutoencoderKL.from_config(config), snap, ("",))
    write_json(snap / "config.json", config)
    return snap


LORA_FILE = "pytorch_lora_weights.safetensors"
SDXL_REPOS = ("stabilityai/sdxl-turbo", "stabilityai/stable-diffusion-xl-base-1.0")
SD_REPOS = {  # repository -> has fp16 variant files (SD: unet, vae, text_encoder, safety_checker; LCM: none seen; SDXL: unet, vae, both text encoders)
    "SimianLuo/LCM_Dreamshaper_v7": False,
    "stable-diffusion-v1-5/stable-diffusion-v1-5": True,
    "CompVis/stable-diffusion-v1-4": True,
    **dict.fromkeys(SDXL_REPOS, True),
}
LCM_LORA = "latent-consistency/lcm-lora-sdv1-5"
LCM_LORA_SDXL = "latent-consistency/lcm-lora-sdxl"
ALL = (*SD_REPOS, LCM_LORA, LCM_LORA_SDXL, SDXL_VAE_FP16, IF_STAGE_1, IF_STAGE_2, TAESD)


def build_hub_cache(cache: Path, repos: tuple[str, ...] = ALL) -> Path:
    """Write the fixture repositories (all, or those named) into `cache`; returns it."""
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    cache = Path(cache)
    for repo, fp16 in SD_REPOS.items():
        if repo in repos:
            sd_repo(cache, repo, fp16=fp16)
    for lora, base in ((LCM_LORA, "stable-diffusion-v1-5/stable-diffusion-v1-5"), (LCM_LORA_SDXL, "stabilityai/stable-diffusion-xl-base-1.0")):
        if lora in repos:
            lcm_lora_repo(cache, snapshot(cache, base) if base in repos else sd_repo(cache / ".base", base, fp16=False), lora)
    if SDXL_VAE_FP16 in repos:
        sdxl_vae_fp16_repo(cache)
    for repo in (IF_STAGE_1, IF_STAGE_2):
        if repo in repos:
            if_repo(cache, repo)
    if TAESD in repos:
        taesd_repo(cache)
    return cache


if __name__ == "__main__":
    out = build_hub_cache(Path(sys.argv[1]))
    print(f"built; use it with HF_HUB_CACHE={out} HF_HUB_OFFLINE=1")
