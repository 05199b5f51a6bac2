"""Measure the `shapes` model with the judge: generation, inversion, editing.

    python -m shapes.evaluate                 # the full run behind the README's tables (~tens of minutes on 2 cores)
    python -m shapes.evaluate --quick         # a few scenes, for a quick look
    python -m shapes.evaluate --skip generation --inverters rnri   # re-measure one inverter's rows
    python -m shapes.evaluate --model shapes-lcm --steps 4         # the distilled model -> eval_lcm.json

- Generation: held-out captions (colour, shape, background triples never seen in
  training), one shape each; the judge checks the asked colour and shape.
- Inversion: every inverter's reconstruction PSNR on generated scenes and on
  held-out dataset scenes, beside the codec bound (identity for a pixel model).
- Editing, on held-out single-shape dataset scenes, for every inverter:
  p2p colour change (target colour reached, shape kept, mask IoU >= 0.8 with the
  original object), masactrl shape change (target shape reached, colour kept),
  diffedit colour change (as p2p) and its mask's IoU against the true mask.
Writes JSON (numbers) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from editing import edit
from inversion import generate, invert, load_model
from inversion.inverters import INVERTERS
from inversion.pipeline import evaluate

from .edit_tasks import edit_task, judge_edit
from .judge import find_objects, has, mask_iou
from .scenes import render, scenes

OUT = {"shapes": Path(__file__).resolve().parents[1] / "assets" / "shapes" / "eval.json",
       "shapes-lcm": Path(__file__).resolve().parents[1] / "assets" / "shapes" / "eval_lcm.json"}


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1).float().unsqueeze(0) / 127.5 - 1


def eval_generation(model, count: int, guidances, steps: int, seed: int = 11) -> dict:
    """Judged generation per guidance (keys: the guidance) at a fixed step count."""
    return {str(g): _judged(model, count, steps, g, seed, f"guidance {g}") for g in guidances}


def eval_generation_steps(model, count: int, step_counts, guidance: float, seed: int = 11) -> dict:
    """Judged generation per step count (keys: the steps) at one guidance: how few steps suffice."""
    return {str(n): _judged(model, count, n, guidance, seed, f"{n} steps") for n in step_counts}


def eval_sr_samplers(model, count: int, seed: int = 11) -> list[dict]:
    """shapes-lcm's SR stage at 1, 2, 4, 8 steps, DDIM (trailing) against LCMScheduler's multistep
    rule, from the same 4-step base images and noise: judged, and PSNR against 20 DDIM steps."""
    import copy

    from inversion.metrics import psnr as image_psnr
    from inversion.models import shapes_arch as arch
    from inversion.models.unet_model import schedule_fields
    from inversion.sampling import sample

    base, sr = model.stages
    items = scenes(seed, count, held_out=True, single_shape=True)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((count, 3, base.image_size, base.image_size), generator=g)
    noises = torch.randn((base.default_steps, *z.shape), generator=g)
    noises[-1] = 0
    low = base.decode(sample(base, z, base.encode_prompt([s.caption for s in items]), base.sampler(base.default_steps), noises))
    z_sr, c_noise = (torch.randn((count, 3, sr.image_size, sr.image_size), generator=g) for _ in range(2))
    cond = sr.encode_prompt([s.caption for s in items]).with_image(*model.sr_condition(1, low, c_noise))

    def run(kind, steps, scheduler):
        stage = copy.copy(sr)
        stage.timestep_fn, stage.sampler_kind = schedule_fields(scheduler)["timestep_fn"], kind
        smp = stage.sampler(steps)
        nz = torch.randn((steps, *z_sr.shape), generator=torch.Generator().manual_seed(seed)) if smp.stochastic else None
        if nz is not None:
            nz[-1] = 0
        return sample(stage, z_sr, cond, smp, nz)

    def judged(img):
        return sum(has(i, s.shapes[0].colour, s.shapes[0].kind) for i, s in zip(to_uint8(img), items)) / count

    ref = run("ddim", 20, arch.scheduler())
    rows = [{"sampler": "ddim (leading)", "steps": 20, "judged": judged(ref), "psnr_vs_20_ddim": None}]
    for kind, scheduler in (("ddim", arch.scheduler("trailing")), ("lcm", arch.sr_lcm_scheduler())):
        for steps in (1, 2, 4, 8):
            out = run(kind, steps, scheduler)
            rows.append({"sampler": "ddim (trailing)" if kind == "ddim" else "lcm (multistep)", "steps": steps, "judged": judged(out), "psnr_vs_20_ddim": image_psnr(out, ref)})
            print(f"sr {rows[-1]}", flush=True)
    return rows


def _judged(model, count: int, steps: int, g: float, seed: int, label: str) -> dict:
    items = scenes(seed, count, held_out=True, single_shape=True)
    ok = colour = shape = 0
    for i in range(0, count, 16):
        batch = items[i : i + 16]
        imgs = to_uint8(generate(model, [s.caption for s in batch], steps=steps, guidance=g, seed=seed + i))
        for img, s in zip(imgs, batch):
            want = s.shapes[0]
            objs, _ = find_objects(img)
            ok += has(img, want.colour, want.kind)
            colour += any(o.colour == want.colour for o in objs)
            shape += any(o.shape == want.kind for o in objs)
    print(f"generation {label}: colour+shape {ok / count:.3f} (colour {colour / count:.3f}, shape {shape / count:.3f}) over {count}", flush=True)
    return {"colour_and_shape": ok / count, "colour": colour / count, "shape": shape / count, "samples": count, "steps": steps, "guidance": g}


def eval_inversion(model, inverters, count: int, steps: int, guidance: float, seed: int = 23) -> list[dict]:
    """Reconstruction per inverter on generated and held-out dataset scenes. For an LCM base stage
    also without the last step's recorded residual (`psnr_uncorrected_*`): the inverter's own error."""
    data = scenes(seed, count, held_out=True)
    gen_scenes = scenes(seed + 1, count, held_out=True, single_shape=True)
    gen_steps = None if model.stages[0].sampler_kind == "lcm" else 50  # the model's own few steps, or a fine DDIM
    generated = to_uint8(generate(model, [s.caption for s in gen_scenes], steps=gen_steps, guidance=guidance, seed=seed))
    sets = {"generated": [(to_tensor(img), s.caption) for img, s in zip(generated, gen_scenes)],
            "dataset": [(to_tensor(render(s, 64)[0]), s.caption) for s in data]}
    rows = []
    for name in inverters:
        row = {"inverter": name, "steps": steps}
        for label, items in sets.items():
            ps, ss, nfe, secs, base, bare, bare_base = [], [], [], [], [], [], []
            for x, caption in items:
                inv = invert(model, x, caption, name, steps)
                r, _ = evaluate(model, x, inv)
                ps.append(r["psnr"]), ss.append(r["ssim"]), nfe.append(r["nfe"]), secs.append(r["seconds"])
                base.append(r["stages"][0]["latent_psnr"])
                if "psnr_uncorrected" in r:
                    bare.append(r["psnr_uncorrected"]), bare_base.append(r["latent_psnr_uncorrected"])
            row.update({f"psnr_{label}": float(np.mean(ps)), f"ssim_{label}": float(np.mean(ss)), f"base_psnr_{label}": float(np.mean(base))})
            if bare:
                row.update({f"psnr_uncorrected_{label}": float(np.mean(bare)), f"base_psnr_uncorrected_{label}": float(np.mean(bare_base))})
            row["nfe"], row["seconds"] = float(np.mean(nfe)), float(np.mean(secs))
        row["codec_bound"] = "identity (pixel model)"
        rows.append(row)
        print(f"inversion {name}: {row}", flush=True)
    return rows


def eval_editing(model, inverters, editors, count: int, steps: int, seed: int = 37) -> list[dict]:
    items = scenes(seed, count, held_out=True, single_shape=True)
    prepared = [(s, *render(s, 64)) for s in items]
    rows = []
    for inv_name in inverters:
        stats = {e: {"success": 0, "iou": [], "mask_iou": []} for e in editors}
        start = time.perf_counter()
        for s, img, masks in prepared:
            x, true_mask = to_tensor(img), masks[0]
            inv = invert(model, x, s.caption, inv_name, steps)
            for ed in editors:
                target, want_colour, want_shape, _ = edit_task(s, ed)
                out = edit(model, inv, target, ed)
                judged = judge_edit(to_uint8(out.image)[0], want_colour, want_shape, ed, true_mask)
                stats[ed]["success"] += judged["success"]
                stats[ed]["iou"].append(judged["structure_iou"])
                if out.mask is not None and ed == "diffedit":
                    m = F.interpolate(out.mask.float(), size=true_mask.shape, mode="nearest")[0, 0].cpu().numpy() > 0.5
                    stats[ed]["mask_iou"].append(mask_iou(m, true_mask))
        for ed in editors:
            st = stats[ed]
            row = {"inverter": inv_name, "editor": ed, "scenes": count, "success": st["success"] / count, "mean_object_iou": float(np.mean(st["iou"]))}
            if st["mask_iou"]:
                row["mask_iou"] = float(np.mean(st["mask_iou"]))
                row["mask_iou_at_least_0.5"] = float(np.mean(np.array(st["mask_iou"]) >= 0.5))
            rows.append(row)
            print(f"editing {inv_name} {ed}: {row}", flush=True)
        print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    return rows


def markdown(results: dict) -> str:
    lines = []
    if "generation_steps" in results:
        lines += ["Generation by steps (held-out captions, judge at 64 px; steps per stage):", "", "| steps | colour and shape | colour | shape |", "|---|---|---|---|"]
        for n, r in results["generation_steps"].items():
            lines.append(f"| {n} | {r['colour_and_shape']:.1%} | {r['colour']:.1%} | {r['shape']:.1%} |")
        lines.append("")
    lines += ["Generation (held-out captions, judge at 64 px):", "", "| guidance | colour and shape | colour | shape |", "|---|---|---|---|"]
    for g, r in results["generation"].items():
        lines.append(f"| {g} | {r['colour_and_shape']:.1%} | {r['colour']:.1%} | {r['shape']:.1%} |")
    bare = "psnr_uncorrected_generated" in results["inversion"][0]
    head = "| inverter | NFE | seconds | PSNR generated | PSNR dataset | SSIM dataset |" + (" PSNR generated, no residual | base stage, no residual (generated) |" if bare else "")
    lines += ["", "Inversion (PSNR in dB at 64 px; codec bound: identity):", "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in results["inversion"]:
        row = f"| {r['inverter']} | {r['nfe']:.0f} | {r['seconds']:.2f} | {r['psnr_generated']:.2f} | {r['psnr_dataset']:.2f} | {r['ssim_dataset']:.3f} |"
        if bare:
            row += f" {r['psnr_uncorrected_generated']:.2f} | {r['base_psnr_uncorrected_generated']:.2f} |"
        lines.append(row)
    lines += ["", "Editing success (held-out scenes):", "", "| inverter | p2p colour | masactrl shape | diffedit colour | diffedit mask IoU |", "|---|---|---|---|---|"]
    by = {(r["inverter"], r["editor"]): r for r in results["editing"]}
    for inv in dict.fromkeys(r["inverter"] for r in results["editing"]):
        p, m, d = by.get((inv, "p2p")), by.get((inv, "masactrl")), by.get((inv, "diffedit"))
        lines.append(f"| {inv} | {p['success']:.0%} | {m['success']:.0%} | {d['success']:.0%} | {d.get('mask_iou', float('nan')):.2f} |")
    return "\n".join(lines)


def merge_rows(old: dict, new: dict, inverters: list[str]) -> dict:
    """Rows of re-measured inverters replace theirs; everything else is kept."""
    merged = {**old, **{k: v for k, v in new.items() if k not in ("inversion", "editing")}}
    for part in ("inversion", "editing"):
        if part in new:
            kept = [r for r in old.get(part, []) if r["inverter"] not in inverters]
            merged[part] = sorted(kept + new[part], key=lambda r: list(INVERTERS).index(r["inverter"]))
    return merged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default="shapes", choices=list(OUT))
    ap.add_argument("--steps", type=int, default=None, help="inversion and editing steps (default: the model's)")
    ap.add_argument("--out", type=Path, default=None, help="default: assets/shapes/eval.json (shapes), eval_lcm.json (shapes-lcm)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: generation,inversion,editing")
    ap.add_argument("--inverters", default=",".join(INVERTERS), help="a subset re-measures those rows and keeps the rest of --out")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = load_model(a.model)
    base = model.stages[0]
    lcm = base.sampler_kind == "lcm"
    steps = a.steps or base.default_steps
    out = a.out or OUT[a.model]
    n_gen, n_inv, n_edit = (32, 4, 6) if a.quick else (200, 20, 50)
    inverters = a.inverters.split(",")
    skip = set(filter(None, a.skip.split(",")))
    results = {"model": a.model, "steps": steps, "machine": "2 CPU cores, no GPU"}
    start = time.perf_counter()

    def save(part: str, value) -> None:
        """Each part is written as soon as it is measured: a long run stopped late keeps the rest."""
        results[part] = value
        results["seconds"] = time.perf_counter() - start
        if not a.quick:
            out.write_text(json.dumps(merge_rows(json.loads(out.read_text()) if out.exists() else {}, results, inverters), indent=1))

    with torch.no_grad():
        if "generation" not in skip and lcm:
            save("sr_samplers", eval_sr_samplers(model, min(n_gen, 96)))
            save("generation_steps", eval_generation_steps(model, n_gen, (1, 2, 4, 8), base.default_guidance))
            save("generation", eval_generation(model, n_gen, (2.0, 3.0, 5.0), steps=base.default_steps))
        elif "generation" not in skip:
            save("generation", eval_generation(model, n_gen, (3.0, 5.0, 7.5), steps=50))
        if "inversion" not in skip:
            save("inversion", eval_inversion(model, inverters, n_inv, steps, guidance=base.default_guidance if lcm else 3.0))
        if "editing" not in skip:
            save("editing", eval_editing(model, inverters, ["p2p", "masactrl", "diffedit"], n_edit, steps))
    if {"generation", "inversion", "editing"} <= set(results):
        print(markdown(results))


if __name__ == "__main__":
    main()
