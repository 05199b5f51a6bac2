"""The closed-form oracle: the exact noise predictor of a Gaussian mixture.

Data: x0 ~ sum_k pi_k N(mu_k, s^2 I). Forward process: x_t = sqrt(a) x0 + sqrt(1-a) n.
Then p(x_t) = sum_k pi_k N(sqrt(a) mu_k, (a s^2 + 1 - a) I) and

    E[x0 | x_t] = sum_k w_k(x_t) [mu_k + sqrt(a) s^2 / (a s^2 + 1 - a) (x_t - sqrt(a) mu_k)],
    eps(x_t)    = (x_t - sqrt(a) E[x0 | x_t]) / sqrt(1 - a),

with w_k the posterior responsibilities. This is the exact score, so any
reconstruction error of an inverter on this model is discretisation alone.

The means are small versions of the photos in assets/ (3x32x32, in [-1, 1]),
plus their mirror images. A prompt naming a component ("cat", "astronaut", ...)
reweights the mixture towards it, so classifier-free guidance is real here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from PIL import Image

from .base import Conditioning, DiffusionModel
from .tiny import SD_SCHEDULER
from .unet_model import schedule_fields

ASSETS = Path(__file__).resolve().parents[2] / "assets"
COMPONENTS = {"astronaut": "astronaut.jpg", "coffee": "coffee.jpg", "cat": "chelsea.jpg", "rocket": "rocket.jpg", "camera": "camera.jpg"}
SIZE = 32
PROMPT_WEIGHT = 0.9  # mass a prompt puts on the components it names


def _means() -> tuple[torch.Tensor, list[str]]:
    means, names = [], []
    for name, file in COMPONENTS.items():
        img = Image.open(ASSETS / file).convert("RGB")
        side = min(img.size)
        img = img.crop(((img.size[0] - side) // 2, (img.size[1] - side) // 2, (img.size[0] + side) // 2, (img.size[1] + side) // 2))
        a = torch.from_numpy(np.asarray(img.resize((SIZE, SIZE), Image.Resampling.LANCZOS), np.float32) / 127.5 - 1).permute(2, 0, 1)
        means += [a, a.flip(-1)]
        names += [name, name]
    return torch.stack(means).double(), names


@dataclass(kw_only=True, eq=False)
class OracleModel(DiffusionModel):
    means: torch.Tensor  # (K, C, H, W) float64
    names: list[str]
    variance: float = 0.05

    def token_count(self, prompt: str) -> int:
        return len(prompt.split()) + 2

    def _embed(self, prompts: list[str]) -> torch.Tensor:
        """A prompt's 'embedding' is its log mixture weights, shape (1, K)."""
        rows = []
        for p in prompts:
            hit = torch.tensor([n in p.lower().split() for n in self.names], dtype=torch.float64)
            k = len(self.names)
            if hit.any():
                w = hit * PROMPT_WEIGHT / hit.sum() + (1 - hit) * (1 - PROMPT_WEIGHT) / max(1, k - hit.sum())
            else:
                w = torch.full((k,), 1.0 / k, dtype=torch.float64)
            rows.append(w.log().unsqueeze(0))
        return torch.stack(rows)

    def _eps(self, x: torch.Tensor, t: int, cond: Conditioning) -> torch.Tensor:
        a = float(self.alphas_cumprod[t])
        xd = x.double()
        mu = self.means.to(xd.device)
        var_t = a * self.variance + 1 - a
        d = xd.flatten(1)[:, None, :] - a**0.5 * mu.flatten(1)[None]  # (B, K, D)
        logits = cond.text[:, 0, :].to(xd.device) - 0.5 * (d * d).sum(-1) / var_t
        w = torch.softmax(logits, dim=1)  # (B, K)
        post = mu.flatten(1)[None] + (a**0.5 * self.variance / var_t) * d  # E[x0 | x_t, k]
        x0 = (w[..., None] * post).sum(1).view_as(xd)
        return ((xd - a**0.5 * x0) / (1 - a) ** 0.5).to(x.dtype)

    def sample_data(self, seed: int = 0, batch: int = 1, component: int | None = None) -> torch.Tensor:
        """Draw x0 from the mixture (the oracle's 'images')."""
        g = torch.Generator().manual_seed(seed)
        k = torch.randint(0, len(self.names), (batch,), generator=g) if component is None else torch.full((batch,), component)
        x = self.means[k] + math.sqrt(self.variance) * torch.randn(self.means[k].shape, generator=g, dtype=torch.float64)
        return x.float().to(self.device)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[-1] != SIZE:
            image = F.interpolate(image, size=(SIZE, SIZE), mode="area")
        return image.float().to(self.device)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return latent.float()


def oracle(device: str = "cpu", variance: float = 0.05) -> OracleModel:
    sched = DDIMScheduler(**SD_SCHEDULER)
    means, names = _means()
    return OracleModel(
        name="oracle",
        family="oracle",
        sampler_kind="ddim",
        **schedule_fields(sched),
        device=torch.device(device),
        latent_channels=3,
        default_steps=50,
        default_guidance=1.0,
        uses_cfg=True,
        image_size=SIZE,
        fixed_size=True,
        size_multiple=1,
        description="closed-form Gaussian-mixture noise predictor (exact score), 3x32x32",
        means=means.to(device),
        names=names,
        variance=variance,
    )
