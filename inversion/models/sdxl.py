"""SDXL stages (SDXL base, SDXL-Turbo, SDXL with LCM-LoRA): two text encoders, a pooled
embedding and size micro-conditioning, as diffusers' StableDiffusionXLPipeline builds them.

The UNet reads, as cross-attention context, the penultimate hidden states of both CLIP text
encoders side by side (768 + 1280 = 2048 wide) and, through `added_cond_kwargs`, the second
encoder's pooled, projected embedding (`text_embeds`) and six size numbers (`time_ids`:
original height and width, crop top and left, target height and width, in pixels). Without a
negative prompt the unconditional rows are zeros, as diffusers gives them when the repository's
model_index.json sets `force_zeros_for_empty_prompt` (SDXL's and SDXL-Turbo's do). The size ids
default to diffusers' own: the denoised latent's size in pixels, no crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Conditioning
from .unet_model import UNetModel


@dataclass(kw_only=True, eq=False)
class SDXLModel(UNetModel):
    text_encoder_2: torch.nn.Module
    tokenizer_2: object
    zeros_for_empty_prompt: bool = True  # model_index.json's force_zeros_for_empty_prompt

    def encode_prompt(self, prompts: str | list[str], guidance: float | None = None, negative: str = "") -> Conditioning:
        """Both encoders' embeddings and the pooled one, for the prompts and the negative prompt."""
        prompts = self.prompt_list(prompts)
        g = self.default_guidance if guidance is None else float(guidance)
        text, pooled = self._embed(prompts)
        uncond = uncond_pooled = None
        if self.uses_cfg:
            if not negative and self.zeros_for_empty_prompt:
                uncond, uncond_pooled = torch.zeros_like(text), torch.zeros_like(pooled)
            else:
                uncond, uncond_pooled = self._embed([negative] * len(prompts))
        return Conditioning(list(prompts), text, uncond, torch.full((len(prompts),), g), pooled=pooled, uncond_pooled=uncond_pooled)

    @torch.no_grad()
    def _embed(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(the two encoders' penultimate hidden states concatenated, the second one's pooled projection)."""
        for p in prompts:
            self.check_prompt(p)
        hidden = []
        for tokenizer, encoder in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            ids = tokenizer(prompts, padding="max_length", max_length=self.max_tokens, truncation=True, return_tensors="pt").input_ids
            out = encoder(ids.to(self.device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
        return torch.cat(hidden, dim=-1).to(self.dtype), out[0].to(self.dtype)  # out[0]: text_encoder_2's text_embeds

    def size_ids(self, x: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """(B, 6) time ids: the conditioning's, else the latent's pixel size, uncropped (diffusers' default)."""
        if cond.time_ids is not None:
            return cond.on_device("time_ids", x.device, self.dtype)
        h, w = x.shape[-2] * self.latent_scale, x.shape[-1] * self.latent_scale
        return cond.memo(("size ids", h, w, x.shape[0], str(x.device), self.dtype), lambda: torch.tensor([[h, w, 0, 0, h, w]], dtype=self.dtype).repeat(x.shape[0], 1).to(x.device))

    def _added_conditions(self, x: torch.Tensor, cond: Conditioning) -> dict:
        if cond.pooled is None:
            raise ValueError(f"{self.name} needs SDXL's pooled text embedding in its conditioning (encode the prompt with this model)")
        return {"added_cond_kwargs": {"text_embeds": cond.pooled.to(self.dtype), "time_ids": self.size_ids(x, cond)}}

    def to_float32(self) -> None:
        super().to_float32()
        self.text_encoder_2.to(torch.float32)
