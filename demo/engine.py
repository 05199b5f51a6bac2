"""The app's work, without gradio: models loaded on demand (with fallbacks), request
checks, the per-session inversion cache, one thread for every model computation, and the records
the UI and the API show.

Requests are small dataclasses; everything a user can get wrong raises a
`UserError` with a message that says what to do.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from editing import EDITORS, concept_seeds, edit, interpolate, sample_seeds, validate_edit
from inversion.errors import ImageError, IncompatibleChoice, ModelError, ParameterError, PromptError, UserError
from inversion.images import centre_cropped_to, load_image, mask_on_upload
from inversion.inverters import INVERTERS
from inversion.models import MODELS, as_cascade, base_stage, is_available, load_model, stages_of
from inversion.noise_stats import noise_fields
from inversion.pipeline import evaluate, invert, max_nfe, reconstruct_uncorrected
from inversion.result import stage_inversions

from . import report
from .cache import Entry, InversionCache
from .model_thread import ModelThread, on_model_thread

MAX_STEPS = 100
MAX_FRAMES = 32  # interpolation frames: each one samples the whole model
MAX_REFERENCES, MAX_SAMPLES = 4, 8  # "more like these": reference images, new samples per request
GUIDANCE_LIMITS = (0.0, 30.0)  # beyond 30 classifier-free guidance only saturates
SEED_LIMIT = 2**63  # torch generators take a signed 64-bit seed
OOM_SHRINK = 0.7  # after an out-of-memory, suggest 70% of the long side (about half the pixels)
OFFLINE_CHOICES = ("shapes-lcm", "shapes")
HUB_CHOICES = ("lcm-dreamshaper-v7", "sdxl-turbo", "sd-1.5", "sd-1.4", "sd-1.5-lcm-lora", "lcm-sdxl", "sdxl", "deepfloyd-if")
FALLBACKS = ("shapes-lcm", "shapes", "tiny-sd")  # what the app runs when the asked model cannot load


class OutOfMemory(UserError):
    """The GPU ran out of memory; the message says which size should fit."""


OF_THE_IMAGE = ("invert", "edit", "compare", "interpolate")  # the kinds whose results belong to the page's input image


def same_image(a, b) -> bool:
    """Whether two of a request's images are the same upload: the same object or the same path (arrays and images,
    from the API, never compare equal, and never raise)."""
    paths = (str, os.PathLike)
    return a is b or (isinstance(a, paths) and isinstance(b, paths) and os.fspath(a) == os.fspath(b))


def request(kind: str):
    """An Engine method that serves one request of `kind` for its session (the first argument): an
    earlier Cancel no longer applies, and the session counts as running it until it returns (with the
    input image it works on, for the kinds whose results belong to it)."""

    def wrap(method):
        @functools.wraps(method)
        def serve(self, session, *args, **kwargs):
            if self.superseded():
                raise Superseded("dropped: a later request of yours is waiting, and only the latest runs")
            self.stops.setdefault(session, threading.Event()).clear()
            self.running[session] = kind
            self.deadlines[session] = (time.monotonic() + self.budget(kind), self.budget(kind))
            if kind in OF_THE_IMAGE and args:
                self.images[session] = getattr(getattr(args[0], "source", args[0]), "image", None)
            if kind == "interpolate" and len(args) > 1:
                self.seconds[session] = args[1]
            try:
                return method(self, session, *args, **kwargs)
            finally:
                self.running.pop(session, None)
                self.deadlines.pop(session, None)
                self.stops.pop(session, None)  # per-request state: nothing of a session outlives its request
                self.images.pop(session, None)
                self.seconds.pop(session, None)
                self.replaced_sessions.discard(session)

        return serve

    return wrap


STOPPED = "Stopped: nothing from that run was kept."


class Cancelled(UserError):
    """The visitor stopped the request: raised at the next UNet call after the Cancel click. Its words and
    mark are the Stop button's own, so whichever of the two reaches the page last says the same."""

    mark = "⏹"

    def __init__(self, message: str = STOPPED):
        super().__init__(message)


