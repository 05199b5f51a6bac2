"""The page: layout in a few functions, events that pass components by name.

Handlers take their inputs as one {component: value} dict (gradio's set-of-inputs
form) and return {component: update}, so no value travels by position, and
gradio always injects the visitor's request (hence the session) and progress.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import gradio as gr
import numpy as np
import torch

from editing import EDITORS
from inversion.errors import ImageError, ModelError
from inversion.images import load_image
from inversion.inverters import INVERTERS
from inversion.models import as_cascade
from inversion.params import Param

from . import api, report
from .engine import MAX_FRAMES, MAX_REFERENCES, MAX_SAMPLES, MAX_STEPS, EditRequest, Engine, InversionRequest
from .glue import gpu, progress_of, session_of, show, uploaded_image, user_errors, write_downloads

ROOT = Path(__file__).resolve().parents[1]
SHAPES_EXAMPLES = ROOT / "assets" / "shapes" / "examples"
PHOTO_EXAMPLES = [
    ("chelsea.jpg", "a photo of a cat", "a photo of a tiger", "p2p"),
    ("astronaut.jpg", "a photo of an astronaut", "a photo of an astronaut smiling", "masactrl"),
    ("coffee.jpg", "a cup of coffee on a plate", "a cup of tea on a plate", "diffedit"),
]
EDITOR_HELP = {
    "p2p": "**Prompt-to-Prompt** changes words (a colour, an object, a style) and keeps the layout.",
    "masactrl": "**MasaCtrl** changes shape or pose and keeps the appearance (colours, textures).",
    "diffedit": "**DiffEdit** makes a local change inside an automatic mask; outside it the image stays the input.",
}
CSS = """
#input img, #input .image-frame { max-height: 230px; object-fit: contain; }
.compact-examples td { padding: 2px 6px !important; }
"""


@dataclass
class Page:
    """The components, by name (filled in by the layout functions)."""

    engine: Engine
    c: dict = field(default_factory=dict)  # name -> component
    inv_params: dict = field(default_factory=dict)  # inverter -> {param: component}
    ed_params: dict = field(default_factory=dict)  # editor -> {param: component}
    inv_boxes: dict = field(default_factory=dict)
    ed_boxes: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)

    @property
    def first_inverter(self) -> str:
        return Engine.base(self.engine.model).default_inverter

    def __getattr__(self, name):
        try:
            return self.__dict__["c"][name]
        except KeyError:
            raise AttributeError(name) from None


def _is_shapes(model) -> bool:
    return Engine.base(model).family == "shapes"


def _model_line(engine: Engine, model) -> str:
    base = Engine.base(model)
    kind = "pixel cascade" if as_cascade(model).multistage else "latent model"
    sampler = {"euler_a": "Euler ancestral"}.get(base.sampler_kind, base.sampler_kind.upper())
    return f"**{model.name}** ({kind}, {sampler} sampler, {base.default_steps} steps by default): {model.description}"


# ---------------------------------------------------------------- layout ------------------
def _param_component(name: str, spec: Param, family: tuple[str, ...]):
    default = spec.default_for(family)
    label = f"{name}: {spec.help}" if spec.help else name
    if spec.choices:
        return gr.Dropdown(list(spec.choices), value=default, label=label)
    if spec.kind is bool:
        return gr.Checkbox(value=bool(default), label=label)
    if spec.kind is str:
        return gr.Textbox(value=default, label=label)
    if spec.kind is int and spec.low is not None and spec.high is not None and spec.high - spec.low <= 100:
        return gr.Slider(spec.low, spec.high, value=default, step=1, label=label)
    return gr.Number(value=default, label=label, precision=0 if spec.kind is int else None)


def _parameter_boxes(page: Page, family: tuple[str, ...]) -> None:
    """One accordion per kind; inside, one group per inverter (editor), shown when it is picked."""
    kinds = (("Inverter", INVERTERS, page.inv_params, page.inv_boxes, page.first_inverter), ("Editor", EDITORS, page.ed_params, page.ed_boxes, "p2p"))
    for title, registry, params, boxes, shown in kinds:
        with gr.Accordion(f"{title} parameters (defaults from the papers)", open=False):
            for name, algo in registry.items():
                with gr.Group(visible=name == shown) as box:
                    cost = f". UNet calls per step: {algo.nfe_per_step}" if hasattr(algo, "nfe_per_step") else ""
                    gr.Markdown(f"**{name}**: {algo.paper}{cost}")
                    params[name] = {k: _param_component(k, s, family) for k, s in algo.params.items()}
                boxes[name] = box


def _examples(page: Page, model) -> None:
    """Examples right under the image; clicking one fills the inputs and runs the edit (wired in `_wire`)."""
    c = page.c
    inputs = [c["image"], c["source"], c["target"], c["inverter"], c["editor"]]
    scenes = json.loads((SHAPES_EXAMPLES / "examples.json").read_text())
    inv = Engine.base(model).default_inverter
    shape_rows = [[str(SHAPES_EXAMPLES / m["image"]), m["source"], m["target"], inv, m["editor"]] for m in scenes]
    photo_rows = [[str(ROOT / "assets" / f), s, t, inv, e] for f, s, t, e in PHOTO_EXAMPLES]
    page.examples = []
    for key, rows, visible in (("shape_examples", shape_rows, _is_shapes(model)), ("photo_examples", photo_rows, not _is_shapes(model))):
        with gr.Column(visible=visible, elem_classes="compact-examples", elem_id=key.replace("_", "-")) as col:
            # No example cache: it is keyed by block, so it would outlive a model change.
            labels = [_example_label(r[1], r[2], r[4]) for r in rows]
            page.examples.append(gr.Examples(rows, inputs=inputs, cache_examples=False, label="Examples: click one to edit it",
                                             examples_per_page=4, visible_columns=[0], example_labels=labels))
        c[key] = col


def _example_label(source: str, target: str, editor: str) -> str:
    """'a red circle on a blue background → green · p2p': the source and the words the edit changes."""
    new = [w for w in target.split() if w not in source.split()]
    return f"{source} → {' '.join(new) or target} · {editor}"


def _input_column(page: Page, model) -> None:
    c, engine, base = page.c, page.engine, Engine.base(model)
    c["model"] = gr.Dropdown(page.engine.models.labelled(), value=model.name, label="Model", elem_id="model")
    c["image"] = uploaded_image(label="Input image", elem_id="input", sources=["upload", "clipboard"], height=240)
    # Made first (unrendered) so the examples right under the image can fill them.
    c["source"] = gr.Textbox(label="Source prompt (describes the image)", elem_id="source", max_lines=2, render=False)
    c["target"] = gr.Textbox(label="Target prompt (describes the edit)", elem_id="target", max_lines=2, render=False)
    c["inverter"] = gr.Dropdown(engine.inverters(model.name), value=base.default_inverter, label="Inverter", elem_id="inverter", render=False)
    c["editor"] = gr.Dropdown(list(EDITORS), value="p2p", label="Editor", elem_id="editor", render=False)
    _examples(page, model)
    c["source"].render()
    c["target"].render()
    with gr.Row():
        c["inverter"].render()
        c["editor"].render()
    c["choice_note"] = gr.Markdown(EDITOR_HELP["p2p"], elem_id="choice-note")
    with gr.Row():
        c["invert_btn"] = gr.Button("Invert only", elem_id="invert-btn")
        c["edit_btn"] = gr.Button("Edit", variant="primary", elem_id="edit-btn")
    c["live"] = gr.Checkbox(label="Live: re-edit as you type the target prompt (the inversion is reused)", value=False, elem_id="live")
    with gr.Accordion("Paint the region to edit (optional)", open=False, elem_id="region-box") as c["region_box"]:
        gr.Markdown("Paint over what should change: it becomes DiffEdit's mask, P2P's LocalBlend and MasaCtrl's foreground. "
                    "Leave it empty for the editor's own mask (shown after an edit).")
        c["region"] = gr.ImageEditor(
            type="numpy", sources=[], transforms=(), layers=False, elem_id="region", height=260, show_label=False,
            brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed", default_size=12),
        )
    with gr.Accordion("Steps, seed and guidance", open=False):
        with gr.Row():
            c["steps"] = gr.Slider(1, MAX_STEPS, value=base.default_steps, step=1, label="Steps", elem_id="steps")
            c["seed"] = gr.Number(value=0, precision=0, label="Seed", elem_id="seed", minimum=0)
        with gr.Row():
            c["guidance"] = gr.Number(value=base.default_guidance, label="Inversion guidance (source branch)", minimum=0, maximum=30)
            c["edit_guidance"] = gr.Number(value=base.default_edit_guidance, label="Edit guidance (target branch)", minimum=0, maximum=30)
    _parameter_boxes(page, base.defaults)


def _output_column(page: Page) -> None:
    c = page.c
    with gr.Tabs():
        with gr.Tab("Edit"):
            c["slider"] = gr.ImageSlider(label="Original | edit (drag the handle)", type="pil", format="png", elem_id="slider")
            with gr.Row():
                c["shown_input"] = gr.Image(label="Original, as the model sees it", type="pil", format="png", interactive=False, elem_id="shown-input", height=230)
                c["recon"] = gr.Image(label="Reconstruction", type="pil", format="png", interactive=False, elem_id="recon", height=230)
                c["edited"] = gr.Image(label="Edit", type="pil", format="png", interactive=False, elem_id="edited", height=230)
            c["summary"] = gr.Markdown(elem_id="summary")
            c["mask_view"] = gr.Image(label="Edit region (painted, or the editor's own mask)", type="pil", format="png", interactive=False, elem_id="mask-view", height=200, visible=False)
            c["mask_to_canvas"] = gr.Button("Correct this region: put it on the painting canvas", size="sm", visible=False, elem_id="mask-to-canvas")
            # the region on the uploaded image (a hidden image, not gr.State: State keeps a heartbeat stream open)
            c["upload_mask"] = gr.Image(type="numpy", image_mode="L", format="png", visible=False, interactive=False)
            with gr.Accordion("All metrics (JSON)", open=False):
                c["metrics"] = gr.JSON(label="Metrics and timings", elem_id="metrics")
            with gr.Row():
                c["edit_file"] = gr.File(label="Edited image (PNG)")
                c["inv_file"] = gr.File(label="Inversion (safetensors)")
            gr.Markdown("Edit the downloaded inversion again without inverting: "
                        "`python -m editing edit --model MODEL --inversion inversion.safetensors --editor p2p --target-prompt \"...\"`")
        with gr.Tab("Interpolate"):
            gr.Markdown("Morph from the input image (its prompt, inverter and steps on the left) to a second image: both are inverted, "
                        "their noises mixed spherically and their prompts linearly; the first and last frames are the two reconstructions.")
            with gr.Row():
                c["image2"] = uploaded_image(label="Second image", elem_id="image2", sources=["upload", "clipboard"], height=200)
                with gr.Column():
                    c["prompt2"] = gr.Textbox(label="Its prompt (empty: the source prompt)", elem_id="prompt2", max_lines=2)
                    c["frames"] = gr.Slider(2, MAX_FRAMES, value=8, step=1, label="Frames", elem_id="frames")
                    c["interpolate_btn"] = gr.Button("Interpolate", variant="primary", elem_id="interpolate-btn")
            c["strip"] = gr.Gallery(label="Frames (click one to enlarge)", columns=8, height=190, object_fit="contain", format="png", elem_id="strip")
            c["interp_summary"] = gr.Markdown(elem_id="interp-summary")
            c["gif_file"] = gr.File(label="Animation (GIF)", elem_id="gif-file")
        with gr.Tab("More like these"):
            gr.Markdown("New images of something the model rarely draws: upload 1 to 4 pictures of it. Each is inverted (the inverter, steps and seed "
                        "on the left) and its noise starts new samples of the prompt, mixed with fresh noise at the strength below "
                        "(0: the references' reconstructions; 1: ordinary generation). The RNRI paper's second application.")
            with gr.Row():
                c["references"] = gr.File(label=f"Reference images (1 to {MAX_REFERENCES})", file_count="multiple", file_types=["image"], type="filepath", elem_id="references", height=200)
                with gr.Column():
                    c["concept"] = gr.Textbox(label="What they show (empty: the source prompt)", elem_id="concept", max_lines=2)
                    with gr.Row():
                        c["samples"] = gr.Slider(1, MAX_SAMPLES, value=4, step=1, label="Samples", elem_id="samples")
                        c["strength"] = gr.Slider(0, 1, value=0.5, step=0.05, label="Fresh noise (strength)", elem_id="strength")
                    c["seeds_btn"] = gr.Button("Make more like these", variant="primary", elem_id="seeds-btn")
            c["seeded"] = gr.Gallery(label="New samples", columns=4, height=230, object_fit="contain", format="png", elem_id="seeded")
            c["seeds_summary"] = gr.Markdown(elem_id="seeds-summary")
        with gr.Tab("Compare inverters"):
            c["compare_btn"] = gr.Button("Invert with every inverter", elem_id="compare-btn")
            c["gallery"] = gr.Gallery(label="Reconstructions", columns=3, height="auto", format="png", elem_id="gallery")
            c["table"] = gr.Dataframe(label="Reconstruction quality and cost", elem_id="compare-table", wrap=True)
            c["plot"] = gr.LinePlot(x="inversion step", y="log10 residual", color="inverter", label="Residual of each step's solution (lower: the step was solved better)")


def _edit_outputs(page: Page) -> list:
    return [page.c[k] for k in ("slider", "shown_input", "recon", "edited", "summary", "metrics", "edit_file", "inv_file", "mask_view", "mask_to_canvas", "upload_mask")]


def _painted(value) -> np.ndarray | None:
    """The ImageEditor's painted strokes as one H x W mask (None when nothing is painted)."""
    if not value or not value.get("layers"):
        return None
    alpha = [layer[..., 3] for layer in value["layers"] if layer is not None and layer.ndim == 3 and layer.shape[-1] == 4]
    mask = np.any(np.stack(alpha), axis=0) if alpha else None
    return mask if mask is not None and mask.any() else None


