"""Command line for editing (a stable contract; see docs/ARCHITECTURE.md):

    python -m editing edit --model M --inverter I --editor E --image PATH
                           --source-prompt S --target-prompt T [--region mask.png] [--out edit.png] [--json]
    python -m editing interpolate --model M --inverter I --image A --image B --prompt P [--prompt2 P2]
                                  [--steps S] [--frames 8] [--out strip.png] [--gif anim.gif] [--json]
    python -m editing seeds --model M --inverter I --image A [--image B ...] --prompt P
                            [--samples 4] [--strength 0.5] [--combine each|mean] [--out grid.png] [--json]
    python -m editing editors

With --json the last line is one JSON object: model, inverter, editor, steps,
NFE and seconds split into inversion and edit, and the reconstruction's
PSNR/SSIM against the input. An inversion saved with --save-inversion (or by
`python -m inversion invert --save-inversion`) can be reused with --inversion.
`interpolate` inverts two images (or reads two saved inversions) and writes the frames
between them side by side (PNG) and optionally as a looping GIF.
`seeds` inverts a few reference images of a concept and samples new images of a prompt from
their inverted noise mixed with fresh noise (rare-concept seeds; PNG grid).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from inversion.benchmark import profiled, warm_up
from inversion.cli_tools import StderrProgress, emit, parse_params, print_table, run
from inversion.errors import IncompatibleInversion, ParameterError
from inversion.images import ImageError, centre_cropped_to, load_image
from inversion.metrics import psnr, ssim
from inversion.models import MODELS, base_stage, load_model
from inversion.pipeline import PSNR_CAP, evaluate, input_tensor, invert, save_image
from inversion.result import load_inversion, stage_inversions

from .api import EDITORS, edit, validate_edit
from .interpolate import frame_alphas, interpolate
from .seeds import COMBINE, DEFAULT_STRENGTH, STEP_NOISE, check_options, concept_seeds, sample_seeds


def cmd_edit(a) -> None:
    model = load_model(a.model, device=a.device)
    progress = StderrProgress(not a.quiet)
    saved = load_inversion(a.inversion) if a.inversion else None
    if saved is not None:
        if saved.model != base_stage(model).name:
            raise IncompatibleInversion(f"{a.inversion} was inverted with {saved.model!r}, not {a.model!r}; give --model {saved.model}")
        source_prompt = stage_inversions(saved)[0].prompt
        if a.source_prompt and a.source_prompt != source_prompt:
            raise ParameterError(f"the saved inversion was made with the source prompt {source_prompt!r}; drop --source-prompt or invert again")
    else:
        source_prompt = a.source_prompt
    params = parse_params(a.param)
    validate_edit(model, source_prompt, a.target_prompt, a.editor, **params)
    # with a saved inversion and no --image, the reference is the inversion's own input (decoded by the model's codec)
    x = saved_input(model, saved) if saved is not None and a.image is None else input_tensor(model, a.image, a.size, a.seed)
    region = _region(a.region, x) if a.region is not None else None  # checked before any inversion
    if saved is not None:
        inv = saved
    else:
        inv = invert(model, x, source_prompt, a.inverter, a.steps, a.inversion_guidance, a.negative_prompt, a.seed, progress=progress, **parse_params(a.inverter_param))
    report, recon = evaluate(model, x, inv)
    out = edit(model, inv, a.target_prompt, a.editor, a.guidance, progress=progress, region=region, **params)
    # a reused inversion is no new work: its NFE and seconds were spent when it was saved
    inv_nfe, inv_seconds = (0, 0.0) if saved is not None else (inv.nfe, inv.seconds)
    result = {
        "model": a.model,
        "inverter": inv.inverter,
        "editor": a.editor,
        "steps": inv.steps,
        "source_prompt": source_prompt,
        "target_prompt": a.target_prompt,
        "inversion_reused": saved is not None,
        "seed": report["seed"],
        "inversion_guidance": report["guidance"],
        "edit_guidance": out.guidance,
        "negative_prompt": report["negative_prompt"],
        "size": report["size"],
        "inverter_params": stage_inversions(inv)[-1].params,
        "nfe": inv_nfe + out.nfe,
        "inversion_nfe": inv_nfe,
        "edit_nfe": out.nfe,
        "seconds": round(inv_seconds + out.seconds, 4),
        "inversion_seconds": round(inv_seconds, 4),
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


def _region(path, x):
    """A painted edit region from a mask image (nonzero = edit here) of the edit's input size: the app's region.png."""
    mask = load_image(path, name="the edit region").convert("L")
    if mask.size != (x.shape[-1], x.shape[-2]):
        raise ImageError(f"the region is {mask.size[0]}x{mask.size[1]} but the edit's input is {x.shape[-1]}x{x.shape[-2]} "
                         "(the model's size for this image): give a mask of that size (the app's region.png is)")
    return torch.from_numpy(np.asarray(mask) > 0)


def saved_input(model, inv):
    """A saved inversion's own input as an image: its top stage's clean latent, decoded."""
    from inversion.models.cascade import as_cascade

    return as_cascade(model).top.decode(stage_inversions(inv)[-1].x0.to(as_cascade(model).top.device))


def _second_input(model, image, like, size, seed, name="the second image"):
    """Another image as the model takes it, at the first's shape (`like`): a single model keeps each
    image's aspect ratio, so one of another shape is centre-cropped to the first's and resized
    (the noises must have one shape). The oracle draws another sample (seed + 1)."""
    x = input_tensor(model, image, size, seed + 1)
    if x.shape == like.shape:
        return x, []
    h, w = like.shape[-2:]
    fitted, note = centre_cropped_to(image, (w, h), name)
    return input_tensor(model, fitted, max(h, w), seed + 1), [note]


def cmd_interpolate(a) -> None:
    images, saved = a.image or [], a.inversion or []
    if saved and len(saved) != 2:
        raise ParameterError(f"--inversion takes two saved inversions (give it twice), got {len(saved)}")
    if not saved and len(images) != 2 and not (a.model == "oracle" and not images):
        raise ImageError(f"interpolate takes two images (--image A --image B), got {len(images)}")
    if saved and len(images) not in (0, 2):
        raise ImageError("with --inversion give both images (to measure the ends) or none")
    frame_alphas(a.frames)  # a bad count fails before any model work
    model = load_model(a.model, device=a.device)
    progress = StderrProgress(not a.quiet)
    prompt_b = a.prompt if a.prompt2 is None else a.prompt2
    notes, xs = [], [None, None]
    if images or not saved:
        xs[0] = input_tensor(model, images[0] if images else None, a.size, a.seed)
        xs[1], notes = _second_input(model, images[1] if images else None, xs[0], a.size, a.seed)
    if saved:
        invs = [load_inversion(path) for path in saved]
    else:
        for p in (a.prompt, prompt_b):
            base_stage(model).check_prompt(p)
        params = parse_params(a.inverter_param)
        invs = [invert(model, x, p, a.inverter, a.steps, a.guidance, a.negative_prompt, a.seed, progress=progress, **params)
                for x, p in zip(xs, (a.prompt, prompt_b))]
    out = interpolate(model, *invs, frames=a.frames, progress=progress)
    inverters = [inv.inverter for inv in invs]
    result = {
        "model": a.model,
        "inverter": inverters[0] if inverters[0] == inverters[1] else "+".join(inverters),
        "steps": invs[0].steps,
        "frames": len(out.alphas),
        "alphas": out.alphas,
        "prompts": [stage_inversions(inv)[0].prompt for inv in invs],
        "nfe": (0 if saved else sum(inv.nfe for inv in invs)) + out.nfe,
        "inversion_nfe": 0 if saved else sum(inv.nfe for inv in invs),
        "interpolation_nfe": out.nfe,
        "seconds": round((0 if saved else sum(inv.seconds for inv in invs)) + out.seconds, 4),
        "inversion_seconds": 0.0 if saved else round(sum(inv.seconds for inv in invs), 4),
        "interpolation_seconds": round(out.seconds, 4),
        "size": [out.frames.shape[-1], out.frames.shape[-2]],
        "endpoint_psnr": None if xs[0] is None else [min(psnr(f, x), PSNR_CAP) for f, x in ((out.frames[:1], xs[0]), (out.frames[-1:], xs[1]))],
        "warnings": notes + out.warnings,
    }
    if a.out:
        out.strip().save(a.out, format="PNG")
        result["out"] = str(a.out)
    if a.gif:
        out.save_gif(a.gif, a.frame_ms, a.pingpong)
        result["gif"] = str(a.gif)
    if not a.json:
        for k in ("model", "inverter", "steps", "frames", "nfe", "inversion_nfe", "interpolation_nfe", "seconds", "endpoint_psnr", "out", "gif"):
            if k in result:
                print(f"{k:18s} {result[k]}")
        for w in result["warnings"]:
            print(f"note: {w}", file=sys.stderr)
    emit(result, a.json)


def cmd_seeds(a) -> None:
    images = a.image or []
    if not images and a.model != "oracle":
        raise ImageError("seeds takes one or more reference images (--image A [--image B ...])")
    check_options(a.samples, a.strength, a.step_noise)  # bad options fail before any model work
    model = load_model(a.model, device=a.device)
    progress = StderrProgress(not a.quiet)
    reference_prompt = a.prompt if a.reference_prompt is None else a.reference_prompt
    for p in (a.prompt, reference_prompt):
        base_stage(model).check_prompt(p)
    notes, xs = [], [input_tensor(model, images[0] if images else None, a.size, a.seed)]
    for k, image in enumerate(images[1:]):
        x, note = _second_input(model, image, xs[0], a.size, a.seed + k, name=f"reference {k + 2}")
        xs.append(x)
        notes += note
    params = parse_params(a.inverter_param)
    invs = [invert(model, x, reference_prompt, a.inverter, a.steps, a.inversion_guidance, a.negative_prompt, a.seed, progress=progress, **params)
            for x in xs]
    seeds = concept_seeds(model, invs, a.combine)
    out = sample_seeds(model, seeds, a.prompt, a.samples, a.strength, a.step_noise, a.sample_seed, a.guidance, a.negative_prompt,
                       batch=a.batch, progress=progress)
    inv_nfe, inv_s = sum(inv.nfe for inv in invs), sum(inv.seconds for inv in invs)
    result = {
        "model": a.model,
        "inverter": invs[0].inverter,
        "steps": invs[0].steps,
        "prompt": a.prompt,
        "reference_prompt": reference_prompt,
        "references": len(xs),
        "samples": len(out.rows),
        "strength": out.strength,
        "combine": a.combine,
        "step_noise": out.step_noise if seeds.stages[0].noises is not None else None,
        "seed": a.sample_seed,
        "rows": out.rows,
        "z_norm": seeds.z_norm(),
        "nfe": inv_nfe + out.nfe,
        "inversion_nfe": inv_nfe,
        "sampling_nfe": out.nfe,
        "seconds": round(inv_s + out.seconds, 4),
        "inversion_seconds": round(inv_s, 4),
        "sampling_seconds": round(out.seconds, 4),
        "size": [out.images.shape[-1], out.images.shape[-2]],
        "warnings": notes + out.warnings,
    }
    if a.out:
        out.grid(a.columns).save(a.out, format="PNG")
        result["out"] = str(a.out)
    if not a.json:
        for k in ("model", "inverter", "steps", "references", "samples", "strength", "combine", "step_noise", "z_norm", "nfe", "seconds", "out"):
            if k in result:
                print(f"{k:18s} {result[k]}")
        for w in result["warnings"]:
            print(f"note: {w}", file=sys.stderr)
    emit(result, a.json)


def _at_least_one(v: str) -> int:
    if not v.isdigit() or int(v) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {v!r}")
    return int(v)


def _median_run(repeats: int, run, model):
    """(the run of median seconds, its profile): sub-second runs on a shared CPU are noisy."""
    results = []
    for _ in range(repeats):
        with profiled(model) as prof:
            results.append((run(), prof))
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
    inv, prof = _median_run(a.repeats, lambda: invert(model, x, a.source_prompt, a.inverter, a.steps, None, "", a.seed, **parse_params(a.inverter_param)), model)
    inv_speed = {f"inversion_{k}": v for k, v in prof.fields(inv.seconds, inv.nfe).items() if k != "peak_rss_gb"}
    rows = []
    for n in names:
        out, prof = _median_run(a.repeats, lambda n=n: edit(model, inv, a.target_prompt, n), model)
        rows.append({
            "model": a.model, "inverter": inv.inverter, "editor": n, "steps": inv.steps,
            "inversion_nfe": inv.nfe, "inversion_seconds": inv.seconds, **inv_speed,
            "nfe": out.nfe, "seconds": out.seconds, **prof.fields(out.seconds, out.nfe),
            "total_seconds": inv.seconds + out.seconds,
        })
    if not a.json:
        print_table(rows, ["model", "inverter", "editor", "steps", "inversion_nfe", "inversion_seconds", "inversion_overhead", "nfe", "seconds", "time_per_nfe", "overhead",
                           "text_s", "unet_s", "vae_decode_s", "rest_s", "total_seconds", "peak_rss_gb"])
    emit(rows, a.json)


def _shared(p: argparse.ArgumentParser, seed_help: str | None = None) -> None:
    """The options every inverting command takes."""
    p.add_argument("--model", required=True, help=f"one of: {', '.join(MODELS)}")
    p.add_argument("--inverter", default="ddim")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--inverter-param", action="append", metavar="NAME=VALUE", help="inverter parameter, repeatable")
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")


def _edit_parser(sub) -> None:
    e = sub.add_parser("edit", help="invert an image and edit it")
    _shared(e)
    e.add_argument("--editor", default="p2p", help=f"one of: {', '.join(EDITORS)}")
    e.add_argument("--image", default=None)
    e.add_argument("--source-prompt", default="", help="describes the input image")
    e.add_argument("--target-prompt", required=True, help="describes the edited image")
    e.add_argument("--guidance", type=float, default=None, help="guidance of the edited branch (default: the model's)")
    e.add_argument("--inversion-guidance", type=float, default=None, help="guidance of inversion and source branch")
    e.add_argument("--param", action="append", metavar="NAME=VALUE", help="editor parameter, repeatable")
    e.add_argument("--inversion", type=Path, default=None, help="reuse a saved inversion instead of inverting")
    e.add_argument("--save-inversion", type=Path, default=None)
    e.add_argument("--region", type=Path, default=None, help="a mask of the edit's input (nonzero = edit here; the app's "
                   "region.png): DiffEdit's mask, P2P's local blend, MasaCtrl's foreground")
    e.add_argument("--out", type=Path, default=None, help="write the edit here (PNG)")


def _bench_parser(sub) -> None:
    b = sub.add_parser("bench", help="every editor on one inversion: NFE, seconds, overhead")
    _shared(b)
    b.add_argument("--editors", default=None, help="comma-separated (default: all)")
    b.add_argument("--image", default=str(Path(__file__).resolve().parents[1] / "assets" / "chelsea.jpg"))
    b.add_argument("--source-prompt", default="a photo of a cat")
    b.add_argument("--target-prompt", default="a photo of a dog")
    b.add_argument("--repeats", type=_at_least_one, default=3, help="runs of each operation; the median is reported")


def _interpolate_parser(sub) -> None:
    i = sub.add_parser("interpolate", help="frames between two inverted images (strip PNG, optional GIF)")
    _shared(i)
    i.add_argument("--image", action="append", metavar="PATH", help="give it twice: the first and the last frame")
    i.add_argument("--prompt", default="", help="describes the first image")
    i.add_argument("--prompt2", default=None, help="describes the second image (default: --prompt)")
    i.add_argument("--guidance", type=float, default=None, help="guidance of the inversions (default: the model's)")
    i.add_argument("--frames", type=int, default=8, help="frames, both ends included (2-256)")
    i.add_argument("--inversion", type=Path, action="append", help="a saved inversion instead of inverting; give it twice")
    i.add_argument("--out", type=Path, default=None, help="write the frames side by side here (PNG)")
    i.add_argument("--gif", type=Path, default=None, help="write an animated GIF here (loops forever)")
    i.add_argument("--frame-ms", type=_at_least_one, default=120, help="GIF: milliseconds per frame")
    i.add_argument("--pingpong", action="store_true", help="GIF: play forth and back")


def _seeds_parser(sub) -> None:
    r = sub.add_parser("seeds", help="new samples of a prompt from the inverted noise of reference images (PNG grid)")
    _shared(r, seed_help="the inversions' seed")
    r.add_argument("--image", action="append", metavar="PATH", help="a reference image of the concept; repeatable")
    r.add_argument("--prompt", default="", help="what the new samples show")
    r.add_argument("--reference-prompt", default=None, help="describes the references (default: --prompt)")
    r.add_argument("--samples", type=_at_least_one, default=4)
    r.add_argument("--strength", type=float, default=DEFAULT_STRENGTH, help="0: the seed itself, 1: fresh noise alone (slerp)")
    r.add_argument("--combine", choices=COMBINE, default="each", help="each reference a seed (in turn), or their normalised mean")
    r.add_argument("--step-noise", choices=STEP_NOISE, default="fresh", help="LCM: draw the per-step noises fresh, or reuse the references' recorded ones")
    r.add_argument("--guidance", type=float, default=None, help="guidance of the samples (default: the model's edit guidance)")
    r.add_argument("--inversion-guidance", type=float, default=None, help="guidance of the inversions (default: the model's)")
    r.add_argument("--sample-seed", type=int, default=0, help="seed of the samples' fresh noise")
    r.add_argument("--batch", type=_at_least_one, default=1, help="samples per UNet batch (1: bit-exact with a reconstruction)")
    r.add_argument("--out", type=Path, default=None, help="write the samples as a grid here (PNG)")
    r.add_argument("--columns", type=_at_least_one, default=None, help="grid columns (default: up to 8 in a row)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m editing", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for add in (_edit_parser, _bench_parser, _interpolate_parser, _seeds_parser):
        add(sub)
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
        elif a.cmd == "interpolate":
            cmd_interpolate(a)
        elif a.cmd == "seeds":
            cmd_seeds(a)
        else:
            for ed in EDITORS.values():
                print(f"{ed.name:10s} {ed.paper}")
                for k, prm in ed.params.items():
                    print(f"    {k:16s} default {prm.default!s:24s} {prm.help}")

    return run(command)
