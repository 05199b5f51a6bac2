"""Command line for editing (a stable contract; see docs/ARCHITECTURE.md):

    python -m editing edit --model M --inverter I --editor E --image PATH
                           --source-prompt S --target-prompt T [--out edit.png] [--json]
    python -m editing editors

With --json the last line is one JSON object: model, inverter, editor, steps,
NFE and seconds split into inversion and edit, and the reconstruction's
PSNR/SSIM against the input. An inversion saved with --save-inversion (or by
`python -m inversion invert --save-inversion`) can be reused with --inversion.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inversion.benchmark import calls_recorded, speed_fields, warm_up
from inversion.cli_tools import StderrProgress, emit, parse_params, print_table, run
from inversion.images import ImageError
from inversion.metrics import psnr, ssim
from inversion.models import MODELS, load_model
from inversion.pipeline import evaluate, input_tensor, invert, save_image
from inversion.result import load_inversion, stage_inversions

from .api import EDITORS, edit, validate_edit


def cmd_edit(a) -> None:
    model = load_model(a.model, device=a.device)
    progress = StderrProgress(not a.quiet)
    x = input_tensor(model, a.image, a.size, a.seed)
    if a.inversion:
        inv = load_inversion(a.inversion)
        source_prompt = stage_inversions(inv)[0].prompt
    else:
        source_prompt = a.source_prompt
    validate_edit(model, source_prompt, a.target_prompt, a.editor, **parse_params(a.param))
    if not a.inversion:
        inv = invert(model, x, a.source_prompt, a.inverter, a.steps, a.inversion_guidance, a.negative_prompt, a.seed, progress=progress, **parse_params(a.inverter_param))
    report, recon = evaluate(model, x, inv)
    out = edit(model, inv, a.target_prompt, a.editor, a.guidance, progress=progress, **parse_params(a.param))
    result = {
        "model": a.model,
        "inverter": inv.inverter,
        "editor": a.editor,
        "steps": inv.num_steps,
        "source_prompt": a.source_prompt,
        "target_prompt": a.target_prompt,
        "nfe": inv.nfe + out.nfe,
        "inversion_nfe": inv.nfe,
        "edit_nfe": out.nfe,
        "seconds": round(inv.seconds + out.seconds, 4),
        "inversion_seconds": round(inv.seconds, 4),
        "edit_seconds": round(out.seconds, 4),
        "psnr": report["psnr"],
        "ssim": report["ssim"],
        "latent_psnr": report["latent_psnr"],
        "edit_psnr": psnr(out.image, x),
        "edit_ssim": ssim(out.image, x),
        "mask_fraction": None if out.mask is None else float(out.mask.mean()),
        "params": out.params,
        "info": out.info,
    }
    if a.out:
        save_image(out.image, a.out)
        result["out"] = str(a.out)
    if a.save_inversion:
        inv.save(a.save_inversion)
        result["inversion"] = str(a.save_inversion)
    if not a.json:
        for k in ("model", "inverter", "editor", "steps", "nfe", "inversion_nfe", "edit_nfe", "seconds", "inversion_seconds", "edit_seconds", "psnr", "edit_psnr"):
            print(f"{k:18s} {result[k]}")
    emit(result, a.json)


def _at_least_one(v: str) -> int:
    if not v.isdigit() or int(v) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {v!r}")
    return int(v)


def _median_run(repeats: int, run, model):
    """(the run of median seconds, its recorded UNet calls): sub-second runs on a shared CPU are noisy."""
    results = []
    for _ in range(repeats):
        with calls_recorded(model) as calls:
            results.append((run(), calls))
    results.sort(key=lambda r: r[0].seconds)
    return results[len(results) // 2]


def cmd_bench(a) -> None:
    """Each editor on one inversion: NFE, seconds, time per NFE and overhead vs its UNet calls."""
    model = load_model(a.model, device=a.device)
    x = input_tensor(model, a.image, a.size, a.seed)
    names = a.editors.split(",") if a.editors else list(EDITORS)
    for n in names:
        validate_edit(model, a.source_prompt, a.target_prompt, n)
    warm_up(model, x, a.source_prompt)
    inv, calls = _median_run(a.repeats, lambda: invert(model, x, a.source_prompt, a.inverter, a.steps, None, "", a.seed, **parse_params(a.inverter_param)), model)
    inv_speed = speed_fields(inv.seconds, inv.nfe, calls)
    rows = []
    for n in names:
        out, calls = _median_run(a.repeats, lambda n=n: edit(model, inv, a.target_prompt, n), model)
        rows.append({
            "model": a.model, "inverter": inv.inverter, "editor": n, "steps": inv.num_steps,
            "inversion_nfe": inv.nfe, "inversion_seconds": inv.seconds, "inversion_overhead": inv_speed["overhead"],
            "nfe": out.nfe, "seconds": out.seconds, **speed_fields(out.seconds, out.nfe, calls),
            "total_seconds": inv.seconds + out.seconds,
        })
    if not a.json:
        print_table(rows, ["model", "inverter", "editor", "steps", "inversion_nfe", "inversion_seconds", "inversion_overhead", "nfe", "seconds", "time_per_nfe", "overhead", "total_seconds"])
    emit(rows, a.json)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m editing", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("edit", help="invert an image and edit it")
    e.add_argument("--model", required=True, help=f"one of: {', '.join(MODELS)}")
    e.add_argument("--inverter", default="ddim")
    e.add_argument("--editor", default="p2p", help=f"one of: {', '.join(EDITORS)}")
    e.add_argument("--image", default=None)
    e.add_argument("--source-prompt", default="", help="describes the input image")
    e.add_argument("--target-prompt", required=True, help="describes the edited image")
    e.add_argument("--negative-prompt", default="")
    e.add_argument("--steps", type=int, default=None)
    e.add_argument("--guidance", type=float, default=None, help="guidance of the edited branch (default: the model's)")
    e.add_argument("--inversion-guidance", type=float, default=None, help="guidance of inversion and source branch")
    e.add_argument("--size", type=int, default=None)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--param", action="append", metavar="NAME=VALUE", help="editor parameter, repeatable")
    e.add_argument("--inverter-param", action="append", metavar="NAME=VALUE", help="inverter parameter, repeatable")
    e.add_argument("--inversion", type=Path, default=None, help="reuse a saved inversion instead of inverting")
    e.add_argument("--save-inversion", type=Path, default=None)
    e.add_argument("--out", type=Path, default=None, help="write the edit here (PNG)")
    e.add_argument("--device", default=None)
    e.add_argument("--json", action="store_true")
    e.add_argument("--quiet", action="store_true")
    b = sub.add_parser("bench", help="every editor on one inversion: NFE, seconds, overhead")
    b.add_argument("--model", required=True)
    b.add_argument("--inverter", default="ddim")
    b.add_argument("--editors", default=None, help="comma-separated (default: all)")
    b.add_argument("--image", default=str(Path(__file__).resolve().parents[1] / "assets" / "chelsea.jpg"))
    b.add_argument("--source-prompt", default="a photo of a cat")
    b.add_argument("--target-prompt", default="a photo of a dog")
    b.add_argument("--steps", type=int, default=None)
    b.add_argument("--size", type=int, default=None)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--inverter-param", action="append", metavar="NAME=VALUE")
    b.add_argument("--device", default=None)
    b.add_argument("--json", action="store_true")
    b.add_argument("--repeats", type=_at_least_one, default=3, help="runs of each operation; the median is reported")
    sub.add_parser("editors", help="list the editors and their parameters")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)

    def command():
        if a.cmd == "edit":
            if a.image is None and a.model != "oracle" and a.inversion is None:
                raise ImageError("--image is required")
            cmd_edit(a)
        elif a.cmd == "bench":
            cmd_bench(a)
        else:
            for ed in EDITORS.values():
                print(f"{ed.name:10s} {ed.paper}")
                for k, prm in ed.params.items():
                    print(f"    {k:16s} default {prm.default!s:24s} {prm.help}")

    return run(command)