def _mask_overlay(x, mask):
    """The input with the edit region tinted red (the mask brought to the image's size)."""
    import torch.nn.functional as F

    m = F.interpolate(mask.float().cpu(), size=x.shape[-2:], mode="nearest")
    tint = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1)
    return show(x.cpu() * (1 - 0.5 * m) + tint * 0.5 * m)


# ---------------------------------------------------------------- events ------------------
def _changed_params(specs: dict[str, Param], components: dict, data: dict, family: tuple[str, ...]) -> dict:
    """Only the values the user changed from the model family's defaults."""
    out = {}
    for name, comp in components.items():
        v = data.get(comp)
        if v is None or v == "":
            continue
        if v != specs[name].default_for(family):
            out[name] = v
    return out


def _inversion_request(page: Page, data: dict) -> InversionRequest:
    model = page.engine.model_for(data[page.model])
    family = Engine.base(model).defaults
    inv = data[page.inverter]
    return InversionRequest(
        image=data[page.image],
        prompt=data[page.source] or "",
        inverter=inv,
        steps=data[page.steps],
        seed=data[page.seed],
        guidance=data[page.guidance],
        params=_changed_params(INVERTERS[inv].params, page.inv_params[inv], data, family),
        model=model.name,
    )


def _edit_request(page: Page, data: dict) -> EditRequest:
    source = _inversion_request(page, data)
    family = Engine.base(page.engine.model_for(source.model)).defaults
    ed = data[page.editor]
    return EditRequest(source, data[page.target] or "", ed, data[page.edit_guidance], _changed_params(EDITORS[ed].params, page.ed_params[ed], data, family),
                       region=_painted(data.get(page.c["region"])))


