"""Overhead against the physical limit: an operation's wall time divided by what
its UNet calls alone cost (each call timed on its own, same batch).

    with calls_recorded(model) as calls:
        ...invert or edit...
    ideal = ideal_seconds(model, calls)   # sum over calls of one UNet call of that batch
    overhead = seconds / ideal            # 1.0 is the limit; the rest is Python, sampler math, codecs

The per-call costs are measured after the operation (warm-up, then the median
of several calls), so the operation itself is timed undisturbed.
"""

from __future__ import annotations

import contextlib
import statistics
import time

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
