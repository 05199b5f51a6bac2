"""The thin gradio layer the UI and the API share: the upload component that hands
over the file untouched, sessions, progress, and errors turned into messages."""

from __future__ import annotations

import collections
import functools
import inspect
import logging
import os
import shutil
import tempfile
import time
import traceback
import uuid
from pathlib import Path

import gradio as gr
import torch
from PIL import Image

from inversion.errors import UserError
from inversion.images import to_pil

from .progress import Progress, throttled
from .report import REEDIT_FILES

try:  # Hugging Face ZeroGPU: model work runs on a borrowed GPU when the package is present
    import spaces
except ImportError:
    spaces = None

# ZeroGPU's duration: its default (never asked for less; APP_ZEROGPU_MIN_SECONDS for a test), the most we ask for
GPU_SECONDS = (int(os.environ.get("APP_ZEROGPU_MIN_SECONDS", "60")), 240)


class GpuBudget:
    """How long to borrow the GPU for each kind of request (ZeroGPU's `duration`): ZeroGPU's
    default, or twice the longest successful run of that kind (of the last 32) plus 10 s where that
    is more, so a compare of six inverters or a slow model is not cut off. Never less than the
    default: a request heavier than the ones before it (another inverter, more steps) would be
    aborted by ZeroGPU, and an aborted run is never timed."""

    def __init__(self):
        self.seconds: dict[str, collections.deque] = {}

    def duration(self, kind: str):
        def seconds(*_args, **_kwargs) -> int:
            low, high = GPU_SECONDS
            seen = self.seconds.get(kind)
            return low if not seen else int(min(high, max(low, 2 * max(seen) + 10)))

        return seconds

    def record(self, kind: str, seconds: float) -> None:
        self.seconds.setdefault(kind, collections.deque(maxlen=32)).append(seconds)


BUDGET = GpuBudget()


def gpu(kind: str):
    """Route a handler's model work through ZeroGPU's `spaces.GPU` (a no-op without the package),
    with a duration that fits `kind` of request; successful runs are timed for the next ones
    (a streaming handler from its start to its last update)."""

    def wrap(fn):
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)  # keeps the signature: gradio injects gr.Request / gr.Progress from it
            def timed(*args, **kwargs):
                start = time.perf_counter()
                yield from fn(*args, **kwargs)
                BUDGET.record(kind, time.perf_counter() - start)

        else:

            @functools.wraps(fn)
            def timed(*args, **kwargs):
                start = time.perf_counter()
                out = fn(*args, **kwargs)
                BUDGET.record(kind, time.perf_counter() - start)
                return out

        return timed if spaces is None else spaces.GPU(duration=BUDGET.duration(kind))(timed)

    return wrap


log = logging.getLogger("demo")
DISPLAY_SIDE = 256  # small model outputs are enlarged to at least this, pixel-exact


class UploadedImage(gr.Image):
    """gr.Image that passes the uploaded file's path untouched: no mode conversion, no
    re-encoding, so 16-bit, palette, transparent, CMYK and EXIF-rotated images reach
    `inversion.images.load_image` as they are (gr.Image's own conversion turned a
    16-bit PNG white and kept the hidden colour under transparent pixels)."""

    is_template = True  # rendered by gr.Image's front end
    # No __init__ of its own: gradio reads a component's props from its __init__ signature.

    def preprocess(self, payload):
        if payload is None:
            return None
        if payload.path is None:
            raise gr.Error("the upload did not arrive; try again")
        return payload.path


class NumberField(gr.Number):
    """gr.Number whose refusal of a value that is no number is one line naming the field (gr.Number's
    own is a paragraph about component indices), for the API's numeric parameters."""

    is_template = True  # rendered by gr.Number's front end
    # No __init__ of its own: gradio reads a component's props from its __init__ signature.

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except Exception:
            shown = repr(payload) if len(repr(payload)) <= 40 else f"{repr(payload)[:40]}…"
            raise gr.Error(f"{self.label} must be a number, got {shown}", print_exception=False) from None


def uploaded_image(**kwargs) -> UploadedImage:
    return UploadedImage(type="filepath", image_mode=None, **kwargs)


