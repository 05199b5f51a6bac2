"""What every editor shares: parameters (validated, per model family), the
result type, and compatibility checks against the model and the inversion."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from inversion.errors import IncompatibleChoice
from inversion.models.base import DiffusionModel
from inversion.params import Param, resolve
from inversion.result import Inversion


@dataclass
class EditLatents:
    """What an editor makes, in the base stage's space; `editing.edit` decodes it, runs a
    cascade's SR stages and measures the cost (EditOutput)."""

    latent: torch.Tensor  # the edited sample
    source_latent: torch.Tensor | None  # the source branch (the reconstruction) when it was run
    params: dict
    mask: torch.Tensor | None = None  # (1, 1, h, w) in [0, 1] where the editor computed one
    info: dict = field(default_factory=dict)


class Editor:
    name: str = ""
    title: str = ""
    paper: str = ""
    params: dict[str, Param] = {}
    needs_attention: bool = True  # needs separate self/cross-attention layers to control

    def resolve_params(self, family: str | tuple[str, ...], **overrides) -> dict:
        return resolve(self.params, family, overrides, f"editor {self.name!r}")

    def validate(self, model: DiffusionModel, source_prompt: str, target_prompt: str, p: dict) -> None:
        """Raise on choices that cannot work, before any compute (words, modes, model kind)."""
        if self.needs_attention and model.unet is None:
            raise IncompatibleChoice(f"{self.title} controls UNet attention; {model.name} has no UNet (try diffedit)")

    def edit(self, model: DiffusionModel, inv: Inversion, target_prompt: str, guidance: float, p: dict, progress=None, region=None) -> EditLatents:
        """`region`: an optional (1, 1, h, w) {0, 1} mask at the latent's size, painted by the user:
        DiffEdit's mask, P2P's LocalBlend mask, MasaCtrl's foreground (instead of their automatic ones)."""
        raise NotImplementedError
