"""Reconstruction metrics: PSNR and SSIM in image space, PSNR in the sampler's
space (latent PSNR), and LPIPS only when its weights are on disk (else None).

Images are tensors in [-1, 1] (as models decode them); PSNR and SSIM are computed
on [0, 1] with data range 1. SSIM follows Wang et al. 2004: 11x11 Gaussian
window (sigma 1.5), K1 = 0.01, K2 = 0.03, per channel, averaged over the valid
region -- the same definition as scikit-image's `structural_similarity(...,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.detach().float().cpu() + 1) / 2).clamp(0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB between two images in [-1, 1] (compared on [0, 1])."""
    mse = float((_unit(a) - _unit(b)).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def latent_psnr(recovered: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in the sampler's space, peak = the reference's dynamic range (max - min)."""
    ref = reference.detach().double().cpu()
    mse = float((recovered.detach().double().cpu() - ref).pow(2).mean())
    peak = float(ref.max() - ref.min()) or 1.0
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def _gaussian_window(size: int, sigma: float = 1.5) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM between two images in [-1, 1] (batch averaged)."""
    x, y = _unit(a).double(), _unit(b).double()
    if x.dim() == 3:
        x, y = x[None], y[None]
    c = x.shape[1]
    size = 11 if min(x.shape[-2:]) >= 11 else (min(x.shape[-2:]) // 2) * 2 - 1
    win = _gaussian_window(size).expand(c, 1, size, size).contiguous()

    def filt(z):
        return F.conv2d(z, win, groups=c)

    mx, my = filt(x), filt(y)
    vx = filt(x * x) - mx * mx
    vy = filt(y * y) - my * my
    cxy = filt(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def lpips(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """LPIPS (AlexNet) when its weights are available locally, else None (never faked)."""
    from .lpips import lpips_distance

    return lpips_distance(a, b)


def image_metrics(reconstruction: torch.Tensor, reference: torch.Tensor) -> dict:
    return {"psnr": psnr(reconstruction, reference), "ssim": ssim(reconstruction, reference), "lpips": lpips(reconstruction, reference)}
