"""PIE-Bench's metrics, with the definitions, normalisations and units of PnPInversion's evaluator.

Every function is pure: images are 8-bit RGB arrays (H, W, 3), the mask the benchmark's (H, W)
{0, 1} array (1 = edited), the networks are passed in. What each one computes (facts from the
authors' evaluator; the code is ours):
- **structure distance** (Tumanyan et al.'s DINO self-similarity): both whole images, as float
  0-255 values (not divided by 255: the evaluator feeds them so, and its numbers depend on it),
  resized so the short side is 224 (long side at most 480; bilinear, no antialiasing, as
  torchvision's tensor `Resize` did before 0.17), normalised with ImageNet's 0-1 mean and std,
  through DINO ViT-B/8 (the hub's transformers conversion of the weights the evaluator loads through
  torch.hub; its layer-norm epsilon may be ViTConfig's 1e-12 where DINO's own is 1e-6, small against
  these activations' variance; not measured); the keys of the last block's self-attention (block 11
  of 12), heads concatenated, give a token x token cosine-similarity matrix (CLS token included);
  the distance is the mean squared difference of the two matrices. Reported x 10^3.
- **background ("unedit part") PSNR, MSE, SSIM, LPIPS**: both images in [0, 1] multiplied by
  (1 - mask), i.e. the edited region set to black in both, and compared as whole images: the mean
  squared error is over all H x W x 3 values, masked ones included (so it is the squared error
  outside the mask divided by the whole image's size, not by the background's). PSNR = 10 log10(1 / MSE)
  (data range 1; capped at 100 dB for identical images, the project's rule, where torchmetrics says
  inf); MSE reported x 10^4; SSIM as torchmetrics' (Gaussian 11 x 11 window, sigma 1.5, K1 0.01,
  K2 0.03, mean over the valid region; `ssim`, checked against scikit-image), x 10^2; LPIPS with SqueezeNet on the masked images scaled to [-1, 1] (`lpips_squeeze`), x 10^3.
  All four are NaN when the mask covers the whole image (nothing left to compare), as the evaluator's "nan".
- **CLIP similarity** (torchmetrics' CLIPScore with openai/clip-vit-large-patch14): 100 x the
  cosine of the image and text embeddings, floored at 0; the image through CLIP's processor (short
  side to 224, bicubic, centre crop, CLIP's mean and std), the text truncated to 77 tokens. "Whole":
  the edited image with the target prompt; "edited": the edited image times the mask (outside it
  black) with the target prompt, NaN when the mask is empty.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from inversion.errors import ModelError

from . import lpips_squeeze

DINO = "facebook/dino-vitb8"
CLIP = "openai/clip-vit-large-patch14"
KEY_BLOCK = 11  # the evaluator's layer_num: the last of ViT-B/8's 12 blocks
DINO_SHORT, DINO_MAX = 224, 480
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PSNR_CAP = 100.0

# the evaluator's metric name -> (table heading, scale from its raw value to the table's unit)
METRICS = {
    "structure_distance": ("Struct ×10³", 1e3),
    "psnr_unedit_part": ("bg PSNR", 1.0),
    "lpips_unedit_part": ("bg LPIPS ×10³", 1e3),
    "mse_unedit_part": ("bg MSE ×10⁴", 1e4),
    "ssim_unedit_part": ("bg SSIM ×10²", 1e2),
    "clip_similarity_target_image": ("CLIP whole", 1.0),
    "clip_similarity_target_image_edit_part": ("CLIP edited", 1.0),
}
NEEDS = {"structure_distance": "dino", "lpips_unedit_part": "lpips", "clip_similarity_target_image": "clip", "clip_similarity_target_image_edit_part": "clip"}


# ---- structure --------------------------------------------------------------------------------
def dino_size(h: int, w: int) -> tuple[int, int]:
    """torchvision's Resize(224, max_size=480): short side 224, long side scaled (floored), at most 480."""
    short, long = (h, w) if h <= w else (w, h)
    new_short, new_long = DINO_SHORT, int(DINO_SHORT * long / short)
    if new_long > DINO_MAX:
        new_short, new_long = int(DINO_MAX * new_short / new_long), DINO_MAX
    return (new_short, new_long) if h <= w else (new_long, new_short)


def dino_input(image: np.ndarray, device=None) -> torch.Tensor:
    """(1, 3, h, w): 0-255 values resized and 'normalised' exactly as the evaluator does."""
    x = torch.from_numpy(np.asarray(image, np.float32)).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=dino_size(*x.shape[-2:]), mode="bilinear", align_corners=False, antialias=False)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).to(device)


def vit_blocks(vit) -> torch.nn.ModuleList:
    """A transformers ViTModel's blocks (`layers` since transformers 5, `encoder.layer` before)."""
    return vit.layers if hasattr(vit, "layers") else vit.encoder.layer


def key_projection(block) -> torch.nn.Module:
    """A ViT block's key projection (`attention.k_proj` since transformers 5, `attention.attention.key` before)."""
    att = block.attention
    return att.k_proj if hasattr(att, "k_proj") else att.attention.key


