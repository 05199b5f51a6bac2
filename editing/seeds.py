"""Rare-concept seeds: new samples of a prompt started from the inverted noise of a few
reference images (the RNRI paper's second application; the idea is NAO's and SeedSelect's,
Samuel et al., NeurIPS 2023 / AAAI 2024: a model that rarely draws a concept from random noise
draws it from noise that inverts images of it).

    from inversion import load_model, invert
    from editing import concept_seeds, sample_seeds
    model = load_model("shapes")
    refs = [invert(model, path, "a red star on a green background", "ddim") for path in paths]
    seeds = concept_seeds(model, refs, combine="each")        # or "mean": one normalised mean
    out = sample_seeds(model, seeds, "a red star on a green background", samples=4, strength=0.5)
    out.images                  # (4, 3, H, W) in [-1, 1]
    out.grid().save("grid.png")

What a seed is. Everything a sampler draws as noise and an inversion records, per stage of the
cascade: each stage's z_T, a super-resolution stage's condition-augmentation noise and, for an
LCM sampler, the per-step noises (with the last step's recorded residual). `combine="each"`
keeps the k references apart (sample i starts from reference i mod k); `combine="mean"` takes
one normalised mean of them (`normalised_mean`).

Variety. Sample i mixes the seed with its own fresh Gaussian draw by slerp at `strength`
(0: the seed itself, 1: fresh noise alone, i.e. ordinary text-to-image sampling): slerp keeps a
noise on the Gaussian shell where a straight mix would shrink it. With `strength` 0 the samples
of one reference are identical on a DDIM sampler (and the one "mean" seed gives one image), so
variety needs strength > 0, or several references with "each".

LCM's per-step noises (`step_noise`). A stochastic sampler's recorded noises are corrected by the
inversion so that the steps land exactly on the image: they hold the image as much as z_T does,
and on a 4-step LCM an exact inverter (RNRI) leaves z_T ~ 0 and puts the image into them
(README, "What that costs an edit"). `step_noise="reuse"` treats them as part of the seed (mixed
with fresh noise at `strength`, the last step's residual scaled by 1 - strength, as interpolation
mixes it linearly toward a fresh trajectory's zero); `"fresh"` draws them as ordinary sampling
does and seeds z_T (and the SR condition noise) alone. Default "fresh", measured on `shapes-lcm`
(`python -m shapes.rare_seeds --model shapes-lcm`, README "Rare-concept seeds"): reused noises
carry the references' pixels, so "each" at strength <= 0.5 returns near copies of them (RNRI) and
the mean of several references' corrected noises is no noise at all ("mean" with RNRI: 37-53%
correct against 95% from random noise); fresh noises judged 95-99% correct in every configuration,
and with "each" about as varied as random noise's samples (mean pairwise RMS 0.17-0.20 against
0.20). The cost: on an inversion whose z_T is ~0 (RNRI on a 4-step LCM) a fresh-noise seed
carries almost nothing (a warning says so): invert with DDIM.

Defaults, measured on `shapes` (20 held-out triples x 3 references x 4 samples): "each" at
strength 0.5 judged 80/80 correct with DDIM and with RNRI seeds against 77/80 from random noise,
still varied (0.17-0.18 against 0.20); "mean" judged as random noise did (74-79/80) with less
variety (one seed: its samples differ by the fresh noise alone).

Exactness. With one reference, "each", strength 0, `step_noise="reuse"`, the reference's prompt and
guidance (`guidance=inv.guidance`) and `batch=1`, a sample is that reference's reconstruction bit
for bit. Samples are a deterministic function of the seeds and `seed` (sample i's fresh noise does
not depend on `samples` or `batch`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from PIL import Image

from inversion.errors import IncompatibleInversion, ParameterError
from inversion.images import to_pil
from inversion.models.base import DiffusionModel
from inversion.models.cascade import Cascade, as_cascade
from inversion.result import CascadeInversion, Inversion
from inversion.sampling import sample

from .interpolate import lerp, mixable_stages, slerp

COMBINE = ("each", "mean")
STEP_NOISE = ("reuse", "fresh")
MAX_SAMPLES = 256
DEFAULT_STRENGTH = 0.5
NOISE_LIKE = (0.5, 2.0)  # |z_T| / sqrt(d) outside this: the warning that a seed is not noise-like


def normalised_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of the k rows of `x` (k, ...), rescaled to the rows' mean norm: (1, ...).

    Why rescale: a mean of k independent N(0, I) noises has std 1/sqrt(k), a latent far inside
    the shell where Gaussian noise of that dimension lives (norm ~ sqrt(d)), which samplers turn
    into flat, washed-out images. Dividing the sum by sqrt(k) instead of k is right only for
    independent rows; the inverted noises of images of one concept are correlated (that is the
    point of using them), and identical rows would come out sqrt(k) times too long. Rescaling
    the mean to the references' own mean norm is right in both limits: unit std for independent
    Gaussian rows, the row itself for identical rows (NAO, Samuel et al. 2023, likewise keeps
    its centroids on the norm shell). Rows of a non-noise-like inversion (RNRI on a 4-step LCM
    leaves z_T ~ 0) keep their small norm. Float64 on the host; `x`'s dtype and device back.
    """
    if x.shape[0] == 1:
        return x.clone()
    v = x.detach().to("cpu", torch.float64)
    m = v.mean(0, keepdim=True)
    target = v.flatten(1).norm(dim=1).mean()
    norm = m.norm()
    out = m if norm == 0 else m * (target / norm)
    return out.to(device=x.device, dtype=x.dtype)