def _work_handlers(page: Page):
    """The handlers that run the model: edit, live edit, invert, compare."""
    engine, c = page.engine, page.c
    outputs = _edit_outputs(page)

    def edit_result(r: dict) -> dict:
        png, inv_path = write_downloads(r)
        x, e = show(r["x"]), show(r["edit"])
        mask = gr.update(value=_mask_overlay(r["x"], r["mask"]), visible=True) if r["mask"] is not None else gr.update(value=None, visible=False)
        return {c["slider"]: (x, e), c["shown_input"]: x, c["recon"]: show(r["reconstruction"]), c["edited"]: e,
                c["summary"]: report.summary_markdown(r["metrics"]), c["metrics"]: r["metrics"], c["edit_file"]: png, c["inv_file"]: inv_path, c["mask_view"]: mask,
                c["mask_to_canvas"]: gr.update(visible=r["upload_mask"] is not None),
                c["upload_mask"]: None if r["upload_mask"] is None else r["upload_mask"].astype(np.uint8) * 255}

    @gpu("edit")
    @user_errors
    def on_edit(data: dict, request: gr.Request, progress=gr.Progress()):
        return edit_result(engine.edit(session_of(request), _edit_request(page, data), progress_of(progress)))

    @gpu("edit")
    @user_errors
    def on_live(data: dict, request: gr.Request, progress=gr.Progress()):
        if not data[c["live"]] or not (data[c["target"]] or "").strip() or data[c["image"]] is None:
            return {k: gr.skip() for k in outputs}
        return edit_result(engine.edit(session_of(request), replace(_edit_request(page, data), preview=True), progress_of(progress)))

    @gpu("invert")
    @user_errors
    def on_invert(data: dict, request: gr.Request, progress=gr.Progress()):
        entry, record = engine.inversion_record(session_of(request), _inversion_request(page, data), progress_of(progress))
        return {c["shown_input"]: show(entry.x), c["recon"]: show(entry.reconstruction), c["summary"]: report.summary_markdown(record), c["metrics"]: record}

    @gpu("compare")
    @user_errors
    def on_compare(data: dict, request: gr.Request, progress=gr.Progress()):
        import pandas as pd

        rows = engine.compare(session_of(request), _inversion_request(page, data), progress_of(progress))
        pics = [(show(r["reconstruction"]), f"{r['inverter']}\n{r['psnr']:.2f} dB, {r['nfe']} NFE") for r in rows]
        shown = ["inverter", "nfe", "seconds", "psnr", "ssim"] + (["lpips"] if any(r["lpips"] is not None for r in rows) else [])
        names = {"inverter": "inverter", "nfe": "UNet calls", "seconds": "seconds", "psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS"}
        frame = pd.DataFrame([{names[k]: r[k] for k in shown} for r in rows])
        return {c["gallery"]: pics, c["table"]: frame, c["plot"]: residual_frame(rows)}

    return on_edit, on_live, on_invert, on_compare


