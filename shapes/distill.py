"""Latent-consistency distillation of the `shapes` base stage into `shapes-lcm`.

Consistency distillation (Song et al., ICML 2023) with LCM's one-stage guided
recipe (Luo et al., 2023), in pixel space on our 32 px base stage:

- the student starts from the teacher's weights plus LCM's guidance embedding (the
  UNet's `time_cond_proj_dim` layer, zero-initialised) and predicts eps, as LCM
  Dreamshaper does: on SD's scaled-linear schedule (a(999) = 4.7e-3, which `shapes`
  shares since 2026-12-01) x0 = (x - sqrt(1 - a) eps) / sqrt(a) multiplies an eps error
  by 15 at t = 999, as on SD. (On the cosine schedule `shapes` had before, a(999) =
  2.4e-9 made that 2e4, and the student predicted v instead.) The guidance g = 1 + w
  is drawn per sample from `LCM_GUIDANCE_RANGE`, and the embedding takes w = g - 1 as
  LCMScheduler's pipelines pass it;
- the teacher's classifier-free-guided prediction takes one DDIM step of k = 20
  timesteps (the 50-step skeleton that LCMScheduler's `original_inference_steps`
  samples from), from t_{n+k} to t_n;
- target: the EMA target network's consistency function at (x_{t_n}, t_n);
  student: its own at (x_{t_{n+k}}, t_{n+k}); pseudo-Huber loss between them;
- the consistency function is c_skip(t) x + c_out(t) x0(x, t) with diffusers'
  LCMScheduler scalings (`inversion.schedule.lcm_boundary_scalings`), so the
  student samples with LCMScheduler and with our sampler alike.

Static thresholding: `shapes` samples with the guided x0 estimate clamped to
[-1, 1] (Imagen). We clamp inside the teacher's solver step and the target's
consistency function, so the student learns the trajectories of the
thresholded sampler it replaces. The student's own prediction is not clamped
during training (a clamp has zero gradient outside the range, which would stop
learning exactly where the student is wrong); at inference `shapes-lcm` keeps
the model's `clip_x0`, a near no-op once the student matches its in-range targets.

    python -m shapes.train --stage lcm --steps 2400          # resumable; runs/shapes/lcm.pt
    python -m shapes.train --export-lcm [--lcm-step N]       # -> assets/shapes/shapes_lcm.safetensors

Every --save-every steps the slow EMA is judged on 32 training-split captions at 4 steps
(validation: never the held-out captions the README's numbers use) and kept as a snapshot
(runs/shapes/lcm_ema_<step>.pt); `--export-lcm` judges every snapshot again on 160 training-split
captions and exports the best, unless told a step. Measured (2026-12-01, from the scaled-linear
teacher): 84-97% on the quick validation from step 200 on, 87-96% on 160 captions (rising to 95%
by step 1,000); the shipped weights are step 2,400's (96.2%).
"""

from __future__ import annotations

import copy
import math
import os
import random
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from inversion.models import shapes_arch as arch
from inversion.models.shapes import WEIGHTS, shapes
from inversion.models.unet_model import guidance_embedding
from inversion.schedule import lcm_boundary_scalings

from . import loop

HUBER_C = 0.001  # LCM's pseudo-Huber constant (diffusers' train_lcm_distill scripts)
TARGET_EMA = 0.95  # the target network's EMA decay (LCM)
EXPORT_EMA = 0.999  # a slower average of the student: what is exported
LCM_WEIGHTS = WEIGHTS.parent / "shapes_lcm.safetensors"
WARMUP = 200
VALIDATION_SEED = 77


def skeleton(alphas_cumprod: torch.Tensor, n: int = arch.LCM_SKELETON_STEPS) -> torch.Tensor:
    """The solver's skeleton timesteps t_{n+k}: 19, 39, ..., 999 for 50 of 1000 (LCMScheduler's)."""
    k = len(alphas_cumprod) // n
    return torch.arange(1, n + 1) * k - 1


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float = HUBER_C) -> torch.Tensor:
    return (torch.sqrt((a.float() - b.float()) ** 2 + c**2) - c).mean()


