"""Command line of the PIE-Bench runner (one line and exit code 2 on a user error, as the project's CLIs).

    python -m benchmarks.pie --data DIR --model sd-1.4 --inverters ddim,rnri --editors p2p,masactrl,diffedit
                             [--steps 50] [--limit N] [--types 0,6] [--out DIR] [--metrics a,b | --no-metrics]
                             [--source-guidance edit|inversion] [--json] [--quiet]
    accelerate launch --num_processes 8 -m benchmarks.pie --data DIR --model sd-1.4 ...   # items split over 8 processes
    python -m benchmarks.pie export-shapes --out DIR [--scenes 50]

--data is PIE-Bench's folder (mapping_file.json, annotation_images/). An inverter or editor may
carry parameters, `name:key=value`: `--editors p2p,p2p:pin_source=true` runs P2P and P2P with Direct
Inversion's source branch. Edited images go to DIR/<inverter>+<editor>/annotation_images/ (PnPInversion's
layout: their evaluator reads them too); the tables to DIR/results.md and DIR/results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from inversion.cli_tools import run as run_command
from inversion.errors import ParameterError

from .metrics import METRICS


def run_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pie", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=Path, help="PIE-Bench's folder (mapping_file.json, annotation_images/)")
    ap.add_argument("--model", default="sd-1.4")
    ap.add_argument("--inverters", default="ddim")
    ap.add_argument("--editors", default="p2p")
    ap.add_argument("--steps", type=int, default=None, help="default: the model's (SD: 50, the paper's)")
    ap.add_argument("--limit", type=int, default=None, help="the first N items (after --types)")
    ap.add_argument("--types", default=None, help="editing_type_id values to run, comma-separated (default: all)")
    ap.add_argument("--out", type=Path, default=Path("runs/pie"))
    ap.add_argument("--metrics", default=",".join(METRICS), help="comma-separated, of: " + ", ".join(METRICS))
    ap.add_argument("--no-metrics", action="store_true", help="edit and save only (e.g. for PnPInversion's own evaluator)")
    ap.add_argument("--source-guidance", default="edit", choices=("edit", "inversion"),
                    help="edit: the source branch at the edit's guidance, as PnPInversion's scripts (default); inversion: at the inversion's")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON line at the end")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def export_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pie export-shapes", description="Write shapes scenes as a PIE-Bench folder.")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--scenes", type=int, default=50, help="held-out single-shape scenes (2 items each)")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export-shapes"]:
        a = export_parser().parse_args(argv[1:])

        def command():
            from .shapes_export import export

            if a.scenes < 1:
                raise ParameterError("--scenes takes a positive count")
            print(f"wrote {export(a.out, a.scenes)} ({2 * a.scenes} items)")

        return run_command(command)
    a = run_parser().parse_args(argv)

    def command():
        from .report import markdown
        from .runner import methods, run

        names = () if a.no_metrics else tuple(n.strip() for n in a.metrics.split(",") if n.strip())
        types = None if a.types is None else {t.strip() for t in a.types.split(",") if t.strip()}
        summary = run(a.data, a.model, methods(a.inverters, a.editors), a.out, a.steps, a.limit, names, a.source_guidance, types, not a.quiet)
        if summary:  # the main process
            print(markdown(summary))
            if a.json:
                print(json.dumps(summary))

    return run_command(command)
