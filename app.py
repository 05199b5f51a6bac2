"""Gradio app: pick an inverter and an editor independently, see the original, the
reconstruction and the edit side by side with metrics and timings.

    python app.py [--model auto|shapes|lcm-dreamshaper-v7|...] [--host 127.0.0.1] [--port 7860] [--share]

UI only: layout, events and the per-session inversion cache. Inverting,
reconstructing, measuring and editing are the library's (`inversion`,
`editing`). Named API endpoints for gradio_client: /invert, /edit, /compare.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import hashlib
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from editing import EDITORS, edit, validate_edit  # noqa: E402
from editing.words import WordError  # noqa: E402
from inversion.images import ImageError, load_image, to_pil  # noqa: E402
from inversion.inverters import INVERTERS, ParameterError  # noqa: E402
from inversion.metrics import psnr, ssim  # noqa: E402
from inversion.models import MODELS, Cascade, ModelError, PromptError, load_model  # noqa: E402
from inversion.pipeline import IncompatibleChoice, evaluate, input_tensor, invert  # noqa: E402
from inversion.result import IncompatibleInversion  # noqa: E402

try:  # Hugging Face ZeroGPU: run model work on a borrowed GPU when the package is present
    import spaces

    gpu = spaces.GPU
except ImportError:

    def gpu(fn=None, **_kw):
        return fn if fn is not None else (lambda f: f)


ROOT = Path(__file__).resolve().parent
USER_ERRORS = (ImageError, PromptError, ParameterError, WordError, IncompatibleChoice, IncompatibleInversion, ModelError, ValueError)
CACHE_BYTES_PER_SESSION = 256 * 2**20
CACHE_BYTES_TOTAL = 1024 * 2**20
CACHE_SESSIONS = 64
MAX_STEPS = 100


# ---------------------------------------------------------------- engine (no gradio) ----
class InversionCache:
    """Inversions per session, least recently used first out, bounded in bytes per session,
    in bytes over all sessions and in sessions. Keys always include the session, so
    sessions never see each other's."""

    def __init__(self, max_bytes: int = CACHE_BYTES_PER_SESSION, max_sessions: int = CACHE_SESSIONS, max_total: int = CACHE_BYTES_TOTAL):
        self.max_bytes, self.max_sessions, self.max_total = max_bytes, max_sessions, max_total
        self.sessions: collections.OrderedDict[str, collections.OrderedDict] = collections.OrderedDict()
        self.lock = threading.Lock()

    def get(self, session: str, key: str):
        with self.lock:
            store = self.sessions.get(session)
            if store is None or key not in store:
                return None
            self.sessions.move_to_end(session)
            store.move_to_end(key)
            return store[key]

    def put(self, session: str, key: str, entry: Entry) -> None:
        with self.lock:
            store = self.sessions.setdefault(session, collections.OrderedDict())
            self.sessions.move_to_end(session)
            store[key] = entry
            while sum(e.nbytes for e in store.values()) > self.max_bytes and len(store) > 1:
                store.popitem(last=False)
            while len(self.sessions) > self.max_sessions:
                self.sessions.popitem(last=False)
            while self._total() > self.max_total and len(self.sessions) > 1:
                oldest = next(iter(self.sessions.values()))  # least recent session loses its oldest entry
                oldest.popitem(last=False)
                if not oldest:
                    self.sessions.popitem(last=False)

    def _total(self) -> int:
        return sum(e.nbytes for st in self.sessions.values() for e in st.values())

    def nbytes(self, session: str | None = None) -> int:
        with self.lock:
            stores = [self.sessions.get(session, {})] if session else list(self.sessions.values())
            return sum(e.nbytes for s in stores for e in s.values())


@dataclass
class Entry:
    """A cached inversion with what the UI shows of it."""

    inversion: object
    x: torch.Tensor  # the input as the model took it
    reconstruction: torch.Tensor
    report: dict

    @property
    def nbytes(self) -> int:
        return self.inversion.nbytes() + (self.x.numel() + self.reconstruction.numel()) * 4


