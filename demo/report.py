"""One metrics record for /invert, /edit and the page, and the table a person reads.

Both endpoints use the same names: `model`, `inverter`, `steps`, `inversion`
(cached, nfe, seconds), `reconstruction` (psnr, ssim, lpips, latent_psnr,
codec_psnr, and psnr_uncorrected for LCM samplers), `warnings`; /edit adds
`edit` (editor, nfe, seconds, change_psnr, change_ssim, mask_fraction).
"""

from __future__ import annotations

import functools
import json
import re
import shlex
from pathlib import Path

from editing.api import validate_edit
from inversion.metrics import psnr, ssim
from inversion.models import as_cascade, base_stage
from inversion.pipeline import PSNR_CAP
from inversion.result import stage_inversions

LOW_PSNR = 20.0  # dB: below this the model cannot represent the image (a photo on `shapes`)
COLOUR_WORDS = frozenset(
    "red green blue yellow orange purple white black pink cyan magenta gray grey brown violet gold golden silver beige teal navy maroon".split()
)


def _round(v, digits=4):
    return round(v, digits) if isinstance(v, float) else v


def _codec(model, value):
    """The codec bound: 'none' for pixel models (the identity codec is exact)."""
    return None if getattr(as_cascade(model).top, "vae", None) is None else _round(value)


def reconstruction(model, result: dict) -> dict:
    out = {k: _round(result.get(k)) for k in ("psnr", "ssim", "lpips", "latent_psnr")}
    out["codec_psnr"] = _codec(model, result.get("vae_psnr"))
    for k in ("psnr_uncorrected", "latent_psnr_uncorrected"):
        if result.get(k) is not None:
            out[k] = _round(result[k])
    return out


def inversion_record(model, entry, cached: bool) -> dict:
    inv = entry.inversion
    return {
        "model": model.name,
        "inverter": inv.inverter,
        "steps": inv.steps,
        "seed": stage_inversions(inv)[0].seed,
        "guidance": stage_inversions(inv)[0].guidance,  # the inversion's and the source branch's, as used
        "inverter_params": stage_inversions(inv)[-1].params,
        "inversion": {"cached": cached, "nfe": 0 if cached else inv.nfe, "seconds": 0.0 if cached else round(inv.seconds, 4)},
        "reconstruction": reconstruction(model, entry.report),
    }


def edit_record(model, entry, cached: bool, out) -> dict:
    record = inversion_record(model, entry, cached)
    record["edit"] = {
        "editor": out.editor,
        "guidance": out.guidance,  # the target branch's, as used
        "params": out.params,
        "nfe": out.nfe,
        "seconds": round(out.seconds, 4),
        "change_psnr": _round(min(psnr(out.image, entry.x), PSNR_CAP), 2),
        "change_ssim": _round(ssim(out.image, entry.x)),
        "mask_fraction": None if out.mask is None else round(float(out.mask.mean()), 3),
        "decoder": "preview" if out.previewed else "full",  # change_* of a preview compare the preview decoder's image
    }
    return record


def compare_row(entry, cached: bool, uncorrected=None, noise: dict | None = None, edits: dict | None = None) -> dict:
    """One inverter's line of the comparison: its cost, its reconstruction (with and, on an LCM, without
    the last recorded residual), the statistics of the noise it recovered (`noise_stats.noise_fields`), and its edits."""
    inv, r = entry.inversion, entry.report
    row = {
        "inverter": inv.inverter,
        "cached": cached,
        "nfe": inv.nfe,
        "seconds": round(inv.seconds, 3),
        "psnr": _round(r.get("psnr"), 2),
        "ssim": _round(r.get("ssim")),
        "lpips": _round(r.get("lpips")),
        "psnr_uncorrected": _round(r.get("psnr_uncorrected"), 2),
        "reconstruction": entry.reconstruction,
        "reconstruction_uncorrected": uncorrected,
        "residuals": inv.residuals,
    }
    if noise is not None:
        row.update(noise_std=_round(noise["noise_std"], 3), noise_ks=_round(noise["noise_ks"], 3), noise_gaussian=noise["noise_gaussian"])
    row["edits"] = {}
    for name, out in (edits or {}).items():
        row["edits"][name] = {"image": out.image, "change_psnr": _round(min(psnr(out.image, entry.x), PSNR_CAP), 2), "nfe": out.nfe, "seconds": round(out.seconds, 3)}
    return row


