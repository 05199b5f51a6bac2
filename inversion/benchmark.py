"""Overhead against the physical limit: an operation's wall time divided by what
its UNet calls alone cost (each call timed on its own, same batch).

    with calls_recorded(model) as calls:
        ...invert or edit...
    ideal = ideal_seconds(model, calls)   # sum over calls of one UNet call of that batch
    overhead = seconds / ideal            # 1.0 is the limit; the rest is Python, sampler math, codecs

The per-call costs are measured after the operation (warm-up, then the median
of several calls), so the operation itself is timed undisturbed.

Where the time goes: `profiled(model)` also times every text-encoder, VAE-encode, UNet and
VAE-decode call inside the block (each synchronised on CUDA: a benchmark-only cost) and the
block's wall time; `rest` is the wall time minus those parts, the true overhead (Python, sampler
math, attention control). Peak resident memory is reported beside it.

    with profiled(model) as prof:
        ...invert or edit...
    prof.fields(seconds, nfe)   # speed_fields + text_s, vae_encode_s, unet_s, vae_decode_s, rest_s, rest_fraction, peak_rss_gb
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import time
from dataclasses import dataclass, field

import torch

from .models.base import Conditioning, DiffusionModel
from .models.cascade import stages_of


def _stages(model) -> list[DiffusionModel]:
    return stages_of(model)


@contextlib.contextmanager
def calls_recorded(model):
    """Record (stage, x, t, cond) of every predict_noise call made inside the block."""
    calls: list[tuple[DiffusionModel, tuple, int, Conditioning]] = []
    originals = {}
    for stage in _stages(model):
        original = stage.predict_noise

        def recording(x, t, cond, _stage=stage, _orig=original):
            calls.append((_stage, tuple(x.shape), int(t), cond))
            return _orig(x, t, cond)

        originals[stage] = original
        stage.predict_noise = recording
    try:
        yield calls
    finally:
        for stage, original in originals.items():
            stage.predict_noise = original


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def unet_call_seconds(stage: DiffusionModel, shape: tuple, t: int, cond: Conditioning, repeats: int = 7) -> float:
    """Median wall time of one predict_noise call with this batch (after two warm-up calls)."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(stage.device)
    times = []
    for i in range(repeats + 2):
        _sync(stage.device)
        start = time.perf_counter()
        stage.predict_noise(x, t, cond)
        _sync(stage.device)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def ideal_seconds(calls: list, repeats: int = 7) -> float:
    """Sum over the recorded calls of the cost of one call with the same stage, batch and guidance."""
    cost: dict = {}
    total = 0.0
    for stage, shape, t, cond in calls:
        key = (id(stage), shape, stage.uses_guidance_pass(cond))
        if key not in cost:
            cost[key] = unet_call_seconds(stage, shape, t, cond, repeats)
        total += cost[key]
    return total


def warm_up(model, x: torch.Tensor, prompt: str = "") -> None:
    """One untimed inversion step per stage, so the first timed operation pays no start-up cost."""
    from .pipeline import invert

    invert(model, x, prompt, "ddim", steps=1)


def speed_fields(seconds: float, nfe: int, calls: list) -> dict:
    """time per NFE, the ideal (UNet-only) seconds and the overhead ratio."""
    ideal = ideal_seconds(calls) if calls else 0.0
    return {
        "time_per_nfe": seconds / nfe if nfe else None,
        "unet_seconds": ideal,
        "overhead": seconds / ideal if ideal else None,
    }


PARTS = {"text": "_embed", "vae_encode": "encode_image", "unet": "_eps", "vae_decode": "decode"}  # component -> the stage method that runs it


def peak_rss_gb() -> float:
    """The process's peak resident memory so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@dataclass
class Profile:
    calls: list = field(default_factory=list)
    spent: dict = field(default_factory=lambda: dict.fromkeys(PARTS, 0.0))
    wall: float = 0.0

    def breakdown(self) -> dict:
        rest = self.wall - sum(self.spent.values())
        return {**{f"{k}_s": v for k, v in self.spent.items()}, "rest_s": rest, "rest_fraction": rest / self.wall if self.wall else None, "peak_rss_gb": peak_rss_gb()}

    def fields(self, seconds: float, nfe: int) -> dict:
        """speed_fields (against `seconds`, as measured by the caller) and where this block's wall time went."""
        return {**speed_fields(seconds, nfe, self.calls), **self.breakdown()}


@contextlib.contextmanager
def profiled(model):
    """The UNet calls (as `calls_recorded`), the seconds in each component and the wall time of the block."""
    prof = Profile()
    patched = []
    for stage in _stages(model):
        for part, method in PARTS.items():
            real = getattr(stage, method)

            def timed(*args, _real=real, _part=part, _device=stage.device, **kwargs):
                _sync(_device)
                start = time.perf_counter()
                try:
                    return _real(*args, **kwargs)
                finally:
                    _sync(_device)
                    prof.spent[_part] += time.perf_counter() - start

            setattr(stage, method, timed)
            patched.append((stage, method))
    try:
        with calls_recorded(model) as prof.calls:
            start = time.perf_counter()
            yield prof
            prof.wall = time.perf_counter() - start
    finally:
        for stage, method in patched:
            delattr(stage, method)  # the instance attribute goes; the class's method is back