class Replaced(Cancelled):
    """The visitor put another image on the page while this request worked on the old one: it stops at the next
    UNet call and says nothing (the page took the old results off already; they would show beside the new image)."""

    silent = True


class Superseded(UserError):
    """The visitor queued a later request: only the latest of a visitor's queued requests runs."""


class TooLong(UserError):
    """A request would take, or took, more than the time one request may use on this server."""


CODEC_BOUNDS_KEPT = 1024  # images whose codec bound is remembered

# Seconds one request of each kind may take (APP_TIME_SCALE multiplies them: a slow model on a CPU).
REQUEST_SECONDS = {"invert": 120.0, "edit": 120.0, "compare": 360.0, "interpolate": 180.0, "seeds": 180.0}


# ---------------------------------------------------------------- requests ----------------
@dataclass(frozen=True)
class InversionRequest:
    image: object  # a path, bytes or a PIL image
    prompt: str = ""
    inverter: str | None = None  # None: the model's default (its `default_inverter`)
    steps: int | None = None  # None: the model's default
    seed: int = 0
    guidance: float | None = None  # None: the model's default inversion guidance
    params: dict = field(default_factory=dict)
    model: str | None = None  # None: the app's default model


@dataclass(frozen=True)
class EditRequest:
    source: InversionRequest
    target_prompt: str
    editor: str = "p2p"
    guidance: float | None = None  # None: the model's default edit guidance
    params: dict = field(default_factory=dict)
    region: object = None  # an optional painted mask (H x W array or image file, nonzero = edit here) of the input
    preview: bool = False  # live mode: decode with the model's fast preview decoder where it has one
    live: bool = False  # live mode: the target prompt is being typed (its last word may be half a word)


