"""The thin gradio layer the UI and the API share: the upload component that hands
over the file untouched, sessions, progress, and errors turned into messages."""

from __future__ import annotations

import functools
import logging
import tempfile
import traceback
import uuid
from pathlib import Path

import gradio as gr
import torch
from PIL import Image

from inversion.errors import UserError
from inversion.images import to_pil

from .progress import Progress

try:  # Hugging Face ZeroGPU: model work runs on a borrowed GPU when the package is present
    import spaces

    gpu = spaces.GPU
except ImportError:

    def gpu(fn=None, **_kw):
        return fn if fn is not None else (lambda f: f)


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
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


def session_of(request: gr.Request | None) -> str:
    """The visitor's session: each browser tab and each API client has its own."""
    return getattr(request, "session_hash", None) or "local"


def progress_of(p: gr.Progress | None) -> Progress | None:
    return None if p is None else Progress(lambda fraction, text: p(fraction, desc=text))


def user_errors(fn):
    """A user error becomes its message (a toast in the page, the message over the API); any
    other exception is logged with its traceback and shown as 'internal error' with an id."""

    @functools.wraps(fn)  # keeps the signature: gradio injects gr.Request / gr.Progress from it
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except gr.Error:
            raise
        except Exception:
            ref = uuid.uuid4().hex[:8]
            log.error("internal error %s in %s:\n%s", ref, fn.__name__, traceback.format_exc())
            raise gr.Error(f"Internal error (reference {ref}); the server log has the details. Your inputs are kept.", print_exception=False) from None

    return wrapped


def show(x: torch.Tensor, at_least: int = DISPLAY_SIDE) -> Image.Image:
    """A display copy: small images enlarged by an integer factor, nearest neighbour (pixel-exact)."""
    img = to_pil(x)
    k = -(-at_least // max(img.size))
    return img if k <= 1 else img.resize((img.size[0] * k, img.size[1] * k), resample=Image.Resampling.NEAREST)


def write_downloads(result: dict) -> tuple[str, str]:
    """The edit as PNG and the inversion as safetensors, in a fresh temporary folder."""
    d = Path(tempfile.mkdtemp(prefix="edit-"))
    png = d / "edit.png"
    to_pil(result["edit"]).save(png)
    inv_path = d / "inversion.safetensors"
    result["inversion"].save(inv_path)
    return str(png), str(inv_path)
