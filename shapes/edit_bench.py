"""What inversion buys an edit: a PIE-Bench-style benchmark on the shapes world.

    python -m shapes.edit_bench                          # shapes, 20 steps, 50 held-out scenes -> eval.json "edit_bench"
    python -m shapes.edit_bench --model shapes-lcm       # 4 steps -> eval_lcm.json
    python -m shapes.edit_bench --scenes 2 --no-save     # a quick look

PnPInversion's PIE-Bench (Ju et al., ICLR 2024) judges an inversion by what an edit keeps:
background preservation outside the annotated edit region and structure. Our scene
generator knows the regions exactly, so for every editor x inverter (and P2P / MasaCtrl
with `pin_source`, Direct Inversion, as rows of their own), over held-out single-shape
scenes never trained on:
- success: the judge finds the asked colour/shape (p2p, diffedit: a colour change that keeps
  the shape, mask IoU >= 0.8; masactrl: a shape change that keeps the colour);
- background, outside the edit region (the object's mask, united with the new shape's for a
  shape change): PSNR and MSE over background pixels, SSIM of the images with the region
  blanked (PIE-Bench's masked metrics), LPIPS where its weights are on disk;
- structure: IoU of the edited object's mask with the original's (colour edits);
- edited region: the fraction of the original object's pixels now nearest the target colour;
- the inversion's own PSNR, NFE and seconds (inversion + edit).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from editing import edit
from inversion import invert, load_model
from inversion.cli_tools import parse_params
from inversion.inverters import INVERTERS
from inversion.metrics import lpips, ssim
from inversion.pipeline import evaluate

from .edit_tasks import edit_task, judge_edit
from .evaluate import OUT, to_tensor, to_uint8
from .scenes import render, scenes

SEED = 41  # a stream of held-out scenes of its own (evaluate.py uses 11, 23, 37)
ROWS = [(e, False) for e in ("p2p", "masactrl", "diffedit")] + [("p2p", True), ("masactrl", True)]


def background_metrics(edited: torch.Tensor, original: torch.Tensor, region: np.ndarray) -> dict:
    """PSNR / MSE over the pixels outside `region`, SSIM and LPIPS of the images with it blanked."""
    keep = torch.from_numpy(~region).to(edited)[None, None]
    diff = ((edited.clamp(-1, 1) - original) / 2) ** 2 * keep  # on the [0, 1] scale
    mse = float(diff.sum() / (keep.sum() * 3))
    blank_e, blank_o = edited.clamp(-1, 1) * keep, original * keep
    return {"bg_psnr": 100.0 if mse == 0 else min(100.0, 10 * float(np.log10(1 / mse))), "bg_mse": mse,
            "bg_ssim": ssim(blank_e, blank_o), "bg_lpips": lpips(blank_e, blank_o)}


def run(model, inverters, count: int, steps: int, seed: int = SEED, progress=print, params: dict | None = None, rows_of=ROWS) -> list[dict]:
    """Every editor (and pinned row) of `rows_of` with every inverter, `params` given to each inverter."""
    items = scenes(seed, count, held_out=True, single_shape=True)
    rows = []
    for inv_name in inverters:
        per = {(e, pin): [] for e, pin in rows_of}
        for i, s in enumerate(items):
            if i and i % 10 == 0:
                progress(f"edit bench {inv_name}: {i} of {len(items)} scenes")
            img, masks = render(s, 64)
            x = to_tensor(img)
            inv = invert(model, x, s.caption, inv_name, steps, **(params or {}))
            report, _ = evaluate(model, x, inv, per_stage=False)
            for ed, pin in rows_of:
                target, colour, shape, region = edit_task(s, ed)
                start = time.perf_counter()
                out = edit(model, inv, target, ed, **({"pin_source": True} if pin else {}))
                seconds = time.perf_counter() - start
                result = {**judge_edit(to_uint8(out.image)[0], colour, shape, ed, masks[0]), **background_metrics(out.image, x, region)}
                result.update(inversion_psnr=report["psnr"], inversion_psnr_uncorrected=report.get("psnr_uncorrected"),
                              nfe=inv.nfe + out.nfe, seconds=inv.seconds + seconds)
                per[(ed, pin)].append(result)
        for (ed, pin), results in per.items():
            row = {"inverter": inv_name, "editor": ed + (" + pin_source" if pin else ""), "scenes": len(results), "steps": steps, "params": dict(params or {})}
            for k in results[0]:
                vals = [r[k] for r in results if r[k] is not None]
                row[k] = float(np.mean(vals)) if vals else None
            rows.append(row)
            progress(f"edit bench {inv_name} {row['editor']}: success {row['success']:.0%}, background {row['bg_psnr']:.2f} dB")
    return rows


# What keeps a few-step inversion editable (the papers' own levers): the noise each step is inverted with,
# how much of the schedule is inverted (RNRI's official demo: 0.6), and whether the noise is corrected.
GRID = {"step_noise": ("drawn", "predicted"), "strength": (1.0, 0.5)}
GRID_EXTRA = ({"step_noise": "predicted", "strength": 1.0, "noise_correction": False},)
GRID_EDITORS = [(e, False) for e in ("p2p", "masactrl", "diffedit")]


def grid(model, inverters, count: int, steps: int, progress=print) -> dict:
    """Every inverter with every setting of GRID (stochastic samplers only: on DDIM step_noise is moot),
    on the three editors; per inverter the setting with the highest mean judged success, ties broken
    by the background kept. The chosen settings become the defaults for the model's sampler family."""
    import itertools

    settings = [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())] + [dict(e) for e in GRID_EXTRA]
    rows, chosen = [], {}
    for name in inverters:
        scored = []
        for setting in settings:
            got = run(model, [name], count, steps, params=setting, rows_of=GRID_EDITORS, progress=lambda *_: None)
            rows += got
            success = float(np.mean([r["success"] for r in got]))
            background = float(np.mean([r["bg_psnr"] for r in got]))
            scored.append((success, background, setting))
            progress(f"grid {name} {setting}: success {success:.0%}, background {background:.2f} dB")
        best = max(scored, key=lambda t: (round(t[0], 6), t[1]))
        chosen[name] = {"setting": best[2], "success": best[0], "background": best[1]}
    return {"rows": rows, "chosen": chosen}


