"""Is each inverter's noise noise? z_T and step-noise statistics on held-out scenes.

    python -m shapes.noise_stats --model shapes-lcm              # -> assets/shapes/noise_stats.json
    python -m shapes.noise_stats --model shapes-lcm --scenes 4 --no-save
    python -m shapes.noise_stats --model shapes-lcm --param step_noise=drawn --label "drawn noise"

For every inverter (its defaults on the model, plus --param overrides) over held-out single-shape
scenes: the statistics of `inversion.noise_stats` averaged over scenes (z_T, the noise z_T implies,
each recorded step noise), the share of scenes whose implied noise passes as N(0, 1), and which part
carries the image (reconstruction PSNR with fresh step noise, with a fresh z_T). Results are kept per
label, so a run before a model change stays beside the run after it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from inversion import invert, load_model
from inversion.cli_tools import parse_params
from inversion.inverters import INVERTERS
from inversion.noise_stats import carried, looks_gaussian, noise_statistics
from inversion.result import stage_inversions

from .evaluate import to_tensor
from .scenes import render, scenes

OUT = Path(__file__).resolve().parents[1] / "assets" / "shapes" / "noise_stats.json"
SEED = 53  # held-out scenes of their own


def _mean(dicts: list[dict]) -> dict:
    return {k: float(np.mean([d[k] for d in dicts])) for k in dicts[0]}


def measure(model, inverters: list[str], count: int, params: dict, progress=print) -> list[dict]:
    items = scenes(SEED, count, held_out=True, single_shape=True)
    rows = []
    for name in inverters:
        per = []
        for s in items:
            x = to_tensor(render(s, 64)[0])
            inv = invert(model, x, s.caption, name, **params)
            base = stage_inversions(inv)[0]
            per.append({"stats": noise_statistics(base, model.stages[0].alphas_cumprod if hasattr(model, "stages") else model.alphas_cumprod),
                        "carried": carried(model, inv, x)})
        row = {"inverter": name, "params": params, "scenes": count, "t_start": per[0]["stats"]["t_start"],
               "z_T": _mean([p["stats"]["z_T"] for p in per]),
               "implied_noise": _mean([p["stats"]["implied_noise"] for p in per]),
               "gaussian": float(np.mean([looks_gaussian(p["stats"]["implied_noise"]) for p in per])),
               "carried": _mean([p["carried"] for p in per])}
        if "step_noise" in per[0]["stats"]:
            row["step_noise"] = [_mean([p["stats"]["step_noise"][j] for p in per]) for j in range(len(per[0]["stats"]["step_noise"]))]
        rows.append(row)
        progress(f"{name}: implied noise std {row['implied_noise']['std']:.3f}, KS {row['implied_noise']['ks']:.3f}, "
                 f"Gaussian in {row['gaussian']:.0%}; PSNR with fresh step noise {row['carried'].get('psnr_fresh_step_noise', float('nan')):.1f}, "
                 f"with a fresh z_T {row['carried']['psnr_fresh_z_T']:.1f}")
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| inverter | z_T std | z_T kurtosis | implied noise: std, KS from N(0,1) | Gaussian | step noise std (per step) "
            "| PSNR, fresh step noise | PSNR, fresh z_T |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        steps = ", ".join(f"{s['std']:.2f}" for s in r.get("step_noise", [])) or "-"
        c = r["carried"]
        fresh_steps = f"{c['psnr_fresh_step_noise']:.1f}" if "psnr_fresh_step_noise" in c else "-"
        lines.append(f"| {r['inverter']} | {r['z_T']['std']:.3f} | {r['z_T']['kurtosis']:.2f} | {r['implied_noise']['std']:.3f}, {r['implied_noise']['ks']:.3f} "
                     f"| {r['gaussian']:.0%} | {steps} | {fresh_steps} | {c['psnr_fresh_z_T']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes-lcm")
    ap.add_argument("--scenes", type=int, default=20)
    ap.add_argument("--inverters", default=",".join(INVERTERS))
    ap.add_argument("--param", action="append", default=[], help="name=value for every inverter (repeatable)")
    ap.add_argument("--label", help="the key the results are saved under (default: the model's name)")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = load_model(a.model)
    params = parse_params(a.param)
    rows = measure(model, a.inverters.split(","), a.scenes, params)
    print(markdown(rows))
    if not a.no_save:
        results = json.loads(OUT.read_text()) if OUT.exists() else {}
        results[a.label or a.model] = {"model": a.model, "scenes": a.scenes, "seed": SEED, "rows": rows}
        OUT.write_text(json.dumps(results, indent=1))
    return rows


if __name__ == "__main__":
    main()
