"""Command line (a stable contract; see docs/ARCHITECTURE.md):

    python -m inversion invert --model M --inverter I --image PATH --prompt TEXT [--steps N] [--out recon.png] [--json]
    python -m inversion bench  --model M [--inverters a,b,...] [--images DIR] [--steps N] [--json]
    python -m inversion models | inverters

With --json the last line printed is one JSON object (bench: a list, one object
per inverter). Progress goes to stderr; errors a user can cause exit with code 2
and a one-line message.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .benchmark import profiled, warm_up
from .cli_tools import StderrProgress, emit, parse_params, print_table, run
from .images import ImageError
from .inverters import INVERTERS, get_inverter
from .inverters.base import SHARED_PARAMS
from .models import MODELS, as_cascade, load_model
from .models.cascade import base_stage
from .noise_stats import noise_fields
from .pipeline import IncompatibleChoice, evaluate, input_tensor, invert, save_image
from .result import stage_inversions

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def cmd_invert(a) -> None:
    model = load_model(a.model, device=a.device)
    progress = StderrProgress(not a.quiet)
    x = input_tensor(model, a.image, a.size, a.seed)
    inv = invert(model, x, a.prompt, a.inverter, a.steps, a.guidance, a.negative_prompt, a.seed, progress=progress, **parse_params(a.param))
    report, recon = evaluate(model, x, inv)
    report["image"] = None if a.model == "oracle" else str(a.image)
    report["prompt"] = a.prompt
    report["params"] = stage_inversions(inv)[-1].params
    base = stage_inversions(inv)[0]  # the noise it starts from: z_T of the base stage (cascades: the first)
    report.update(noise_fields(base, base_stage(model).alphas_cumprod))
    if a.out:
        save_image(recon, a.out)
        report["out"] = str(a.out)
    if a.save_inversion:
        inv.save(a.save_inversion)
        report["inversion"] = str(a.save_inversion)
    if not a.json:
        print_table([report])
    emit(report, a.json)


def bench_images(a) -> list:
    if a.model == "oracle":
        return [None] * a.samples
    if a.images:
        d = Path(a.images)
        if not d.is_dir():
            raise ImageError(f"--images {d} is not a folder")
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ImageError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {d}")
        return files[: a.samples] if a.samples else files
    return [a.image]


def cmd_bench(a) -> None:
    model = load_model(a.model, device=a.device)
    names = a.inverters.split(",") if a.inverters else list(INVERTERS)
    images = bench_images(a)
    rows = []
    progress = StderrProgress(not a.quiet)
    warm_up(model, input_tensor(model, images[0], a.size, seed=0), a.prompt)
    for name in names:
        inv_cls = get_inverter(name)
        if inv_cls.needs_cascade and not as_cascade(model).multistage:
            if a.inverters:
                raise IncompatibleChoice(f"{name} needs a pixel cascade; {a.model} has one stage")
            rows.append({"model": a.model, "inverter": name, "skipped": f"{name} inverts pixel cascades; {a.model} has one stage"})
            continue
        per_image = []
        for i, img in enumerate(images):
            x = input_tensor(model, img, a.size, seed=i)
            with profiled(model) as prof:
                inv = invert(model, x, a.prompt, name, a.steps, a.guidance, "", seed=i, **parse_params(a.param))
            report, _ = evaluate(model, x, inv)
            report.update(prof.fields(inv.seconds, inv.nfe))
            per_image.append(report)
        progress(len(rows) + 1, len(names), "bench")
        rows.append(average(per_image, len(images)))
    if not a.json:
        print_table(rows)
    emit(rows, a.json)


def average(reports: list[dict], count: int) -> dict:
    """Mean of each metric over the images (None if any image lacks it)."""
    out = dict(reports[0])
    out.pop("stages", None)
    for k, v in reports[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "steps":
            vals = [r.get(k) for r in reports]
            mean = None if any(x is None for x in vals) else sum(vals) / len(vals)
            out[k] = int(mean) if isinstance(v, int) and mean is not None and mean == int(mean) else mean
    out["images"] = count
    return out


def cmd_list(what: str) -> None:
    if what == "models":
        for s in MODELS.values():
            print(f"{s.name:20s} {'offline' if s.offline else 'hub    '}  {s.kind:14s} {s.sampler:7s} {s.description}")
    else:
        params = [("every inverter", SHARED_PARAMS)]
        params += [(f"{inv.name:12s} NFE/step {inv.nfe_per_step:10s} {inv.paper}", inv.params) for inv in INVERTERS.values()]
        for title, table in params:
            print(title)
            for k, p in table.items():
                print(f"    {k:26s} default {p.default!s:28s} {p.help}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m inversion", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp):
        sp.add_argument("--model", required=True, help=f"one of: {', '.join(MODELS)}")
        sp.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
        sp.add_argument("--prompt", default="", help="the source prompt (describes the image)")
        sp.add_argument("--guidance", type=float, default=None, help="guidance during inversion (default: the model's)")
        sp.add_argument("--size", type=int, default=None, help="long side of the input image (default: the model's)")
        sp.add_argument("--param", action="append", metavar="NAME=VALUE", help="inverter parameter, repeatable")
        sp.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available for hub models)")
        sp.add_argument("--json", action="store_true", help="print one JSON result as the last line")
        sp.add_argument("--quiet", action="store_true", help="no progress on stderr")

    inv = sub.add_parser("invert", help="invert one image and report its reconstruction")
    common(inv)
    inv.add_argument("--inverter", default="ddim", help=f"one of: {', '.join(INVERTERS)}")
    inv.add_argument("--image", default=None, help="input image (ignored for --model oracle)")
    inv.add_argument("--negative-prompt", default="")
    inv.add_argument("--seed", type=int, default=0)
    inv.add_argument("--out", type=Path, default=None, help="write the reconstruction here (PNG)")
    inv.add_argument("--save-inversion", type=Path, default=None, help="write the inversion (safetensors)")

    b = sub.add_parser("bench", help="every inverter on the same images: one row each")
    common(b)
    b.add_argument("--inverters", default=None, help="comma-separated (default: all that fit the model)")
    b.add_argument("--images", default=None, help="folder of images (default: --image)")
    b.add_argument("--image", default=str(Path(__file__).resolve().parents[1] / "assets" / "astronaut.jpg"))
    b.add_argument("--samples", type=int, default=None, help="images to use (oracle: samples drawn, default 4)")
    sub.add_parser("models", help="list the models")
    sub.add_parser("inverters", help="list the inverters and their parameters")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)

    def command():
        if a.cmd == "invert":
            if a.image is None and a.model != "oracle":
                raise ImageError("--image is required (except for --model oracle)")
            cmd_invert(a)
        elif a.cmd == "bench":
            if a.model == "oracle" and a.samples is None:
                a.samples = 4
            cmd_bench(a)
        else:
            cmd_list(a.cmd)

    return run(command)


if __name__ == "__main__":
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    sys.exit(main())