def _application_handlers(page: Page):
    """The RNRI paper's applications: interpolate between two uploads, more samples like the references."""
    engine, c = page.engine, page.c

    @gpu("interpolate")
    @user_errors
    def on_interpolate(data: dict, request: gr.Request, progress=gr.Progress()):
        r = engine.interpolate(session_of(request), _inversion_request(page, data), data[c["image2"]], data[c["prompt2"]], data[c["frames"]], progress_of(progress))
        gif = Path(tempfile.mkdtemp(prefix="interpolation-")) / "interpolation.gif"
        r["interpolation"].save_gif(gif, pingpong=True)
        m = r["metrics"]
        text = f"{m['frames']} frames, {m['nfe']} UNet calls, {m['seconds']:.2f} s" + "".join(f"\n\n⚠️ {n}" for n in r["notes"] + m["warnings"])
        return {c["strip"]: [(show(f[None]), f"{i}") for i, f in enumerate(r["frames"])], c["interp_summary"]: text, c["gif_file"]: str(gif)}

    @gpu("seeds")
    @user_errors
    def on_seeds(data: dict, request: gr.Request, progress=gr.Progress()):
        r = engine.more_like_these(session_of(request), _inversion_request(page, data), data[c["references"]], data[c["concept"]], data[c["samples"]],
                                   data[c["strength"]], progress_of(progress))
        m = r["metrics"]
        text = f"{m['samples']} samples from {m['references']} reference(s), {m['nfe']} UNet calls, {m['seconds']:.2f} s" + "".join(f"\n\n⚠️ {n}" for n in r["notes"])
        return {c["seeded"]: [show(x[None]) for x in r["images"]], c["seeds_summary"]: text}

    return on_interpolate, on_seeds