def x0_from_eps(x: torch.Tensor, eps: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return (x - (1 - a).sqrt() * eps) / a.sqrt()


def teacher_hash(path: Path = WEIGHTS) -> str:
    """Identifies the teacher export the student was distilled from (its training steps)."""
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return ",".join(f"{k}={v}" for k, v in sorted(meta.items()))


class Distiller:
    """Resumable consistency distillation; `run` shows a progress bar and checkpoints."""

    stage = "lcm"

    def __init__(self, batch: int, lr: float, steps: int, images64: torch.Tensor, captions: list[str], run_dir: Path, init: Path | None = None):
        self.batch, self.lr, self.steps = batch, lr, steps
        teacher = shapes().stages[0]
        self.tok, self.text = teacher.tokenizer, teacher.text_encoder
        self.teacher = teacher.unet
        self.images32 = F.avg_pool2d(images64, 2)  # the cascade's low-res image: 2x2 area average
        self.ids = self._ids(captions)
        with torch.no_grad():
            self.uncond = self.text(self._ids([""]))[0]
        self.alphas = teacher.alphas_cumprod.float()
        self.skeleton = skeleton(teacher.alphas_cumprod)
        self.student = arch.base_unet(time_cond_proj_dim=arch.LCM_W_EMBED_DIM)
        missing, unexpected = self.student.load_state_dict(self.teacher.state_dict(), strict=False)
        if unexpected or any("cond_proj" not in k for k in missing):
            raise SystemExit(f"the student does not extend the teacher: missing {missing}, unexpected {unexpected}")
        torch.nn.init.zeros_(self.student.time_embedding.cond_proj.weight)
        if init is not None:
            self.student.load_state_dict(load_lcm_unet(init).state_dict())
        self.target = copy.deepcopy(self.student).requires_grad_(False)
        self.ema = copy.deepcopy(self.student).requires_grad_(False)
        self.opt = torch.optim.AdamW(self.student.parameters(), lr=lr, weight_decay=0.0)
        self.step = 0
        self.prior_steps = exported_lcm_steps(init) if init is not None else 0
        self.ckpt = run_dir / "lcm.pt"
        if self.ckpt.exists():
            self._load()

    def _ids(self, prompts: list[str]) -> torch.Tensor:
        return self.tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids

    # ---- checkpoints ----------------------------------------------------------------
    def _load(self) -> None:
        ck = torch.load(self.ckpt, weights_only=False)
        for name in ("student", "target", "ema"):
            getattr(self, name).load_state_dict(ck[name])
        self.opt.load_state_dict(ck["opt"])
        self.step, self.prior_steps = ck["step"], ck.get("prior_steps", 0)
        torch.set_rng_state(ck["torch_rng"])
        random.setstate(ck["py_rng"])

    def validate(self, count: int = 32, steps: int = 4) -> float:
        """Judged 4-step generation of the slow EMA on training-split captions (not the held-out ones)."""
        return judged(self.ema.state_dict(), count, steps)

    def save(self) -> None:
        score = self.validate()
        torch.save({"ema": self.ema.state_dict(), "step": self.step, "validation": score, "teacher": teacher_hash()}, self.ckpt.with_name(f"lcm_ema_{self.step}.pt"))
        print(f"\nstep {self.step}: validation 4-step judged {score:.0%}", flush=True)
        tmp = self.ckpt.with_suffix(".tmp")
        state = {name: getattr(self, name).state_dict() for name in ("student", "target", "ema")}
        state.update(
            opt=self.opt.state_dict(),
            step=self.step,
            prior_steps=self.prior_steps,
            torch_rng=torch.get_rng_state(),
            py_rng=random.getstate(),
            teacher=teacher_hash(),
        )
        torch.save(state, tmp)
        os.replace(tmp, self.ckpt)

    # ---- one distillation step ------------------------------------------------------
    def lr_at(self, step: int) -> float:
        if step < WARMUP:
            return self.lr * (step + 1) / WARMUP
        frac = min(1.0, (step - WARMUP) / max(1, self.steps - WARMUP))
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    def loss(self) -> torch.Tensor:
        b = self.batch
        idx = torch.randint(0, len(self.images32), (b,))
        x0 = self.images32[idx]
        n = torch.randint(0, len(self.skeleton), (b,))
        t_start = self.skeleton[n]  # t_{n+k}
        t_prev = (t_start - len(self.alphas) // len(self.skeleton)).clamp(min=0)  # t_n
        a_start = self.alphas[t_start].view(-1, 1, 1, 1)
        a_prev = self.alphas[t_prev].view(-1, 1, 1, 1)
        x = a_start.sqrt() * x0 + (1 - a_start).sqrt() * torch.randn_like(x0)
        lo, hi = arch.LCM_GUIDANCE_RANGE
        g = lo + (hi - lo) * torch.rand(b)
        w_emb = guidance_embedding(g - 1, arch.LCM_W_EMBED_DIM)
        with torch.no_grad():
            text = self.text(self.ids[idx])[0]
            # Teacher: guided eps at t_{n+k}, x0 thresholded, one DDIM step to t_n.
            eps_u, eps_c = self.teacher(torch.cat([x, x]), torch.cat([t_start, t_start]), torch.cat([self.uncond.expand(b, -1, -1), text])).sample.chunk(2)
            eps = eps_u + g.view(-1, 1, 1, 1) * (eps_c - eps_u)
            x0_t = ((x - (1 - a_start).sqrt() * eps) / a_start.sqrt()).clamp(-1, 1)
            eps = (x - a_start.sqrt() * x0_t) / (1 - a_start).sqrt()  # consistent with the clamped x0
            x_prev = a_prev.sqrt() * x0_t + (1 - a_prev).sqrt() * eps
            # Target: the EMA network's consistency function at (x_{t_n}, t_n).
            eps_tgt = self.target(x_prev, t_prev, text, timestep_cond=w_emb).sample
            skip, out = (c.view(-1, 1, 1, 1).float() for c in lcm_boundary_scalings(t_prev.double()))
            target = skip * x_prev + out * x0_from_eps(x_prev, eps_tgt, a_prev).clamp(-1, 1)
        eps_s = self.student(x, t_start, text, timestep_cond=w_emb).sample
        skip, out = (c.view(-1, 1, 1, 1).float() for c in lcm_boundary_scalings(t_start.double()))
        pred = skip * x + out * x0_from_eps(x, eps_s, a_start)
        return pseudo_huber(pred, target)

    @torch.no_grad()
    def update_averages(self) -> None:
        for avg, decay in ((self.target, TARGET_EMA), (self.ema, EXPORT_EMA)):
            for p_avg, p in zip(avg.parameters(), self.student.parameters()):
                p_avg.mul_(decay).add_(p.detach(), alpha=1 - decay)

    def run(self, save_every: int) -> None:
        loop.run(self, save_every, "distil lcm")


def judged(state: dict, count: int, steps: int = 4, seed: int = VALIDATION_SEED) -> float:
    """Judged generation of a student's weights on `count` training-split captions (never the held-out
    ones the README's numbers use), in batches of 32."""
    from inversion.pipeline import generate

    from .evaluate import to_uint8
    from .judge import has
    from .scenes import scenes

    model = shapes(lcm=True, lcm_state=state)
    items = scenes(seed, count, held_out=False, single_shape=True)
    hits = 0
    for i in range(0, count, 32):
        chunk = items[i : i + 32]
        with torch.no_grad():
            images = to_uint8(generate(model, [s.caption for s in chunk], steps=steps, seed=seed + i))
        hits += sum(has(img, s.shapes[0].colour, s.shapes[0].kind) for img, s in zip(images, chunk))
    return hits / count


EXPORT_JUDGED = 160  # captions the export judges each snapshot on: the 32 of a checkpoint's validation vary by +-6 points


def exported_lcm_steps(path: Path) -> int:
    with safe_open(str(path), "pt") as f:
        return int((f.metadata() or {}).get("lcm_steps", 0))


def load_lcm_unet(path: Path = LCM_WEIGHTS):
    """The distilled base UNet from an export (fp16 on disk, float32 here)."""
    from safetensors.torch import load_file

    unet = arch.base_unet(time_cond_proj_dim=arch.LCM_W_EMBED_DIM)
    raw = load_file(str(path))
    unet.load_state_dict({k[len("lcm.unet.") :]: v.float() for k, v in raw.items() if k.startswith("lcm.unet.")})
    return unet


def export(run_dir: Path, path: Path = LCM_WEIGHTS, step: int | None = None) -> Path:
    """Write a snapshot of the student's slow EMA (fp16): the best-judged one, or `step`'s."""
    snaps = {int(p.stem.rsplit("_", 1)[1]): p for p in run_dir.glob("lcm_ema_*.pt")}
    if not snaps:
        raise SystemExit(f"no distillation snapshots in {run_dir}; run `python -m shapes.train --stage lcm` first")
    loaded = {k: torch.load(v, weights_only=False) for k, v in snaps.items()}
    scores = {k: ck["validation"] for k, ck in loaded.items()}
    if step is None:  # the best on more captions than a checkpoint's quick validation
        scores = {k: judged(ck["ema"], EXPORT_JUDGED) for k, ck in loaded.items()}
        print("judged on", EXPORT_JUDGED, "training-split captions:", ", ".join(f"{k}: {v:.1%}" for k, v in sorted(scores.items())))
        step = max(scores, key=lambda k: (scores[k], k))
    if step not in loaded:
        raise SystemExit(f"no snapshot at step {step}; there are: {sorted(loaded)}")
    ck = loaded[step]
    if ck.get("teacher") != teacher_hash():
        raise SystemExit(f"step {step} was distilled from another shapes export ({ck.get('teacher')}); distil again")
    tensors = {f"lcm.unet.{k}": v.to(torch.float16).contiguous() for k, v in ck["ema"].items()}
    meta = {"lcm_steps": str(step), "teacher": ck["teacher"], "validation": f"{scores[step]:.3f}"}
    save_file(tensors, str(path), metadata=meta)
    path.chmod(0o644)
    print(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB), {meta}; validation by step: "
          + ", ".join(f"{k}: {loaded[k]['validation']:.0%}" for k in sorted(loaded)))
    return path