@torch.no_grad()
def dino_keys(dino, image: np.ndarray) -> torch.Tensor:
    """(tokens, hidden): block 11's keys, heads concatenated (the key projection's output as it is)."""
    x = dino_input(image, next(dino.parameters()).device).to(next(dino.parameters()).dtype)
    size = dino.config.image_size
    out = {}
    hook = key_projection(vit_blocks(dino)[KEY_BLOCK]).register_forward_hook(lambda m, i, o: out.setdefault("k", o))
    try:
        dino(pixel_values=x, interpolate_pos_encoding=tuple(x.shape[-2:]) != (size, size))
    finally:
        hook.remove()
    return out["k"][0].float()


def self_similarity(keys: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    norm = keys.norm(dim=1, keepdim=True)
    return (keys @ keys.T) / torch.clamp(norm @ norm.T, min=eps)


def structure_distance(source: np.ndarray, edited: np.ndarray, dino, memo: dict | None = None) -> float:
    """`memo`: a dict kept for one source image, so its self-similarity is computed once for all its edits."""
    memo = {} if memo is None else memo
    if "source_self_similarity" not in memo:
        memo["source_self_similarity"] = self_similarity(dino_keys(dino, source))
    return float(F.mse_loss(self_similarity(dino_keys(dino, edited)), memo["source_self_similarity"]))


# ---- background ("unedit part") --------------------------------------------------------------
def unit(image: np.ndarray) -> np.ndarray:
    return np.asarray(image, np.float32) / 255.0


def background_pair(source: np.ndarray, edited: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Both images in [0, 1] with the edited region blacked out; None when nothing is left."""
    keep = 1.0 - np.asarray(mask, np.float32)
    if keep.sum() == 0:
        return None
    keep = keep[..., None]
    return unit(source) * keep, unit(edited) * keep


def background_mse(source, edited, mask) -> float:
    pair = background_pair(source, edited, mask)
    return math.nan if pair is None else float(np.mean((pair[1] - pair[0]) ** 2, dtype=np.float64))


def background_psnr(source, edited, mask) -> float:
    mse = background_mse(source, edited, mask)
    if math.isnan(mse):
        return mse
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(1.0 / mse))


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None] * 2 - 1  # [0, 1] -> [-1, 1]


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM of two (1, C, H, W) images in [0, 1], data range 1: torchmetrics' (and
    `inversion.metrics.ssim`'s, and scikit-image's gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False) definition over the valid region. Ours rather than the project's
    `inversion.metrics.ssim` only for speed: the same sums as two 1-D float32 passes on the images'
    device, as torchmetrics computes them (the project's float64 2-D window takes seconds per 512 px image on a CPU)."""
    c = a.shape[1]
    r = torch.arange(11, dtype=torch.float32, device=a.device) - 5
    g = torch.exp(-(r**2) / (2 * 1.5**2))
    g = g / g.sum()
    stack = torch.cat([a, b, a * a, b * b, a * b], 1).float()
    out = F.conv2d(stack, g.view(1, 1, 11, 1).expand(5 * c, 1, 11, 1).contiguous(), groups=5 * c)
    out = F.conv2d(out, g.view(1, 1, 1, 11).expand(5 * c, 1, 1, 11).contiguous(), groups=5 * c)
    mx, my, exx, eyy, exy = out.split(c, 1)
    vx, vy, cxy = exx - mx * mx, eyy - my * my, exy - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return float((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))).mean())


def background_ssim(source, edited, mask, device=None) -> float:
    pair = background_pair(source, edited, mask)
    if pair is None:
        return math.nan
    a, b = (torch.from_numpy(np.ascontiguousarray(p)).permute(2, 0, 1)[None].to(device) for p in pair)
    return ssim(b, a)


def background_lpips(source, edited, mask, lpips) -> float:
    pair = background_pair(source, edited, mask)
    if pair is None:
        return math.nan
    device = next(lpips.parameters()).device
    return float(lpips(_tensor(pair[1]).to(device), _tensor(pair[0]).to(device))[0])


# ---- CLIP --------------------------------------------------------------------------------------
@torch.no_grad()
def clip_cosine(image: np.ndarray, prompt: str, clip, processor, mask: np.ndarray | None = None) -> float:
    """The cosine of CLIP's image and text embeddings; with `mask`, of the image times the mask
    (cast back to uint8, as the evaluator does). NaN for an empty mask."""
    img = np.asarray(image, np.uint8)
    if mask is not None:
        if np.asarray(mask).sum() == 0:
            return math.nan
        img = np.uint8(img * np.asarray(mask, np.float32)[..., None])
    device = next(clip.parameters()).device
    inputs = processor(text=[prompt], images=[img], return_tensors="pt", padding=True)
    limit = clip.config.text_config.max_position_embeddings  # torchmetrics cuts longer token lists here
    ids, att = inputs["input_ids"][:, :limit].to(device), inputs["attention_mask"][:, :limit].to(device)
    pixels = inputs["pixel_values"].to(device, next(clip.parameters()).dtype)
    img_emb = clip.visual_projection(clip.vision_model(pixel_values=pixels).pooler_output).float()
    txt_emb = clip.text_projection(clip.text_model(input_ids=ids, attention_mask=att).pooler_output).float()
    img_emb, txt_emb = img_emb / img_emb.norm(dim=-1, keepdim=True), txt_emb / txt_emb.norm(dim=-1, keepdim=True)
    return float((img_emb * txt_emb).sum(-1)[0])


