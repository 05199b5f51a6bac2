"""Rare-concept seeds on the shapes world: do inverted seeds generate held-out concepts more often
than random noise?

    python -m shapes.rare_seeds                         # shapes, 20 steps per stage -> assets/shapes/rare_seeds.json (~15 min, 1 core)
    python -m shapes.rare_seeds --model shapes-lcm      # 4 + 4 steps (~6 min)
    python -m shapes.rare_seeds --triples 2 --samples 1 --strengths 0.5 --no-save   # a quick look

The concepts are held-out (colour, shape, background) triples (`shapes.scenes.is_held_out`): the
model never saw that colour and shape on that background in training. For each triple, 3
reference scenes (the triple at random positions and sizes, a plain background, rendered with
`shapes.scenes.render`) are inverted with each inverter; `samples` images of the triple's caption
are sampled per configuration (`editing.sample_seeds`: inverter x combine x strength, and for an
LCM x reused/fresh per-step noise). Strength 1 is fresh noise alone, i.e. ordinary text-to-image
sampling: the random-noise baseline. Sample i of a triple takes the same fresh draw in every
configuration (paired comparison). Judged at 64 px in code (`shapes.judge`): correct when an
object of the asked colour and shape is found and the background is the asked colour; also
diversity (mean pairwise RMS distance of a triple's samples, pixels in [0, 1]) and the mean RMS
distance of each sample to its nearest reference (small: a copy).
Prints a Markdown table; progress on stderr; numbers in assets/shapes/rare_seeds.json (per model).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from editing import concept_seeds, sample_seeds
from inversion import invert, load_model

from .evaluate import to_tensor, to_uint8
from .judge import find_objects
from .scenes import COLOURS, SHAPES, Scene, Shape, _stable_hash, render

OUT = Path(__file__).resolve().parents[1] / "assets" / "shapes" / "rare_seeds.json"
SEED = 53  # a stream of its own (evaluate.py uses 11, 23, 37; edit_bench 41)
REFERENCES = 3


def held_out_triples() -> list[tuple[str, str, str]]:
    """Every held-out (colour, shape, background) triple with colour != background, in a fixed order."""
    return [(c, k, b) for c in COLOURS for k in SHAPES for b in COLOURS
            if c != b and _stable_hash(f"{c}|{k}|{b}") % 8 == 0]


def pick_triples(count: int, seed: int = SEED) -> list[tuple[str, str, str]]:
    triples = held_out_triples()
    random.Random(seed).shuffle(triples)
    if count > len(triples):
        raise SystemExit(f"there are {len(triples)} held-out triples; asked for {count}")
    return triples[:count]


def reference_scenes(triple: tuple[str, str, str], count: int = REFERENCES, seed: int = SEED) -> list[Scene]:
    """`count` scenes of the triple: one shape at a random position and size, a plain background."""
    colour, kind, bg = triple
    rng = random.Random(f"{seed}|{colour}|{kind}|{bg}")
    out = []
    for _ in range(count):
        size = rng.uniform(0.3, 0.55)
        cx, cy = (rng.uniform(size / 2 + 0.03, 1 - size / 2 - 0.03) for _ in range(2))
        out.append(Scene((Shape(kind, colour, cx, cy, size),), (bg,)))
    return out


def judge(img: np.ndarray, triple: tuple[str, str, str]) -> dict:
    colour, kind, bg = triple
    objs, names = find_objects(img)
    cs = any(o.colour == colour and o.shape == kind for o in objs)
    b = names == (bg,)
    return {"correct": cs and b, "colour_and_shape": cs, "background": b}


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    """RMS distance of two uint8 images, pixels on the [0, 1] scale."""
    return float(np.sqrt((((a.astype(np.float32) - b.astype(np.float32)) / 255.0) ** 2).mean()))


def configurations(inverters, combines, strengths, lcm: bool) -> list[dict]:
    """The baseline (strength 1: fresh noise alone), then every seeded configuration."""
    rows = [{"inverter": None, "combine": None, "strength": 1.0, "step_noise": None}]
    for inv in inverters:
        for comb in combines:
            for s in strengths:
                for sn in (("reuse", "fresh") if lcm else (None,)):
                    rows.append({"inverter": inv, "combine": comb, "strength": float(s), "step_noise": sn})
    return rows


def run(model, triples, samples: int, inverters, combines, strengths, batch: int = 8, log=None) -> dict:
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    cascade_base = model.stages[0]
    lcm = cascade_base.sampler_kind == "lcm"
    configs = configurations(inverters, combines, strengths, lcm)
    tallies = [{"correct": 0, "colour_and_shape": 0, "background": 0, "diversity": [], "nearest_reference": []} for _ in configs]
    per_triple = []
    start = time.perf_counter()
    for t, triple in enumerate(triples):
        t0 = time.perf_counter()
        refs = reference_scenes(triple)
        ref_imgs = [render(s, 64)[0] for s in refs]
        caption = refs[0].caption
        seeds = {}
        for inv_name in inverters:
            invs = [invert(model, to_tensor(img), caption, inv_name) for img in ref_imgs]
            for comb in combines:
                seeds[inv_name, comb] = concept_seeds(model, invs, comb)
        any_seed = next(iter(seeds.values()))
        correct = []
        for c, cfg in enumerate(configs):
            sd = any_seed if cfg["inverter"] is None else seeds[cfg["inverter"], cfg["combine"]]
            out = sample_seeds(model, sd, caption, samples, cfg["strength"], cfg["step_noise"] or "reuse", seed=SEED + t, batch=batch)
            imgs = to_uint8(out.images)
            tl = tallies[c]
            n_ok = 0
            for img in imgs:
                j = judge(img, triple)
                n_ok += j["correct"]
                for k in ("correct", "colour_and_shape", "background"):
                    tl[k] += j[k]
                tl["nearest_reference"].append(min(_rms(img, r) for r in ref_imgs))
            if len(imgs) > 1:
                tl["diversity"].append(float(np.mean([_rms(a, b) for a, b in combinations(imgs, 2)])))
            correct.append(n_ok)
        per_triple.append({"triple": list(triple), "correct": correct})
        log(f"triple {t + 1}/{len(triples)} {caption}: correct per configuration {correct} of {samples} "
            f"({time.perf_counter() - t0:.0f} s, {time.perf_counter() - start:.0f} s in all)")
    n = len(triples) * samples
    rows = []
    for cfg, tl in zip(configs, tallies):
        rows.append({**cfg, "samples": n, "correct": tl["correct"] / n, "colour_and_shape": tl["colour_and_shape"] / n,
                     "background": tl["background"] / n, "correct_count": tl["correct"],
                     "diversity": float(np.mean(tl["diversity"])) if tl["diversity"] else None,
                     "nearest_reference_rms": float(np.mean(tl["nearest_reference"]))})
    return {
        "model": model.stages[0].name,
        "steps": cascade_base.default_steps,
        "steps_per_stage": [s.default_steps for s in model.stages],
        "guidance": cascade_base.default_edit_guidance,
        "inversion_guidance": cascade_base.default_guidance,
        "triples": [list(t) for t in triples],
        "references_per_triple": REFERENCES,
        "samples_per_triple": samples,
        "rows": rows,
        "configuration_order": [f"{r['inverter'] or 'random'}/{r['combine'] or '-'}/{r['strength']}/{r['step_noise'] or '-'}" for r in configs],
        "per_triple": per_triple,
        "seconds": time.perf_counter() - start,
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
    }


def machine() -> str:
    return f"{os.cpu_count()} CPU cores ({platform.machine()}), {torch.get_num_threads()} thread(s), torch {torch.__version__}"


def markdown(result: dict) -> str:
    lcm = any(r["step_noise"] for r in result["rows"])
    head = "| seed | combine | strength |" + (" LCM step noise |" if lcm else "") + " correct | colour and shape | background | diversity | RMS to nearest reference |"
    lines = [f"{result['model']}, {len(result['triples'])} held-out triples x {result['samples_per_triple']} samples "
             f"({result['references_per_triple']} references each), guidance {result['guidance']}:", "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in result["rows"]:
        seed = "random noise" if r["inverter"] is None else f"{r['inverter']} inversion"
        div = "-" if r["diversity"] is None else f"{r['diversity']:.3f}"
        lines.append(f"| {seed} | {r['combine'] or '-'} | {r['strength']:g} |" + (f" {r['step_noise'] or '-'} |" if lcm else "")
                     + f" {r['correct']:.1%} ({r['correct_count']}/{r['samples']}) | {r['colour_and_shape']:.1%} | {r['background']:.1%} | {div} | {r['nearest_reference_rms']:.3f} |")
    return "\n".join(lines)


def measurement_parser(doc: str, out: Path) -> argparse.ArgumentParser:
    """The options this measurement and shapes.smoothness share: the model, threads, and what `finish` reads."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes", choices=["shapes", "shapes-lcm"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=out)
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--json", action="store_true", help="print the run as one JSON line last")
    return ap