def _words(prompt: str) -> list[str]:
    return re.findall(r"[a-z']+", prompt.lower())


def vocabulary_warning(model, prompts: list[str], typing: bool = False) -> list[str]:
    """A model trained on a closed set of words (shapes) ignores or garbles others: say which. `typing`:
    the last prompt is being typed, so its last word may be half a word (a prefix of a known one is no news)."""
    vocab = getattr(base_stage(model), "vocabulary", None)
    if not vocab:
        return []
    words = {w for p in prompts for w in _words(p)}
    if typing and prompts and _words(prompts[-1]):
        last = _words(prompts[-1])[-1]
        if any(v.startswith(last) for v in vocab) and not any(last in _words(p) for p in prompts[:-1]):
            words.discard(last)
    unknown = sorted(words - vocab)
    if not unknown:
        return []
    return [
        f"{model.name} was trained only on captions with the words {', '.join(sorted(vocab))}; "
        f"{', '.join(repr(w) for w in unknown)} {'is' if len(unknown) == 1 else 'are'} new to it, so expect it to ignore or garble "
        f"{'it' if len(unknown) == 1 else 'them'}."
    ]


def against_the_grain(editor: str, source_prompt: str, target_prompt: str) -> list[str]:
    """An editor asked for what it does not do by design: MasaCtrl (which keeps the source's appearance) for a
    change of colour words only. Said on the Edit tab and under Compare's grid of every editor."""
    changed = set(_words(target_prompt)) ^ set(_words(source_prompt))
    if editor == "masactrl" and changed and changed <= COLOUR_WORDS:
        return ["MasaCtrl keeps the source's appearance (colours, textures) and changes shape or pose; for a colour change use P2P or DiffEdit."]
    return []


def warnings_for(model, entry, prompts: list[str], req=None, out=None) -> list[str]:
    """What a newcomer should know about this result: the input's way in, words the model
    never learned, a reconstruction the model cannot make, an editor used against its grain."""
    notes = [f"Input: {n}." for n in entry.notes] + list(entry.warnings)
    notes += vocabulary_warning(model, prompts, typing=req is not None and getattr(req, "live", False))
    value = None if entry.report is None else entry.report.get("psnr")
    if value is not None and value < LOW_PSNR:
        notes.append(
            f"The reconstruction is only {value:.1f} dB: {model.name} cannot represent this image well, so edits will not look like it. "
            "Try one of the examples, or a GPU model for photos."
        )
    if req is not None and out is not None:
        changed = set(_words(req.target_prompt)) ^ set(_words(req.source.prompt))
        notes += against_the_grain(req.editor, req.source.prompt, req.target_prompt)
        if req.editor == "diffedit" and out.mask is not None and float(out.mask.mean()) == 0.0:
            notes.append("DiffEdit's mask came out empty (the two prompts predict the same noise), so nothing was edited; make the prompts differ where the change should be.")
        elif not changed and req.region is None:  # (a painted region with the same words: a deliberate redraw)
            notes.append("The target prompt has the source prompt's words, so the edit redraws the input; change the words that should change.")
    return notes


