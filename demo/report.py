"""One metrics record for /invert, /edit and the page, and the table a person reads.

Both endpoints use the same names: `model`, `inverter`, `steps`, `inversion`
(cached, nfe, seconds), `reconstruction` (psnr, ssim, lpips, latent_psnr,
codec_psnr, and psnr_uncorrected for LCM samplers), `warnings`; /edit adds
`edit` (editor, nfe, seconds, change_psnr, change_ssim, mask_fraction).
"""

from __future__ import annotations

import re

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


def compare_row(entry, cached: bool) -> dict:
    inv, r = entry.inversion, entry.report
    return {
        "inverter": inv.inverter,
        "cached": cached,
        "nfe": inv.nfe,
        "seconds": round(inv.seconds, 3),
        "psnr": _round(r.get("psnr"), 2),
        "ssim": _round(r.get("ssim")),
        "lpips": _round(r.get("lpips")),
        "reconstruction": entry.reconstruction,
        "residuals": inv.residuals,
    }


def _words(prompt: str) -> list[str]:
    return re.findall(r"[a-z']+", prompt.lower())


def warnings_for(model, entry, prompts: list[str], req=None, out=None) -> list[str]:
    """What a newcomer should know about this result: the input's way in, words the model
    never learned, a reconstruction the model cannot make, an editor used against its grain."""
    notes = [f"Input: {n}." for n in entry.notes] + list(entry.warnings)
    base = base_stage(model)
    vocab = getattr(base, "vocabulary", None)
    if vocab:
        unknown = sorted({w for p in prompts for w in _words(p)} - vocab)
        if unknown:
            notes.append(
                f"{model.name} was trained only on captions with the words {', '.join(sorted(vocab))}; "
                f"{', '.join(repr(w) for w in unknown)} {'is' if len(unknown) == 1 else 'are'} new to it, so expect it to ignore or garble "
                f"{'it' if len(unknown) == 1 else 'them'}."
            )
    value = entry.report.get("psnr")
    if value is not None and value < LOW_PSNR:
        notes.append(
            f"The reconstruction is only {value:.1f} dB: {model.name} cannot represent this image well, so edits will not look like it. "
            "Try one of the examples, or a GPU model for photos."
        )
    if req is not None and out is not None:
        changed = set(_words(req.target_prompt)) ^ set(_words(req.source.prompt))
        if req.editor == "masactrl" and changed and changed <= COLOUR_WORDS:
            notes.append("MasaCtrl keeps the source's appearance (colours, textures) and changes shape or pose; for a colour change use P2P or DiffEdit.")
        if req.editor == "diffedit" and out.mask is not None and float(out.mask.mean()) == 0.0:
            notes.append("DiffEdit's mask came out empty (the two prompts predict the same noise), so nothing was edited; make the prompts differ where the change should be.")
    return notes


def summary_markdown(record: dict) -> str:
    """The numbers a person reads first, as a small table (two decimals)."""
    rec, inv = record["reconstruction"], record["inversion"]

    def f(v, unit=""):
        return "n/a" if v is None else f"{v:.2f}{unit}" if isinstance(v, float) else str(v)

    with_lpips = rec.get("lpips") is not None
    head = "| | PSNR | SSIM |" + (" LPIPS |" if with_lpips else "") + " cost |"
    rule = "|---|---|---|" + ("---|" if with_lpips else "") + "---|"
    cost = "inversion reused (0 NFE)" if inv["cached"] else f"inversion {f(inv['seconds'], ' s')}, {inv['nfe']} NFE"
    lp = f" {f(rec.get('lpips'))} |" if with_lpips else ""
    lines = [head, rule, f"| Reconstruction ({record['inverter']}, {record['steps']} steps) | {f(rec['psnr'], ' dB')} | {f(rec['ssim'])} |{lp} {cost} |"]
    if rec.get("psnr_uncorrected") is not None:
        lines.append(f"| … without the last step's recorded residual | {f(rec['psnr_uncorrected'], ' dB')} | |" + (" |" if with_lpips else "") + " |")
    codec = "none (pixel model: exact)" if rec["codec_psnr"] is None else f"{rec['codec_psnr']:.2f} dB (VAE encode/decode)"
    lines.append(f"| Best possible (codec bound) | {codec} | |" + (" |" if with_lpips else "") + " |")
    if "edit" in record:
        e = record["edit"]
        lines.append(
            f"| Change from input ({e['editor']}) | {f(e['change_psnr'], ' dB')} | {f(e['change_ssim'])} |" + (" |" if with_lpips else "") + f" edit {f(e['seconds'], ' s')}, {e['nfe']} NFE |"
        )
    text = f"**{record['model']}**\n\n" + "\n".join(lines)
    if record.get("warnings"):
        text += "\n\n" + "\n".join(f"> ⚠️ {w}" for w in record["warnings"])
    return text
