"""LPIPS (Zhang et al., CVPR 2018, AlexNet variant) in plain torch, computed only
from weights already on disk -- never downloaded here and never faked.

Weights are looked up at (first found wins):
- backbone: $INVERSION_LPIPS_BACKBONE, or torchvision's AlexNet file in the torch
  hub cache (checkpoints/alexnet-owt-7be5be79.pth);
- linear heads: $INVERSION_LPIPS_LINEAR, or the `lpips` package's weights/v0.1/alex.pth.
Without both, `lpips_distance` returns None and the metric is reported as null.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

_SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
_SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
_CHANNELS = (64, 192, 384, 256, 256)


def _alexnet_features() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
    )  # fmt: skip


_TAPS = (1, 4, 7, 9, 11)  # after each ReLU


def _find(env: str, candidates: list[Path]) -> Path | None:
    if os.environ.get(env):
        p = Path(os.environ[env])
        return p if p.is_file() else None
    return next((p for p in candidates if p.is_file()), None)


def weight_paths() -> tuple[Path | None, Path | None]:
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    backbone = _find("INVERSION_LPIPS_BACKBONE", [hub / "alexnet-owt-7be5be79.pth"])
    linear_candidates = []
    try:
        import importlib.util

        spec = importlib.util.find_spec("lpips")
        if spec and spec.origin:
            linear_candidates.append(Path(spec.origin).parent / "weights" / "v0.1" / "alex.pth")
    except (ImportError, ValueError):
        pass
    linear = _find("INVERSION_LPIPS_LINEAR", linear_candidates)
    return backbone, linear


class LPIPS(nn.Module):
    def __init__(self, backbone_state: dict, linear_state: dict):
        super().__init__()
        self.features = _alexnet_features()
        feats = {k.removeprefix("features."): v for k, v in backbone_state.items() if k.startswith("features.")}
        self.features.load_state_dict(feats)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS)
        for i, lin in enumerate(self.lins):
            lin.weight.data.copy_(linear_state[f"lin{i}.model.1.weight"])
        self.eval().requires_grad_(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, h = [], (x - _SHIFT.to(x)) / _SCALE.to(x)
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _TAPS:
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distance per image; inputs in [-1, 1], (B, 3, H, W)."""
        if min(a.shape[-2:]) < 64:  # AlexNet needs room for its strides
            a = F.interpolate(a, size=(64, 64), mode="bilinear", align_corners=False)
            b = F.interpolate(b, size=(64, 64), mode="bilinear", align_corners=False)
        return sum(lin((fa - fb) ** 2).mean((2, 3)) for lin, fa, fb in zip(self.lins, self._taps(a), self._taps(b))).flatten()


@lru_cache(maxsize=1)
def _model() -> LPIPS | None:
    backbone, linear = weight_paths()
    if backbone is None or linear is None:
        return None
    return LPIPS(torch.load(backbone, map_location="cpu"), torch.load(linear, map_location="cpu"))


def lpips_distance(a: torch.Tensor, b: torch.Tensor) -> float | None:
    model = _model()
    if model is None:
        return None
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    if a.dim() == 3:
        a, b = a[None], b[None]
    return float(model(a.clamp(-1, 1), b.clamp(-1, 1)).mean())
