"""The page: layout in a few functions, events that pass components by name.

Handlers take their inputs as one {component: value} dict (gradio's set-of-inputs
form) and return {component: update}, so no value travels by position, and
gradio always injects the visitor's request (hence the session) and progress.
A visitor's mistake is said where the result would have appeared (`shown_errors`),
once, instead of as a toast that stacks with every click.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from starlette.middleware import Middleware

from editing import EDITORS
from inversion.errors import ImageError, ModelError
from inversion.images import load_image
from inversion.inverters import INVERTERS
from inversion.inverters.base import SHARED_PARAMS
from inversion.params import Param
from inversion.pipeline import max_nfe

from . import api, fetch_watch, glue, queue_wake, report
from .engine import MAX_FRAMES, MAX_REFERENCES, MAX_SAMPLES, MAX_STEPS, Cancelled, EditRequest, Engine, InversionRequest, same_image
from .glue import (
    OUTPUT_AGE,
    client_gone,
    enqueued_at,
    error_text,
    gpu,
    later_request_waiting,
    output_folder,
    png,
    png_once,
    progress_of,
    session_of,
    shown_errors,
    uploaded_image,
    write_downloads,
    written,
)
from .timer_fix import TimerFix

ROOT = Path(__file__).resolve().parents[1]
SHAPES_EXAMPLES = ROOT / "assets" / "shapes" / "examples"
PHOTO_EXAMPLES = [
    {"image": str(ROOT / "assets" / "chelsea.jpg"), "source": "a photo of a cat", "target": "a photo of a tiger", "editor": "p2p"},
    {"image": str(ROOT / "assets" / "astronaut.jpg"), "source": "a photo of an astronaut", "target": "a photo of an astronaut smiling", "editor": "masactrl"},
    {"image": str(ROOT / "assets" / "coffee.jpg"), "source": "a cup of coffee on a plate", "target": "a cup of tea on a plate", "editor": "diffedit"},
]
INVERTER_HELP = {
    "ddim": "**DDIM** runs the sampler backwards, one network call per step: fast and approximate.",
    "easyinv": "**EasyInv** is DDIM that blends each latent with the one before over a few steps: as fast, a little smoother.",
    "rnri": "**RNRI** solves each step with a few Newton iterations, kept near the noise the model expects: accurate and fast.",
    "renoise": "**ReNoise** re-noises each step several times and averages the estimates: accurate, slower.",
    "fixed-point": "**Fixed-point** iterates each step to convergence (Anderson-accelerated): accurate, a few calls per step.",
    "iterinv": "**IterInv** optimises the super-resolution stage of a pixel cascade by gradient descent: accurate, the slowest.",
}
EDITOR_HELP = {
    "p2p": "**Prompt-to-Prompt** changes words (a colour, an object, a style) and keeps the layout.",
    "masactrl": "**MasaCtrl** changes shape or pose and keeps the appearance (colours, textures).",
    "diffedit": "**DiffEdit** makes a local change inside an automatic mask and keeps the rest of the input.",
}
FEW_STEPS = 8  # distilled few-step models (LCM, Turbo) are made for a handful of steps: the slider stops here
CSS = """
#input img, #input .image-frame { max-height: 230px; object-fit: contain; }
#summary, #compare-summary { overflow-x: auto; }
/* a block greys, and its timer shows, at once while its request runs: gradio fades both (0.1-0.15 s), and a browser
   without a GPU draws each frame of a fade in software (40 ms of chromium's CPU per edit, taken from the model where
   the browser shares the server's cores; a cached edit's click to image 0.27 -> 0.22 s) */
.block > [data-testid="status-tracker"], .block > [data-testid="status-tracker"] ~ div { transition: none !important; }
#summary table, #summary td, #summary th { word-break: normal !important; overflow-wrap: normal !important; hyphens: none; }
/* galleries wrap their thumbnails into rows instead of clipping them at the right edge */
#references .grid-container { grid-template-columns: repeat(auto-fill, minmax(76px, 1fr)) !important; }
#strip .grid-container { grid-template-columns: repeat(auto-fill, minmax(64px, 1fr)) !important; }
#seeded .grid-container, #gallery .grid-container, #compare-edits-gallery .grid-container { grid-template-columns: repeat(auto-fill, minmax(110px, 1fr)) !important; }
/* ... and take the height of their rows: gradio holds an unsized gallery at least 450 px tall (one row of six reconstructions
   stood above 300 px of blank) and at most 55% of the window (on a phone, the last row scrolled inside the page) */
#references .grid-wrap, #strip .grid-wrap, #seeded .grid-wrap, #gallery .grid-wrap, #compare-edits-gallery .grid-wrap { min-height: 0 !important; }
#strip .grid-wrap, #seeded .grid-wrap, #gallery .grid-wrap, #compare-edits-gallery .grid-wrap { max-height: none !important; }
/* the comparison's headers break between words ("network calls", not "networ k calls") */
#compare-table th .wrap { word-break: normal !important; overflow-wrap: normal !important; }
/* a comparison's captions (inverter, editor, PSNR) are whole, in small type along the thumbnail's foot (gradio cuts
   a caption to one line: "rnri + p2p · ...", the number gone) */
#gallery .caption-label, #compare-edits-gallery .caption-label { white-space: normal !important; max-width: calc(100% - 6px) !important;
  font-size: 10px !important; line-height: 1.15 !important; padding: 1px 4px !important; }
/* the re-edit command wraps instead of scrolling sideways (its copy button copies it whole) */
#reedit pre, #reedit code { white-space: pre-wrap !important; overflow-wrap: anywhere; }
@media (max-width: 640px) {
  #intro p { font-size: 0.9em; margin: 0; }
  #model-line p { font-size: 0.85em; }
  .tab-wrapper button { padding-left: 6px !important; padding-right: 6px !important; font-size: 0.9em; }
}
"""


# How the app is served (app.py and the tests alike): every event through the queue (api_open=False: no
# /run/ shortcut around its size and concurrency limit), one model request at a time, gradio's cached
# copies of uploads and outputs deleted after an hour (checked every ten minutes).
QUEUE = dict(max_size=64, default_concurrency_limit=1, api_open=False)


def queued(demo: gr.Blocks) -> gr.Blocks:
    """The app's queue (QUEUE), woken by work instead of polling every millisecond beside the model (demo/queue_wake.py)."""
    demo.queue(**QUEUE)
    queue_wake.install(demo._queue)
    return demo


# Which blocks show a pending request when Stop is clicked, noted before gradio's own click handling cancels (and so
# hides) them: the Stop handler says "Stopped" where a request waited in the queue, which the engine never saw.
PENDING_AT_STOP = """<script>
document.addEventListener("click", event => {
  if (!(event.target instanceof Element) || !event.target.closest("#stop-btn")) return;
  window.pendingAtStop = [...document.querySelectorAll('[data-testid="status-tracker"]:not(.hide)')]
    .map(tracker => tracker.closest("[id]")?.id).filter(Boolean).join(",");
}, true);
</script>"""


def launch_options() -> dict:
    """demo.launch's options, fresh each time (gradio adds to the app's keyword arguments). show_error: what gradio
    refuses before a handler (a wrong type, a missing input, a path no one uploaded) reaches the client as its message,
    not as {"error": null}; the handlers' own failures are messages already (unexpected ones with a reference, never a
    traceback). head: the Stop button's note of what was pending. The middlewares serve gradio's status tracker without its
    endless timer loop (demo/timer_fix.py) and tell the edit handler when the page has its edited image (demo/fetch_watch.py)."""
    return dict(max_file_size="50mb", css=CSS, head=PENDING_AT_STOP, show_error=True, app_kwargs={"middleware": [Middleware(TimerFix), Middleware(fetch_watch.FetchWatch)]})


