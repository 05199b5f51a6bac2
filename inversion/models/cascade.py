"""Pixel-space cascades (DeepFloyd-IF style): a base stage, then super-resolution
stages conditioned on the upsampled, noise-augmented output of the stage before.

The augmentation noise of each SR stage is part of an inversion (IterInv notes:
changing it breaks reconstruction), so the cascade makes the condition from an
explicit noise tensor rather than from a generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image

from .base import DiffusionModel


@dataclass(eq=False)
class Cascade:
    name: str
    stages: list[DiffusionModel]  # stage 0: base; then super-resolution stages
    noise_levels: list[int]  # augmentation level of each SR stage's low-res condition
    align_corners: bool = False  # how the low-res image is upsampled (as in training)
    description: str = ""
    family: str = "if"
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.noise_levels) != len(self.stages) - 1:
            raise ValueError("one noise level per super-resolution stage")

    @property
    def sizes(self) -> list[int]:
        return [s.image_size for s in self.stages]

    @property
    def image_size(self) -> int:
        return self.stages[-1].image_size

    @property
    def nfe(self) -> int:
        return sum(s.nfe for s in self.stages)

    def reset_nfe(self) -> None:
        for s in self.stages:
            s.reset_nfe()

    def prepare_image(self, image: Image.Image, size: int | None = None) -> torch.Tensor:
        return self.stages[-1].prepare_image(image)

    def pyramid(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The input at every stage's resolution, by area averaging from the top."""
        return [image if s == image.shape[-1] else F.interpolate(image, size=(s, s), mode="area") for s in self.sizes]

    def sr_condition(self, stage: int, low: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(noisy upsampled condition, noise level per row) for SR stage `stage` (>= 1)."""
        model = self.stages[stage]
        size = model.image_size
        up = F.interpolate(low.float(), size=(size, size), mode="bilinear", align_corners=self.align_corners)
        level = self.noise_levels[stage - 1]
        a = float(model.alphas_cumprod[level])
        cond = a**0.5 * up + (1 - a) ** 0.5 * noise.to(up)
        return cond, torch.full((low.shape[0],), level, dtype=torch.long)

    def condition_noise(self, stage: int, batch: int, seed: int) -> torch.Tensor:
        size = self.stages[stage].image_size
        g = torch.Generator().manual_seed(seed + 1000 * stage)
        return torch.randn(batch, 3, size, size, generator=g).to(self.stages[stage].device)
