"""LPIPS with a SqueezeNet 1.1 backbone (Zhang et al., CVPR 2018), the variant PIE-Bench reports.

PnPInversion's evaluator uses torchmetrics' `LearnedPerceptualImagePatchSimilarity(net_type='squeeze')`
on images scaled to [-1, 1]. Neither torchmetrics nor torchvision is a dependency here, so this is our
own plain-torch implementation of the same network (torchvision's squeezenet1_1 feature layers, read
at the 7 points LPIPS taps: after the first ReLU and after each of the 3 pooling stages' last Fire
module, then after each of the last three Fire modules), LPIPS's input scaling, channel-wise unit
normalisation, squared differences, 1x1 linear heads, spatial mean and sum over layers. The project's
`inversion/lpips.py` is the AlexNet variant (the reconstruction metric) and stays as it is.

Weights are read from disk only, never downloaded (first found wins):
- backbone: $PIE_LPIPS_BACKBONE, or torchvision's file in the torch hub cache
  ($TORCH_HOME/hub/checkpoints/squeezenet1_1-b8a52dc0.pth);
- linear heads: $PIE_LPIPS_LINEAR, or `squeeze.pth` from the `lpips` package (weights/v0.1/) or
  from torchmetrics (functional/image/lpips_models/).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

BACKBONE_FILE = "squeezenet1_1-b8a52dc0.pth"
_SHIFT = (-0.030, -0.088, -0.188)  # LPIPS's ScalingLayer: (x - shift) / scale
_SCALE = (0.458, 0.448, 0.450)
# torchvision's squeezenet1_1.features: index -> Fire(inplanes, squeeze, expand1x1, expand3x3)
FIRES = {3: (64, 16, 64, 64), 4: (128, 16, 64, 64), 6: (128, 32, 128, 128), 7: (256, 32, 128, 128),
         9: (256, 48, 192, 192), 10: (384, 48, 192, 192), 11: (384, 64, 256, 256), 12: (512, 64, 256, 256)}  # fmt: skip
TAPS = (1, 4, 7, 9, 10, 11, 12)  # feature indices after which LPIPS reads the activations
CHANNELS = (64, 128, 256, 384, 384, 512, 512)


class Fire(nn.Module):
    def __init__(self, inplanes: int, squeeze: int, e1: int, e3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(s)), F.relu(self.expand3x3(s))], 1)


def squeezenet_features() -> nn.Sequential:
    """torchvision's squeezenet1_1 feature extractor, with its module indices (so its state dict loads)."""
    layers: list[nn.Module] = []
    for i in range(13):
        if i == 0:
            layers.append(nn.Conv2d(3, 64, 3, stride=2))
        elif i == 1:
            layers.append(nn.ReLU())
        elif i in (2, 5, 8):
            layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
        else:
            layers.append(Fire(*FIRES[i]))
    return nn.Sequential(*layers)


class SqueezeLPIPS(nn.Module):
    def __init__(self, backbone_state: dict, linear_state: dict):
        super().__init__()
        self.features = squeezenet_features()
        self.features.load_state_dict({k.removeprefix("features."): v for k, v in backbone_state.items() if k.startswith("features.")})
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
        for i, lin in enumerate(self.lins):
            lin.weight.data.copy_(linear_state[f"lin{i}.model.1.weight"])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distance per image; inputs (B, 3, H, W) in [-1, 1]."""
        total = 0
        ha, hb = (a - self.shift) / self.scale, (b - self.shift) / self.scale
        lin = iter(self.lins)
        for i, layer in enumerate(self.features):
            ha, hb = layer(ha), layer(hb)
            if i in TAPS:
                na = ha / (ha.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                nb = hb / (hb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                total = total + next(lin)((na - nb) ** 2).mean((2, 3))
        return total.flatten()


def _linear_candidates() -> list[Path]:
    out = []
    for package, sub in (("lpips", ("weights", "v0.1")), ("torchmetrics", ("functional", "image", "lpips_models"))):
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        if spec and spec.origin:
            out.append(Path(spec.origin).parent.joinpath(*sub, "squeeze.pth"))
    return out


def weight_paths() -> tuple[Path | None, Path | None]:
    """(backbone, linear heads) files, None where not on disk. Reads the environment at call time."""

    def find(env: str, candidates: list[Path]) -> Path | None:
        if os.environ.get(env):
            p = Path(os.environ[env])
            return p if p.is_file() else None
        return next((p for p in candidates if p.is_file()), None)

    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    return find("PIE_LPIPS_BACKBONE", [torch_home / "hub" / "checkpoints" / BACKBONE_FILE]), find("PIE_LPIPS_LINEAR", _linear_candidates())


def missing() -> list[str]:
    """What LPIPS lacks, in words (empty when both files are on disk)."""
    backbone, linear = weight_paths()
    out = []
    if backbone is None:
        out.append(f"LPIPS's SqueezeNet backbone (torchvision's {BACKBONE_FILE} in $TORCH_HOME/hub/checkpoints, or $PIE_LPIPS_BACKBONE)")
    if linear is None:
        out.append("LPIPS's squeeze linear heads (squeeze.pth of the lpips package, or $PIE_LPIPS_LINEAR)")
    return out


def load(device=None) -> SqueezeLPIPS:
    backbone, linear = weight_paths()
    if backbone is None or linear is None:
        raise FileNotFoundError("; ".join(missing()))
    model = SqueezeLPIPS(torch.load(backbone, map_location="cpu"), torch.load(linear, map_location="cpu"))
    return model.to(device) if device is not None else model
