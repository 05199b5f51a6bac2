"""Every model is a cascade: a base stage, then super-resolution stages conditioned
on the upsampled, noise-augmented output of the stage before (DeepFloyd-IF style).
A single model is a one-stage cascade (`as_cascade`), so inverting, reconstructing,
generating, evaluating and editing are one loop over stages, with `condition`
building each stage's conditioning.

The augmentation noise of each SR stage is part of an inversion (IterInv notes:
changing it breaks reconstruction), so the cascade makes the condition from an
explicit noise tensor rather than from a generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from .base import Conditioning, DiffusionModel, measuring

STAGE_SEED_STRIDE = 1000  # seeds of the SR stages' condition noise: seed + 1000 * stage, apart from any step seed


@dataclass(eq=False)
class Cascade:
    name: str
    stages: list[DiffusionModel]  # stage 0: base; then super-resolution stages
    noise_levels: list[int]  # augmentation level of each SR stage's low-res condition
    align_corners: bool = False  # how the low-res image is upsampled (as in training)
    description: str = ""
    family: str = "if"

    def __post_init__(self) -> None:
        if len(self.noise_levels) != len(self.stages) - 1:
            raise ValueError("one noise level per super-resolution stage")

    @property
    def base(self) -> DiffusionModel:
        return self.stages[0]

    @property
    def top(self) -> DiffusionModel:
        return self.stages[-1]

    @property
    def multistage(self) -> bool:
        """A pixel cascade with super-resolution stages (not a single model's one-stage view)."""
        return len(self.stages) > 1

    @property
    def sizes(self) -> list[int]:
        return [s.image_size for s in self.stages]

    @property
    def image_size(self) -> int:
        return self.stages[-1].image_size

    def measure(self):
        """A Meter over every stage (see DiffusionModel.measure)."""
        return measuring(self.stages)

    def prepare_image(self, image: Image.Image, size: int | None = None) -> torch.Tensor:
        """The input at the top stage's size; `size` (a long side) applies to single models only:
        a pixel cascade's stage sizes are fixed."""
        return self.stages[-1].prepare_image(image, None if self.multistage else size)

    def pyramid(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The input at every stage's resolution, by area averaging from the top. A single model
        takes the image as prepared (any aspect ratio); a pixel cascade's stages are square."""
        if not self.multistage:
            return [image]
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
        g = torch.Generator().manual_seed(seed + STAGE_SEED_STRIDE * stage)
        return torch.randn(batch, 3, size, size, generator=g).to(self.stages[stage].device)

    def condition(self, stage: int, prompts, guidance=None, negative: str = "", low: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> Conditioning:
        """Stage `stage`'s conditioning: prompt(s), guidance and negative prompt, and for an SR
        stage the low-res image (upsampled, augmented with `noise`) and its noise level."""
        cond = self.stages[stage].encode_prompt(prompts, guidance=guidance, negative=negative)
        if stage == 0:
            return cond
        if low is None or noise is None:
            raise ValueError(f"super-resolution stage {stage} needs the low-res image and its condition noise")
        return cond.with_image(*self.sr_condition(stage, low, noise))


def as_cascade(model) -> Cascade:
    """The model as a cascade: itself, or a one-stage view of a single model."""
    if isinstance(model, Cascade):
        return model
    return Cascade(name=model.name, stages=[model], noise_levels=[], align_corners=False, description=model.description, family=model.family)


def stages_of(model) -> list[DiffusionModel]:
    return as_cascade(model).stages


def base_stage(model) -> DiffusionModel:
    """The stage prompts, editors and per-model defaults belong to."""
    return stages_of(model)[0]