def pick_model(name: str) -> tuple[object, str]:
    """(model, notice). 'auto': LCM Dreamshaper on a GPU when it loads, else the offline `shapes`;
    a model that fails to load falls back to `shapes` (and, without its weights, to `tiny-sd`)."""
    notice = ""
    if name == "auto" and torch.cuda.is_available():
        try:
            return load_model("lcm-dreamshaper-v7"), ""
        except ModelError as e:
            notice = f"Could not load lcm-dreamshaper-v7 ({str(e).split(':')[0]}); running the offline model **shapes** instead."
    elif name == "auto":
        notice = "No GPU here: running the small offline model **shapes** (flat shapes, 64 px). Start with `--model lcm-dreamshaper-v7` on a GPU for photos."
    else:
        try:
            return load_model(name), ""
        except ModelError as e:
            notice = f"Could not load **{name}**: {e} Running the offline model **shapes** instead."
    try:
        return load_model("shapes"), notice
    except ModelError as e:
        return load_model("tiny-sd"), f"{notice} The shapes weights are missing too ({e}); running the random-weight **tiny-sd** (plumbing only)."


class OutOfMemory(RuntimeError):
    """The GPU ran out of memory; the message says which size should fit."""


def oom_message(x: torch.Tensor) -> str:
    h, w = x.shape[-2:]
    side = max(64, int(max(h, w) * 0.7) // 64 * 64)
    return (
        f"The GPU ran out of memory at {w}x{h} pixels. Try a long side of {side} px or less, fewer steps, "
        "or fewer inverter iterations; nothing else was changed and the app keeps serving."
    )


class Engine:
    """The loaded model, the inversion cache and a lock: one UNet serves one request at a time
    (editors swap its attention processors, and NFE counts must not interleave)."""

    def __init__(self, model_name: str = "auto"):
        self.model, self.notice = pick_model(model_name)
        self.lock = threading.Lock()
        self.cache = InversionCache()

    @property
    def base(self):
        return self.model.stages[0] if isinstance(self.model, Cascade) else self.model

    def inverters(self) -> list[str]:
        return [n for n, inv in INVERTERS.items() if isinstance(self.model, Cascade) or not inv.needs_cascade]

    def prepare(self, image) -> torch.Tensor:
        if image is None:
            raise ImageError("upload an image first")
        return input_tensor(self.model, load_image(image))

    def key(self, x, prompt, inverter, steps, seed, guidance, params) -> str:
        h = hashlib.sha1(x.detach().cpu().numpy().tobytes()).hexdigest()[:16]
        return json.dumps([self.model.name, h, prompt, inverter, steps, seed, guidance, params], sort_keys=True, default=str)

    def inversion(self, session, image, prompt, inverter, steps, seed, guidance, params, progress=None) -> tuple[Entry, bool]:
        """The cached inversion for these inputs, or a new one (then cached)."""
        x = self.prepare(image)
        steps = int(steps)
        if not 1 <= steps <= MAX_STEPS:
            raise ParameterError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
        self.base.check_prompt(prompt)
        key = self.key(x, prompt, inverter, steps, int(seed), guidance, params)
        hit = self.cache.get(session, key)
        if hit is not None:
            return hit, True
        with self.lock, _oom_guard(x):
            inv = invert(self.model, x, prompt, inverter, steps, guidance, "", int(seed), progress=progress, **params)
            report, recon = evaluate(self.model, x, inv, per_stage=False)
        entry = Entry(inv, x, recon, report)
        self.cache.put(session, key, entry)
        return entry, False

    def edit(self, session, image, source, target, inverter, editor, steps, seed, guidance, edit_guidance, inv_params, ed_params, progress=None) -> dict:
        ed_p = validate_edit(self.model, source, target, editor, **ed_params)
        min_steps = 2 if EDITORS[editor].needs_attention else 1
        if int(steps) < min_steps:
            raise IncompatibleChoice(f"{EDITORS[editor].title} needs at least {min_steps} steps (one free for the new layout)")
        entry, cached = self.inversion(session, image, source, inverter, steps, seed, guidance, inv_params, progress)
        with self.lock, _oom_guard(entry.x):
            out = edit(self.model, entry.inversion, target, editor, edit_guidance, progress=progress, **ed_p)
        inv = entry.inversion
        return {
            "x": entry.x,
            "reconstruction": entry.reconstruction,
            "edit": out.image,
            "mask": out.mask,
            "inversion": inv,
            "metrics": {
                "model": self.model.name,
                "inverter": inv.inverter,
                "editor": editor,
                "steps": inv.num_steps,
                "inversion_cached": cached,
                "inversion_nfe": 0 if cached else inv.nfe,
                "edit_nfe": out.nfe,
                "inversion_seconds": 0.0 if cached else round(inv.seconds, 3),
                "edit_seconds": round(out.seconds, 3),
                "reconstruction": _quality(entry.report),
                "edit_vs_input": {"psnr": round(psnr(out.image, entry.x), 2), "ssim": round(ssim(out.image, entry.x), 4)},
                "mask_fraction": None if out.mask is None else round(float(out.mask.mean()), 3),
                "warnings": list(getattr(self.base, "warnings", [])),
            },
        }

    def compare(self, session, image, prompt, steps, seed, guidance, progress=None) -> list[dict]:
        rows = []
        for name in self.inverters():
            entry, cached = self.inversion(session, image, prompt, name, steps, seed, guidance, {}, progress)
            inv = entry.inversion
            rows.append({"inverter": name, "cached": cached, "nfe": inv.nfe, "seconds": round(inv.seconds, 3), **_quality(entry.report), "reconstruction": entry.reconstruction, "residuals": inv.residuals})
        return rows


@contextlib.contextmanager
def _oom_guard(x: torch.Tensor):
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfMemory(oom_message(x)) from None


def _quality(report: dict) -> dict:
    r = {k: report.get(k) for k in ("psnr", "ssim", "lpips", "latent_psnr", "vae_psnr")}
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}


