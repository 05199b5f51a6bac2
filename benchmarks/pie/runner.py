"""Every inverter x editor over PIE-Bench: edit, save in PnPInversion's layout, measure, tabulate.

One pass over the items; per item the image is inverted once per (inverter, prompt) and edited by
every editor (`protocol` says with which prompts and parameters). Output:

    <out>/run.json                                   the run's settings (a resumed run must match them)
    <out>/<inverter>+<editor>/annotation_images/...  the edited images, PnPInversion's layout and file names
    <out>/<inverter>+<editor>/records/<key>.json     per item: status, NFE, seconds, parameters, metrics
    <out>/results.json, <out>/results.md             the tables (`report`)

Resumable: an item whose image exists is not edited again, one whose record holds every metric
asked for is not measured again; a failed item (its edit raised) has no image and is tried again
on the next run. Images and records are written to a temporary name and renamed, so a killed run
leaves no half-written file. Launched with `accelerate launch --num_processes N`, the items are
split between the processes (each loads its own models; records are per item, so nothing is
merged) and the main process writes the tables.

An edit is saved at the source image's size: a model that edits at another size (the `shapes`
cascade's 64 px, `tiny-sd`'s 64 px) is resized to 512 (bicubic up, Lanczos down) first. Files keep
the image's own extension and PIL's defaults, as the authors' scripts save them (JPEG quality 75:
the metrics see the same compressed pixels their evaluator would; the metrics are computed from
the file read back). Pixels are rounded to 8 bits where their scripts truncate (at most one level). `--source-guidance edit` (default) samples the source branch at the edit's
guidance, as their scripts do (inversion at guidance 1, both branches at 7.5: the reason DDIM + P2P
loses the background); `inversion` keeps this library's rule, the source branch at the inversion's
guidance (the reconstruction).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from editing.api import edit, get_editor
from inversion.errors import ImageError, ParameterError
from inversion.images import to_pil
from inversion.inverters import get_inverter
from inversion.models import load_model
from inversion.models.cascade import base_stage
from inversion.pipeline import input_tensor, invert
from inversion.result import CascadeInversion, packed, stage_inversions

from . import metrics as M
from . import protocol, report
from .data import Item, output_path, read_edit, read_items, source_image

SOURCE_GUIDANCE = ("edit", "inversion")


@dataclass(frozen=True)
class Spec:
    """An inverter or editor with parameters: `name` or `name:key=value:key=value`."""

    name: str
    params: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        return self.name + "".join(f"_{k}={v}" for k, v in self.params)

    @classmethod
    def parse(cls, text: str) -> Spec:
        name, *pairs = text.strip().split(":")
        params = []
        for pair in pairs:
            k, sep, v = pair.partition("=")
            if not sep or not k.strip():
                raise ParameterError(f"{text!r}: parameters follow the name as :key=value, e.g. p2p:pin_source=true")
            params.append((k.strip().replace("-", "_"), v.strip()))
        return cls(name.strip(), tuple(params))


@dataclass(frozen=True)
class Method:
    inverter: Spec
    editor: Spec

    @property
    def name(self) -> str:
        """The output folder, PnPInversion-style (theirs: ddim+p2p, directinversion+p2p, ...)."""
        return f"{self.inverter.label}+{self.editor.label}"


def methods(inverters: str, editors: str) -> list[Method]:
    """Every inverter x editor, checked (names and parameters) before any work."""
    invs = [Spec.parse(s) for s in inverters.split(",") if s.strip()]
    eds = [Spec.parse(s) for s in editors.split(",") if s.strip()]
    if not invs or not eds:
        raise ParameterError("give at least one inverter and one editor")
    for s in invs:
        get_inverter(s.name).resolve_params((), **dict(s.params))
    for s in eds:
        get_editor(s.name).resolve_params((), **dict(s.params))
    return [Method(i, e) for i in invs for e in eds]


# ---- files -------------------------------------------------------------------------------------
def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_edit(image, path: Path, size: tuple[int, int]) -> None:
    """The edit as the benchmark's file: at the source's size, PIL's defaults for the extension."""
    img = to_pil(image)
    if img.size != size:
        img = img.resize(size, Image.Resampling.BICUBIC if img.size[0] < size[0] else Image.Resampling.LANCZOS)
    _atomic(path, lambda p: img.save(p, format=Image.registered_extensions().get(path.suffix.lower())))


