"""Model registry: every model by name, real (hub) and offline (built here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .base import Conditioning, DiffusionModel, ModelError, PromptError
from .cascade import Cascade, as_cascade, base_stage, stages_of


@dataclass(frozen=True)
class ModelSpec:
    name: str
    offline: bool  # built here without any download
    kind: str  # "latent", "pixel cascade", "oracle"
    sampler: str
    description: str
    build: Callable


def _hub_sd(name):
    def build(device=None):
        from .hub import load_sd

        return load_sd(name, device=device)

    return build


def _hub_sdxl(name):
    def build(device=None):
        from .hub import load_sdxl

        return load_sdxl(name, device=device)

    return build


def _hub_if(device=None):
    from .hub import load_deepfloyd_if

    return load_deepfloyd_if(device=device)


def _tiny(lcm):
    def build(device=None):
        from .tiny import tiny_sd

        return tiny_sd(lcm=lcm, device=device or "cpu")

    return build


def _tiny_if(device=None):
    from .tiny import tiny_if

    return tiny_if(device=device or "cpu")


def _shapes(lcm):
    def build(device=None):
        from .shapes import shapes

        return shapes(device=device or "cpu", lcm=lcm)

    return build


def _oracle(device=None):
    from .oracle import oracle

    return oracle(device=device or "cpu")


MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec("lcm-dreamshaper-v7", False, "latent", "lcm", "LCM Dreamshaper v7 (SimianLuo/LCM_Dreamshaper_v7): 4-8 steps", _hub_sd("lcm-dreamshaper-v7")),
        ModelSpec("sd-1.5", False, "latent", "ddim", "Stable Diffusion 1.5 (stable-diffusion-v1-5/stable-diffusion-v1-5)", _hub_sd("sd-1.5")),
        ModelSpec("sd-1.4", False, "latent", "ddim", "Stable Diffusion 1.4 (CompVis/stable-diffusion-v1-4)", _hub_sd("sd-1.4")),
        ModelSpec("sd-1.5-lcm-lora", False, "latent", "lcm", "SD 1.5 + LCM-LoRA (latent-consistency/lcm-lora-sdv1-5)", _hub_sd("sd-1.5-lcm-lora")),
        ModelSpec("sdxl-turbo", False, "latent", "euler_a", "SDXL-Turbo (stabilityai/sdxl-turbo): 4 steps, Euler ancestral, 512 px; the RNRI and ReNoise demos' model", _hub_sdxl("sdxl-turbo")),
        ModelSpec("lcm-sdxl", False, "latent", "lcm", "SDXL base + LCM-LoRA (latent-consistency/lcm-lora-sdxl): 4-8 steps, 1024 px", _hub_sdxl("lcm-sdxl")),
        ModelSpec("sdxl", False, "latent", "ddim", "Stable Diffusion XL base 1.0 (stabilityai/stable-diffusion-xl-base-1.0), DDIM, 1024 px", _hub_sdxl("sdxl")),
        ModelSpec("deepfloyd-if", False, "pixel cascade", "ddim", "DeepFloyd IF-I-M + IF-II-M (gated licence)", _hub_if),
        ModelSpec("shapes-lcm", True, "pixel cascade", "lcm", "shapes distilled to a consistency model: 4 + 4 steps (weights in assets/)", _shapes(True)),
        ModelSpec("shapes", True, "pixel cascade", "ddim", "our trained flat-shapes cascade, 32 -> 64 px (weights in assets/)", _shapes(False)),
        ModelSpec("tiny-sd", True, "latent", "ddim", "random-weight SD-shaped model, for tests", _tiny(False)),
        ModelSpec("tiny-lcm", True, "latent", "lcm", "random-weight LCM-shaped model, for tests", _tiny(True)),
        ModelSpec("tiny-if", True, "pixel cascade", "ddim", "random-weight IF-shaped cascade, for tests", _tiny_if),
        ModelSpec("oracle", True, "oracle", "ddim", "closed-form Gaussian-mixture noise predictor (exact score)", _oracle),
    )
}


def is_available(name: str) -> bool:
    """Whether `load_model(name)` can work here without a download: offline models whose
    files are present, hub models whose files are already in the local cache."""
    if name not in MODELS:
        return False
    if name in ("shapes", "shapes-lcm"):
        from .shapes import LCM_WEIGHTS, WEIGHTS

        return WEIGHTS.is_file() and (name == "shapes" or LCM_WEIGHTS.is_file())
    if MODELS[name].offline:
        return True
    from .hub import is_cached

    return is_cached(name)


def load_model(name: str, device=None) -> DiffusionModel | Cascade:
    """Build or load a model by registry name; raises ModelError with a remedy on failure."""
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name].build(device=device)


__all__ = ["MODELS", "Cascade", "as_cascade", "base_stage", "stages_of", "Conditioning", "DiffusionModel", "ModelError", "ModelSpec", "PromptError", "is_available", "load_model"]
