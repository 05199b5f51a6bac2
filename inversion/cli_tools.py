"""What both command lines share: parameters as NAME=VALUE, progress on stderr, the JSON
line, the result table, and one rule for errors: a `UserError` is one line on stderr and
exit code 2; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import json
import math
import sys

from .errors import ParameterError, UserError


def parse_params(items: list[str] | None) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ParameterError(f"--param takes NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = v.strip()
    return out


class StderrProgress:
    """A one-line progress bar on stderr (quiet when stderr is not a terminal, except at the end)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int, desc: str) -> None:
        if not self.enabled or (not self.tty and done != total):
            return
        width = 30
        fill = int(width * done / total)
        end = "\n" if done == total else "\r"
        sys.stderr.write(f"{desc:<24} [{'#' * fill}{'.' * (width - fill)}] {done}/{total}{end}")
        sys.stderr.flush()


def _json_safe(obj):
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def emit(obj, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_json_safe(obj)))


def print_table(rows: list[dict], cols: list[str] | None = None) -> None:
    cols = cols or ["model", "inverter", "steps", "nfe", "seconds", "time_per_nfe", "overhead", "unet_s", "rest_s", "psnr", "ssim", "latent_psnr", "vae_psnr", "lpips"]

    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
        return str(v)

    table = [cols] + [[fmt(r.get(c)) for c in cols] for r in rows if "skipped" not in r]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))
    for r in rows:
        if "skipped" in r:
            print(f"({r['inverter']}: skipped, {r['skipped']})")


def run(command) -> int:
    """Run a command function; user errors become one line on stderr and exit code 2."""
    try:
        command()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
