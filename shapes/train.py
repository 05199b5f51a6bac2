"""Train the `shapes` cascade on 2 CPU cores: resumable, with a progress bar.

    python -m shapes.train --stage base --steps 6000   # 32x32 text-to-image (~70 min)
    python -m shapes.train --stage sr --steps 2500     # 32 -> 64 super-resolution (~15 min)
    python -m shapes.train --export                    # EMA weights -> assets/shapes/
    python -m shapes.train --stage base --steps 5000 --lr 2.5e-4 --init assets/shapes/shapes.safetensors
    python -m shapes.train --stage lcm --steps 4000    # consistency-distil the base stage (shapes-lcm)
    python -m shapes.train --export-lcm                # -> assets/shapes/shapes_lcm.safetensors

Checkpoints go to runs/shapes/ every --save-every steps; re-running a stage
resumes from its checkpoint. --init continues a stage from exported weights
(fresh optimiser, a new warm-up) when its checkpoint is gone. The export writes
fp16 weights (a few MB) and the tokenizer's vocabulary, which is what the
`shapes` model loads; a stage with no checkpoint keeps its exported weights.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from inversion.models import shapes_arch as arch
from inversion.models.tokenizers import WORDS, build_clip_tokenizer, clip_vocab

from . import distill, loop
from .scenes import render, scenes

RUN_DIR = Path(os.environ.get("SHAPES_RUN_DIR", "runs/shapes"))
ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "shapes"
CAPTION_DROPOUT = 0.1


def dataset(count: int, seed: int = 1234) -> tuple[np.ndarray, list[str]]:
    """Training scenes (held-out triples excluded) rendered at 64 px, cached on disk."""
    path = RUN_DIR / f"data_{count}_{seed}.npz"
    if path.exists():
        d = np.load(path)
        return d["images"], list(d["captions"])
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    items = scenes(seed, count, held_out=False)
    images = np.stack([render(s, arch.SR_SIZE)[0] for s in tqdm(items, desc="rendering scenes")])
    captions = [s.caption for s in items]
    np.savez(path, images=images, captions=np.array(captions))
    return images, captions


def to_unit(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def downsample(x: torch.Tensor) -> torch.Tensor:
    """64 -> 32 by 2x2 area averaging: how every low-res image of the cascade is made."""
    return F.avg_pool2d(x, 2)


def upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


class Trainer:
    def __init__(self, stage: str, batch: int, lr: float, steps: int, data_count: int, init: Path | None = None):
        self.stage, self.batch, self.lr, self.steps = stage, batch, lr, steps
        self.tok = build_clip_tokenizer()
        images, captions = dataset(data_count)
        self.images64 = to_unit(images)
        self.ids = self.tok(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        self.empty_ids = self.tok([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
        alphas = arch.scheduler().alphas_cumprod
        self.sqrt_a = alphas.sqrt()
        self.sqrt_1ma = (1 - alphas).sqrt()
        if stage == "base":
            self.unet = arch.base_unet()
            self.text = arch.text_encoder(self.tok)
            params = list(self.unet.parameters()) + list(self.text.parameters())
        else:
            self.unet = arch.sr_unet()
            self.text = None
            params = list(self.unet.parameters())
        self.opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
        self.ema = {k: v.detach().clone() for k, v in self._state().items()}
        self.step = 0
        self.prior_steps = 0  # steps trained before --init's export
        self.ckpt = RUN_DIR / f"{stage}.pt"
        if self.ckpt.exists():
            self._load()
        elif init is not None:
            self._init_from(init)

    def _init_from(self, path: Path) -> None:
        """Start from exported (EMA, fp16) weights: model and EMA both begin there."""
        prefix = f"{self.stage}."
        weights = {k[len(prefix) :]: v.float() for k, v in load_file(str(path)).items() if k.startswith(prefix)}
        own = self._state()
        if set(weights) != set(own):
            raise SystemExit(f"{path} does not hold the {self.stage} stage of this architecture")
        with torch.no_grad():
            for k, v in own.items():
                v.copy_(weights[k])
        self.ema = {k: v.clone() for k, v in weights.items()}
        self.prior_steps = exported_steps(path).get(self.stage, 0)

    def _state(self) -> dict[str, torch.Tensor]:
        sd = {f"unet.{k}": v for k, v in self.unet.state_dict().items()}
        if self.text is not None:
            sd.update({f"text.{k}": v for k, v in self.text.state_dict().items()})
        return sd

    def _load(self) -> None:
        ck = torch.load(self.ckpt, weights_only=False)
        self.unet.load_state_dict(ck["unet"])
        if self.text is not None:
            self.text.load_state_dict(ck["text"])
        self.opt.load_state_dict(ck["opt"])
        self.ema = ck["ema"]
        self.step = ck["step"]
        self.prior_steps = ck.get("prior_steps", 0)
        torch.set_rng_state(ck["torch_rng"])
        random.setstate(ck["py_rng"])

    def save(self) -> None:
        tmp = self.ckpt.with_suffix(".tmp")
        torch.save(
            {
                "unet": self.unet.state_dict(),
                "text": self.text.state_dict() if self.text is not None else None,
                "opt": self.opt.state_dict(),
                "ema": self.ema,
                "step": self.step,
                "prior_steps": self.prior_steps,
                "torch_rng": torch.get_rng_state(),
                "py_rng": random.getstate(),
            },
            tmp,
        )
        os.replace(tmp, self.ckpt)

    def lr_at(self, step: int) -> float:
        warmup = 300
        if step < warmup:
            return self.lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, self.steps - warmup)
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    def loss(self) -> torch.Tensor:
        idx = torch.randint(0, len(self.images64), (self.batch,))
        t = torch.randint(0, 1000, (self.batch,))
        if self.stage == "base":
            x0 = downsample(self.images64[idx])
            ids = self.ids[idx].clone()
            drop = torch.rand(self.batch) < CAPTION_DROPOUT
            ids[drop] = self.empty_ids
            cond = self.text(ids).last_hidden_state
            noise = torch.randn_like(x0)
            xt = self.sqrt_a[t].view(-1, 1, 1, 1) * x0 + self.sqrt_1ma[t].view(-1, 1, 1, 1) * noise
            pred = self.unet(xt, t, cond).sample
        else:
            hi = self.images64[idx]
            low = upsample(downsample(hi), arch.SR_SIZE)
            # Fully convolutional: train on aligned 32x32 crops, run on 64x64.
            c = arch.BASE_SIZE
            oy, ox = (random.randrange(0, arch.SR_SIZE - c + 1, 2) for _ in range(2))
            hi, low = hi[:, :, oy : oy + c, ox : ox + c], low[:, :, oy : oy + c, ox : ox + c]
            s = torch.randint(0, arch.SR_TRAIN_MAX_NOISE_LEVEL + 1, (self.batch,))
            low = self.sqrt_a[s].view(-1, 1, 1, 1) * low + self.sqrt_1ma[s].view(-1, 1, 1, 1) * torch.randn_like(low)
            noise = torch.randn_like(hi)
            xt = self.sqrt_a[t].view(-1, 1, 1, 1) * hi + self.sqrt_1ma[t].view(-1, 1, 1, 1) * noise
            pred = self.unet(torch.cat([xt, low], 1), t, torch.zeros(self.batch, 1, arch.TEXT_DIM), class_labels=s).sample
            v = self.sqrt_a[t].view(-1, 1, 1, 1) * noise - self.sqrt_1ma[t].view(-1, 1, 1, 1) * hi
            return F.mse_loss(pred, v)
        return F.mse_loss(pred, noise)

    @torch.no_grad()
    def update_averages(self) -> None:
        decay = min(0.999, (1 + self.step) / (10 + self.step))
        for k, v in self._state().items():
            self.ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)

    def run(self, save_every: int) -> None:
        loop.run(self, save_every, f"train {self.stage}")


def exported_steps(path: Path) -> dict[str, int]:
    """Training steps per stage recorded in an export's metadata."""
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return {k.removesuffix("_steps"): int(v) for k, v in meta.items() if k.endswith("_steps")}


