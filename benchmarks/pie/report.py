"""PIE-Bench's table from per-item records: per method, overall and per edit type, in the paper's units.

How items are counted: a metric's value for a method is the mean over its items where the metric is
defined. A **failed** item (its inversion or edit raised; the error is in its record) has no image:
it is left out of every mean and counted under `failed`. A **NaN** item is one where the metric is
undefined for its mask (the background metrics when the mask covers the whole image, the edited-part
CLIP score when the mask is empty; the evaluator's "nan"): it is left out of that metric's mean only
and counted in the JSON's `nan`. Items without a record (an interrupted run) count as `missing`.
Units: structure distance x10^3, background PSNR in dB, LPIPS x10^3, MSE x10^4, SSIM x10^2, CLIP
scores as CLIPScore gives them (100 x cosine).
"""

from __future__ import annotations

import math

from .data import EDIT_TYPES
from .metrics import METRICS

# Published rows, SD 1.4, 50 steps, in the table's units (Struct, bg PSNR, LPIPS, MSE, SSIM, CLIP whole, CLIP edited)
PUBLISHED = [
    ("DDIM + P2P", "PnPInversion (Ju et al., ICLR 2024), SD 1.4, 50 steps", (69.43, 17.87, 208.80, 219.88, 71.14, 25.01, 22.44)),
    ("Direct Inversion + P2P", "PnPInversion (Ju et al., ICLR 2024), SD 1.4, 50 steps", (11.65, 27.22, 54.55, 32.86, 84.76, 25.02, 22.10)),
    ("InfEdit", "InfEdit (Xu et al., CVPR 2024), on an LCM", (13.78, 28.51, 47.58, 32.09, 85.66, 25.03, 22.22)),
]


def json_safe(obj):
    """NaN and infinities as null, so the files are strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def group_row(method, group: str, records: list[dict | None], names) -> dict:
    ok = [r for r in records if r and r.get("status") == "ok"]
    row = {"method": method.name, "inverter": method.inverter.label, "editor": method.editor.label, "group": group,
           "items": len(records), "ok": len(ok), "failed": sum(1 for r in records if r and r.get("status") == "failed"),
           "missing": sum(1 for r in records if not r), "nan": {}}
    for n in names:
        measured = [r["metrics"][n] for r in ok if n in r.get("metrics", {})]
        vals = [v for v in measured if _finite(v)]
        row[n] = sum(vals) / len(vals) * METRICS[n][1] if vals else None
        row["nan"][n] = len(measured) - len(vals)
    for k in ("nfe", "seconds"):
        vals = [r[k] for r in ok if _finite(r.get(k))]
        row[k] = sum(vals) / len(vals) if vals else None
    return row


def summarise(records: dict[str, list[dict | None]], items, method_list, settings: dict) -> dict:
    """`records[method name][i]` is item i's record (None when there is none)."""
    names = [n for n in METRICS if n in settings.get("metrics", METRICS)]
    types = sorted({i.editing_type_id for i in items}, key=lambda t: (len(t), t))
    rows = []
    for m in method_list:
        recs = records[m.name]
        rows.append(group_row(m, "all", recs, names))
        for t in types:
            rows.append(group_row(m, t, [r for r, i in zip(recs, items) if i.editing_type_id == t], names))
    failures = [{"method": m.name, "key": r["key"], "error": r.get("error")} for m in method_list for r in records[m.name] if r and r.get("status") == "failed"]
    return json_safe({**settings, "items": len(items), "edit_types": {t: EDIT_TYPES.get(t, t) for t in types},
                      "units": {n: METRICS[n][0] for n in names}, "rows": rows, "failures": failures,
                      "published": [{"row": r, "source": s, **dict(zip(METRICS, v))} for r, s, v in PUBLISHED]})


def _fmt(v, digits: int = 2) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def markdown(summary: dict) -> str:
    names = list(summary["units"])
    head = ["method", *[summary["units"][n] for n in names], "items", "failed", "NFE", "s / item"]

    def table(rows: list[dict], label) -> list[str]:
        lines = ["| " + " | ".join([head[0], *([] if label is None else ["edit type"]), *head[1:]]) + " |"]
        lines.append("|" + "---|" * (len(head) + (label is not None)))
        for r in rows:
            cells = [r["method"], *([] if label is None else [label(r)]), *[_fmt(r[n]) for n in names], str(r["items"]), str(r["failed"]),
                     _fmt(r["nfe"], 0), _fmt(r["seconds"], 2)]
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    steps = summary.get("steps") or "the model's default"
    out = [f"## PIE-Bench: {summary['model']}, {steps} steps, {summary['items']} items (source branch at the {summary['source_guidance']} guidance)", ""]
    overall = [r for r in summary["rows"] if r["group"] == "all"]
    out += table(overall, None)
    published = [n for n in METRICS if n in names]
    out += ["", "Published (for comparison; not measured here):", "", "| row | source | " + " | ".join(summary["units"][n] for n in published) + " |",
            "|" + "---|" * (len(published) + 2)]
    for p in summary["published"]:
        out.append(f"| {p['row']} | {p['source']} | " + " | ".join(_fmt(p[n]) for n in published) + " |")
    by_type = [r for r in summary["rows"] if r["group"] != "all"]
    if by_type:
        out += ["", "By edit type:", ""] + table(by_type, lambda r: f"{r['group']} {summary['edit_types'].get(r['group'], '')}".strip())
    nan = [(r["method"], n, c) for r in overall for n, c in r["nan"].items() if c]
    out += ["", "Means are over the items where a metric is defined. Failed items (the edit raised) are left out of every mean and "
            "counted under failed; items where a metric is undefined for the mask (NaN) are left out of that metric's mean only"
            + (": " + "; ".join(f"{m} {n} {c}" for m, n, c in nan) if nan else " (none here)") + "."]
    return "\n".join(out) + "\n"