SESSIONS_SEEN = 4096  # sessions whose page's input image is remembered (Page.images)
DELETE_CACHE = (int(max(10, min(600, OUTPUT_AGE / 4))), int(OUTPUT_AGE))  # (how often, what age): gradio's copies and uploads


@dataclass
class Page:
    """The components, by name (filled in by the layout functions)."""

    engine: Engine
    c: dict = field(default_factory=dict)  # name -> component
    inv_params: dict = field(default_factory=dict)  # inverter -> {param: component}; "" -> the parameters every inverter takes
    ed_params: dict = field(default_factory=dict)  # editor -> {param: component}
    inv_boxes: dict = field(default_factory=dict)
    ed_boxes: dict = field(default_factory=dict)
    record_keys: dict = field(default_factory=dict)  # parameter component -> its key in the page's record (`_parameter_record`)
    examples: dict = field(default_factory=dict)  # gallery key -> its example specs
    awaiting_first: set = field(default_factory=set)  # sessions whose page waits for the first example's edit
    # session (or (session, "second"): the Interpolate tab's second image) -> the image its page shows, as its last
    # upload left it (absent: not known, nothing is checked)
    images: dict = field(default_factory=dict)
    images_lock: threading.Lock = field(default_factory=threading.Lock)
    # session -> when its visitor last clicked an example (gradio's queue clock): what they asked for before is stale
    examples_at: dict = field(default_factory=dict)

    @staticmethod
    def _slot(session: str, second: bool):
        return (session, "second") if second else session

    def shows(self, session: str, image, second: bool = False) -> None:
        """The visitor put `image` on the page (an upload; None: cleared). Bounded: the oldest sessions go first."""
        key = self._slot(session, second)
        with self.images_lock:
            self.images.pop(key, None)
            self.images[key] = image
            while len(self.images) > SESSIONS_SEEN:
                self.images.pop(next(iter(self.images)))

    def example_shown(self, session: str, at: float) -> None:
        """The visitor clicked an example at `at` (`time.monotonic()`, the queue's clock): the app set the page's
        images, as paths (gradio's copies) its later requests name but this side never sees, so they are not known;
        what the visitor asked for before `at` is stale instead."""
        with self.images_lock:
            self.images.pop(self._slot(session, False), None)
            self.images.pop(self._slot(session, True), None)
            self.examples_at.pop(session, None)
            self.examples_at[session] = at
            while len(self.examples_at) > SESSIONS_SEEN:
                self.examples_at.pop(next(iter(self.examples_at)))

    def stale(self, session: str, image, second: bool = False, since: float | None = None) -> bool:
        """Whether results of `image`, asked for at `since` (the request's `enqueued_at`; None: not known), would
        now show beside another image on the visitor's page: one uploaded since, or an example clicked since."""
        key = self._slot(session, second)
        with self.images_lock:
            if since is not None and self.examples_at.get(session, -math.inf) > since:
                return True
            return key in self.images and not same_image(self.images[key], image)

    def chose(self, request: gr.Request | None) -> str:
        """The visitor's session, which has now chosen something of its own (an upload, an example, a model, an edit):
        the first example's edit, if still being made, is not shown to it."""
        session = session_of(request)
        self.awaiting_first.discard(session)
        return session

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
    """The running model in plain words, and why this one (a visitor cannot pick a GPU)."""
    line = f"Running **{model.name}**: {model.description}."
    return f"{line} {engine.notice}" if engine.notice else line


def _max_steps(model) -> int:
    base = Engine.base(model)
    return min(MAX_STEPS, base.max_steps, FEW_STEPS if _few_step(model) else MAX_STEPS)


def _few_step(model) -> bool:
    """A distilled few-step model (LCM, SDXL-Turbo): made for a handful of steps, not fifty."""
    return Engine.base(model).default_steps <= FEW_STEPS


def _guidance_note(model) -> str:
    """Why the guidance hardly matters on `shapes-lcm` (measured: edits at guidance 1, 3 and 8 differ by 55-59 dB,
    below one grey level): a consistency model takes guidance as an embedding, and ours barely uses it. No note is
    "", not None: gradio's page keeps a box's last note when an update sends None (a switch to `shapes` kept the
    LCM's note)."""
    base = Engine.base(model)
    if base.family == "shapes" and base.sampler_kind == "lcm":
        return "on this model guidance barely changes anything (distilled into an input it hardly uses)"
    return "distilled into the model as an input (no second pass)" if not base.uses_cfg else ""


def _steps_label(model) -> str:
    return f"Steps (1 to {FEW_STEPS}: this model is made for few steps)" if _few_step(model) else "Steps"


# ---------------------------------------------------------------- layout ------------------
def _param_component(name: str, spec: Param, family: tuple[str, ...]):
    default = spec.default_for(family)
    label, info = name.replace("_", " ").capitalize(), spec.help or None
    if spec.choices:
        return gr.Dropdown(list(spec.choices), value=default, label=label, info=info)
    if spec.kind is bool:
        return gr.Checkbox(value=bool(default), label=label, info=info)
    if spec.kind is str:
        return gr.Textbox(value=default, label=label, info=info)
    if spec.kind is int and spec.low is not None and spec.high is not None and spec.high - spec.low <= 100:
        return gr.Slider(spec.low, spec.high, value=default, step=1, label=label, info=info)
    return gr.Number(value=default, label=label, info=info, precision=0 if spec.kind is int else None)


def inverter_specs(name: str) -> dict[str, Param]:
    """Every parameter of an inverter: the shared ones (an inverter's own declaration of one wins)."""
    return {**SHARED_PARAMS, **INVERTERS[name].params}


def _parameter_boxes(page: Page, family: tuple[str, ...]) -> None:
    """One accordion per kind; inside, one group per inverter (editor), shown when it is picked. The
    parameters every inverter takes come first, in a group of their own, set to the picked inverter's defaults."""
    kinds = (("Inverter", INVERTERS, page.inv_params, page.inv_boxes, page.first_inverter), ("Editor", EDITORS, page.ed_params, page.ed_boxes, "p2p"))
    for title, registry, params, boxes, shown in kinds:
        with gr.Accordion(f"{title} settings (this model's defaults)", open=False):
            if registry is INVERTERS:
                with gr.Group():
                    gr.Markdown("**Every inverter**: how much of the schedule to invert, and the noise of a few-step sampler's steps.")
                    own = inverter_specs(shown)
                    params[""] = {k: _param_component(k, own[k], family) for k in SHARED_PARAMS}
            for name, algo in registry.items():
                with gr.Group(visible=name == shown) as box:
                    cost = f" Network calls per step: {algo.nfe_per_step}." if hasattr(algo, "nfe_per_step") else ""
                    gr.Markdown(f"**{name}**: {algo.paper}.{cost}")
                    params[name] = {k: _param_component(k, s, family) for k, s in algo.params.items() if k not in SHARED_PARAMS}
                boxes[name] = box
    _parameter_record(page)


def _parameter_record(page: Page) -> None:
    """One hidden value holding every parameter box's value, kept by the page itself at each change of a box
    (`_keep_record`); the work events take it instead of the 49 boxes. gradio's page gathers each input of an event
    by a search of the whole page and resets each one's status at the first message: with 61 inputs an edit's click
    paid for 61 of each before its request left."""
    for kind, params in (("inverter", page.inv_params), ("editor", page.ed_params)):
        for name, comps in params.items():
            for k, comp in comps.items():
                page.record_keys[comp] = f"{kind}/{name}/{k}"
    page.c["params"] = gr.JSON({key: comp.value for comp, key in page.record_keys.items()}, visible=False)


def _keep_record(page: Page) -> None:
    """Each box's change sets its value in the record, in the page (no round trip): into one object the page holds,
    so that the changes of a model switch (every box at once) cannot overwrite each other."""
    record = page.c["params"]
    for comp, key in page.record_keys.items():
        js = f"(v, r) => {{ const kept = (window.parameterRecord ||= {{...r}}); kept[{json.dumps(key)}] = v; return {{...kept}}; }}"
        comp.change(None, [comp, record], record, js=js, queue=False, show_progress="hidden", api_visibility="private")


