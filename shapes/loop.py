"""The optimisation loop the training stages and the distillation share: the learning rate of each
step, gradient clipping, the job's own averages (EMA), checkpoints and a progress bar.

A job has `opt`, `step`, `steps`, `lr_at(step)`, `loss()`, `update_averages()` and `save()`."""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

GRAD_CLIP = 1.0  # max gradient norm, every stage


def run(job, save_every: int, desc: str) -> None:
    bar = tqdm(total=job.steps, initial=job.step, desc=desc, mininterval=5)
    smooth, t0 = None, time.time()
    while job.step < job.steps:
        for group in job.opt.param_groups:
            group["lr"] = job.lr_at(job.step)
        loss = job.loss()
        job.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in job.opt.param_groups for p in g["params"]], GRAD_CLIP)
        job.opt.step()
        job.update_averages()
        job.step += 1
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{smooth:.4f}", refresh=False)
        if job.step % save_every == 0 or job.step == job.steps:
            job.save()
    bar.close()
    print(f"{desc}: {job.step} steps, last loss {smooth}, {time.time() - t0:.0f} s this run", flush=True)