def summary_markdown(record: dict) -> str:
    """The numbers a person reads first: a line saying what ran and what it cost, then a three-column
    table (it fits a phone)."""
    rec, inv = record["reconstruction"], record["inversion"]

    def f(v, unit=""):
        return "n/a" if v is None else f"{v:.2f}{unit}" if isinstance(v, float) else str(v)

    with_lpips = rec.get("lpips") is not None
    blank = " |" if with_lpips else ""
    head = "| | PSNR | SSIM |" + (" LPIPS |" if with_lpips else "")
    rule = "|---|---|---|" + ("---|" if with_lpips else "")
    lp = f" {f(rec.get('lpips'))} |" if with_lpips else ""
    lines = [head, rule, f"| Reconstruction | {f(rec['psnr'], ' dB')} | {f(rec['ssim'])} |{lp}"]
    if rec.get("psnr_uncorrected") is not None:
        lines.append(f"| … without the last residual | {f(rec['psnr_uncorrected'], ' dB')} | |{blank}")
    codec = "exact (pixels)" if rec["codec_psnr"] is None else f"{rec['codec_psnr']:.2f} dB"
    lines.append(f"| Best possible (codec) | {codec} | |{blank}")
    cost = "reused, 0 calls" if inv["cached"] else f"{f(inv['seconds'], ' s')}, {inv['nfe']} calls"
    what = [f"**{record['model']}**", f"{record['inverter']} inversion, {record['steps']} steps: {cost}"]
    if "edit" in record:
        e = record["edit"]
        what.append(f"{e['editor']} edit: {f(e['seconds'], ' s')}, {e['nfe']} calls")
        lines.append(f"| Edit vs input | {f(e['change_psnr'], ' dB')} | {f(e['change_ssim'])} |{blank}")
    text = " · ".join(what) + "\n\n" + "\n".join(lines)
    if record.get("warnings"):
        text += "\n\n" + "\n".join(f"> ⚠️ {w}" for w in record["warnings"])
    return text


BENCHMARKS = {  # measured edit benchmarks (python -m shapes.edit_bench), by model
    "shapes": Path(__file__).resolve().parents[1] / "assets" / "shapes" / "eval.json",
    "shapes-lcm": Path(__file__).resolve().parents[1] / "assets" / "shapes" / "eval_lcm.json",
}
RARELY_EDITS = 0.3  # judged success below this in the benchmark: the page warns before the visitor waits


@functools.lru_cache(maxsize=8)
def _bench_rows(path: Path, mtime: float) -> dict:
    rows = json.loads(path.read_text()).get("edit_bench", {}).get("rows", [])
    return {(r["inverter"], r["editor"]): r for r in rows}


def benchmark_note(model: str, inverter: str, editor: str) -> str:
    """How this inverter and editor did in the model's edit benchmark, measured with their defaults:
    a warning when they rarely edit, so a visitor does not wait for a failure."""
    path = BENCHMARKS.get(model)
    if path is None or not path.exists():
        return ""
    row = _bench_rows(path, path.stat().st_mtime).get((inverter, editor))
    if row is None:
        return ""
    text = f"{row['success']:.0%} of {row['scenes']} benchmark edits with {inverter} + {editor} on {model} succeeded (default settings)."
    return f"⚠️ {text} This pair rarely edits on this model." if row["success"] < RARELY_EDITS else text


def model_problem(name: str, error: Exception, models) -> str:
    """Why the picked model cannot run here, in a visitor's words, with the models that can."""
    can = [n for n in models.choices() if models.status(n).startswith("available")]
    why = "it is not downloaded and this server cannot download it" if "network" in str(error) or "cache" in str(error) else str(error).split(". ")[0]
    return f"{name} cannot run here: {why}. Pick one marked available: {', '.join(can)}."


# the downloads' names (`glue.write_downloads` writes them) and the re-edit's output, as the command names them
REEDIT_FILES = {"inversion": "inversion.safetensors", "region": "region.png", "out": "edit-again.png"}


def reedit_command(model, req, painted: bool) -> str:
    """The command line that makes this edit again from the page's downloads, without inverting: its model, editor,
    target prompt, and each of its settings that differs from the model's default (which the command line takes
    when it is not given); `painted`: with the painted region's download."""
    base = base_stage(model)
    used = validate_edit(model, req.source.prompt, req.target_prompt, req.editor, **req.params)
    default = validate_edit(model, req.source.prompt, req.target_prompt, req.editor)
    args = ["python", "-m", "editing", "edit", "--model", model.name, "--inversion", REEDIT_FILES["inversion"],
            "--editor", req.editor, "--target-prompt", req.target_prompt]
    if req.guidance is not None and float(req.guidance) != base.default_edit_guidance:
        args += ["--guidance", repr(float(req.guidance))]
    for k, v in used.items():
        if v != default[k]:
            args += ["--param", f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}"]
    if painted:
        args += ["--region", REEDIT_FILES["region"]]
    return shlex.join(args + ["--out", REEDIT_FILES["out"]])