def _with_record(page: Page, data: dict) -> dict:
    """An event's values with each parameter box's taken from the page's record, as gradio would have given the box's
    own (its preprocessing: a Number's precision, a Dropdown's choices)."""
    record = page.c["params"]
    if record not in data:  # already taken from it (an edit request builds its inversion request from the same values)
        return data
    taken = {comp: v for comp, v in data.items() if comp is not record}
    taken.update({comp: comp.preprocess(data[record][key]) for comp, key in page.record_keys.items() if key in data[record]})
    return taken


def _shape_specs() -> list[dict]:
    out = []
    for s in json.loads((SHAPES_EXAMPLES / "examples.json").read_text()):
        s = {**s, "image": str(SHAPES_EXAMPLES / s["image"])}
        if s.get("region"):
            s["region"] = str(SHAPES_EXAMPLES / s["region"])
        out.append(s)
    return out


def example_specs(model) -> list[dict]:
    """The examples for `model`'s kind of images: each an image, prompts and editor, and optionally the
    inverter it is about and a painted region (a mask file)."""
    return _shape_specs() if _is_shapes(model) else PHOTO_EXAMPLES


def example_caption(spec: dict) -> str:
    """'red circle → green · p2p': what the edit changes, the editor, and the inverter or painted
    region when the example is about one."""
    old, new = spec["source"].split(), spec["target"].split()
    changed, gone = [w for w in new if w not in old], [w for w in old if w not in new]
    subject = " ".join(w for w in old if w not in ("a", "an", "on", "the"))[:40] if not gone else " ".join(gone)
    extra = [spec["editor"]] + ([spec["inverter"]] if spec.get("inverter") else []) + (["painted region"] if spec.get("region") else [])
    return f"{subject} → **{' '.join(changed) or spec['target']}** · {', '.join(extra)}"


def _examples(page: Page, model) -> None:
    """Example thumbnails above everything: a click fills the inputs, runs the edit and scrolls to it."""
    c = page.c
    page.examples = {"shape_examples": _shape_specs(), "photo_examples": PHOTO_EXAMPLES}
    for key, specs in page.examples.items():
        visible = (key == "shape_examples") == _is_shapes(model)
        c[key] = gr.Dataset(components=["image", "markdown"], samples=[[s["image"], example_caption(s)] for s in specs], headers=["", "edit"],
                            type="index", layout="table", label="Examples: click one to edit it", samples_per_page=8, visible=visible,
                            elem_id=key.replace("_", "-"))


def _input_column(page: Page, model) -> None:
    c, engine, base = page.c, page.engine, Engine.base(model)
    _examples(page, model)
    # the first example's inputs come with the page (its edit, once made, with the load event): an answer that
    # brought them could land after a visitor's own first upload or choice and put the example's back
    first = _example_values(example_specs(model)[0])
    c["image"] = uploaded_image(value=first["image"], label="Input image", elem_id="input", sources=["upload", "clipboard"], height=240)
    c["source"] = gr.Textbox(first["source"], label="Source prompt (describes the image)", elem_id="source", max_lines=2)
    c["target"] = gr.Textbox(first["target"], label="Target prompt (describes the edit; Enter runs it)", elem_id="target", max_lines=2)
    with gr.Row():
        c["inverter"] = gr.Dropdown(engine.inverters(model.name), value=base.default_inverter, label="Inverter", elem_id="inverter")
        c["editor"] = gr.Dropdown(list(EDITORS), value=first["editor"], label="Editor", elem_id="editor")
    c["choice_note"] = gr.Markdown(_choice_note(engine, model, base.default_inverter, first["editor"]), elem_id="choice-note")
    with gr.Row():
        c["invert_btn"] = gr.Button("Invert only", elem_id="invert-btn", min_width=80)
        c["edit_btn"] = gr.Button("Edit", variant="primary", elem_id="edit-btn", min_width=80)
        c["stop_btn"] = gr.Button("Stop", variant="stop", elem_id="stop-btn", min_width=60)
        c["waiting"] = gr.Textbox(visible=False)  # the Stop button's js fills it: which blocks showed a pending request
    c["live"] = gr.Checkbox(label="Live: re-edit as you type the target prompt (the inversion is reused)", value=False, elem_id="live")
    with gr.Accordion("Paint the region to edit (optional)", open=False, elem_id="region-box") as c["region_box"]:
        gr.Markdown("Paint over what should change: it becomes DiffEdit's mask, P2P's LocalBlend and MasaCtrl's foreground. "
                    "Leave it empty for the editor's own mask (shown after an edit).")
        c["region"] = gr.ImageEditor(
            first["region"], type="numpy", sources=[], transforms=(), layers=False, elem_id="region", height=260, show_label=False,
            brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed", default_size=12),
        )
    with gr.Accordion("Model, steps, seed and guidance", open=False, elem_id="settings"):
        c["model"] = gr.Dropdown(page.engine.models.labelled(), value=model.name, label="Model", elem_id="model")
        c["steps"] = gr.Slider(1, _max_steps(model), value=base.default_steps, step=1, label=_steps_label(model), elem_id="steps")
        with gr.Row():
            c["seed"] = gr.Number(value=0, precision=0, label="Seed", elem_id="seed", minimum=0, scale=3)
            c["random_seed"] = gr.Button("🎲 Random seed", elem_id="random-seed", size="sm", scale=1)
        with gr.Row():
            c["guidance"] = gr.Number(value=base.default_guidance, label="Inversion guidance (source)", minimum=0, maximum=30, elem_id="guidance",
                                      info=_guidance_note(model))
            c["edit_guidance"] = gr.Number(value=base.default_edit_guidance, label="Edit guidance (target)", minimum=0, maximum=30, elem_id="edit-guidance")
        c["reset"] = gr.Button("Reset every setting to this model's defaults", size="sm", elem_id="reset")
    _parameter_boxes(page, base.defaults)