def finish(result: dict, a: argparse.Namespace, table: str) -> int:
    """A measurement's end (this one's and shapes.smoothness'): saved unless --no-save, the table, --json's line."""
    if not a.no_save:
        save(result, a.out)
    print(table)
    if a.json:
        print(json.dumps(result))
    return 0


def save(result: dict, path: Path) -> None:
    """Per model: a run replaces that model's entry and keeps the others'."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data[result["model"]] = result
    path.write_text(json.dumps(data, indent=1))


def main(argv: list[str] | None = None) -> int:
    ap = measurement_parser(__doc__, OUT)
    ap.add_argument("--triples", type=int, default=20)
    ap.add_argument("--samples", type=int, default=None, help="samples per triple and configuration (default: shapes 4, shapes-lcm 6: "
                    "each full run stays under ~15 minutes on one core)")
    ap.add_argument("--inverters", default="ddim,rnri")
    ap.add_argument("--combine", default="each,mean")
    ap.add_argument("--strengths", default="0.25,0.5,0.75")
    ap.add_argument("--batch", type=int, default=8, help="samples per UNet batch")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = load_model(a.model)
    with torch.no_grad():
        samples = a.samples or (6 if model.stages[0].sampler_kind == "lcm" else 4)
        result = run(model, pick_triples(a.triples), samples, a.inverters.split(","), a.combine.split(","),
                     [float(s) for s in a.strengths.split(",")], a.batch)
    return finish(result, a, markdown(result))


if __name__ == "__main__":
    sys.exit(main())