def summarize(m: dict) -> str:
    """The metrics a person reads first, as a small Markdown table."""
    q = m["reconstruction"]

    def f(v, unit=""):
        return "n/a" if v is None else f"{v:.2f}{unit}" if isinstance(v, float) else str(v)

    inv_cost = "reused (0 NFE)" if m.get("inversion_cached") else f"{f(m.get('inversion_seconds'), ' s')}, {m.get('inversion_nfe')} NFE"
    lines = [
        "| | PSNR | SSIM | LPIPS | cost |",
        "|---|---|---|---|---|",
        f"| Reconstruction ({m.get('inverter')}) | {f(q['psnr'], ' dB')} | {f(q['ssim'])} | {f(q['lpips'])} | inversion {inv_cost} |",
        f"| Codec bound (VAE encode/decode) | {f(q['vae_psnr'], ' dB')} | | | |",
    ]
    if "edit_vs_input" in m:
        e = m["edit_vs_input"]
        lines.append(f"| Edit ({m['editor']}) vs input | {f(e['psnr'], ' dB')} | {f(e['ssim'])} | | edit {f(m['edit_seconds'], ' s')}, {m['edit_nfe']} NFE |")
    if m.get("warnings"):
        lines.append("\n" + "\n".join(f"> {w}" for w in m["warnings"]))
    return "\n".join(lines)


def residual_curve(rows: list[dict]):
    """Mean log10 relative residual per UNet call within a step, per inverter (for the plot)."""
    import math

    import pandas as pd

    data = []
    for r in rows:
        per_call = collections.defaultdict(list)
        for res in r["residuals"]:
            for k, v in enumerate(res):
                per_call[k + 1].append(v / max(res[0], 1e-30))
        for k, vals in sorted(per_call.items()):
            data.append({"UNet call within a step": k, "log10 residual / first": math.log10(max(sum(vals) / len(vals), 1e-12)), "inverter": r["inverter"]})
    return pd.DataFrame(data)


# ---------------------------------------------------------------- UI helpers ------------
def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "local"


def _progress(p):
    if p is None:
        return None
    return lambda done, total, desc: p((done, total), desc=desc)