def _current_event():
    """The queued gradio event this thread serves and its queue: (None, None) outside one; (None, queue) for one
    gradio has dropped (cancelled, or its client gone)."""
    from gradio.context import LocalContext

    blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
    queue = getattr(blocks, "_queue", None)
    if queue is None or event_id is None:
        return None, None
    return queue.event_ids_to_events.get(event_id), queue


def client_gone() -> bool:
    """Whether the gradio event this thread serves was cancelled or lost its client (gradio then drops
    it from its queue, or marks it dead): the work for it can stop."""
    event, queue = _current_event()
    if queue is None:
        return False  # not serving a queued event (a direct call, a test)
    return event is None or not event.alive


def enqueued_at() -> float | None:
    """When the queued event this thread serves reached the server (gradio's `time.monotonic()` clock; None outside
    one): about when its visitor clicked, which tells whether they did something else after asking for it."""
    event, _ = _current_event()
    return getattr(event, "enqueue_time", None)


def later_request_waiting() -> bool:
    """Whether the visitor whose event this thread serves has a later event of the same action (the same
    button, API endpoint or key) waiting behind it: then this one is dropped and only the latest runs, so
    a client that floods the queue delays another by one job per action at most. Other actions do not
    count: the no-op that typing queues when live mode is off must not drop the Enter that follows it."""
    event, queue = _current_event()
    if event is None:
        return False
    waiting = queue.event_queue_per_concurrency_id.get(event.concurrency_id)
    return waiting is not None and any(e.session_hash == event.session_hash and e.fn is event.fn and e._id != event._id for e in list(waiting.queue))


def session_of(request: gr.Request | None) -> str:
    """The visitor's session: each browser tab and each API client has its own."""
    return getattr(request, "session_hash", None) or "local"


def progress_of(p: gr.Progress | None) -> Progress | None:
    return None if p is None else Progress(throttled(lambda fraction, text: p(fraction, desc=text)))


def user_errors(fn):
    """A user error becomes its message (a toast in the page, the message over the API); any
    other exception is logged with its traceback and shown as 'internal error' with an id.
    Works on plain and streaming (generator) handlers."""

    def raised(e: Exception):
        if isinstance(e, gr.Error):
            return e
        return gr.Error(_message(e, fn.__name__), print_exception=False)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)  # keeps the signature: gradio injects gr.Request / gr.Progress from it
        def streamed(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 -- every failure becomes a message
                raise raised(e) from None

        return streamed

    @functools.wraps(fn)  # keeps the signature: gradio injects gr.Request / gr.Progress from it
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            raise raised(e) from None

    return wrapped


def _message(e: Exception, where: str) -> str:
    """A user error's own message; anything else logged with its traceback, shown with a reference."""
    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, gr.Error):
        return e.message
    ref = uuid.uuid4().hex[:8]
    log.error("internal error %s in %s:\n%s", ref, where, traceback.format_exc())
    return f"Internal error (reference {ref}); the server log has the details. Your inputs are kept."


def error_text(e: Exception, where: str) -> str:
    """A failure as the page says it: its class's mark (a user error's own), then its message."""
    return f"{getattr(e, 'mark', UserError.mark)} {_message(e, where)}"