def record_path(out: Path, method: Method, item: Item) -> Path:
    return Path(out) / method.name / "records" / f"{item.key}.json"


def read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_record(path: Path, rec: dict) -> None:
    """A record as strict JSON: an undefined (NaN) metric is null."""
    _atomic(path, lambda p: p.write_text(json.dumps(report.json_safe(rec), indent=1)))


def check_settings(out: Path, settings: dict) -> None:
    """A resumed run must be the same run: refuse another model, step count or protocol in the same folder."""
    path = Path(out) / "run.json"
    old = read_record(path)
    if old is not None:
        diff = [k for k in settings if old.get(k) != settings[k]]
        if diff:
            was = ", ".join(f"{k}={old.get(k)!r}" for k in diff)
            raise ParameterError(f"{out} holds a run made with {was}; give another --out (or the same settings) to resume")
    else:
        write_record(path, settings)


# ---- the run -------------------------------------------------------------------------------------
class _Single:
    """accelerate's PartialState, for one process (where accelerate is not installed)."""

    num_processes, process_index, is_main_process, device = 1, 0, True, None

    @contextlib.contextmanager
    def split_between_processes(self, items):
        yield items

    def wait_for_everyone(self):
        pass


def process_state():
    try:
        from accelerate import PartialState
    except ImportError:
        return _Single()
    return PartialState()


def _done(rec: dict | None, image: Path, names: tuple[str, ...]) -> bool:
    return rec is not None and rec.get("status") == "ok" and image.is_file() and all(n in rec.get("metrics", {}) for n in names)


def source_sampled_at(inv, guidance: float):
    """The inversion with its base stage's source branch sampled at `guidance` (z_T, trajectory and
    noise unchanged): PnPInversion's scripts sample both branches at the edit's guidance."""
    stages = stage_inversions(inv)
    return packed([replace(stages[0], guidance=guidance), *stages[1:]], isinstance(inv, CascadeInversion))


def run(data: Path, model_name: str, method_list: list[Method], out: Path, steps: int | None = None, limit: int | None = None,
        metric_names: tuple[str, ...] = tuple(M.METRICS), source_guidance: str = "edit", types: set[str] | None = None,
        progress: bool = True) -> dict:
    """Edit and measure every (item, method) not done yet; returns the summary (`report.summarise`)."""
    if source_guidance not in SOURCE_GUIDANCE:
        raise ParameterError(f"--source-guidance takes {' or '.join(SOURCE_GUIDANCE)}, not {source_guidance!r}")
    if limit is not None and limit < 0:
        raise ParameterError(f"--limit takes a count of items (0 or more), not {limit}")
    unknown = set(metric_names) - set(M.METRICS)
    if unknown:
        raise ParameterError(f"unknown metric {', '.join(sorted(unknown))}; PIE-Bench's: {', '.join(M.METRICS)}")
    items = [i for i in read_items(data) if types is None or i.editing_type_id in types][:limit]
    M.check_weights(metric_names)  # one line, before any model work
    state = process_state()
    device = str(state.device) if state.device is not None and state.device.type == "cuda" else None
    out = Path(out)
    if state.is_main_process:
        check_settings(out, {"model": model_name, "steps": steps, "source_guidance": source_guidance})
    state.wait_for_everyone()
    lazy: dict = {}

    def model():
        if "model" not in lazy:
            lazy["model"] = load_model(model_name, device=device)
        return lazy["model"]

    def metric_models():
        if "metrics" not in lazy:
            lazy["metrics"] = M.load_models(metric_names, device)
        return lazy["metrics"]

    with state.split_between_processes(items) as shard:
        bar = _bar(len(shard) * len(method_list), progress and state.is_main_process)
        for item in shard:
            _run_item(data, item, method_list, out, steps, metric_names, source_guidance, model, metric_models, bar)
        bar.close()
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}
    records = {m.name: [read_record(record_path(out, m, i)) for i in items] for m in method_list}
    summary = report.summarise(records, items, method_list, {"model": model_name, "steps": steps, "source_guidance": source_guidance,
                                                             "data": str(data), "metrics": list(metric_names)})
    _atomic(out / "results.json", lambda p: p.write_text(json.dumps(summary, indent=1)))
    _atomic(out / "results.md", lambda p: p.write_text(report.markdown(summary)))
    return summary


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="PIE-Bench", unit="edit", file=sys.stderr, disable=not enabled, dynamic_ncols=True)