@dataclass
class StageSeed:
    """One stage's seed rows: k references ("each") or their normalised mean (1 row)."""

    z_T: torch.Tensor  # (k, C, H, W)
    noises: torch.Tensor | None  # (N, k, C, H, W): LCM's recorded noises, the last step's residual last
    condition_noise: torch.Tensor | None  # (k, 3, H, W): an SR stage's condition-augmentation noise
    guidance: float  # the references' guidance of this stage (what SR stages sample with)


@dataclass
class ConceptSeeds:
    model: str
    combine: str
    steps: int
    prompts: list[str]  # the references' prompts (one per reference row)
    inverters: list[str]
    stages: list[StageSeed]

    @property
    def count(self) -> int:
        """Seed rows: the references ("each") or 1 ("mean")."""
        return self.stages[0].z_T.shape[0]

    @property
    def references(self) -> int:
        return len(self.prompts)

    def z_norm(self) -> float:
        """The base stage's |z_T| / sqrt(d), averaged over the rows (about 1 for Gaussian noise)."""
        z = self.stages[0].z_T.detach().float().flatten(1)
        return float((z.norm(dim=1) / math.sqrt(z.shape[1])).mean())


def concept_seeds(model: DiffusionModel | Cascade, inversions, combine: str = "each") -> ConceptSeeds:
    """Seeds from the inversions of a few reference images of one concept (same model, steps and
    size; any inverters and prompts; an inversion of a batch counts each row as a reference)."""
    if combine not in COMBINE:
        raise ParameterError(f"combine must be one of {', '.join(COMBINE)}, got {combine!r}")
    cascade = as_cascade(model)
    invs = [inversions] if isinstance(inversions, (Inversion, CascadeInversion)) else list(inversions)
    if not invs:
        raise ParameterError("concept seeds need at least one reference inversion")
    per_ref = mixable_stages(cascade, invs, [f"reference {k + 1}" for k in range(len(invs))], "the references", whole_shape=False)  # a batch: one reference a row
    stages = []
    for s, stage in enumerate(cascade.stages):
        rs = [ref[s] for ref in per_ref]
        z = torch.cat([r.z_T.detach().float().cpu() for r in rs])
        noises = None
        if stage.sampler_for(rs[0]).stochastic:
            noises = torch.cat([r.noises.detach().float().cpu() for r in rs], dim=1)
        cn = None if rs[0].condition_noise is None else torch.cat([r.condition_noise.detach().float().cpu() for r in rs])
        if combine == "mean":
            z = normalised_mean(z)
            if noises is not None:
                sampler = stage.sampler_for(rs[0])
                noises = torch.stack([
                    normalised_mean(noises[j]) if sampler.takes_noise(j) else noises[j].mean(0, keepdim=True)  # the last residual: a plain mean
                    for j in range(noises.shape[0])
                ])
            cn = None if cn is None else normalised_mean(cn)
        stages.append(StageSeed(z, noises, cn, float(rs[0].guidance)))
    prompts = [ref[0].prompt for ref in per_ref for _ in range(ref[0].z_T.shape[0])]
    inverters = [inv.inverter for inv in invs]
    return ConceptSeeds(invs[0].model, combine, invs[0].num_steps, prompts, inverters, stages)


