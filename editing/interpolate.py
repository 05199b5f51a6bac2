"""Interpolate between two inverted images (RNRI's image-interpolation application).

    from inversion import load_model, invert
    from editing import interpolate
    model = load_model("shapes-lcm")
    a = invert(model, "assets/shapes/examples/scene0.png", "a red circle on a blue background", "ddim")
    b = invert(model, "assets/shapes/examples/scene1.png", "a yellow square on a purple background", "ddim")
    out = interpolate(model, a, b, frames=8)
    out.frames                       # (8, 3, H, W) in [-1, 1]; frames[0] and frames[-1] are the reconstructions
    out.strip().save("strip.png");  out.save_gif("anim.gif")

A frame at alpha is sampled from the spherical interpolation of the two inversions' noise and the
linear interpolation of their prompt embeddings; everything a sampler replays from an inversion
(see `inversion/sampling.py`) is interpolated, so alpha 0 and 1 are the two reconstructions.

Quantities not defined between two inversions. LCM's last step takes no noise; it records
instead the residual that lands it exactly on the inverted x0, a correction of each end's
own trajectory, and no in-between trajectory was ever inverted, so a frame between has no
correction of its own. It is mixed linearly: exact at the ends and continuous in alpha (a
frame near A takes nearly A's correction, as its trajectory is nearly A's; zeroing it
between the ends would make the first in-between jump by the whole correction); not
spherically, because it is an error, not noise: small, with no norm to keep. LCM's other
recorded noises are corrected too, but they are the sampler's noise draws, so they are
mixed as noise. The rest of the trajectory (intermediate latents, x0, residuals) is not
replayed by a sampler and is not used.

How smooth the in-betweens look depends on how noise-like the inversions' noise is. An
inverter that solves a 4-step LCM's steps exactly (RNRI, ReNoise, fixed-point) leaves a z_T
that is no noise sample (RNRI's near 0) and the image in the corrected per-step noises
(README, "What that costs an edit"): the ends stay exact but the in-betweens are grainy,
as those noises are mixed where no sampler step matches them. DDIM or EasyInv inversions
keep the noise plausible and give smooth in-betweens there; on DDIM-sampled models any
inverter's z_T does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image

from inversion.errors import IncompatibleInversion, ParameterError
from inversion.images import to_pil
from inversion.models.base import Conditioning, DiffusionModel
from inversion.models.cascade import Cascade, as_cascade
from inversion.result import CascadeInversion, Inversion, stage_inversions
from inversion.sampling import reconstruct_latent

MAX_FRAMES = 256
PARALLEL_COS = 0.9995  # |cos| above this (within ~1.8 degrees): slerp is ill-conditioned, lerp instead


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, parallel_cos: float = PARALLEL_COS) -> torch.Tensor:
    """Spherical linear interpolation (Shoemake 1985) from `a` (t = 0) to `b` (t = 1).

    One vector per row of the leading (batch) dimension; a 1-D tensor is one vector.
    With theta the angle between a and b:
        slerp(a, b, t) = sin((1 - t) theta) / sin(theta) a + sin(t theta) / sin(theta) b.

    Why the diffusion-interpolation literature (DDIM, Song et al. 2021; RNRI) uses it for noise:
    in d dimensions a standard Gaussian sample has norm close to sqrt(d), and two independent
    ones are nearly orthogonal. Linear interpolation cuts the chord: at t = 1/2 its norm is about
    sqrt(d / 2), a latent no sampler was trained to start from (washed-out, blurry frames).
    Slerp walks the arc, so for vectors of equal norm every in-between keeps that norm (for
    orthogonal unit vectors, |slerp| = sqrt(cos^2 + sin^2) = 1): the in-betweens stay on the
    shell where Gaussian noise lives.

    Degenerate cases: when a and b are nearly parallel (or anti-parallel, where no great circle
    is singled out) sin(theta) ~ 0 makes the formula unstable, and a zero vector has no
    direction; those rows are interpolated linearly (for nearly parallel vectors the two agree
    to ~1e-4 of the norm). t = 0 and t = 1 return `a` and `b` exactly (copies). Computed in
    float64 on the host; the result has `a`'s dtype and device.
    """
    if a.shape != b.shape:
        raise ValueError(f"slerp needs tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if t == 0:
        return a.clone()
    if t == 1:
        return b.to(a).clone()
    rows = a.shape[0] if a.dim() > 1 else 1
    x = a.detach().to("cpu", torch.float64).reshape(rows, -1)
    y = b.detach().to("cpu", torch.float64).reshape(rows, -1)
    nx, ny = x.norm(dim=1), y.norm(dim=1)
    cos = ((x * y).sum(dim=1) / (nx * ny).clamp_min(1e-300)).clamp(-1, 1)
    theta = torch.arccos(cos)
    sin = torch.sin(theta)
    linear = (nx == 0) | (ny == 0) | (cos.abs() > parallel_cos)
    safe = torch.where(linear, torch.ones_like(sin), sin)
    wa = torch.where(linear, torch.full_like(sin, 1 - t), torch.sin((1 - t) * theta) / safe)
    wb = torch.where(linear, torch.full_like(sin, t), torch.sin(t * theta) / safe)
    out = wa[:, None] * x + wb[:, None] * y
    return out.reshape(a.shape).to(device=a.device, dtype=a.dtype)


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """(1 - t) a + t b, in float64 on the host; `a` and `b` exactly at t = 0 and 1."""
    if t == 0:
        return a.clone()
    if t == 1:
        return b.to(a).clone()
    out = (1 - t) * a.detach().to("cpu", torch.float64) + t * b.detach().to("cpu", torch.float64)
    return out.to(device=a.device, dtype=a.dtype)


@dataclass
class Interpolation:
    frames: torch.Tensor  # (F, 3, H, W) in [-1, 1]; frames[0], frames[-1]: the two reconstructions
    alphas: list[float]
    nfe: int
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def images(self) -> list[Image.Image]:
        return [to_pil(f) for f in self.frames]

    def strip(self) -> Image.Image:
        """The frames side by side, left (alpha 0) to right (alpha 1)."""
        return strip_image(self.images())

    def save_gif(self, path: str | Path, frame_ms: int = 120, pingpong: bool = False) -> Path:
        return save_gif(self.images(), path, frame_ms, pingpong)


def strip_image(images: list[Image.Image]) -> Image.Image:
    w, h = images[0].size
    out = Image.new("RGB", (w * len(images), h))
    for i, im in enumerate(images):
        out.paste(im, (i * w, 0))
    return out


def save_gif(images: list[Image.Image], path: str | Path, frame_ms: int = 120, pingpong: bool = False) -> Path:
    """An animated GIF that loops forever; `pingpong` plays it back and forth (A..B..A)."""
    seq = list(images) + (list(images[-2:0:-1]) if pingpong else [])
    path = Path(path)
    seq[0].save(path, format="GIF", save_all=True, append_images=seq[1:], duration=frame_ms, loop=0, disposal=1)
    return path


def frame_alphas(frames: int) -> list[float]:
    """`frames` evenly spaced alphas from exactly 0.0 to exactly 1.0."""
    if isinstance(frames, bool) or not isinstance(frames, int) or not 2 <= frames <= MAX_FRAMES:
        raise ParameterError(f"frames must be a whole number from 2 to {MAX_FRAMES} (both ends included), got {frames!r}")
    return [i / (frames - 1) for i in range(frames)]


@torch.no_grad()
def interpolate(
    model: DiffusionModel | Cascade,
    inv_a: Inversion | CascadeInversion,
    inv_b: Inversion | CascadeInversion,
    frames: int = 8,
    alphas: list[float] | None = None,
    progress=None,
) -> Interpolation:
    """Frames between two inversions of `model` (same steps and size; any inverters, any prompts).

    Frame alpha (0 = `inv_a`, 1 = `inv_b`; `frames` evenly spaced, or the given `alphas` in
    [0, 1]) is sampled, stage by stage, as a reconstruction is, from an inversion mixed of both:

    - noise, spherically (`slerp`, which keeps Gaussian noise at its norm): each stage's z_T,
      a stochastic sampler's (LCM's) recorded per-step noises, and a super-resolution stage's
      condition-augmentation noise;
    - conditioning, linearly: the prompt embeddings, the negative-prompt embeddings and the
      guidance scale. The embeddings, not the text, are mixed, so the two prompts may differ;
      the ends use the conditioning the reconstruction builds, untouched;
    - an SR stage is conditioned on this frame's own lower stage, as in reconstruction.

    No random draws: frames are a deterministic function of the two inversions (which are of
    their seed). Alpha 0 and 1 replay `inv_a` and `inv_b` themselves with their own
    conditioning, so they equal `reconstruct(model, inv_a)` and `reconstruct(model, inv_b)`
    bit for bit. Frames are sampled one at a time (a batch would change float rounding, which
    LCM's corrected noise amplifies); cost: frames x each inversion's sampling NFE.
    """
    cascade = as_cascade(model)
    a_stages, b_stages = mixable_stages(cascade, [inv_a, inv_b], ["the first inversion", "the second inversion"], "the two inversions")
    alphas = frame_alphas(frames) if alphas is None else _checked_alphas(alphas)
    # each stage's text conditioning of each end, built as `cascade.condition` builds it
    ends = [
        (stage.encode_prompt(ra.prompt, guidance=ra.guidance, negative=ra.negative_prompt),
         stage.encode_prompt(rb.prompt, guidance=rb.guidance, negative=rb.negative_prompt))
        for stage, ra, rb in zip(cascade.stages, a_stages, b_stages)
    ]
    out = []
    with cascade.measure() as meter:
        for i, alpha in enumerate(alphas):
            image = None
            for s, (stage, ra, rb) in enumerate(zip(cascade.stages, a_stages, b_stages)):
                r = mixed_inversion(stage, ra, rb, alpha)
                cond = mixed_condition(*ends[s], alpha)
                if s > 0:
                    cond = cond.with_image(*cascade.sr_condition(s, image, r.condition_noise))
                image = stage.decode(reconstruct_latent(stage, r, cond))
            out.append(image)
            if progress:
                progress(i + 1, len(alphas), "interpolation")
    return Interpolation(torch.cat(out), list(alphas), meter.nfe, meter.seconds, meter.warnings)


def mixed_inversion(stage: DiffusionModel, ra: Inversion, rb: Inversion, alpha: float) -> Inversion:
    """What a sampler replays for frame alpha: z_T, per-step noises and SR condition noise mixed;
    `ra` or `rb` itself at the ends."""
    if alpha == 0:
        return ra
    if alpha == 1:
        return rb
    noises = None
    if ra.noises is not None and rb.noises is not None:
        sampler = stage.sampler_for(ra)
        noises = torch.stack([
            (slerp if sampler.takes_noise(j) else lerp)(ra.noises[j], rb.noises[j], alpha)  # the last LCM step: its residual
            for j in range(ra.num_steps)
        ])
    cn = None if ra.condition_noise is None else slerp(ra.condition_noise, rb.condition_noise, alpha)
    return replace(
        ra,
        inverter=ra.inverter if ra.inverter == rb.inverter else f"{ra.inverter}+{rb.inverter}",
        prompt=ra.prompt if alpha < 0.5 else rb.prompt,  # a label: the conditioning is the mixed embeddings
        guidance=(1 - alpha) * ra.guidance + alpha * rb.guidance,
        latents=slerp(ra.z_T, rb.z_T, alpha)[None],  # only z_T is replayed
        noises=noises,
        condition_noise=cn,
        residuals=[],
    )


def mixed_condition(ca: Conditioning, cb: Conditioning, alpha: float) -> Conditioning:
    """Prompt and negative-prompt embeddings (SDXL's pooled ones and size conditioning too) and
    guidance mixed linearly; `ca` / `cb` at the ends. A super-resolution condition is set after."""
    if alpha == 0:
        return ca
    if alpha == 1:
        return cb
    mixed = {name: None if getattr(ca, name) is None else lerp(getattr(ca, name), getattr(cb, name), alpha) for name in Conditioning.ROWS if name not in ("image", "noise_level")}
    return Conditioning(prompts=list(ca.prompts if alpha < 0.5 else cb.prompts), **mixed)


def _checked_alphas(alphas) -> list[float]:
    try:
        vals = [float(v) for v in alphas]
    except (TypeError, ValueError):
        raise ParameterError("alphas must be numbers from 0 to 1") from None
    if not vals or len(vals) > MAX_FRAMES or not all(math.isfinite(v) and 0 <= v <= 1 for v in vals):
        raise ParameterError(f"alphas must be 1 to {MAX_FRAMES} numbers from 0 to 1, got {alphas!r}")
    return vals


def mixable_stages(cascade: Cascade, invs: list, names: list[str], group: str, whole_shape: bool = True) -> list[list[Inversion]]:
    """Each inversion's stages, checked before their noises are mixed (interpolation, concept seeds):
    one model (this one), its stages, one step count, sampler and timesteps, one latent shape (with
    `whole_shape` the batch too), a super-resolution condition noise in all or none."""
    models = list(dict.fromkeys(inv.model for inv in invs))
    if len(models) > 1:
        raise IncompatibleInversion(f"{group} were made with different models ({' and '.join(map(repr, models))}); invert all with one")
    per = [stage_inversions(inv) for inv in invs]
    for name, inv, stages in zip(names, invs, per):
        if inv.model != cascade.stages[0].name:
            raise IncompatibleInversion(f"{name} was inverted with {inv.model!r}, not {cascade.name!r}")
        if len(stages) != len(cascade.stages):
            raise IncompatibleInversion(f"{cascade.name} has {len(cascade.stages)} stage(s); {name} has {len(stages)}")
        if inv.num_steps != inv.steps:
            raise IncompatibleInversion(f"{name} inverts only the last {inv.num_steps} of {inv.steps} steps (strength < 1), so its start is no noise to mix; invert it with strength 1")
        if inv.num_steps != invs[0].num_steps:
            raise IncompatibleInversion(f"{group} have different step counts ({invs[0].num_steps} and {inv.num_steps}); invert all with the same --steps")
        for stage, r, r0 in zip(cascade.stages, stages, per[0]):
            r.check_compatible(stage.sampler_for(r), stage.name)
            shape, shape0 = (r.z_T.shape, r0.z_T.shape) if whole_shape else (r.z_T.shape[1:], r0.z_T.shape[1:])
            if shape != shape0:
                raise IncompatibleInversion(f"{group} have different latent shapes ({list(shape0)} and {list(shape)}): invert them at the same size and aspect ratio")
            if (r.condition_noise is None) != (r0.condition_noise is None):
                raise IncompatibleInversion(f"only some of {group} have a super-resolution condition noise")
    return per