def _output_column(page: Page) -> None:
    c = page.c
    with gr.Tabs(elem_id="tabs"):
        with gr.Tab("Edit", elem_id="edit-tab"):
            c["slider"] = gr.ImageSlider(label="Original | edit (drag the handle)", type="pil", format="png", elem_id="slider")
            c["summary"] = gr.Markdown(elem_id="summary")
            with gr.Row():
                c["shown_input"] = gr.Image(label="Input as seen", type="pil", format="png", interactive=False, elem_id="shown-input", height=230)
                c["recon"] = gr.Image(label="Reconstruction", type="pil", format="png", interactive=False, elem_id="recon", height=230)
                c["edited"] = gr.Image(label="Edit", type="pil", format="png", interactive=False, elem_id="edited", height=230)
            c["mask_view"] = gr.Image(label="Edit region (painted, or the editor's own mask)", type="pil", format="png", interactive=False, elem_id="mask-view", height=200, visible=False)
            c["mask_to_canvas"] = gr.Button("Correct this region: put it on the painting canvas", size="sm", visible=False, elem_id="mask-to-canvas")
            # the region on the uploaded image (a hidden image, not gr.State: State keeps a heartbeat stream open)
            c["upload_mask"] = gr.Image(type="numpy", image_mode="L", format="png", visible=False, interactive=False)
            with gr.Accordion("All metrics (JSON)", open=False):
                c["metrics"] = gr.JSON(label="Metrics and timings", elem_id="metrics")
            with gr.Row():
                # wide enough for their files' names: a third (the painted region) goes below the two
                c["edit_file"] = gr.File(label="Edited image (PNG)", elem_id="edit-file", min_width=280)
                c["inv_file"] = gr.File(label="Inversion (safetensors)", elem_id="inv-file", min_width=280)
                c["region_file"] = gr.File(label="Painted region (PNG)", elem_id="region-file", visible=False, min_width=280)
            c["reedit"] = gr.Markdown(REEDIT_HINT, elem_id="reedit")
        with gr.Tab("Interpolate", elem_id="interpolate-tab"):
            gr.Markdown("Morph from the input image (its prompt, inverter and steps on the left) to a second image: both are inverted, "
                        "their noises mixed spherically and their prompts linearly; the first and last frames are the two reconstructions.")
            with gr.Row():
                c["image2"] = uploaded_image(label="Second image", elem_id="image2", sources=["upload", "clipboard"], height=200)
                with gr.Column():
                    c["prompt2"] = gr.Textbox(label="Its prompt (empty: the source prompt)", elem_id="prompt2", max_lines=2)
                    c["frames"] = gr.Slider(2, MAX_FRAMES, value=8, step=1, label="Frames", elem_id="frames")
                    c["interpolate_btn"] = gr.Button("Interpolate", variant="primary", elem_id="interpolate-btn")
                    c["interpolate_example"] = gr.Button("Try an example", size="sm", elem_id="interpolate-example")
            c["interp_summary"] = gr.Markdown(elem_id="interp-summary")
            c["strip"] = gr.Gallery(label="Frames (click one to enlarge)", columns=8, height="auto", object_fit="contain", format="png", elem_id="strip")
            c["gif_file"] = gr.File(label="Animation (GIF)", elem_id="gif-file")
        with gr.Tab("More like these", elem_id="seeds-tab"):
            gr.Markdown("New images of something the model rarely draws: upload 1 to 4 pictures of it. Each is inverted (the inverter, steps and seed "
                        "on the left) and its noise starts new samples of the prompt, mixed with fresh noise at the strength below "
                        "(0: the references' reconstructions; 1: ordinary generation). The RNRI paper's second application.")
            with gr.Row():
                c["references"] = gr.Gallery(label=f"Reference images (1 to {MAX_REFERENCES}; drop or click to add)", type="filepath", interactive=True,
                                             columns=4, height=200, object_fit="contain", elem_id="references", file_types=["image"])
                with gr.Column():
                    c["concept"] = gr.Textbox(label="What they show (empty: the source prompt)", elem_id="concept", max_lines=2)
                    with gr.Row():
                        c["samples"] = gr.Slider(1, MAX_SAMPLES, value=4, step=1, label="Samples", elem_id="samples")
                        c["strength"] = gr.Slider(0, 1, value=0.5, step=0.05, label="Fresh noise (strength)", elem_id="strength")
                    c["seeds_btn"] = gr.Button("Make more like these", variant="primary", elem_id="seeds-btn")
                    c["seeds_example"] = gr.Button("Try an example", size="sm", elem_id="seeds-example")
            c["seeds_summary"] = gr.Markdown(elem_id="seeds-summary")
            c["seeded"] = gr.Gallery(label="New samples", columns=4, height="auto", object_fit="contain", format="png", elem_id="seeded")
        with gr.Tab("Compare", elem_id="compare-tab"):
            gr.Markdown("Every inverter on the input image: what each recovers, whether the noise it finds looks like noise, "
                        "and, with a target prompt, the edit each gives.")
            with gr.Row():
                c["compare_edits"] = gr.Radio(["no edits", "the chosen editor", "every editor"], value="the chosen editor", label="Also edit with the target prompt",
                                              elem_id="compare-edits")
                c["compare_btn"] = gr.Button("Compare every inverter", variant="primary", elem_id="compare-btn")
            c["compare_summary"] = gr.Markdown(elem_id="compare-summary")
            c["gallery"] = gr.Gallery(label="Reconstructions", columns=3, height="auto", format="png", elem_id="gallery")
            c["compare_gallery"] = gr.Gallery(label="Edits", columns=3, height="auto", format="png", elem_id="compare-edits-gallery")
            c["table"] = gr.Dataframe(label="Reconstruction quality and cost", elem_id="compare-table", wrap=True)
            c["plot"] = gr.LinePlot(x="inversion step", y="log10 residual", color="inverter", label="Residual of each step's solution (lower: the step was solved better)")


def _edit_outputs(page: Page) -> list:
    return [page.c[k] for k in ("slider", "shown_input", "recon", "edited", "summary", "metrics", "edit_file", "inv_file", "region_file", "reedit",
                                "mask_view", "mask_to_canvas", "upload_mask")]


REEDIT_HINT = ("Edit the downloaded inversion again without inverting, on your machine: "
               "`python -m editing edit --model MODEL --inversion inversion.safetensors --editor p2p --target-prompt \"...\"`")


def _reedit(r: dict, painted: bool) -> str:
    """The command that makes this edit again from the downloads (`report.reedit_command`)."""
    files = "the inversion and the painted region downloaded above" if painted else "the inversion downloaded above"
    decoded = " (it decodes in full; live mode shows the fast preview decoder's)" if r["req"].preview and Engine.base(r["model"]).has_preview else ""
    return (f"Make this edit again on your machine from {files}, without inverting{decoded}:\n\n"
            f"```\n{report.reedit_command(r['model'], r['req'], painted)}\n```")


def _cleared(page: Page) -> dict:
    """Every result of the input image off the page (a new image or model: nothing stale stays)."""
    c = page.c
    out = {c[k]: None for k in ("slider", "shown_input", "recon", "edited", "metrics", "edit_file", "inv_file", "upload_mask", "strip", "gif_file", "gallery",
                                "compare_gallery", "table")}
    out.update({c["summary"]: "", c["interp_summary"]: "", c["compare_summary"]: "", c["mask_view"]: gr.update(value=None, visible=False),
                c["mask_to_canvas"]: gr.update(visible=False), c["region_file"]: gr.update(value=None, visible=False), c["reedit"]: REEDIT_HINT})
    return out


def _in_the_page(values: dict) -> str:
    """A JS function giving the outputs what gradio would send for `values` (each component's own postprocessing),
    for an update the page can make alone."""
    def sent(comp, value):
        value = comp.postprocess(value)
        return value.model_dump() if hasattr(value, "model_dump") else value

    out = [{**v, **({"value": sent(comp, v["value"])} if "value" in v else {})} if isinstance(v, dict) and v.get("__type__") == "update"
           else sent(comp, v) for comp, v in values.items()]
    return f"() => {json.dumps(out)}"


def _painted(value) -> np.ndarray | None:
    """The ImageEditor's painted strokes as one H x W mask (None when nothing is painted)."""
    if not value or not value.get("layers"):
        return None
    alpha = [layer[..., 3] for layer in value["layers"] if layer is not None and layer.ndim == 3 and layer.shape[-1] == 4]
    mask = np.any(np.stack(alpha), axis=0) if alpha else None
    return mask if mask is not None and mask.any() else None