@dataclass
class SeedSamples:
    images: torch.Tensor  # (S, 3, H, W) in [-1, 1]
    rows: list[int]  # the seed row each sample started from (always 0 for "mean")
    strength: float
    step_noise: str
    nfe: int
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def pil(self) -> list[Image.Image]:
        return [to_pil(x) for x in self.images]

    def grid(self, columns: int | None = None) -> Image.Image:
        """The samples in rows of `columns` (default: up to 8 in a row), left to right, top down."""
        ims = self.pil()
        cols = columns or min(len(ims), 8)
        rows = math.ceil(len(ims) / cols)
        w, h = ims[0].size
        out = Image.new("RGB", (cols * w, rows * h))
        for i, im in enumerate(ims):
            out.paste(im, ((i % cols) * w, (i // cols) * h))
        return out


def check_options(samples: int, strength: float, step_noise: str, batch: int = 1) -> float:
    """The sampling options, checked before any model work; the strength as a float."""
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= MAX_SAMPLES:
        raise ParameterError(f"samples must be a whole number from 1 to {MAX_SAMPLES}, got {samples!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ParameterError(f"batch must be a whole number >= 1, got {batch!r}")
    try:
        strength = float(strength)
    except (TypeError, ValueError):
        raise ParameterError(f"strength must be a number from 0 to 1, got {strength!r}") from None
    if not (math.isfinite(strength) and 0 <= strength <= 1):
        raise ParameterError(f"strength must be a number from 0 (the seed) to 1 (fresh noise), got {strength!r}")
    if step_noise not in STEP_NOISE:
        raise ParameterError(f"step_noise must be one of {', '.join(STEP_NOISE)}, got {step_noise!r}")
    return strength


@torch.no_grad()
def sample_seeds(
    model: DiffusionModel | Cascade,
    seeds: ConceptSeeds,
    prompt: str,
    samples: int = 4,
    strength: float = DEFAULT_STRENGTH,
    step_noise: str = "fresh",
    seed: int = 0,
    guidance: float | None = None,
    negative_prompt: str = "",
    batch: int = 1,
    progress=None,
) -> SeedSamples:
    """`samples` images of `prompt`, sample i started from seed row i mod `seeds.count` mixed
    with its own fresh noise by slerp at `strength` (see the module's docstring).

    `guidance` is the base stage's (default: the model's edit guidance, the guidance it makes new
    content with: `shapes` 3, `shapes-lcm` 3, SD 7.5); super-resolution stages sample with the
    references' own guidance (unguided, as they were inverted). `batch` samples go through the
    UNet together (faster; a batch changes float rounding, so only `batch=1` is bit-exact with a
    reconstruction). Cost: `samples` x the steps of every stage, NFE as `generate`.
    """
    cascade = as_cascade(model)
    strength = check_options(samples, strength, step_noise, batch)
    if seeds.model != cascade.stages[0].name or len(seeds.stages) != len(cascade.stages):
        raise IncompatibleInversion(f"these seeds were made with {seeds.model!r}, not {cascade.name!r}")
    cascade.stages[0].check_prompt(prompt)
    base_guidance = cascade.stages[0].default_edit_guidance if guidance is None else float(guidance)
    g = torch.Generator().manual_seed(seed)
    rows = [0 if seeds.combine == "mean" else i % seeds.count for i in range(samples)]
    # per sample, per stage: (z, noises (N, ...) or None, condition noise or None), fresh draws in
    # one fixed order (so sample i's fresh noise depends on `seed` and i alone)
    starts = [[_start(stage, seeds.stages[s], seeds.steps, rows[i], g, strength, step_noise)
               for s, stage in enumerate(cascade.stages)] for i in range(samples)]
    images = []
    with cascade.measure() as meter:
        for lo in range(0, samples, batch):
            chunk = starts[lo:lo + batch]
            image = None
            for s, stage in enumerate(cascade.stages):
                z = torch.stack([c[s][0] for c in chunk])
                noises = None if chunk[0][s][1] is None else torch.stack([c[s][1] for c in chunk], dim=1)
                cn = None if chunk[0][s][2] is None else torch.stack([c[s][2] for c in chunk]).to(stage.device)
                g_s = base_guidance if s == 0 else seeds.stages[s].guidance
                cond = cascade.condition(s, [prompt] * len(chunk), g_s, negative_prompt, image, cn)
                image = stage.decode(sample(stage, z, cond, stage.sampler(seeds.steps), noises))
            images.append(image)
            if progress:
                progress(min(lo + batch, samples), samples, "seeded samples")
    return SeedSamples(torch.cat(images), rows, strength, step_noise, meter.nfe, meter.seconds, seed_warnings(seeds, step_noise) + meter.warnings)


def seed_warnings(seeds: ConceptSeeds, step_noise: str) -> list[str]:
    r = seeds.z_norm()
    if NOISE_LIKE[0] <= r <= NOISE_LIKE[1]:
        return []
    where = " and in the recorded per-step noises" if seeds.stages[0].noises is not None and step_noise == "reuse" else ""
    return [f"the references' inverted z_T is not noise-like (|z_T| is {r:.2f} of a Gaussian sample's): their image lies in "
            f"the inversion's corrections{where}, not in a plausible starting noise; seeds from a DDIM inversion vary more"]


def _start(stage: DiffusionModel, st: StageSeed, steps: int, row: int, g: torch.Generator, strength: float, step_noise: str):
    """One sample's starting noise for one stage: the seed row mixed with fresh draws."""
    z_seed = st.z_T[row]
    fresh_z = torch.randn(z_seed.shape, generator=g)
    sampler = stage.sampler(steps)
    fresh_noises = torch.randn((steps, *z_seed.shape), generator=g) if sampler.stochastic else None
    fresh_cn = None if st.condition_noise is None else torch.randn(st.condition_noise.shape[1:], generator=g)
    z = slerp(z_seed, fresh_z, strength)
    noises = None
    if fresh_noises is not None:
        fresh_noises[-1] = 0  # the last LCM step takes no noise
        if step_noise == "fresh" or st.noises is None:
            noises = fresh_noises
        else:
            rec = st.noises[:, row]
            noises = torch.stack([
                slerp(rec[j], fresh_noises[j], strength) if sampler.takes_noise(j) else lerp(rec[j], fresh_noises[j], strength)
                for j in range(steps)
            ])
    cn = None if fresh_cn is None else slerp(st.condition_noise[row], fresh_cn, strength)
    return z, noises, cn