def shown_errors(target, live: bool = False):
    """For the page's handlers: a failure is said once, in `target` (where the result would have been),
    instead of a toast that stacks with every click (`user_errors` keeps raising for the API). Works on
    plain and streaming (generator) handlers. `live`: a half-typed prompt's failure shows nothing; a `silent` one
    (a request stopped because the visitor put a new image on the page) shows nothing either."""

    def wrap(fn):
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def streamed(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except Exception as e:  # noqa: BLE001 -- every failure becomes a message on the page
                    yield {target: gr.skip() if (live and isinstance(e, UserError)) or getattr(e, "silent", False) else error_text(e, fn.__name__)}

            return streamed

        @functools.wraps(fn)
        def plain(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001
                return {target: gr.skip() if getattr(e, "silent", False) else error_text(e, fn.__name__)}

        return plain

    return wrap


def show(x: torch.Tensor, at_least: int = DISPLAY_SIDE) -> Image.Image:
    """A display copy: small images enlarged by an integer factor, nearest neighbour (pixel-exact)."""
    img = to_pil(x)
    k = -(-at_least // max(img.size))
    return img if k <= 1 else img.resize((img.size[0] * k, img.size[1] * k), resample=Image.Resampling.NEAREST)


OUTPUTS = Path(os.environ.get("APP_OUTPUT_DIR", Path(tempfile.gettempdir()) / "inversion-app"))  # every file the app writes
# Seconds a written file is kept (gradio serves its own copy, made when a handler returns, so ours is needed
# only briefly; gradio's copies and uploads are deleted after the same age, see ui.DELETE_CACHE).
OUTPUT_AGE = float(os.environ.get("APP_FILE_AGE", "3600"))
SWEEP_EVERY = min(60.0, OUTPUT_AGE / 4)
_swept = [0.0]


def sweep(now: float | None = None) -> int:
    """Remove the app's output folders older than OUTPUT_AGE (at most once a minute); returns how many."""
    now = time.time() if now is None else now
    if now - _swept[0] < SWEEP_EVERY:
        return 0
    _swept[0] = now
    removed = 0
    for d in OUTPUTS.glob("*") if OUTPUTS.is_dir() else []:
        try:
            if now - d.stat().st_mtime > OUTPUT_AGE:
                shutil.rmtree(d, ignore_errors=True) if d.is_dir() else d.unlink(missing_ok=True)
                removed += 1
        except FileNotFoundError:
            pass
    return removed


def output_folder() -> Path:
    """A fresh folder for one request's files (old ones swept away as new ones are made)."""
    sweep()
    d = OUTPUTS / uuid.uuid4().hex
    d.mkdir(parents=True)
    return d


def written(path: Path, write) -> str:
    """`write(tmp)` then an atomic rename to `path`: a reader never sees a partly written file."""
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.part{path.suffix}")  # the suffix kept: writers infer the format from it
    write(tmp)
    os.replace(tmp, path)
    return str(path)


# zlib level 1 for every PNG the app writes (display copies and downloads, kept an hour): a 768 px photo takes 33-38 ms
# against 131-155 ms at PIL's default level 6, for files about 10% larger; the edit's copy is on its critical path.
PNG_LEVEL = 1


def png(x: torch.Tensor, name: str = "image.png", at_least: int = DISPLAY_SIDE, folder: Path | None = None) -> str:
    """The display copy of an image as a PNG file, written once and atomically (gradio then serves the file
    itself instead of encoding a PIL image again into a content-addressed path shared by every request)."""
    img = show(x, at_least)
    return written((folder or output_folder()) / name, lambda p: img.save(p, format="PNG", compress_level=PNG_LEVEL))


def png_once(shown: dict, x: torch.Tensor, name: str, folder: Path | None = None, at_least: int = DISPLAY_SIDE) -> str:
    """`png`, once per cached inversion and size (`shown` is its entry's): a re-edit of the same image shows its input
    and reconstruction without encoding them again. Written anew once half the files' age has passed, so the sweep never
    removes a file about to be sent (a folder goes a whole age after its last file). `folder`: the request's own, as
    `output_folder` gives (two sizes of one name never share one)."""
    path, made = shown.get((name, at_least), (None, 0.0))
    if path is None or time.time() - made > OUTPUT_AGE / 2 or not os.path.exists(path):
        path, made = png(x, name, at_least, folder), time.time()
        shown[(name, at_least)] = (path, made)
    return path


def write_downloads(result: dict) -> tuple[str | None, str, str | None]:
    """The edit as PNG (when there is one), the inversion as safetensors and the painted region (when there is one:
    white where it edits, on the edit's input, as `python -m editing edit --region` takes it), in a fresh folder,
    atomically."""
    d = output_folder()
    edit = None if result.get("edit") is None else written(d / "edit.png", lambda p: to_pil(result["edit"]).save(p, format="PNG", compress_level=PNG_LEVEL))
    inv_path = written(d / REEDIT_FILES["inversion"], lambda p: result["inversion"].save(p))
    region = result.get("region")
    mask = None if region is None else Image.fromarray((region.cpu().to(torch.uint8) * 255).numpy())  # 2-D uint8: mode L
    region_path = None if mask is None else written(d / REEDIT_FILES["region"], lambda p: mask.save(p, format="PNG", compress_level=PNG_LEVEL))
    return edit, inv_path, region_path