def _setting_handlers(page: Page):
    """The handlers that change settings: the model picker, the inverter and editor choices."""
    engine, c = page.engine, page.c

    @user_errors
    def on_model(data: dict, request: gr.Request, progress=gr.Progress()):
        name = data[c["model"]]
        progress(0.1, desc=f"loading {name}")
        try:
            model = engine.model_for(name)
        except ModelError as e:  # say what to do, and go back to the app's model
            gr.Warning(str(e))
            name = engine.models.default
            model = engine.model_for(name)
        base = Engine.base(model)
        updates = {c["model"]: gr.update(value=name), c["steps"]: gr.update(value=base.default_steps), c["guidance"]: gr.update(value=base.default_guidance),
                   c["edit_guidance"]: gr.update(value=base.default_edit_guidance),
                   c["inverter"]: gr.update(choices=engine.inverters(name), value=base.default_inverter),
                   c["shape_examples"]: gr.update(visible=_is_shapes(model)), c["photo_examples"]: gr.update(visible=not _is_shapes(model)),
                   c["model_line"]: _model_line(engine, model)}
        for owner, params in ((INVERTERS, page.inv_params), (EDITORS, page.ed_params)):
            for n, comps in params.items():
                for k, comp in comps.items():
                    updates[comp] = gr.update(value=owner[n].params[k].default_for(base.defaults))
        return updates

    def on_choice(data: dict):
        inv, ed, steps = data[c["inverter"]], data[c["editor"]], data[c["steps"]]
        notes = [EDITOR_HELP[ed]]
        if EDITORS[ed].needs_attention and steps is not None and int(steps) < 2:
            notes.append(f"⚠️ **{ed}** needs at least 2 steps.")
        updates = {box: gr.update(visible=n == inv) for n, box in page.inv_boxes.items()}
        updates.update({box: gr.update(visible=n == ed) for n, box in page.ed_boxes.items()})
        updates[c["choice_note"]] = "\n\n".join(notes)
        return updates

    return on_model, on_choice


