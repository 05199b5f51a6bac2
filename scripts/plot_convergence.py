"""Convergence of every inverter on the closed-form oracle: the implicit-equation
residual rms(F(z) - z) after each UNet call, averaged over steps and samples.

    python scripts/plot_convergence.py [--steps 10] [--samples 4] [--out assets/convergence.png]

Writes the plot and, beside it, a JSON file with the numbers and the RNRI
"Newton iterations to tolerance" distribution shown in the README.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from inversion.models import load_model  # noqa: E402
from inversion.pipeline import invert  # noqa: E402

# Each inverter run long enough to show its curve; the defaults stop earlier.
RUNS = {
    "ddim": {},
    "easyinv": {},
    "fixed-point (plain)": ("fixed-point", {"iterations": 8, "acceleration": "none", "tolerance": 0.0}),
    "fixed-point (Anderson)": ("fixed-point", {"iterations": 8, "tolerance": 0.0}),
    "renoise": ("renoise", {"renoise_steps": 7}),
    "rnri (secant Newton)": ("rnri", {"iterations": 8, "tolerance": 0.0}),
    "rnri (official l1 step)": ("rnri", {"iterations": 8, "newton": "l1"}),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "assets" / "convergence.png")
    a = ap.parse_args()
    model = load_model("oracle")
    curves = {}
    for label, spec in RUNS.items():
        name, params = (label, spec) if isinstance(spec, dict) else spec
        per_call = collections.defaultdict(list)
        for seed in range(a.samples):
            inv = invert(model, None, "", name, steps=a.steps, seed=seed, **params)
            for res, x in zip(inv.residuals, inv.latents[:-1]):
                scale = float(x.pow(2).mean().sqrt())
                for k, r in enumerate(res):
                    per_call[k].append(r / scale)
        curves[label] = [sum(v) / len(v) for _, v in sorted(per_call.items())]

    hist = collections.Counter()
    for seed in range(a.samples):
        inv = invert(model, None, "", "rnri", steps=a.steps, seed=seed, iterations=4, tolerance=1e-3)
        for res, x in zip(inv.residuals, inv.latents[:-1]):
            scale = float(x.pow(2).mean().sqrt())
            hist[next((str(k) for k in range(1, len(res)) if res[k] <= 1e-3 * scale), ">3")] += 1

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for label, ys in curves.items():
        ax.semilogy(range(1, len(ys) + 1), ys, marker="o", ms=3, label=label)
    ax.set_xlabel("UNet call within a step")
    ax.set_ylabel("residual rms(F(z) - z) / rms(latent)")
    ax.set_title(f"Convergence per inversion step (oracle, {a.steps} steps, {a.samples} samples)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out)
    data = {"steps": a.steps, "samples": a.samples, "relative_residual_per_call": curves, "rnri_newton_iterations_to_1e-3": dict(sorted(hist.items()))}
    a.out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    print(json.dumps(data["rnri_newton_iterations_to_1e-3"]))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