def check_whole(value, name: str, low: int, high: int, why: str = "") -> int:
    """An integer in [low, high]; refuses 2.5, NaN, empty fields and text (`why`: said after the range)."""
    if isinstance(value, str):
        value = value.strip()
        try:
            value = float(value) if value else None
        except ValueError:
            raise ParameterError(f"{name} must be a whole number, got {value!r}") from None
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(f"{name} must be a whole number, got {'nothing' if value is None else repr(value)}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise ParameterError(f"{name} must be a whole number, got {value}")
    value = int(value)
    if not low <= value <= high:
        shown = str(value) if len(str(value)) <= 24 else f"a {len(str(value))}-digit number"
        raise ParameterError(f"{name} must be between {low} and {high}{why}, got {shown}")
    return value


def check_guidance(value, name: str) -> float | None:
    """None (the model's default) or a finite number in GUIDANCE_LIMITS."""
    if value is None or value == "":
        return None
    try:
        g = float(value)
    except (TypeError, ValueError):
        g = math.nan
    lo, hi = GUIDANCE_LIMITS
    if not math.isfinite(g) or not lo <= g <= hi:
        raise ParameterError(f"{name} must be a number between {lo:g} and {hi:g}, got {value!r}")
    return g


# ---------------------------------------------------------------- models ------------------
class Models:
    """Models by registry name, loaded on first use and kept (at most one hub model at a time:
    they are large). The default is what the app starts on, after its fallbacks."""

    def __init__(self, requested: str, worker: ModelThread):
        self.worker = worker  # the engine's model thread: loading runs where the model will
        self.loaded: dict[str, object] = {}
        self.extra: set[str] = set()  # models added in memory, not in the registry
        self.default, self.notice = self._startup(requested)

    def _startup(self, requested: str) -> tuple[str, str]:
        if requested == "auto":
            if torch.cuda.is_available():
                requested = "lcm-dreamshaper-v7"
            else:
                name = self._first_loadable(FALLBACKS)
                return name, "This server has no GPU, so it runs a small model that draws flat shapes; with a GPU the page edits photos (LCM Dreamshaper)."
        try:
            self.get(requested)
            return requested, ""
        except ModelError as e:
            name = self._first_loadable(FALLBACKS)
            return name, f"Could not load **{requested}**: {e} Running the offline model **{name}** instead."

    def _first_loadable(self, names) -> str:
        for name in names:
            try:
                self.get(name)
                return name
            except ModelError:
                continue
        raise ModelError(f"none of {', '.join(names)} could be loaded")

    def add(self, name: str, model) -> None:
        """A model built in memory (a benchmark's full-size proxy, a library user's own), served by name."""
        self.loaded[name] = model
        self.extra.add(name)

    def get(self, name: str | None = None):
        name = name or self.default
        if name in self.extra:
            return self.loaded[name]
        if name not in MODELS:
            raise ModelError(f"unknown model {name!r}; choose one of: {', '.join(self.choices())}")
        model = self.loaded.get(name)
        return model if model is not None else self._load(name)

    @on_model_thread
    def _load(self, name: str):
        """On the model thread: one load at a time, and none while a request computes."""
        if name not in self.loaded:
            if not MODELS[name].offline:
                for other in [n for n in self.loaded if not MODELS[n].offline]:
                    del self.loaded[other]
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            self.loaded[name] = load_model(name)
        return self.loaded[name]

    def choices(self) -> list[str]:
        """The picker's models: the offline ones, the hub ones, and the default if it is neither."""
        names = [*OFFLINE_CHOICES, *HUB_CHOICES]
        return names if self.default in names else [self.default, *names]

    def status(self, name: str) -> str:
        if name in self.loaded or is_available(name):
            return "available" if MODELS[name].offline or name in self.loaded else "available (downloaded)"
        return "needs download" if not MODELS[name].offline else "weights missing"

    def labelled(self) -> list[tuple[str, str]]:
        return [(f"{n} — {self.status(n)}", n) for n in self.choices()]


# ---------------------------------------------------------------- the engine --------------
class Engine:
    """One thread (demo/model_thread.py) serves one request at a time on the model (editors swap its
    attention processors, and NFE counts must not interleave)."""

    def __init__(self, model_name: str = "auto", threads: int | None = None):
        self.worker = ModelThread(threads)  # every model computation runs on this one thread (model_thread.py says why)
        self.models = Models(model_name, self.worker)
        self.cache = InversionCache()
        self.stops: dict[str, threading.Event] = {}  # session -> set by its Cancel click
        self.running: dict[str, str] = {}  # session -> the kind of its request in progress
        self.images: dict[str, object] = {}  # session -> the input image its running request works on (OF_THE_IMAGE kinds)
        self.seconds: dict[str, object] = {}  # session -> the second image its running interpolation works on
        self.replaced_sessions: set[str] = set()  # sessions whose running request stops because a new image came
        self.deadlines: dict[str, tuple[float, float]] = {}  # session -> (monotonic deadline, its budget in seconds)
        self.nfe_seconds: dict[str, float] = {}  # model -> seconds per UNet call, as measured (for the up-front estimate)
        self.abandoned: Callable[[], bool] = lambda: False  # the app sets it: whether the client cancelled or left
        self.superseded: Callable[[], bool] = lambda: False  # the app sets it: whether a later request of the client waits
        self.timings: dict[tuple[str, str], float] = {}  # (model, inverter) -> seconds of its last inversion: the page's cost hint
        self.codec_bounds: dict[tuple[str, str], float] = {}  # (model, image digest) -> the codec bound: a property of the image

    # ---- cancelling -----------------------------------------------------------------
    def adopt(self, session: str, source: str = "examples") -> None:
        """Give `session` the inversions made for `source` (the example shown when the page loads), so
        the visitor's first re-edit of it needs no inversion."""
        for key, entry in self.cache.entries(source):
            self.cache.put(session, key, entry)

    def cancel(self, session: str) -> str | None:
        """Stop `session`'s running request at its next UNet call; returns its kind (None: none runs)."""
        stop = self.stops.get(session)  # made when its request starts, dropped when it ends
        if stop is not None:
            stop.set()
        return self.running.get(session)

    def replaced(self, session: str, image, second: bool = False) -> bool:
        """A new input image (None: none) is on `session`'s page: its running request stops, silently, if it works on
        another (`Replaced`); one working on this very image (an Edit clicked during its upload) goes on. `second`:
        the Interpolate tab's second image, which only an interpolation works on. Returns whether one was stopped."""
        held = self.seconds if second else self.images
        if session not in held or same_image(held[session], image):
            return False
        self.replaced_sessions.add(session)
        self.cancel(session)
        return True

    @staticmethod
    def budget(kind: str) -> float:
        return REQUEST_SECONDS[kind] * float(os.environ.get("APP_TIME_SCALE", "1"))

    def _within_budget(self, session: str, model, req: InversionRequest, steps: int) -> None:
        """Refuse, before any work, an inversion whose most UNet calls at this model's measured speed
        cannot fit in what is left of the request's time."""
        per_call = self.nfe_seconds.get(model.name)
        deadline = self.deadlines.get(session)
        if per_call is None or deadline is None:
            return
        calls = max_nfe(model, req.inverter, steps, **req.params)
        left = deadline[0] - time.monotonic()
        if calls * per_call > left:
            raise TooLong(f"{req.inverter} with these settings makes up to {calls} network calls, about {calls * per_call:.0f} s on this server; "
                          f"a request may take {deadline[1]:.0f} s here. Use fewer steps or iterations.")

    @contextlib.contextmanager
    def working(self, session: str, model, x: torch.Tensor):
        """Model work for `session` (on the model thread): the out-of-memory message, and a meter whose check stops
        the work at the next UNet call once the session cancels (yields the meter)."""
        def check() -> None:
            stop = self.stops.get(session)
            if (stop is not None and stop.is_set()) or self.abandoned():
                raise Replaced() if session in self.replaced_sessions else Cancelled()
            deadline = self.deadlines.get(session)
            if deadline is not None and time.monotonic() > deadline[0]:
                raise TooLong(f"this request passed the {deadline[1]:.0f} s one request may take on this server and was stopped; "
                              "use fewer steps, iterations, frames or samples")

        check()  # cancelled while it waited for the model thread
        with oom_guard(x), as_cascade(model).measure() as meter:
            meter.check = check
            yield meter

    @property
    def notice(self) -> str:
        return self.models.notice

    @property
    def model(self):
        return self.models.get()

    def model_for(self, name: str | None):
        """A model a request names (None: the app's): one the picker offers; test-only models (tiny-*,
        oracle) only when the server was started on one."""
        if name and name in MODELS and name not in self.models.choices():
            raise ModelError(f"this server does not offer {name!r}; choose one of: {', '.join(self.models.choices())}")
        return self.models.get(name)

    @staticmethod
    def base(model):
        return base_stage(model)

    def inverters(self, model_name: str | None = None) -> list[str]:
        model = self.model_for(model_name)
        return [n for n, inv in INVERTERS.items() if as_cascade(model).multistage or not inv.needs_cascade]

    # ---- inversion ------------------------------------------------------------------
    def _intake(self, model, image) -> tuple[torch.Tensor, tuple[str, ...], tuple[int, int]]:
        """(the image as the model takes it, what was done to it, the upload's (width, height))."""
        if image is None:
            raise ImageError("upload an image first (or click one of the examples)")
        if isinstance(image, (str, os.PathLike)) and "://" not in str(image) and not os.path.isfile(image):
            # an upload removed while its request waited in the queue (uploads are kept a limited time)
            raise ImageError("the uploaded image is no longer on this server (it is kept for a limited time); upload it again")
        notes: list[str] = []
        img = load_image(image, name="the uploaded file", notes=notes)
        x = model.prepare_image(img)
        w, h = img.size
        side_w, side_h = x.shape[-1], x.shape[-2]
        if (w, h) != (side_w, side_h):
            how = "centre-cropped to a square and resized" if self.base(model).fixed_size and w != h else "resized"
            notes.append(f"your {w}x{h} image was {how} to {side_w}x{side_h}, the size {model.name} takes")
        return x, tuple(notes), (w, h)

    def _resolved(self, req: InversionRequest, model) -> tuple[int, int, float | None]:
        """(steps, seed, guidance) checked; the inverter and its parameters checked too."""
        base = self.base(model)
        top = min(MAX_STEPS, base.max_steps)
        why = f" ({model.name} samples from a {base.max_steps}-step skeleton)" if base.max_steps < MAX_STEPS else ""
        steps = base.default_steps if req.steps is None else check_whole(req.steps, "steps", 1, top, why)
        seed = check_whole(req.seed, "seed", 0, SEED_LIMIT - 1)
        guidance = check_guidance(req.guidance, "the inversion guidance")
        # The default's value is the default: None, so each stage of a cascade takes its own (a super-resolution
        # stage's is 1, no guidance pass; the page always sends the base's), and one cache key for both
        guidance = None if guidance == base.default_guidance else guidance
        if req.inverter not in INVERTERS:
            raise ParameterError(f"unknown inverter {req.inverter!r}; choose one of: {', '.join(INVERTERS)}")
        if not isinstance(req.params, dict):
            raise ParameterError("inverter parameters must be a JSON object")
        INVERTERS[req.inverter].resolve_params(base.defaults, **req.params)
        if INVERTERS[req.inverter].needs_cascade and not as_cascade(model).multistage:
            raise IncompatibleChoice(f"{req.inverter} inverts the super-resolution stages of pixel cascades; {model.name} has a single stage")
        base.check_prompt(req.prompt)
        return steps, seed, guidance

    @on_model_thread
    def invert(self, session: str, req: InversionRequest, progress=None) -> tuple[Entry, bool]:
        """The cached inversion for these inputs, or a new one (then cached)."""
        model = self.model_for(req.model)
        req = self.with_defaults(req, model)
        steps, seed, guidance = self._resolved(req, model)
        x, notes, size = self._intake(model, req.image)
        digest = hashlib.sha1(x.detach().cpu().numpy().tobytes()).hexdigest()[:16]
        key = json.dumps([model.name, digest, req.prompt, req.inverter, steps, seed, guidance, req.params], sort_keys=True, default=str)
        hit = self.cache.get(session, key)
        if hit is not None:  # the same pixels may come from another upload: its notes and size are this one's
            return (hit if hit.size == size else replace(hit, notes=notes, size=size)), True
        self._within_budget(session, model, req, steps)
        with self.working(session, model, x) as meter:
            inv = invert(model, x, req.prompt, req.inverter, steps, guidance, "", seed, progress=progress, **req.params)
        self.timings[(model.name, req.inverter)] = inv.seconds
        if inv.nfe:
            per = inv.seconds / inv.nfe
            self.nfe_seconds[model.name] = per if model.name not in self.nfe_seconds else 0.7 * self.nfe_seconds[model.name] + 0.3 * per
        entry = Entry(inv, x, notes, tuple(meter.warnings), size)
        self.cache.put(session, key, entry)
        return entry, False

    @on_model_thread
    def measured(self, session: str, model, entry: Entry) -> Entry:
        """The entry with its reconstruction and metrics (inversion.pipeline.evaluate), computed once
        and kept with the cached entry: after the first edit is on the page, not before it."""
        if entry.report is None:
            with self.working(session, model, entry.x):
                report, recon = evaluate(model, entry.x, entry.inversion, per_stage=False, codec=self._codec_bound(model, entry.x))
            entry.reconstruction, entry.report = recon, report
        return entry

    def _codec_bound(self, model, x: torch.Tensor):
        """A function giving the codec bound of `x`, remembered per model and image (one VAE round trip each)."""
        from inversion.pipeline import codec_bound

        key = (model.name, hashlib.sha1(x.detach().cpu().numpy().tobytes()).hexdigest())
        if key not in self.codec_bounds:
            self.codec_bounds[key] = codec_bound(model, x)
            while len(self.codec_bounds) > CODEC_BOUNDS_KEPT:  # the oldest first: bounded, as everything kept per request
                self.codec_bounds.pop(next(iter(self.codec_bounds)))
        return self.codec_bounds[key]

    @staticmethod
    def _region(model, region, size: tuple[int, int]) -> torch.Tensor | None:
        """A painted mask of the uploaded image, cropped and resized as the image was; None if none."""
        if region is None:
            return None
        if not isinstance(region, np.ndarray):
            region = np.asarray(load_image(region, name="the edit region"))[..., 0]
        if region.ndim == 3:
            region = region[..., -1] if region.shape[-1] == 4 else region.max(-1)
        if not region.any():
            return None  # nothing painted: the editor's own mask
        if region.shape[::-1] != size:
            raise ImageError(f"the painted region is {region.shape[1]}x{region.shape[0]} but the image is {size[0]}x{size[1]}; paint on the uploaded image")
        mask = Image.fromarray(((region > 0) * 255).astype(np.uint8)).convert("RGB")
        return model.prepare_image(mask)[0, 0] > 0

    @staticmethod
    def _mask_on_upload(model, mask: torch.Tensor, x: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        """The edit's mask on the uploaded image (its pixels, its crop), for the user to correct by painting."""
        m = F.interpolate(mask.float().cpu(), size=x.shape[-2:], mode="nearest")[0, 0].numpy() > 0.5
        return mask_on_upload(m, size, stages_of(model)[-1].fixed_size)

    @staticmethod
    def with_defaults(req: InversionRequest, model) -> InversionRequest:
        return req if req.inverter else replace(req, inverter=base_stage(model).default_inverter)

    @request("invert")
    @on_model_thread
    def inversion_record(self, session: str, req: InversionRequest, progress=None) -> tuple[Entry, dict]:
        model = self.model_for(req.model)
        req = self.with_defaults(req, model)
        entry, cached = self.invert(session, req, progress.phase(f"inverting ({req.inverter})", 0.0, 1.0, stages(model)) if progress else None)
        entry = self.measured(session, model, entry)
        record = report.inversion_record(model, entry, cached)
        record["warnings"] = report.warnings_for(model, entry, [req.prompt])
        return entry, record

    # ---- editing --------------------------------------------------------------------
    @request("edit")
    @on_model_thread
    def edit(self, session: str, req: EditRequest, progress=None) -> dict:
        """Invert (or reuse) and edit: the edit and what it needs to be shown, no more. The reconstruction,
        its metrics and the record follow with `edit_record` (after the edit is on the page)."""
        model = self.model_for(req.source.model)
        if req.source.image is None:
            raise ImageError("upload an image first (or click one of the examples)")
        req = replace(req, source=self.with_defaults(req.source, model))
        if req.editor not in EDITORS:
            raise ParameterError(f"unknown editor {req.editor!r}; choose one of: {', '.join(EDITORS)}")
        if not isinstance(req.params, dict):
            raise ParameterError("editor parameters must be a JSON object")
        guidance = check_guidance(req.guidance, "the edit guidance")
        params = validate_edit(model, req.source.prompt, req.target_prompt, req.editor, **req.params)
        steps, _, _ = self._resolved(req.source, model)
        min_steps = 2 if EDITORS[req.editor].needs_attention else 1
        if steps < min_steps:
            raise IncompatibleChoice(f"{EDITORS[req.editor].title} needs at least {min_steps} steps (one free for the new layout)")
        entry, cached = self.invert(session, req.source, progress.phase(f"inverting ({req.source.inverter})", 0.0, 0.6, stages(model)) if progress else None)
        region = self._region(model, req.region, entry.size)
        with self.working(session, model, entry.x):
            out = edit(model, entry.inversion, req.target_prompt, req.editor, guidance, progress=progress.phase("editing", 0.6, 1.0) if progress else None, region=region, preview=req.preview, **params)
        return {"x": entry.x, "edit": out.image, "mask": out.mask, "inversion": entry.inversion, "region": region,
                "entry": entry, "cached": cached, "out": out, "req": req, "model": model, "session": session}

    @on_model_thread
    def edit_record(self, r: dict) -> dict:
        """`edit`'s result completed: the reconstruction and the metrics record (measured once per
        inversion), the warnings, the edit's region on the upload."""
        model, entry, out, req = r["model"], r["entry"], r["out"], r["req"]
        entry = self.measured(r["session"], model, entry)
        metrics = report.edit_record(model, entry, r["cached"], out)
        metrics["warnings"] = report.warnings_for(model, entry, [req.source.prompt, req.target_prompt], req, out) + out.warnings
        upload_mask = None if out.mask is None else self._mask_on_upload(model, out.mask, entry.x, entry.size)
        return {**r, "reconstruction": entry.reconstruction, "metrics": metrics, "upload_mask": upload_mask}

    def _like(self, model, image, x_like: torch.Tensor, name: str):
        """`image` as another input of the same shape as `x_like` needs it: a single model keeps each
        image's aspect ratio, so one of another shape is centre-cropped to it (and says so)."""
        x, _, _ = self._intake(model, image)
        if x.shape == x_like.shape:
            return image, []
        fitted, note = centre_cropped_to(image, (x_like.shape[-1], x_like.shape[-2]), name)
        return fitted, [note]

    def _whole(self, req: InversionRequest) -> InversionRequest:
        """The request inverting the whole schedule unless it says otherwise: interpolation and concept
        seeds mix the inverted noise, which an inversion of strength < 1 (RNRI's default on SDXL-Turbo,
        the official demo's 0.6) does not reach. Requests that invert it all anyway stay as they are
        (their cached inversions serve)."""
        base = self.base(self.model_for(req.model))
        inverter = INVERTERS.get(req.inverter or base.default_inverter)
        if "strength" in req.params or inverter is None or inverter.resolve_params(base.defaults)["strength"] >= 1:
            return req
        return replace(req, params={**req.params, "strength": 1.0})

    @request("interpolate")
    @on_model_thread
    def interpolate(self, session: str, first: InversionRequest, image2, prompt2: str, frames, progress=None) -> dict:
        """Frames between two uploads, each inverted with the same choices (cached; the whole schedule);
        the second prompt defaults to the first."""
        first = self._whole(first)
        model = self.model_for(first.model)
        frames = check_whole(frames, "frames", 2, MAX_FRAMES)
        if image2 is None:
            raise ImageError("upload a second image to interpolate towards")
        a, _ = self.invert(session, first, progress.phase("inverting the first image", 0.0, 0.25, stages(model)) if progress else None)
        image2, notes = self._like(model, image2, a.x, "the second image")
        second = replace(first, image=image2, prompt=(prompt2 or "").strip() or first.prompt)
        b, _ = self.invert(session, second, progress.phase("inverting the second image", 0.25, 0.5, stages(model)) if progress else None)
        with self.working(session, model, a.x):
            out = interpolate(model, a.inversion, b.inversion, frames=frames, progress=progress.phase("sampling the frames", 0.5, 1.0) if progress else None)
        notes = [f"Input: {n}." for n in a.notes] + notes + report.vocabulary_warning(model, [first.prompt, second.prompt])
        return {"frames": out.frames, "interpolation": out, "notes": notes,
                "metrics": {"model": model.name, "inverter": a.inversion.inverter, "frames": frames, "nfe": out.nfe, "seconds": round(out.seconds, 3),
                            "inversions": [a.inversion.inverter, b.inversion.inverter], "warnings": out.warnings}}

    @request("seeds")
    @on_model_thread
    def more_like_these(self, session: str, base: InversionRequest, references: list, prompt: str, samples, strength, progress=None) -> dict:
        """New samples of `prompt` started from the inverted noise of 1-4 reference images (each
        inverted with the left column's choices and this prompt; cached), one reference per sample
        in turn, mixed with fresh noise at `strength` (editing.seeds); the references invert the whole schedule."""
        base = self._whole(base)
        model = self.model_for(base.model)
        references = [r for r in references or [] if r is not None]
        if not references:
            raise ImageError(f"upload 1 to {MAX_REFERENCES} images of what you want more of")
        if len(references) > MAX_REFERENCES:
            raise ParameterError(f"at most {MAX_REFERENCES} reference images, got {len(references)}")
        prompt = (prompt or "").strip() or base.prompt
        if not prompt:
            raise PromptError("describe what the references show (the prompt of the new samples)")
        samples = check_whole(samples, "samples", 1, MAX_SAMPLES)
        invs, notes, first = [], [], None
        for i, ref in enumerate(references):
            if first is not None:
                ref, fitted = self._like(model, ref, first.x, f"reference {i + 1}")
                notes += fitted
            phase = progress.phase(f"inverting reference {i + 1} of {len(references)}", 0.6 * i / len(references), 0.6 * (i + 1) / len(references), stages(model)) if progress else None
            entry, _ = self.invert(session, replace(base, image=ref, prompt=prompt), phase)
            first = first or entry
            invs.append(entry.inversion)
        with self.working(session, model, first.x):
            out = sample_seeds(model, concept_seeds(model, invs), prompt, samples=samples, strength=strength, seed=check_whole(base.seed, "seed", 0, SEED_LIMIT - 1),
                               progress=progress.phase("sampling", 0.6, 1.0) if progress else None)
        notes = [f"Input: {n}." for n in first.notes] + notes + report.vocabulary_warning(model, [prompt]) + out.warnings
        return {"images": out.images, "notes": notes,
                "metrics": {"model": model.name, "inverter": invs[0].inverter, "references": len(invs), "samples": samples, "strength": out.strength,
                            "nfe": out.nfe, "seconds": round(out.seconds, 3)}}

    @request("compare")
    @on_model_thread
    def compare(self, session: str, req: InversionRequest, progress=None, target_prompt: str = "", editors: tuple[str, ...] = ()) -> list[dict]:
        """Every inverter on one image (cached per inverter), in registry order: what each recovers
        (its reconstruction, and on an LCM the one without the last recorded residual, which is where
        they differ), whether its noise is noise, and, given a target prompt, the edit each editor of
        `editors` makes from it."""
        model = self.model_for(req.model)
        names = self.inverters(req.model)
        if editors:
            for ed in editors:
                validate_edit(model, req.prompt, target_prompt, ed)
        rows = []
        for i, name in enumerate(names):
            span = (i / len(names), (i + 1) / len(names))
            sub = progress.phase(f"inverter {i + 1} of {len(names)}: {name}", *span, stages(model)) if progress else None
            entry, cached = self.invert(session, InversionRequest(**{**req.__dict__, "inverter": name, "params": {}}), sub)
            entry = self.measured(session, model, entry)
            with self.working(session, model, entry.x):
                uncorrected = reconstruct_uncorrected(model, entry.inversion)
                edits = {ed: edit(model, entry.inversion, target_prompt, ed) for ed in editors}
            base = stage_inversions(entry.inversion)[0]
            noise = noise_fields(base, self.base(model).alphas_cumprod)
            rows.append(report.compare_row(entry, cached, uncorrected, noise, edits))
        return rows

def stages(model) -> int:
    return len(stages_of(model))


def oom_message(x: torch.Tensor) -> str:
    h, w = x.shape[-2:]
    side = max(64, int(max(h, w) * OOM_SHRINK) // 64 * 64)
    return (
        f"The GPU ran out of memory at {w}x{h} pixels. Try a long side of {side} px or less, fewer steps, "
        "or fewer inverter iterations; nothing else was changed and the app keeps serving."
    )


@contextlib.contextmanager
def oom_guard(x: torch.Tensor):
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfMemory(oom_message(x)) from None