def _mask_overlay(x, mask):
    """The input with the edit region tinted red (the mask brought to the image's size, nearest pixel). In
    numpy: a handler's thread starts no torch thread team (demo/model_thread.py)."""
    img = x[0].detach().float().cpu().numpy()
    m = mask[0, 0].detach().cpu().numpy().astype(np.float32)
    (H, W), (h, w) = img.shape[-2:], m.shape
    m = m[(np.arange(H) * h // H)[:, None], (np.arange(W) * w // W)[None, :]]
    tint = np.array([1.0, -1.0, -1.0], dtype=np.float32)[:, None, None]
    return torch.from_numpy(img * (1 - 0.5 * m) + tint * 0.5 * m)[None]


def _choice_note(engine: Engine, model, inverter: str, editor: str, steps=None) -> str:
    """One line on each choice, what it costs here, and how the pair did in this model's benchmark."""
    first = INVERTER_HELP.get(inverter, inverter)
    try:
        calls = max_nfe(model, inverter, int(steps) if steps else None)
        first += f" Cost: at most {calls} network calls here"
    except Exception:  # noqa: BLE001 -- a hint only (an inverter that does not fit the model says so when run)
        calls = None
    last = engine.timings.get((model.name, inverter))
    if calls is not None:
        first += f"; its last inversion here took {last:.1f} s." if last is not None else "."
    bench = report.benchmark_note(model.name, inverter, editor)
    notes = [first, EDITOR_HELP[editor] + (f" {bench}" if bench else "")]
    if EDITORS[editor].needs_attention and steps is not None and int(steps) < 2:
        notes.append(f"⚠️ **{editor}** needs at least 2 steps.")
    return "\n\n".join(notes)


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
    data = _with_record(page, data)
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
        params=_changed_params(inverter_specs(inv), {**page.inv_params[""], **page.inv_params[inv]}, data, family),
        model=model.name,
    )


def _edit_request(page: Page, data: dict) -> EditRequest:
    data = _with_record(page, data)
    source = _inversion_request(page, data)
    family = Engine.base(page.engine.model_for(source.model)).defaults
    ed = data[page.editor]
    return EditRequest(source, data[page.target] or "", ed, data[page.edit_guidance], _changed_params(EDITORS[ed].params, page.ed_params[ed], data, family),
                       region=_painted(data.get(page.c["region"])))


def _edit_steps(page: Page, r: dict, since: float | None = None):
    """The two updates of an edit: the edit itself as soon as it is decoded, then what measuring adds
    (the reconstruction, its metrics, the files, the mask) -- `r` is `Engine.edit`'s result, asked for at `since`."""
    c, engine = page.c, page.engine
    session, image = r["session"], r["req"].source.image
    # a new image came while it worked: change nothing (the page took the old results off), and say so as the last
    # update, which gradio applies again when the event completes (a bare return re-applied the sent edit)
    unchanged = {k: gr.skip() for k in _edit_outputs(page)}
    if page.stale(session, image, since=since):
        yield unchanged
        return
    folder = output_folder()
    with fetch_watch.watched("edit-view") as (name, fetched):
        x, e = png_once(r["entry"].shown, r["x"], "input.png", folder), png(r["edit"], name, folder=folder)
        yield {c["slider"]: (x, e), c["shown_input"]: x, c["edited"]: e, c["summary"]: "Edit done; measuring the reconstruction…"}
        fetched.wait(fetch_watch.WAIT_S)  # the page has the edit before measuring takes the CPU (fetch_watch.py)
    r = engine.edit_record(r)
    if page.stale(session, image, since=since):
        yield unchanged
        return
    edit_png, inv_path, region_path = write_downloads(r)
    mask = gr.update(value=png(_mask_overlay(r["x"], r["mask"]), "region.png", folder=folder), visible=True) if r["mask"] is not None else gr.update(value=None, visible=False)
    yield {c["recon"]: png_once(r["entry"].shown, r["reconstruction"], "reconstruction.png", folder), c["summary"]: report.summary_markdown(r["metrics"]), c["metrics"]: r["metrics"], c["edit_file"]: edit_png,
           c["inv_file"]: inv_path, c["region_file"]: gr.update(value=region_path, visible=region_path is not None), c["reedit"]: _reedit(r, region_path is not None),
           c["mask_view"]: mask, c["mask_to_canvas"]: gr.update(visible=r["upload_mask"] is not None),
           c["upload_mask"]: None if r["upload_mask"] is None else r["upload_mask"].astype(np.uint8) * 255}


def _work_handlers(page: Page):
    """The handlers that run the model: edit, live edit, invert, compare."""
    engine, c = page.engine, page.c
    outputs = _edit_outputs(page)

    @gpu("edit")
    @shown_errors(c["summary"])
    def on_edit(data: dict, request: gr.Request, progress=gr.Progress()):
        since = enqueued_at()
        yield from _edit_steps(page, engine.edit(page.chose(request), _edit_request(page, data), progress_of(progress)), since)

    @gpu("edit")
    @shown_errors(c["summary"], live=True)
    def on_live(data: dict, request: gr.Request, progress=gr.Progress()):
        if not data[c["live"]] or not (data[c["target"]] or "").strip() or data[c["image"]] is None:
            yield {k: gr.skip() for k in outputs}
            return
        since, req = enqueued_at(), replace(_edit_request(page, data), preview=True, live=True)
        yield from _edit_steps(page, engine.edit(page.chose(request), req, progress_of(progress)), since)

    @gpu("invert")
    @shown_errors(c["summary"])
    def on_invert(data: dict, request: gr.Request, progress=gr.Progress()):
        since, session, req = enqueued_at(), page.chose(request), _inversion_request(page, data)
        entry, record = engine.inversion_record(session, req, progress_of(progress))
        if page.stale(session, req.image, since=since):  # a new image came while it worked (see _edit_steps)
            return {c["summary"]: gr.skip()}
        _, inv_path, _ = write_downloads({"inversion": entry.inversion})
        folder = output_folder()
        return {c["shown_input"]: png_once(entry.shown, entry.x, "input.png", folder), c["recon"]: png_once(entry.shown, entry.reconstruction, "reconstruction.png", folder), c["summary"]: report.summary_markdown(record), c["metrics"]: record,
                c["inv_file"]: inv_path, c["slider"]: None, c["edited"]: None, c["edit_file"]: None, c["region_file"]: gr.update(value=None, visible=False),
                c["reedit"]: REEDIT_HINT, c["mask_view"]: gr.update(value=None, visible=False),
                c["mask_to_canvas"]: gr.update(visible=False), c["upload_mask"]: None}

    @gpu("compare")
    @shown_errors(c["compare_summary"])
    def on_compare(data: dict, request: gr.Request, progress=gr.Progress()):
        which = data[c["compare_edits"]]
        target = (data[c["target"]] or "").strip()
        editors = () if which == "no edits" or not target else tuple(EDITORS) if which == "every editor" else (data[c["editor"]],)
        since, session, source = enqueued_at(), session_of(request), _inversion_request(page, data)
        unchanged = {k: gr.skip() for k in (c["gallery"], c["compare_gallery"], c["table"], c["plot"], c["compare_summary"])}
        if page.stale(session, source.image, since=since):  # asked for before an example was clicked (it waited in the queue)
            return unchanged  # (its work, up to every inverter and editor, is not done at all)
        rows = engine.compare(session, source, progress_of(progress), target, editors)
        if page.stale(session, source.image, since=since):  # another image came while it worked
            return unchanged
        return compare_updates(page, rows, target, editors, which != "no edits" and not target, source.prompt)

    return on_edit, on_live, on_invert, on_compare


def compare_updates(page: Page, rows: list[dict], target: str, editors: tuple, missing_target: bool, source_prompt: str = "") -> dict:
    """The comparison on the page: reconstructions (on an LCM without the last recorded residual, where
    inverters differ), the edits (with a note on an editor asked for what it does not do), and a table whose every
    number belongs to the images beside it."""
    import pandas as pd

    c = page.c
    lcm = any(r["reconstruction_uncorrected"] is not None for r in rows)
    folder = output_folder()
    if lcm:
        pics = [(png(r["reconstruction_uncorrected"], f"{r['inverter']}.png", folder=folder), f"{r['inverter']} · {r['psnr_uncorrected']:.2f} dB") for r in rows]
    else:
        pics = [(png(r["reconstruction"], f"{r['inverter']}.png", folder=folder), f"{r['inverter']} · {r['psnr']:.2f} dB · {r['nfe']} calls") for r in rows]
    edits = [(png(r["edits"][ed]["image"], f"{r['inverter']}-{ed}.png", folder=folder), f"{r['inverter']} + {ed} · {r['edits'][ed]['change_psnr']:.2f} dB")
             for r in rows for ed in editors]
    names = {"inverter": "inverter", "nfe": "network calls", "seconds": "seconds", "psnr": "PSNR (dB)", "psnr_uncorrected": "PSNR without the last residual (dB)",
             "ssim": "SSIM", "lpips": "LPIPS", "noise_std": "noise std", "noise_ks": "noise: distance from N(0,1)", "noise_gaussian": "noise looks Gaussian"}
    shown = ["inverter", "nfe", "seconds", "psnr"] + (["psnr_uncorrected"] if lcm else []) + ["ssim"] + (["lpips"] if any(r["lpips"] is not None for r in rows) else [])
    shown += ["noise_std", "noise_ks", "noise_gaussian"]
    frame = pd.DataFrame([{names[k]: r.get(k) for k in shown} for r in rows])
    text = ("On an LCM every inverter reconstructs exactly through the noise it records, so the images show each reconstruction without the "
            "last step's recorded residual: that is where the inverters differ." if lcm else "")
    reused = [r["inverter"] for r in rows if r["cached"]]
    if reused:  # a time taken under whatever else ran then (the first example's, at the app's start): not this run's
        text += f"\n\nReused from an earlier request, with that request's seconds: {', '.join(reused)}."
    if missing_target:
        text += "\n\nType a target prompt on the left to compare the edits too."
    text += "".join(f"\n\n⚠️ {n}" for e in editors for n in report.against_the_grain(e, source_prompt, target))
    return {c["gallery"]: gr.update(value=pics, label="Reconstructions" + (" without the last recorded residual (PSNR)" if lcm else " (PSNR, network calls)")),
            c["compare_gallery"]: gr.update(value=edits or None, label=f"Edits: {target} (PSNR from the input: lower, more changed)" if edits else "Edits"), c["table"]: frame,
            c["plot"]: residual_frame(rows), c["compare_summary"]: text.strip()}


def _application_handlers(page: Page):
    """The RNRI paper's applications: interpolate between two uploads, more samples like the references."""
    engine, c = page.engine, page.c

    @gpu("interpolate")
    @shown_errors(c["interp_summary"])
    def on_interpolate(data: dict, request: gr.Request, progress=gr.Progress()):
        since, session = enqueued_at(), session_of(request)
        r = engine.interpolate(session, _inversion_request(page, data), data[c["image2"]], data[c["prompt2"]], data[c["frames"]], progress_of(progress))
        folder = output_folder()
        gif = written(folder / "interpolation.gif", lambda p: r["interpolation"].save_gif(p, pingpong=True))
        strip = [(png(f[None], f"frame{i}.png", folder=folder), f"{i}") for i, f in enumerate(r["frames"])]
        if page.stale(session, data[c["image"]], since=since) or page.stale(session, data[c["image2"]], second=True):  # a new image came meanwhile
            return {k: gr.skip() for k in (c["strip"], c["interp_summary"], c["gif_file"])}
        m = r["metrics"]
        text = f"{m['frames']} frames, {m['nfe']} network calls, {m['seconds']:.2f} s" + "".join(f"\n\n⚠️ {n}" for n in r["notes"] + m["warnings"])
        return {c["strip"]: strip, c["interp_summary"]: text, c["gif_file"]: gif}

    @gpu("seeds")
    @shown_errors(c["seeds_summary"])
    def on_seeds(data: dict, request: gr.Request, progress=gr.Progress()):
        refs = [item[0] if isinstance(item, (tuple, list)) else item for item in data[c["references"]] or []]
        r = engine.more_like_these(session_of(request), _inversion_request(page, data), refs, data[c["concept"]], data[c["samples"]],
                                   data[c["strength"]], progress_of(progress))
        m = r["metrics"]
        text = f"{m['samples']} samples from {m['references']} reference(s), {m['nfe']} network calls, {m['seconds']:.2f} s" + "".join(f"\n\n⚠️ {n}" for n in r["notes"])
        folder = output_folder()
        return {c["seeded"]: [png(x[None], f"sample{i}.png", folder=folder) for i, x in enumerate(r["images"])], c["seeds_summary"]: text}

    return on_interpolate, on_seeds


def _defaults(page: Page, model) -> dict:
    """Every setting back to `model`'s defaults."""
    c, base = page.c, Engine.base(model)
    updates = {c["steps"]: gr.update(value=base.default_steps, maximum=_max_steps(model), label=_steps_label(model)), c["seed"]: 0,
               c["guidance"]: gr.update(value=base.default_guidance, info=_guidance_note(model)), c["edit_guidance"]: base.default_edit_guidance,
               c["inverter"]: gr.update(choices=page.engine.inverters(model.name), value=base.default_inverter)}
    for n, comps in page.inv_params.items():
        specs = inverter_specs(n or base.default_inverter)  # the shared group: the default inverter's
        updates.update({comp: gr.update(value=specs[k].default_for(base.defaults)) for k, comp in comps.items()})
    for n, comps in page.ed_params.items():
        updates.update({comp: gr.update(value=EDITORS[n].params[k].default_for(base.defaults)) for k, comp in comps.items()})
    return updates


def _setting_handlers(page: Page):
    """The handlers that change settings: the model picker, the inverter and editor choices, defaults, seed."""
    engine, c = page.engine, page.c

    def on_model(data: dict, request: gr.Request, progress=gr.Progress()):
        page.chose(request)
        name = data[c["model"]]
        progress(0.1, desc=f"loading {name}")
        problem = ""
        try:
            model = engine.model_for(name)
        except ModelError as e:  # say what to do, and go back to the app's model
            problem = f"⚠️ {report.model_problem(name, e, engine.models)}"
            name = engine.models.default
            model = engine.model_for(name)
        updates = {**_cleared(page), **_defaults(page, model)}
        updates.update({c["model"]: gr.update(value=name), c["shape_examples"]: gr.update(visible=_is_shapes(model)),
                        c["photo_examples"]: gr.update(visible=not _is_shapes(model)), c["model_line"]: _model_line(engine, model),
                        c["summary"]: problem})
        return updates

    def loaded(name):
        """The picked model if it is loaded, else the app's (these unqueued handlers never load one)."""
        return engine.models.loaded.get(name) or engine.model

    def on_choice(data: dict):
        inv, ed, steps = data[c["inverter"]], data[c["editor"]], data[c["steps"]]
        if inv not in INVERTERS or ed not in EDITORS:  # not offered by the page: leave it as it is
            return {c["choice_note"]: gr.skip()}  # (gradio takes an empty dict for one value)
        model = loaded(data[c["model"]])
        updates = {box: gr.update(visible=n == inv) for n, box in page.inv_boxes.items()}
        updates.update({box: gr.update(visible=n == ed) for n, box in page.ed_boxes.items()})
        updates[c["choice_note"]] = _choice_note(engine, model, inv, ed, steps)
        return updates

    def on_inverter(data: dict):
        """The shared parameters at the picked inverter's defaults (RNRI inverts 0.6 of SDXL-Turbo's schedule)."""
        inv = data[c["inverter"]]
        if inv not in INVERTERS:
            return {comp: gr.skip() for comp in page.inv_params[""].values()}
        specs, family = inverter_specs(inv), Engine.base(loaded(data[c["model"]])).defaults
        return {comp: specs[k].default_for(family) for k, comp in page.inv_params[""].items()}

    def on_reset(data: dict):
        return _defaults(page, loaded(data[c["model"]]))

    return on_model, on_choice, on_reset, on_inverter


def _example_image(page: Page, request: gr.Request) -> None:
    """An example puts its image on the page: the visitor chose it (not the first example's edit); a request still
    working on the old image stops, as after an upload, and what any request asked for before the click (one still
    measuring its edit, one waiting in the queue) stays off the page (`Page.example_shown`)."""
    session = page.chose(request)
    page.example_shown(session, enqueued_at() or time.monotonic())
    page.engine.replaced(session, None)


def _example_handlers(page: Page):
    """Clicking an example: its inputs on the page (the inverter only if the example is about one), the
    region it paints on the canvas; the edit then runs as the Edit button's does."""
    c = page.c

    def on_example(key: str):
        def fill(index: int, request: gr.Request):
            _example_image(page, request)
            spec = page.examples[key][index]
            updates = {**_cleared(page), **_example_inputs(page, spec)}
            if spec.get("inverter"):
                updates[c["inverter"]] = spec["inverter"]
            return updates

        return fill

    def on_interpolate_example(request: gr.Request):
        _example_image(page, request)
        scenes = SHAPES_EXAMPLES
        return {c["image"]: str(scenes / "scene0.png"), c["source"]: "a red circle on a blue background", c["image2"]: str(scenes / "scene1.png"),
                c["prompt2"]: "a yellow square on a purple background"}

    def on_seeds_example():
        refs = [str(SHAPES_EXAMPLES / "seeds" / f) for f in ("ref0.png", "ref1.png", "ref2.png")]
        return {c["references"]: refs, c["concept"]: json.loads((SHAPES_EXAMPLES / "seeds" / "concept.json").read_text())["prompt"]}

    return on_example, on_interpolate_example, on_seeds_example


def _example_values(spec: dict) -> dict:
    """An example's image, prompts and editor, and its painting canvas (with its region painted, if any), by name."""
    canvas = _canvas_of(spec["image"])
    if spec.get("region"):
        canvas, _ = _canvas_with(np.asarray(load_image(spec["region"]))[..., 0], spec["image"])
    return {"image": spec["image"], "source": spec["source"], "target": spec["target"], "editor": spec["editor"], "region": canvas}


def _example_inputs(page: Page, spec: dict) -> dict:
    """An example's inputs on the page (`_example_values`)."""
    return {page.c[k]: v for k, v in _example_values(spec).items()}


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


def _model_work(*shown_on) -> dict:
    """How a model event runs: in the model's queue, its progress on its own summary (and whatever else is given)."""
    return dict(api_visibility="private", concurrency_id="model", show_progress_on=list(shown_on))


def _quiet_progress(demo: gr.Blocks) -> None:
    """No event of the page shows gradio's animated logo, whose springs run about 3 s past every request it shows on,
    60 frames a second (0.3 s of chromium's CPU per edit, taken from the model where the browser shares its cores):
    queued model work greys its summary and shows its timer and progress bar there ("minimal"); instant page updates
    show nothing ("hidden"). An event that chose its own display keeps it.

    An event that shows nothing marks nothing as loading (`show_progress_on=[]`): gradio's page keeps a loading
    status for every component any event ever marked (by default all its outputs), and at each click and each
    message of every later event sets all of them again, each by a search of the whole component tree (the marks
    the quick updates left cost 27 ms of the page's CPU before a cached edit's request left, and more at each of
    its messages)."""
    for fn in demo.fns.values():
        if fn.show_progress == "full":
            fn.show_progress = "minimal" if fn.queue is not False else "hidden"
        if fn.show_progress == "hidden" and fn.show_progress_on is None:
            fn.show_progress_on = []


def _wire(page: Page) -> None:
    c, engine = page.c, page.engine
    # the parameter boxes' values come in one record the page keeps (`_parameter_record`)
    all_inputs = {c[k] for k in ("model", "image", "source", "target", "inverter", "editor", "steps", "seed", "guidance", "edit_guidance", "live", "region", "params")}
    _keep_record(page)
    outputs = _edit_outputs(page)
    on_edit, on_live, on_invert, on_compare = _work_handlers(page)
    on_interpolate, on_seeds = _application_handlers(page)
    on_model, on_choice, on_reset, on_inverter = _setting_handlers(page)
    on_example, on_interpolate_example, on_seeds_example = _example_handlers(page)

    def on_upload(path, request: gr.Request):
        session = page.chose(request)  # the visitor's own image
        page.shows(session, path)
        engine.replaced(session, path)  # a request still working on the old image stops: its results would be stale
        return _canvas_of(path)

    cleared = list(_cleared(page))
    choice_out = [*page.inv_boxes.values(), *page.ed_boxes.values(), c["choice_note"]]
    for comp in (c["inverter"], c["editor"], c["steps"]):
        comp.change(on_choice, {c["model"], c["inverter"], c["editor"], c["steps"]}, choice_out, queue=False, api_visibility="private")
    c["inverter"].input(on_inverter, {c["model"], c["inverter"]}, list(page.inv_params[""].values()), queue=False, api_visibility="private")
    model_out = [*cleared, c["model"], c["steps"], c["seed"], c["guidance"], c["edit_guidance"], c["inverter"], c["shape_examples"], c["photo_examples"], c["model_line"]]
    model_out += [comp for params in (page.inv_params, page.ed_params) for comps in params.values() for comp in comps.values()]
    # its progress where the visitor looks, the picker, and on the summary; not on all 76 outputs
    c["model"].input(on_model, {c["model"]}, model_out, **_model_work(c["model"], c["summary"]))
    c["reset"].click(on_reset, {c["model"]}, [o for o in model_out if o not in cleared and o not in (c["model"], c["shape_examples"], c["photo_examples"], c["model_line"])],
                     queue=False, api_visibility="private")
    c["random_seed"].click(lambda: random.randrange(2**31), None, c["seed"], queue=False, api_visibility="private")
    busy = _model_work(c["summary"])
    # on a phone the result is a screen below the button: bring it into view (no move when it is in view)
    into_view = dict(fn=None, js="() => document.querySelector('#slider').scrollIntoView({block: 'nearest', behavior: 'smooth'})", queue=False)
    # always_last: a click while the last edit's metrics still stream in runs after them (with gradio's default,
    # "once", live_bench's click right as the edit appeared was lost: the page showed nothing pending)
    edits = [c["edit_btn"].click(on_edit, all_inputs, outputs, trigger_mode="always_last", **busy),
             c["target"].submit(on_edit, all_inputs, outputs, trigger_mode="always_last", **busy),
             c["invert_btn"].click(on_invert, all_inputs, outputs, trigger_mode="always_last", **busy),
             # Live: only the latest keystroke's edit runs once the running one ends (always_last).
             c["target"].input(on_live, all_inputs, outputs, trigger_mode="always_last", **busy)]
    # The canvas's updates show no progress (it is under a closed accordion, and quick), so they mark nothing as
    # loading (`_quiet_progress`): a marked canvas would be asked for its value at every later status update of every
    # event (gradio's page does that for each marked component; a painted canvas's answer can mean composing its layers).
    canvas = dict(api_visibility="private", concurrency_id="canvas", show_progress="hidden")
    # A new upload (or none): every old result leaves the page; the painting canvas shows the new image.
    # The clearing happens in the page, with no round trip: a server's answer could land after the new image's own
    # first answer (a click during the upload runs as soon as the file arrives) and wipe its message. The canvas is
    # emptied there too: it shows no progress, and a stroke on the old image would be wiped when the new one arrives.
    emptied = {**_cleared(page), c["region"]: None}
    for event in (c["image"].upload, c["image"].clear):
        event(None, None, list(emptied), js=_in_the_page(emptied), queue=False, api_visibility="private")
        event(on_upload, c["image"], c["region"], **canvas)  # decodes an upload: queued
    c["mask_to_canvas"].click(_canvas_with, [c["upload_mask"], c["image"]], [c["region"], c["region_box"]], **canvas)
    example_out = [*cleared, c["image"], c["source"], c["target"], c["editor"], c["inverter"], c["region"]]
    for key in ("shape_examples", "photo_examples"):
        edits.append(c[key].click(on_example(key), c[key], example_out, queue=False, api_visibility="private")
                     .then(on_edit, all_inputs, outputs, **busy))
    edits.append(c["compare_btn"].click(on_compare, all_inputs | {c["compare_edits"]}, [c["gallery"], c["compare_gallery"], c["table"], c["plot"], c["compare_summary"]],
                                        **_model_work(c["compare_summary"])))
    seeds_in = all_inputs | {c["references"], c["concept"], c["samples"], c["strength"]}
    seeds_out = [c["seeded"], c["seeds_summary"]]
    edits.append(c["seeds_btn"].click(on_seeds, seeds_in, seeds_out, **_model_work(c["seeds_summary"])))
    edits.append(c["seeds_example"].click(on_seeds_example, None, [c["references"], c["concept"]], queue=False, api_visibility="private")
                 .then(on_seeds, seeds_in, seeds_out, **_model_work(c["seeds_summary"])))
    interp_in = all_inputs | {c["image2"], c["prompt2"], c["frames"]}
    interp_out = [c["strip"], c["interp_summary"], c["gif_file"]]
    interpolations = [c["interpolate_btn"].click(on_interpolate, interp_in, interp_out, **_model_work(c["interp_summary"])),
                      c["interpolate_example"].click(on_interpolate_example, None, [c["image"], c["source"], c["image2"], c["prompt2"]], queue=False,
                                                     api_visibility="private").then(on_interpolate, interp_in, interp_out, **_model_work(c["interp_summary"]))]
    edits += interpolations
    # A new second image: the interpolation of the old pair leaves the page (in the page, as above) and one still
    # running on it stops (silently: its frames would show beside the new image)
    interp_cleared = {c["strip"]: None, c["gif_file"]: None, c["interp_summary"]: ""}

    def on_second_upload(path, request: gr.Request) -> dict:
        """Cleared again from here: frames of the old pair sent before this call reached the server land after the
        page's own clearing (and no frames of the new pair can come before it: they take a click and seconds)."""
        session = session_of(request)
        page.shows(session, path, second=True)
        engine.replaced(session, path, second=True)
        return interp_cleared

    for event in (c["image2"].upload, c["image2"].clear):
        event(None, None, list(interp_cleared), js=_in_the_page(interp_cleared), queue=False, api_visibility="private")
        event(on_second_upload, c["image2"], list(interp_cleared), queue=False, api_visibility="private")

    # the references are what the gallery shows: an upload beyond four keeps the newest four
    c["references"].upload(lambda files: (files or [])[-MAX_REFERENCES:], c["references"], c["references"], queue=False, api_visibility="private")

    said = {"edit": c["summary"], "invert": c["summary"], "compare": c["compare_summary"], "interpolate": c["interp_summary"], "seeds": c["seeds_summary"]}

    by_id = {comp.elem_id: comp for comp in said.values()}

    def on_stop(waiting: str, request: gr.Request):
        """Said where the stopped request's result would go: the running one's, or else the one the page saw
        waiting in the queue (gradio drops a queued request without a word, and the engine never saw it)."""
        shown = said.get(engine.cancel(session_of(request))) or next((by_id[i] for i in (waiting or "").split(",") if i in by_id), None)
        return {shown: error_text(Cancelled(), "on_stop")} if shown is not None else gr.skip()

    c["stop_btn"].click(on_stop, c["waiting"], list(by_id.values()), cancels=edits, queue=False, api_visibility="private", js="() => window.pendingAtStop || ''")
    for event in (c["edit_btn"].click, c["target"].submit, c["invert_btn"].click, c["shape_examples"].click, c["photo_examples"].click):
        event(**into_view)


MAKING_FIRST = "Making this example's edit…"  # the summary while the page waits for the first example


def _first_on_load(demo: gr.Blocks, page: Page, model) -> None:
    """The page opens with the first example's edit on it: made once, by `make_first_example` (app.py: in the
    background once the app listens) or else by the first visit, then shown to every visitor with its inversion.

    Its inputs are the page's initial values (`_input_column`). Once made, its edit comes with the page's load
    event, unqueued. Before that, the load event says it is being made and the page gets it when made, unless the
    visitor has meanwhile chosen something of their own (`Page.chose`): what they chose stays (the late edit replaced
    their image and prompts while the first example was made, or queued behind other visitors' work)."""
    c, engine, made, making, ready = page.c, page.engine, {}, threading.Lock(), threading.Event()
    results, nothing = _edit_outputs(page), {c["summary"]: gr.skip()}  # (gradio takes an empty dict for one value)
    # set when the page opened before the example was made: its change asks for the edit in the queue (a page that
    # got everything sends no queued request, which a full queue would refuse with an error)
    pending = gr.Number(0, visible=False)

    @gpu("edit")
    def make() -> dict:
        return _first_result(page, model)

    def first_example() -> dict:
        with making:  # made once, whoever asks first: a visitor waits for the start-up's run instead of repeating it
            if not ready.is_set():
                made.update(make() or {"none": True})
                ready.set()  # only now may an unqueued visit read it
        return made

    first_image = example_specs(model)[0]["image"]

    def on_open(request: gr.Request):
        session, made_already = session_of(request), ready.is_set()
        if made_already:
            engine.adopt(session)  # the shown example's inversion is the visitor's too
        if page.stale(session, first_image):  # checked last: on a loaded server the visitor's own upload can come first
            return nothing
        if made_already:
            return {k: v for k, v in made.items() if k != "none"} or nothing
        page.awaiting_first.add(session)
        return {c["summary"]: MAKING_FIRST, pending: 1}

    def on_first_result(request: gr.Request):
        session = session_of(request)
        if session not in page.awaiting_first:  # the visitor chose something else before this ran
            return nothing
        shown = first_example()
        try:
            page.awaiting_first.remove(session)
        except KeyError:  # the visitor chose something else meanwhile
            return nothing
        engine.adopt(session)
        return {k: v for k, v in shown.items() if k in results} or {c["summary"]: ""}

    demo.load(on_open, None, [*results, pending], queue=False, show_progress="hidden",
              api_visibility="private")
    # Once answered, the making line goes if the page still shows it: the visitor chose something else, and that line
    # can land after an upload's in-page clearing (a late load answer). Checked in the page, which alone knows
    # whether a message of the visitor's own (a quick refusal) has replaced it meanwhile.
    pending.change(on_first_result, None, results, concurrency_id="first-example", concurrency_limit=None, show_progress="hidden", api_visibility="private"
                   ).then(None, c["summary"], c["summary"], js=f"(s) => s === {json.dumps(MAKING_FIRST)} ? '' : s", queue=False, show_progress="hidden",
                          api_visibility="private")
    _first_examples[demo] = first_example


_first_examples: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # a page -> its first example's maker


def make_first_example(demo: gr.Blocks) -> threading.Thread | None:
    """Make the page's first example now, in a background thread (app.py, once the app listens): the first visitor
    after a start finds it made instead of waiting for an inversion and an edit. Not on ZeroGPU, where a GPU is
    lent to a visitor's request only."""
    if glue.spaces is not None:
        return None
    worker = threading.Thread(target=_first_examples[demo], name="first-example", daemon=True)
    worker.start()
    return worker


def _first_result(page: Page, model) -> dict:
    """The first example's result (its inputs come with the page): the page shows an edit before the visitor has done anything."""
    engine = page.engine
    spec = example_specs(model)[0]
    req = EditRequest(InversionRequest(spec["image"], spec["source"], spec.get("inverter"), model=model.name), spec["target"], spec["editor"])
    try:
        steps = list(_edit_steps(page, engine.edit("examples", req)))
    except Exception:  # a model that cannot run its own example still serves the page
        return {}
    return {k: v for step in steps for k, v in step.items()}


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
    engine.abandoned = client_gone  # a client's cancel or disconnect stops its work at the next UNet call
    engine.superseded = later_request_waiting  # one queued request per visitor: the latest
    page = Page(engine)
    with gr.Blocks(title="Inversion-based image editing", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown("# Inversion-based image editing\nPick an inverter to turn your image into noise, and an editor to change it with words.", elem_id="intro")
        page.c["model_line"] = gr.Markdown(_model_line(engine, model), elem_id="model-line")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=340):
                _input_column(page, model)
            with gr.Column(scale=2, min_width=340):
                _output_column(page)
        _wire(page)
        api.add_endpoints(engine)
        _first_on_load(demo, page, model)
    _quiet_progress(demo)
    return demo