def markdown(rows: list[dict]) -> str:
    lp = any(r["bg_lpips"] is not None for r in rows)
    head = "| inverter | editor | inversion PSNR | success | background PSNR | background SSIM | background MSE |" + (" LPIPS |" if lp else "") + " structure IoU | edited region | NFE | seconds |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['inverter']} | {r['editor']} | {r['inversion_psnr']:.2f} | {r['success']:.0%} | {r['bg_psnr']:.2f} | {r['bg_ssim']:.3f} | {r['bg_mse']:.5f} |"
            + (f" {r['bg_lpips']:.3f} |" if lp else "")
            + f" {r['structure_iou']:.2f} | {r['region_colour']:.0%} | {r['nfe']:.0f} | {r['seconds']:.2f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Background PSNR against inversion PSNR (LCM: without the last residual), one marker per inverter x editor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # an LCM inversion reconstructs exactly through its recorded noise: what separates the
    # inverters there is the reconstruction without the last step's residual
    x_key = "inversion_psnr_uncorrected" if all(r.get("inversion_psnr_uncorrected") is not None for r in rows) else "inversion_psnr"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    editors = list(dict.fromkeys(r["editor"] for r in rows))
    markers = dict(zip(editors, "osD^v"))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, inv_name in enumerate(dict.fromkeys(r["inverter"] for r in rows)):
        pts = [r for r in rows if r["inverter"] == inv_name]
        color = cycle[i % len(cycle)]
        for r in pts:
            ax.scatter(r[x_key], r["bg_psnr"], marker=markers[r["editor"]], color=color, label=inv_name if r is pts[0] else None)
    for ed in editors:
        ax.scatter([], [], marker=markers[ed], color="gray", label=ed)
    ax.set_xlabel("inversion PSNR (dB)" + (", without the last recorded residual" if x_key.endswith("uncorrected") else ""))
    ax.set_ylabel("background PSNR after the edit (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes", choices=list(OUT))
    ap.add_argument("--steps", type=int, default=None, help="default: the model's")
    ap.add_argument("--scenes", type=int, default=50)
    ap.add_argument("--inverters", default=",".join(INVERTERS))
    ap.add_argument("--no-save", action="store_true", help="print only; keep eval*.json and the plot as they are")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--inverter-param", action="append", default=[], metavar="NAME=VALUE", help="given to every inverter (repeatable)")
    ap.add_argument("--grid", action="store_true", help="choose each inverter's step_noise and strength by this benchmark (-> edit_grid in the JSON)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = load_model(a.model)
    steps = a.steps or model.stages[0].default_steps
    if a.grid:
        with torch.no_grad():
            result = grid(model, a.inverters.split(","), a.scenes, steps)
        for name, c in result["chosen"].items():
            print(f"{name}: {c['setting']} (success {c['success']:.0%}, background {c['background']:.2f} dB)")
        if not a.no_save:  # merged into what is there: the inverters can be measured by separate runs
            out = OUT[a.model]
            results = json.loads(out.read_text()) if out.exists() else {}
            saved = results.get("edit_grid", {})
            if saved.get("scenes") != a.scenes or saved.get("steps") != steps:
                saved = {"scenes": a.scenes, "steps": steps, "seed": SEED, "grid": {k: list(v) for k, v in GRID.items()}, "extra": list(GRID_EXTRA), "rows": [], "chosen": {}}
            names = set(result["chosen"])
            saved["rows"] = [r for r in saved["rows"] if r["inverter"] not in names] + result["rows"]
            saved["chosen"].update(result["chosen"])
            results["edit_grid"] = saved
            out.write_text(json.dumps(results, indent=1))
        return result["rows"]
    with torch.no_grad():
        rows = run(model, a.inverters.split(","), a.scenes, steps, params=parse_params(a.inverter_param))
    print(markdown(rows))
    if not a.no_save:  # merged like the grid's: an inverter measured alone replaces only its own rows
        out = OUT[a.model]
        results = json.loads(out.read_text()) if out.exists() else {}
        saved = results.get("edit_bench", {})
        if saved.get("scenes") != a.scenes or saved.get("steps") != steps or saved.get("seed") != SEED:
            saved = {"scenes": a.scenes, "steps": steps, "seed": SEED, "rows": []}
        names = {r["inverter"] for r in rows}
        kept = [r for r in saved["rows"] if r["inverter"] not in names]
        saved["rows"] = sorted(kept + rows, key=lambda r: list(INVERTERS).index(r["inverter"]))
        results["edit_bench"] = saved
        out.write_text(json.dumps(results, indent=1))
        plot(saved["rows"], out.with_name(f"edit_bench_{a.model}.png"), f"{a.model}, {steps} steps, {a.scenes} held-out scenes")
    return rows


if __name__ == "__main__":
    main()