def _canvas_of(path):
    """The painting canvas's background: the upload as our loader reads it, or an empty canvas.

    A file the loader refuses must not reach the canvas: gradio's editor would fail to
    read it on every later event, before the edit handler could say what is wrong."""
    if not path:
        return None
    try:
        img = np.asarray(load_image(path, name="the uploaded file"))
    except ImageError:
        return None
    return {"background": img, "layers": [], "composite": img}


def _canvas_with(mask, path):
    """The painting canvas holding an edit's region as a stroke layer, to be corrected and reused."""
    canvas = _canvas_of(path)
    if canvas is None or mask is None or mask.shape[:2] != canvas["background"].shape[:2]:
        return gr.skip(), gr.skip()
    mask = (mask if mask.ndim == 2 else mask[..., 0]) > 127
    layer = np.zeros((*mask.shape, 4), dtype=np.uint8)
    layer[mask] = (255, 0, 255, 255)  # the brush's colour
    composite = canvas["background"].copy()
    composite[mask] = (255, 0, 255)
    return {"background": canvas["background"], "layers": [layer], "composite": composite}, gr.Accordion(open=True)


def _wire(page: Page) -> None:
    c = page.c
    all_inputs = {c[k] for k in ("model", "image", "source", "target", "inverter", "editor", "steps", "seed", "guidance", "edit_guidance", "live", "region")}
    for comps in [*page.inv_params.values(), *page.ed_params.values()]:
        all_inputs |= set(comps.values())
    outputs = _edit_outputs(page)
    on_edit, on_live, on_invert, on_compare = _work_handlers(page)
    on_interpolate, on_seeds = _application_handlers(page)
    on_model, on_choice = _setting_handlers(page)
    choice_out = [*page.inv_boxes.values(), *page.ed_boxes.values(), c["choice_note"]]
    for comp in (c["inverter"], c["editor"], c["steps"]):
        comp.change(on_choice, {c["inverter"], c["editor"], c["steps"]}, choice_out, queue=False, api_visibility="private")
    model_out = [c["model"], c["steps"], c["guidance"], c["edit_guidance"], c["inverter"], c["shape_examples"], c["photo_examples"], c["model_line"]]
    model_out += [comp for params in (page.inv_params, page.ed_params) for comps in params.values() for comp in comps.values()]
    c["model"].input(on_model, {c["model"]}, model_out, api_visibility="private", concurrency_id="model")
    progress_on = [c["summary"]]
    c["edit_btn"].click(on_edit, all_inputs, outputs, api_visibility="private", concurrency_id="model", show_progress_on=progress_on)
    c["invert_btn"].click(on_invert, all_inputs, [c["shown_input"], c["recon"], c["summary"], c["metrics"]], api_visibility="private", concurrency_id="model", show_progress_on=progress_on)
    # Live: only the latest keystroke's edit runs once the running one ends (always_last).
    c["target"].input(on_live, all_inputs, outputs, trigger_mode="always_last", api_visibility="private", concurrency_id="model", show_progress_on=progress_on)
    # The painting canvas shows the uploaded image; a new image clears old strokes.
    c["image"].change(_canvas_of, c["image"], c["region"], queue=False, api_visibility="private")
    c["image"].change(lambda _: (None, gr.update(visible=False)), c["image"], [c["upload_mask"], c["mask_to_canvas"]], queue=False, api_visibility="private")
    c["mask_to_canvas"].click(_canvas_with, [c["upload_mask"], c["image"]], [c["region"], c["region_box"]], queue=False, api_visibility="private")
    for ex in page.examples:
        ex.load_input_event.then(on_edit, all_inputs, outputs, api_visibility="private", concurrency_id="model", show_progress_on=progress_on)
    c["compare_btn"].click(on_compare, all_inputs, [c["gallery"], c["table"], c["plot"]], api_visibility="private", concurrency_id="model", show_progress_on=[c["table"]])
    c["seeds_btn"].click(on_seeds, all_inputs | {c["references"], c["concept"], c["samples"], c["strength"]}, [c["seeded"], c["seeds_summary"]],
                         api_visibility="private", concurrency_id="model", show_progress_on=[c["seeds_summary"]])
    c["interpolate_btn"].click(on_interpolate, all_inputs | {c["image2"], c["prompt2"], c["frames"]}, [c["strip"], c["interp_summary"], c["gif_file"]],
                               api_visibility="private", concurrency_id="model", show_progress_on=[c["interp_summary"]])


def residual_frame(rows: list[dict]):
    """log10 of each inversion step's final residual, per inverter: every inverter has a line."""
    import pandas as pd

    data = []
    for r in rows:
        for k, res in enumerate(r["residuals"]):
            if res:
                data.append({"inversion step": k + 1, "log10 residual": math.log10(max(res[-1], 1e-12)), "inverter": r["inverter"]})
    return pd.DataFrame(data)


def build(engine: Engine) -> gr.Blocks:
    model = engine.model
    page = Page(engine)
    with gr.Blocks(title="Inversion-based image editing") as demo:
        gr.Markdown("# Inversion-based image editing\nInvert an image to noise with the inverter of your choice, then edit it with the editor of your choice.")
        page.c["model_line"] = gr.Markdown(_model_line(engine, model), elem_id="model-line")
        gr.Markdown(f"> ⚠️ {engine.notice}" if engine.notice else "", elem_id="notice", visible=bool(engine.notice))
        with gr.Row():
            with gr.Column(scale=1, min_width=360):
                _input_column(page, model)
            with gr.Column(scale=2):
                _output_column(page)
        _wire(page)
        api.add_endpoints(engine)
    return demo