def _errors(fn):
    """User errors become a readable message in the UI (inputs are kept); OOM says what fits."""

    @functools.wraps(fn)  # keeps the signature: gradio injects gr.Request / gr.Progress from it
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (*USER_ERRORS, OutOfMemory) as e:
            raise gr.Error(str(e)) from None

    return wrapped


def show(x: torch.Tensor, at_least: int = 256):
    """A display copy: small images enlarged by an integer factor, nearest neighbour (pixel-exact)."""
    img = to_pil(x)
    k = -(-at_least // max(img.size))
    return img if k <= 1 else img.resize((img.size[0] * k, img.size[1] * k), resample=0)


def _write_outputs(result: dict) -> tuple[str, str]:
    d = Path(tempfile.mkdtemp(prefix="edit-"))
    png = d / "edit.png"
    to_pil(result["edit"]).save(png)
    inv_path = d / "inversion.safetensors"
    result["inversion"].save(inv_path)
    return str(png), str(inv_path)


def _param_values(specs: dict, values: list) -> dict:
    """Only the values the user changed from the defaults (the rest resolve per model family)."""
    out = {}
    for (name, spec), v in zip(specs.items(), values):
        if v is None or v == "":
            continue
        default = spec.default.get("default") if isinstance(spec.default, dict) else spec.default
        if isinstance(spec.default, dict) or v != default:
            out[name] = v
    return out


def _component(name, spec, family):
    default = spec.default_for(family)
    label = f"{name} — {spec.help}" if spec.help else name
    if spec.choices:
        return gr.Dropdown(list(spec.choices), value=default, label=label)
    if spec.kind is bool:
        return gr.Checkbox(value=bool(default), label=label)
    if spec.kind is str:
        return gr.Textbox(value=default, label=label)
    if spec.kind is int and spec.low is not None and spec.high is not None and spec.high - spec.low <= 100:
        return gr.Slider(spec.low, spec.high, value=default, step=1, label=label)
    return gr.Number(value=default, label=label, precision=0 if spec.kind is int else None)


def _examples(engine: Engine) -> list[list]:
    if engine.model.name == "shapes":
        meta = json.loads((ROOT / "assets/shapes/examples/examples.json").read_text())
        return [[str(ROOT / "assets/shapes/examples" / m["image"]), m["source"], m["target"], "rnri", m["editor"]] for m in meta]
    photos = [("chelsea.jpg", "a photo of a cat", "a photo of a tiger", "p2p"), ("astronaut.jpg", "a photo of an astronaut", "a photo of an astronaut smiling", "masactrl"), ("coffee.jpg", "a cup of coffee on a plate", "a cup of tea on a plate", "diffedit")]
    return [[str(ROOT / "assets" / f), s, t, "rnri", e] for f, s, t, e in photos]


# ---------------------------------------------------------------- the UI ----------------
def build(engine: Engine) -> gr.Blocks:
    base = engine.base
    family = base.family
    inv_specs = {n: INVERTERS[n].params for n in INVERTERS}
    ed_specs = {n: e.params for n, e in EDITORS.items()}
    model_line = f"**Model:** `{engine.model.name}` — {engine.model.description}"

    with gr.Blocks(title="Inversion-based image editing") as demo:
        gr.Markdown("# Inversion-based image editing\nInvert an image to noise with the inverter of your choice, then edit it with the editor of your choice. " + model_line)
        gr.Markdown(f"> ⚠️ {engine.notice}" if engine.notice else "", elem_id="notice", visible=bool(engine.notice))
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="pil", label="Input image", elem_id="input", image_mode="RGB", sources=["upload", "clipboard"])
                source = gr.Textbox(label="Source prompt (describes the image)", elem_id="source")
                target = gr.Textbox(label="Target prompt (describes the edit)", elem_id="target")
                with gr.Row():
                    inverter = gr.Dropdown(engine.inverters(), value="rnri", label="Inverter", elem_id="inverter")
                    editor = gr.Dropdown(list(EDITORS), value="p2p", label="Editor", elem_id="editor")
                choice_note = gr.Markdown("", elem_id="choice-note")
                with gr.Row():
                    steps = gr.Slider(1, MAX_STEPS, value=base.default_steps, step=1, label="Steps")
                    seed = gr.Number(value=0, precision=0, label="Seed")
                with gr.Row():
                    guidance = gr.Number(value=base.default_guidance, label="Inversion guidance (source branch)")
                    edit_guidance = gr.Number(value=base.default_edit_guidance, label="Edit guidance (target branch)")
                with gr.Row():
                    invert_btn = gr.Button("Invert", elem_id="invert-btn")
                    edit_btn = gr.Button("Edit", variant="primary", elem_id="edit-btn")
                live = gr.Checkbox(label="Live: re-edit as the target prompt changes (the inversion is reused)", value=False)
                inv_boxes, inv_inputs = {}, []
                with gr.Accordion("Inverter parameters (defaults from the papers)", open=False):
                    for name, specs in inv_specs.items():
                        with gr.Group(visible=(name == "rnri")) as box:
                            gr.Markdown(f"**{name}** — {INVERTERS[name].paper}. NFE per step: {INVERTERS[name].nfe_per_step}")
                            inv_inputs += [_component(k, s, family) for k, s in specs.items()]
                        inv_boxes[name] = box
                ed_boxes, ed_inputs = {}, []
                with gr.Accordion("Editor parameters (defaults from the papers)", open=False):
                    for name, specs in ed_specs.items():
                        with gr.Group(visible=(name == "p2p")) as box:
                            gr.Markdown(f"**{name}** — {EDITORS[name].paper}")
                            ed_inputs += [_component(k, s, family) for k, s in specs.items()]
                        ed_boxes[name] = box
            with gr.Column(scale=2):
                with gr.Tabs():
                    with gr.Tab("Edit"):
                        slider = gr.ImageSlider(label="Original | edit (drag)", type="pil", format="png", elem_id="slider")
                        with gr.Row():
                            shown_input = gr.Image(label="Original (as the model sees it)", type="pil", format="png", interactive=False, height=260)
                            recon = gr.Image(label="Reconstruction", type="pil", format="png", interactive=False, elem_id="recon", height=260)
                            edited = gr.Image(label="Edit", type="pil", format="png", interactive=False, elem_id="edited", height=260)
                        summary = gr.Markdown(elem_id="summary")
                        with gr.Accordion("All metrics (JSON)", open=False):
                            metrics = gr.JSON(label="Metrics and timings", elem_id="metrics")
                        with gr.Row():
                            edit_file = gr.File(label="Edited image (PNG)")
                            inv_file = gr.File(label="Inversion (safetensors, reusable with python -m editing --inversion)")
                    with gr.Tab("Compare inverters"):
                        compare_btn = gr.Button("Invert with every inverter", elem_id="compare-btn")
                        gallery = gr.Gallery(label="Reconstructions", columns=6, format="png", elem_id="gallery")
                        table = gr.Dataframe(label="Reconstruction quality and cost", elem_id="compare-table")
                        plot = gr.LinePlot(x="UNet call within a step", y="log10 residual / first", color="inverter", label="Convergence within a step")

        def choices_note(inv_name, ed_name, n_steps):
            notes = []
            if INVERTERS[inv_name].needs_cascade and not isinstance(engine.model, Cascade):
                notes.append(f"**{inv_name}** inverts pixel cascades only; {engine.model.name} has one stage.")
            if EDITORS[ed_name].needs_attention and isinstance(engine.model, Cascade) and engine.model.family == "if":
                notes.append(f"**{ed_name}** needs separate self/cross attention, which DeepFloyd-IF lacks: use diffedit.")
            if EDITORS[ed_name].needs_attention and int(n_steps) < 2:
                notes.append(f"**{ed_name}** needs at least 2 steps.")
            return "\n".join(notes)

        def show_boxes(inv_name, ed_name, n_steps):
            return [gr.update(visible=n == inv_name) for n in inv_boxes] + [gr.update(visible=n == ed_name) for n in ed_boxes] + [choices_note(inv_name, ed_name, n_steps)]

        for comp in (inverter, editor, steps):
            comp.change(show_boxes, [inverter, editor, steps], list(inv_boxes.values()) + list(ed_boxes.values()) + [choice_note], queue=False, api_visibility="private")

        def split(values):
            inv_vals, ed_vals = values[: len(inv_inputs)], values[len(inv_inputs) :]
            return inv_vals, ed_vals

        def params_of(name, specs_by_name, values):
            i = 0
            for n, specs in specs_by_name.items():
                if n == name:
                    return _param_values(specs, values[i : i + len(specs)])
                i += len(specs)
            return {}

        @gpu
        @_errors
        def ui_invert(img, src, inv_name, n_steps, sd, g, *values, request: gr.Request = None, progress=gr.Progress()):
            inv_vals, _ = split(values)
            entry, cached = engine.inversion(_session(request), img, src, inv_name, n_steps, sd, g, params_of(inv_name, inv_specs, inv_vals), _progress(progress))
            m = {"inverter": inv_name, "inversion_cached": cached, "inversion_nfe": 0 if cached else entry.inversion.nfe, "inversion_seconds": 0.0 if cached else round(entry.inversion.seconds, 3), "reconstruction": _quality(entry.report)}
            return show(entry.x), show(entry.reconstruction), summarize(m), m

        @gpu
        @_errors
        def ui_edit(img, src, tgt, inv_name, ed_name, n_steps, sd, g, eg, *values, request: gr.Request = None, progress=gr.Progress()):
            inv_vals, ed_vals = split(values)
            r = engine.edit(_session(request), img, src, tgt, inv_name, ed_name, n_steps, sd, g, eg, params_of(inv_name, inv_specs, inv_vals), params_of(ed_name, ed_specs, ed_vals), _progress(progress))
            png, inv_path = _write_outputs(r)
            x, e = show(r["x"]), show(r["edit"])
            return (x, e), x, show(r["reconstruction"]), e, summarize(r["metrics"]), r["metrics"], png, inv_path

        def ui_live(is_live, *args, request: gr.Request = None, progress=gr.Progress()):
            if not is_live or not args[2] or args[0] is None:
                return [gr.skip()] * 8
            return ui_edit(*args, request=request, progress=progress)

        @gpu
        @_errors
        def ui_compare(img, src, n_steps, sd, g, request: gr.Request = None, progress=gr.Progress()):
            rows = engine.compare(_session(request), img, src, n_steps, sd, g, _progress(progress))
            import pandas as pd

            pics = [(show(r["reconstruction"]), f"{r['inverter']}: {r['psnr']:.2f} dB, {r['nfe']} NFE") for r in rows]
            frame = pd.DataFrame([{k: v for k, v in r.items() if k not in ("reconstruction", "residuals")} for r in rows])
            return pics, frame, residual_curve(rows)

        common = [image, source]
        edit_inputs = [image, source, target, inverter, editor, steps, seed, guidance, edit_guidance, *inv_inputs, *ed_inputs]
        edit_outputs = [slider, shown_input, recon, edited, summary, metrics, edit_file, inv_file]
        invert_btn.click(ui_invert, [*common, inverter, steps, seed, guidance, *inv_inputs, *ed_inputs], [shown_input, recon, summary, metrics], api_visibility="private", concurrency_id="model")
        edit_btn.click(ui_edit, edit_inputs, edit_outputs, api_visibility="private", concurrency_id="model")
        target.change(ui_live, [live, *edit_inputs], edit_outputs, trigger_mode="always_last", api_visibility="private", concurrency_id="model")
        compare_btn.click(ui_compare, [*common, steps, seed, guidance], [gallery, table, plot], api_visibility="private", concurrency_id="model")

        gr.Examples(
            _examples(engine),
            inputs=[image, source, target, inverter, editor],
            outputs=edit_outputs,
            fn=lambda img, src, tgt, inv_name, ed_name: ui_edit(img, src, tgt, inv_name, ed_name, base.default_steps, 0, base.default_guidance, base.default_edit_guidance, *([None] * (len(inv_inputs) + len(ed_inputs)))),
            cache_examples=True,
            cache_mode="lazy",
            label="Examples (click one, then Edit; computed results are cached)",
        )

        # Compact named endpoints for gradio_client (parameters as JSON text).
        with gr.Row(visible=False):
            a_img = gr.Image(type="filepath", label="image")
            a_src, a_tgt = gr.Textbox(label="source_prompt"), gr.Textbox(label="target_prompt")
            a_inv, a_ed = gr.Textbox(value="rnri", label="inverter"), gr.Textbox(value="p2p", label="editor")
            a_steps = gr.Number(value=base.default_steps, precision=0, label="steps")
            a_seed = gr.Number(value=0, precision=0, label="seed")
            a_g = gr.Number(value=base.default_guidance, label="guidance")
            a_eg = gr.Number(value=base.default_edit_guidance, label="edit_guidance")
            a_ip, a_ep = gr.Textbox(value="{}", label="inverter_params"), gr.Textbox(value="{}", label="editor_params")
            a_out1 = gr.Image(type="filepath", format="png", label="image_out")
            a_out2 = gr.Image(type="filepath", format="png", label="reconstruction")
            a_json, a_gallery = gr.JSON(label="metrics"), gr.Gallery(format="png", label="reconstructions")
            a_invert, a_edit, a_compare = gr.Button(), gr.Button(), gr.Button()

        def _json_params(text):
            try:
                value = json.loads(text or "{}")
            except json.JSONDecodeError as e:
                raise ParameterError(f"parameters must be a JSON object: {e}") from None
            if not isinstance(value, dict):
                raise ParameterError("parameters must be a JSON object")
            return value

        @gpu
        @_errors
        def api_invert(img, src, inv_name, n_steps, sd, g, inv_params, request: gr.Request = None):
            entry, cached = engine.inversion(_session(request), img, src, inv_name, n_steps, sd, g, _json_params(inv_params))
            inv = entry.inversion
            out = {"inverter": inv_name, "steps": inv.num_steps, "inversion_cached": cached, "nfe": inv.nfe, "seconds": round(inv.seconds, 4), **_quality(entry.report)}
            return to_pil(entry.reconstruction), out

        @gpu
        @_errors
        def api_edit(img, src, tgt, inv_name, ed_name, n_steps, sd, g, eg, inv_params, ed_params, request: gr.Request = None):
            r = engine.edit(_session(request), img, src, tgt, inv_name, ed_name, n_steps, sd, g, eg, _json_params(inv_params), _json_params(ed_params))
            return to_pil(r["edit"]), to_pil(r["reconstruction"]), r["metrics"]

        @gpu
        @_errors
        def api_compare(img, src, n_steps, sd, g, request: gr.Request = None):
            rows = engine.compare(_session(request), img, src, n_steps, sd, g)
            pics = [(to_pil(r["reconstruction"]), r["inverter"]) for r in rows]
            return pics, [{k: v for k, v in r.items() if k not in ("reconstruction", "residuals")} for r in rows]

        a_invert.click(api_invert, [a_img, a_src, a_inv, a_steps, a_seed, a_g, a_ip], [a_out1, a_json], api_name="invert", concurrency_id="model")
        a_edit.click(api_edit, [a_img, a_src, a_tgt, a_inv, a_ed, a_steps, a_seed, a_g, a_eg, a_ip, a_ep], [a_out1, a_out2, a_json], api_name="edit", concurrency_id="model")
        a_compare.click(api_compare, [a_img, a_src, a_steps, a_seed, a_g], [a_gallery, a_json], api_name="compare", concurrency_id="model")
    return demo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.environ.get("APP_MODEL", "auto"), help=f"auto, or one of: {', '.join(MODELS)}")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--share", action="store_true")
    a = ap.parse_args()
    engine = Engine(a.model)
    if engine.notice:
        print(engine.notice.replace("**", ""))
    demo = build(engine)
    demo.queue(max_size=64, default_concurrency_limit=1)
    demo.launch(server_name=a.host, server_port=a.port, share=a.share, max_file_size="50mb", theme=gr.themes.Soft())


if __name__ == "__main__":
    main()