def _run_item(data, item: Item, method_list, out, steps, metric_names, source_guidance, model, metric_models, bar) -> None:
    inversions: dict = {}
    memo: dict = {}  # what the metrics compute from the source image alone, once per item
    source: list = []  # the item's image, read on first need

    def src() -> Image.Image:
        if not source:
            source.append(source_image(data, item))
        return source[0]

    for m in method_list:
        image, rpath = output_path(out, m.name, item), record_path(out, m, item)
        rec = read_record(rpath)
        if _done(rec, image, metric_names):
            bar.update()
            continue
        rec = {**(rec or {}), "key": item.key, "editing_type_id": item.editing_type_id, "image_path": item.image_path, "method": m.name,
               "inverter": m.inverter.name, "editor": m.editor.name}
        try:
            if image.is_file():
                if rec.get("status") != "ok":  # put there by another program (their scripts write the same layout): measured as it is
                    rec.update(status="ok", made="elsewhere", error=None)
            else:
                rec.update(_edit_one(model, src(), item, m, steps, source_guidance, inversions, image))
            todo = [n for n in metric_names if n not in rec.setdefault("metrics", {})]
            if rec["status"] == "ok" and todo:
                edited = np.asarray(read_edit(image))
                rec["metrics"].update(M.pie_metrics(np.asarray(src()), edited, item.decoded_mask(), item.target_prompt, metric_models(), todo, memo))
        except ImageError as e:  # the benchmark's own image is missing or not 512 x 512: this item fails, the run goes on
            rec.update(status="failed", error=f"ImageError: {e}")
        write_record(rpath, rec)
        bar.update()


def _edit_one(model_fn, source: Image.Image, item: Item, m: Method, steps, source_guidance, inversions: dict, image: Path) -> dict:
    """Invert (once per inverter and prompt) and edit one item; a failure is recorded, not raised."""
    prompt, target = item.source_prompt, item.target_prompt
    model = model_fn()  # a model that cannot load stops the run (one line, exit code 2), not every item
    try:
        prompt, target, params = protocol.plan(model, item, m.editor.name)
        params.update(dict(m.editor.params))
        key = (m.inverter, prompt)
        if key not in inversions:
            start = time.perf_counter()
            x = input_tensor(model, source)
            inversions[key] = (invert(model, x, prompt, m.inverter.name, steps, **dict(m.inverter.params)), time.perf_counter() - start)
        inv, inv_seconds = inversions[key]
        guided = source_sampled_at(inv, base_stage(model).default_edit_guidance) if source_guidance == "edit" else inv
        start = time.perf_counter()
        out = edit(model, guided, target, m.editor.name, **params)
        save_edit(out.image, image, source.size)
        return {"status": "ok", "made": "here", "error": None, "inversion_prompt": prompt, "target_prompt": target, "editor_params": out.params,
                "inversion_nfe": inv.nfe, "edit_nfe": out.nfe, "nfe": inv.nfe + out.nfe, "seconds": inv_seconds + time.perf_counter() - start,
                "metrics": {}}
    except Exception as e:  # noqa: BLE001 -- one item must not stop 700; it is recorded and counted as failed
        return {"status": "failed", "error": f"{type(e).__name__}: {e}", "inversion_prompt": prompt, "target_prompt": target}
