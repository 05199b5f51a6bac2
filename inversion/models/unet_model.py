"""A `DiffusionModel` stage made of diffusers components (UNet, scheduler, text
encoder, optional VAE): Stable Diffusion 1.x, LCM, DeepFloyd-IF stages, the tiny
random models and our trained `shapes` stages all use this one class (SDXL's second
text encoder and added conditions: `sdxl.SDXLModel`, a subclass)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..schedule import LCM_TIMESTEP_SCALING
from .base import Conditioning, DiffusionModel


def scheduler_timestep_fn(scheduler):
    """n -> diffusers' own timesteps for n steps (leading/trailing/LCM spacing as configured)."""
    sched = copy.deepcopy(scheduler)

    def timesteps(n: int) -> list[int]:
        sched.set_timesteps(n)
        return [int(t) for t in sched.timesteps]

    return timesteps


def final_alpha(scheduler) -> float:
    a = getattr(scheduler, "final_alpha_cumprod", None)
    if a is None:
        a = 1.0 if scheduler.config.get("set_alpha_to_one", True) else scheduler.alphas_cumprod[0]
    return float(a)


def schedule_fields(scheduler) -> dict:
    """The DiffusionModel fields a diffusers scheduler defines: training schedule, final level, timesteps,
    and (LCMScheduler) the boundary condition's timestep scaling."""
    fields = {"alphas_cumprod": scheduler.alphas_cumprod.double(), "final_alpha": final_alpha(scheduler), "timestep_fn": scheduler_timestep_fn(scheduler),
              "timestep_scaling": float(scheduler.config.get("timestep_scaling", LCM_TIMESTEP_SCALING))}
    if scheduler.config.get("original_inference_steps"):  # LCMScheduler: it samples from this skeleton, no finer
        fields["max_steps"] = int(scheduler.config["original_inference_steps"])
    return fields


def guidance_embedding(w: torch.Tensor, dim: int) -> torch.Tensor:
    """LCM's sinusoidal embedding of the guidance weight w (the UNet's timestep_cond)."""
    w = w.float() * 1000.0
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=w.device) * -(torch.log(torch.tensor(10000.0)) / (half - 1)))
    emb = w[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    return torch.nn.functional.pad(emb, (0, 1)) if dim % 2 else emb


@dataclass(kw_only=True, eq=False)
class UNetModel(DiffusionModel):
    unet_module: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    vae: torch.nn.Module | None = None
    scaling_factor: float = 1.0
    prediction_type: str = "epsilon"
    preview_vae: torch.nn.Module | None = None  # diffusers' AutoencoderTiny (TAESD): decodes the sampler's latents directly

    @property
    def unet(self):
        return self.unet_module

    # ---- prompts --------------------------------------------------------------------
    def token_count(self, prompt: str) -> int:
        return len(self.tokenizer(prompt).input_ids)

    @torch.no_grad()
    def _embed(self, prompts: list[str]) -> torch.Tensor:
        for p in prompts:
            self.check_prompt(p)
        tok = self.tokenizer(prompts, padding="max_length", max_length=self.max_tokens, truncation=True, return_tensors="pt")
        ids = tok.input_ids.to(self.device)
        kwargs = {}
        if "t5" in type(self.text_encoder).__name__.lower():
            kwargs["attention_mask"] = tok.attention_mask.to(self.device)
        return self.text_encoder(ids, **kwargs)[0].to(self.dtype)

    # ---- noise prediction -----------------------------------------------------------
    def _eps(self, x: torch.Tensor, t: int, cond: Conditioning) -> torch.Tensor:
        unet = self.unet_module
        sample = x
        kwargs = {}
        # what is derived from the (host-side) conditioning is copied to the device once per
        # conditioning, not per call: a host-to-device copy waits for the device on CUDA
        if cond.image is not None:
            sample = torch.cat([x, cond.image.to(x.dtype)], dim=1)
            kwargs["class_labels"] = cond.on_device("noise_level", self.device)
        proj = getattr(unet.config, "time_cond_proj_dim", None)
        if proj:
            kwargs["timestep_cond"] = cond.memo(
                ("w-embedding", proj, str(self.device), self.dtype), lambda: guidance_embedding((cond.guidance - 1).to(self.device), proj).to(self.dtype)
            )
        kwargs.update(self._added_conditions(x, cond))
        t_in = torch.full((x.shape[0],), t, device=self.device, dtype=torch.long)
        out = unet(sample.to(self.dtype), t_in, encoder_hidden_states=cond.text.to(self.dtype), return_dict=False, **kwargs)[0]
        out = out[:, : x.shape[1]].float()  # drop learned-variance channels (IF)
        x = x.float()
        if self.prediction_type == "epsilon":
            return out
        a = float(self.alphas_cumprod[t])
        if self.prediction_type == "v_prediction":
            return a**0.5 * out + (1 - a) ** 0.5 * x
        if self.prediction_type == "sample":
            return (x - a**0.5 * out) / (1 - a) ** 0.5
        raise ValueError(f"unsupported prediction type {self.prediction_type!r}")

    def _added_conditions(self, x: torch.Tensor, cond: Conditioning) -> dict:
        """Extra UNet inputs beyond the text (SDXL's pooled embedding and size ids); none here."""
        return {}

    def to_float32(self) -> None:
        super().to_float32()
        self.unet_module.to(torch.float32)
        self.text_encoder.to(torch.float32)

    # ---- images ---------------------------------------------------------------------
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        image = image.to(self.device)
        if self.vae is None:
            return image.float()
        with torch.no_grad():
            z = self._vae(lambda v, x: v.encode(x).latent_dist.mean, image, "VAE encoding")
        return z * self.scaling_factor

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return latent.float()
        with torch.no_grad():
            return self._vae(lambda v, z: v.decode(z).sample, latent.to(self.device) / self.scaling_factor, "VAE decoding")

    @property
    def has_preview(self) -> bool:
        return self.preview_vae is not None

    def preview(self, latent: torch.Tensor) -> torch.Tensor:
        """TAESD's decode of the sampler's latent (it takes SD's scaled latents as they are; its
        output is already in [-1, 1]): a fraction of the full VAE's cost, for live previews."""
        if self.preview_vae is None:
            return self.decode(latent)
        with torch.no_grad():
            return self.preview_vae.decode(latent.to(self.device, self.preview_vae.dtype)).sample.float().clamp(-1, 1)

    def _vae(self, fn, x: torch.Tensor, what: str) -> torch.Tensor:
        out = fn(self.vae, x.to(self.vae.dtype)).float()
        if torch.isfinite(out).all():
            return out
        if self.vae.dtype == torch.float32:
            raise RuntimeError(f"{self.name}'s VAE produced NaN or inf in {what}; the input may be corrupt")
        self.vae.to(torch.float32)  # the known fp16 VAE overflow ("black image")
        self.warn(f"{what} overflowed in float16; the VAE now runs in float32")
        return fn(self.vae, x.float()).float()
