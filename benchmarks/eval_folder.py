"""Evaluate inverters (and optionally an editor) over a folder of images, sharded
over processes/GPUs with accelerate: one CSV row per image and inverter, then a
summary table. The engine for large evaluations (COCO captions, PIE-Bench).

    python benchmarks/eval_folder.py --model sd-1.5 --images DIR --inverters ddim,rnri --out results.csv
    accelerate launch --num_processes 8 benchmarks/eval_folder.py --model sd-1.5 --images DIR --editor p2p --out r.csv

Prompts: `--prompts prompts.json` maps file names to {"source": ..., "target": ...}
(or to a source string); otherwise a caption file beside each image (cat.txt for
cat.png, first line source, second line target); otherwise --source-prompt.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from editing import edit  # noqa: E402
from inversion.cli import IMAGE_SUFFIXES  # noqa: E402
from inversion.metrics import psnr, ssim  # noqa: E402
from inversion.models import load_model  # noqa: E402
from inversion.pipeline import evaluate, input_tensor, invert  # noqa: E402

FIELDS = ["image", "inverter", "editor", "steps", "nfe", "seconds", "psnr", "ssim", "latent_psnr", "vae_psnr", "lpips", "edit_nfe", "edit_seconds", "edit_psnr", "edit_ssim", "error"]


def prompts_for(path: Path, table: dict, default: str) -> tuple[str, str | None]:
    entry = table.get(path.name)
    if isinstance(entry, str):
        return entry, None
    if isinstance(entry, dict):
        return entry.get("source", default), entry.get("target")
    caption = path.with_suffix(".txt")
    if caption.is_file():
        lines = caption.read_text().splitlines() + [None]
        return lines[0], lines[1]
    return default, None


def evaluate_one(model, path: Path, source: str, target: str | None, inverters: list[str], editor: str | None, steps: int | None) -> list[dict]:
    rows = []
    try:
        x = input_tensor(model, path)
    except Exception as e:  # an unreadable image is recorded, not fatal
        return [{"image": path.name, "inverter": name, "editor": editor or "", "error": f"{type(e).__name__}: {e}"} for name in inverters]
    for name in inverters:
        row = {"image": path.name, "inverter": name, "editor": editor or ""}
        try:
            inv = invert(model, x, source, name, steps)
            report, _ = evaluate(model, x, inv)
            row.update({k: report.get(k) for k in FIELDS if k in report})
            if editor and target:
                out = edit(model, inv, target, editor)
                row.update(edit_nfe=out.nfe, edit_seconds=out.seconds, edit_psnr=psnr(out.image, x), edit_ssim=ssim(out.image, x))
        except Exception as e:  # one bad image must not stop a long evaluation; it is recorded
            row["error"] = f"{type(e).__name__}: {e}"
        rows.append(row)
    return rows


def summary(rows: list[dict]) -> list[dict]:
    out = []
    for name in dict.fromkeys(r["inverter"] for r in rows):
        ok = [r for r in rows if r["inverter"] == name and not r.get("error")]
        s = {"inverter": name, "images": len(ok), "errors": sum(1 for r in rows if r["inverter"] == name and r.get("error"))}
        for k in ("nfe", "seconds", "psnr", "ssim", "latent_psnr", "edit_seconds", "edit_psnr"):
            vals = [float(r[k]) for r in ok if r.get(k) not in (None, "")]
            s[k] = sum(vals) / len(vals) if vals else None
        out.append(s)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    from accelerate import PartialState

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", required=True, type=Path)
    ap.add_argument("--inverters", default="ddim,rnri")
    ap.add_argument("--editor", default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--prompts", type=Path, default=None)
    ap.add_argument("--source-prompt", default="")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("results.csv"))
    a = ap.parse_args(argv)
    state = PartialState()
    files = sorted(p for p in a.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: a.limit]
    table = json.loads(a.prompts.read_text()) if a.prompts else {}
    model = load_model(a.model, device=str(state.device) if state.device.type == "cuda" else None)
    rows = []
    with state.split_between_processes(files) as shard:
        for i, path in enumerate(shard):
            source, target = prompts_for(path, table, a.source_prompt)
            rows += evaluate_one(model, path, source, target, a.inverters.split(","), a.editor, a.steps)
            print(f"[rank {state.process_index}] {i + 1}/{len(shard)} {path.name}", file=sys.stderr, flush=True)
    part = a.out.with_suffix(f".rank{state.process_index}.csv")
    with part.open("w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)
    state.wait_for_everyone()
    if not state.is_main_process:
        return []
    merged = []
    for rank in range(state.num_processes):
        p = a.out.with_suffix(f".rank{rank}.csv")
        with p.open() as f:
            merged += list(csv.DictReader(f))
        p.unlink()
    with a.out.open("w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(merged)
    result = summary(merged)
    cols = ["inverter", "images", "errors", "nfe", "seconds", "psnr", "ssim", "latent_psnr", "edit_seconds", "edit_psnr"]
    print("  ".join(f"{c:>12s}" for c in cols))
    for s in result:
        print("  ".join(f"{s[c]:>12.4g}" if isinstance(s[c], float) else f"{s[c]!s:>12s}" for c in cols))
    print(f"wrote {a.out} ({len(merged)} rows)")
    return result


if __name__ == "__main__":
    main()