def clip_similarity(image: np.ndarray, prompt: str, clip, processor, mask: np.ndarray | None = None) -> float:
    """CLIPScore: max(100 cos, 0) (NaN stays NaN)."""
    cos = clip_cosine(image, prompt, clip, processor, mask)
    return cos if math.isnan(cos) else max(100 * cos, 0.0)


# ---- the networks, by hub id -------------------------------------------------------------------
def hub_cache() -> str | None:
    """The Hugging Face cache to read, from the environment at call time (None: the library's default)."""
    return os.environ.get("HF_HUB_CACHE") or None


def _cached(repo: str, files: tuple[str, ...]) -> bool:
    """Whether every one of `files` is in the local cache (a tuple inside means any one of those)."""
    from huggingface_hub import try_to_load_from_cache

    def have(name):
        return isinstance(try_to_load_from_cache(repo, name, cache_dir=hub_cache()), str)

    try:
        return all(any(have(n) for n in (f if isinstance(f, tuple) else (f,))) for f in files)
    except (OSError, ValueError):
        return False


WEIGHTS = ("model.safetensors", "pytorch_model.bin")
REPO_FILES = {
    DINO: ("config.json", WEIGHTS),
    CLIP: ("config.json", WEIGHTS, "preprocessor_config.json", ("tokenizer.json", "vocab.json")),
}


def missing_weights(names) -> list[str]:
    """What the metrics `names` need and this machine lacks, in words (empty: all there)."""
    need = {NEEDS[n] for n in names if n in NEEDS}
    out = []
    if "dino" in need and not _cached(DINO, REPO_FILES[DINO]):
        out.append(f"{DINO} (structure distance)")
    if "clip" in need and not _cached(CLIP, REPO_FILES[CLIP]):
        out.append(f"{CLIP} (CLIP similarity)")
    if "lpips" in need:
        out += lpips_squeeze.missing()
    return out


def check_weights(names) -> None:
    """Refuse, in one line, before any work, when a metric's weights are not on disk."""
    gaps = missing_weights(names)
    if gaps:
        raise ModelError(
            "PIE-Bench's metrics need weights this machine does not have: " + "; ".join(gaps)
            + ". With network access: `hf download facebook/dino-vitb8` and `hf download openai/clip-vit-large-patch14` (or set HF_HUB_CACHE "
            "to a cache that has them), and the LPIPS files as named; or run with --no-metrics (images only) or --metrics to pick some."
        )


@dataclass
class MetricModels:
    """The networks the metrics need, loaded once (only those asked for)."""

    dino: object = None
    clip: object = None
    processor: object = None
    lpips: object = None
    names: tuple[str, ...] = field(default_factory=tuple)
    device: object = None


def load_models(names, device=None) -> MetricModels:
    from transformers import CLIPModel, CLIPProcessor, ViTModel

    check_weights(names)
    need = {NEEDS[n] for n in names if n in NEEDS}
    kw = {"cache_dir": hub_cache()}
    m = MetricModels(names=tuple(names), device=device)
    if "dino" in need:
        m.dino = ViTModel.from_pretrained(DINO, add_pooling_layer=False, **kw).eval().to(device)
    if "clip" in need:
        m.clip = CLIPModel.from_pretrained(CLIP, **kw).eval().to(device)
        m.processor = CLIPProcessor.from_pretrained(CLIP, **kw)
    if "lpips" in need:
        m.lpips = lpips_squeeze.load(device)
    return m


def pie_metrics(source: np.ndarray, edited: np.ndarray, mask: np.ndarray, target_prompt: str, models: MetricModels, names=None,
                memo: dict | None = None) -> dict[str, float]:
    """The metrics `names` (default: those `models` was loaded for) of one edited image, in the
    evaluator's raw units; NaN where a metric is undefined for this mask. `memo`: one dict per
    source image (what depends on the source alone is computed once)."""
    fns = {
        "structure_distance": lambda: structure_distance(source, edited, models.dino, memo),
        "psnr_unedit_part": lambda: background_psnr(source, edited, mask),
        "lpips_unedit_part": lambda: background_lpips(source, edited, mask, models.lpips),
        "mse_unedit_part": lambda: background_mse(source, edited, mask),
        "ssim_unedit_part": lambda: background_ssim(source, edited, mask, models.device),
        "clip_similarity_target_image": lambda: clip_similarity(edited, target_prompt, models.clip, models.processor),
        "clip_similarity_target_image_edit_part": lambda: clip_similarity(edited, target_prompt, models.clip, models.processor, mask),
    }
    return {n: fns[n]() for n in (models.names if names is None else names)}