def export() -> Path:
    """Write the EMA weights of both stages (fp16) and the tokenizer vocabulary to assets/shapes/."""
    ASSET_DIR.mkdir(parents=True, exist_ok=True)
    path = ASSET_DIR / "shapes.safetensors"
    previous = load_file(str(path)) if path.exists() else {}
    previous_steps = exported_steps(path) if path.exists() else {}
    tensors, meta = {}, {}
    for stage in ("base", "sr"):
        ckpt = RUN_DIR / f"{stage}.pt"
        if not ckpt.exists():
            kept = {k: v for k, v in previous.items() if k.startswith(f"{stage}.")}
            if not kept:
                raise SystemExit(f"no checkpoint {ckpt} and no exported {stage} weights to keep")
            tensors.update(kept)
            meta[f"{stage}_steps"] = previous_steps.get(stage, 0)
            continue
        ck = torch.load(ckpt, weights_only=False)
        meta[f"{stage}_steps"] = ck.get("prior_steps", 0) + ck["step"]
        for k, v in ck["ema"].items():
            tensors[f"{stage}.{k}"] = v.to(torch.float16).contiguous()
    save_file(tensors, str(path), metadata={k: str(v) for k, v in meta.items()})
    vocab, merges = clip_vocab(tuple(WORDS))
    (ASSET_DIR / "tokenizer.json").write_text(json.dumps({"vocab": vocab, "merges": merges}))
    print(f"exported {path} ({path.stat().st_size / 1e6:.1f} MB), {meta}")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["base", "sr", "lcm"], help="lcm: distil the base stage into shapes-lcm (shapes/distill.py)")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, help="default 5e-4 (base, sr), 1e-4 (lcm)")
    p.add_argument("--data", type=int, default=40000, help="number of training scenes")
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--export", action="store_true")
    p.add_argument("--export-lcm", action="store_true", help="export the distilled shapes-lcm student (the best-judged snapshot)")
    p.add_argument("--lcm-step", type=int, help="export this step's snapshot instead")
    p.add_argument("--init", type=Path, help="continue a stage from these exported weights (no checkpoint)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.stage:
        torch.manual_seed(0)
        random.seed(0)
        if a.stage == "lcm":
            images, captions = dataset(a.data)
            distill.Distiller(a.batch, a.lr or 1e-4, a.steps, to_unit(images), captions, RUN_DIR, a.init).run(a.save_every)
        else:
            Trainer(a.stage, a.batch, a.lr or 5e-4, a.steps, a.data, a.init).run(a.save_every)
    if a.export:
        export()
    if a.export_lcm:
        distill.export(RUN_DIR, step=a.lcm_step)


if __name__ == "__main__":
    main()
