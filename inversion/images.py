"""Reading user images safely and converting between PIL and model tensors.

Everything a user can upload goes through `load_image`: unreadable files,
CMYK, greyscale, palette, alpha, 16-bit and EXIF-rotated images become plain
8-bit RGB or a clear `ImageError`. Sizes are capped before decoding (a stated
pixel cap) and then resized to what the model takes, so memory stays bounded.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

MAX_PIXELS = 50_000_000  # larger uploads are refused before decoding
MIN_SIDE = 8
MAX_DECODE_BYTES = 512 * 2**20  # memory one image may take on its way to 8-bit RGB, refused before decoding
# Bytes held per pixel, at the peak, while an image of each mode is decoded and made 8-bit RGB (the
# decoded frame, the working copies of `_normalise`'s path for that mode, the RGB result): measured at
# 2-4 MP (peak RSS over the baseline; tests/test_images_memory.py checks they stay upper bounds), rounded
# up; unknown modes count as the widest.
WORKING_BYTES = {"1": 7, "L": 7, "P": 17, "RGB": 11, "YCbCr": 11, "LAB": 11, "HSV": 11, "RGBA": 16, "LA": 16, "PA": 17, "CMYK": 14,
                 "I;16": 15, "I;16B": 15, "I;16L": 15, "I;16N": 15, "I": 22, "F": 36}


def load_image(source, name: str | None = None, notes: list[str] | None = None) -> Image.Image:
    """Path, bytes, PIL image or uint8/float array -> 8-bit RGB PIL image, upright.

    `name` is how messages call the image (default: its path; an app passes a name
    that does not reveal server paths). `notes`, when given, collects what was done
    to the image on its way in (first frame of an animation, transparency on white).
    """
    if isinstance(source, Image.Image):
        img = source
    elif isinstance(source, np.ndarray):
        img = _from_array(source)
    elif isinstance(source, (bytes, bytearray)):
        img = _open(io.BytesIO(source), name or "the uploaded data")
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"no image file at {name or path}")
        img = _open(path, name or str(path))
    else:
        raise ImageError(f"cannot read an image from a {type(source).__name__}")
    return _normalise(img, notes if notes is not None else [], owned=img is not source)


def _open(fp, label: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageError(f"{label} is {w}x{h} ({w * h / 1e6:.0f} MP); the limit is {MAX_PIXELS / 1e6:.0f} MP")
            need = w * h * WORKING_BYTES.get(img.mode, max(WORKING_BYTES.values()))
            if need > MAX_DECODE_BYTES:
                raise ImageError(f"{label} is {w}x{h} in mode {img.mode}: reading it takes about {need / 2**20:.0f} MB, more than the "
                                 f"{MAX_DECODE_BYTES / 2**20:.0f} MB one image may use; send a smaller image (or 8-bit RGB)")
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # PIL refuses it before we see its size
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        size = f" ({int(pixels.group(1)) / 1e6:.0f} MP)" if pixels else ""
        raise ImageError(f"{label} is too large{size}; the limit is {MAX_PIXELS / 1e6:.0f} MP") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{label} is not an image this program can read (PNG, JPEG, WebP, BMP, TIFF, GIF)") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{label} looks like an image but is damaged or truncated ({type(e).__name__})") from e
    return img


def _from_array(a: np.ndarray) -> Image.Image:
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ImageError(f"an image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.asarray(a, np.float64)
        if a.max(initial=0) > 1.0:
            a = a / (65535.0 if a.max() > 255 else 255.0)
        a = np.clip(np.round(a * 255), 0, 255).astype(np.uint8)
    return Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)


def _normalise(img: Image.Image, notes: list[str], owned: bool = False) -> Image.Image:
    """`owned`: the image was decoded here, so it may be changed in place (no copy of a large image);
    a caller's PIL image is left as it was."""
    if getattr(img, "n_frames", 1) > 1:
        notes.append(f"the image is animated ({img.n_frames} frames): its first frame was used")
        img.seek(0)
    try:
        if owned:
            ImageOps.exif_transpose(img, in_place=True)
        else:
            img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not lose the image
        pass
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img)  # uint16 (or int32 for "I"): integers, no float copy of a large image
        top = 65535 if a.max(initial=0) > 255 else 255
        if top > 255:
            notes.append("16-bit image: scaled to 8 bits")
        wide = (a if a.dtype == np.uint16 else np.clip(a, 0, top)).astype(np.uint32)
        del a
        if owned:
            img.close()  # its pixels are in `wide` now
        wide *= 255
        wide += top // 2  # rounds to nearest, as np.round(a / top * 255) did
        wide //= top
        small = wide.astype(np.uint8)
        del wide
        img = Image.fromarray(small)
    elif img.mode == "F":  # [0, 1] as it is; a wider range is stretched (to include [0, 1])
        a = np.asarray(img, dtype=np.float64)
        lo, hi = min(0.0, float(a.min())), max(1.0, float(a.max()))
        img = Image.fromarray(np.round((a - lo) / (hi - lo) * 255).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        alpha = img.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:
            notes.append("transparent areas were filled with white")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=alpha)
        img = background
    img = img.convert("RGB")
    if min(img.size) < MIN_SIDE:
        raise ImageError(f"the image is {img.size[0]}x{img.size[1]}; both sides must be at least {MIN_SIDE} pixels")
    return img


def fit_size(width: int, height: int, long_side: int, multiple: int, max_side: int) -> tuple[int, int]:
    """Scale so the long side is `long_side` (capped), then round both sides to `multiple`."""
    long_side = min(long_side, max_side)
    scale = long_side / max(width, height)

    def snap(v: float) -> int:
        return max(multiple, int(round(v * scale / multiple)) * multiple)

    return snap(width), snap(height)


def to_model_tensor(img: Image.Image, long_side: int, multiple: int, square: bool, max_side: int) -> torch.Tensor:
    """RGB PIL image -> (1, 3, H, W) float32 in [-1, 1], resized for the model."""
    img = load_image(img)
    if square:
        img = img.crop(centre_square(img.size))
        w = h = min(long_side, max_side)
    else:
        w, h = fit_size(*img.size, long_side, multiple, max_side)
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.LANCZOS if max(img.size) > max(w, h) else Image.Resampling.BICUBIC)
    a = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()) / 127.5 - 1.0
    return a.permute(2, 0, 1).unsqueeze(0)


def centre_cropped_to(image, size: tuple[int, int], name: str) -> tuple[Image.Image, str]:
    """`image` centre-cropped to the aspect ratio of `size` (W, H) and resized to it, with the note
    that says so: inputs whose noises are mixed (interpolation, seeds) must share one shape, and a
    single model keeps each image's own aspect ratio."""
    w, h = size
    return ImageOps.fit(load_image(image, name=name), (w, h), Image.Resampling.LANCZOS), f"{name} was centre-cropped to the first image's aspect ratio ({w}x{h})"


def centre_square(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box (left, top, right, bottom) a square model crops from an image of `size`."""
    side = min(size)
    left, top = (size[0] - side) // 2, (size[1] - side) // 2
    return left, top, left + side, top + side


def mask_on_upload(mask: np.ndarray, size: tuple[int, int], square: bool) -> np.ndarray:
    """A mask at the model's resolution placed back on the uploaded image of `size` (W, H):
    the inverse of `to_model_tensor`'s crop and resize (outside a square model's crop: False)."""
    box = centre_square(size) if square else (0, 0, *size)
    m = Image.fromarray(mask.astype(np.uint8) * 255).resize((box[2] - box[0], box[3] - box[1]), Image.Resampling.NEAREST)
    out = np.zeros((size[1], size[0]), dtype=bool)
    out[box[1] : box[3], box[0] : box[2]] = np.asarray(m) > 127
    return out


def to_pil(x: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) tensor in [-1, 1] -> PIL RGB."""
    if x.dim() == 4:
        x = x[0]
    # in numpy, not torch: no torch thread team starts in whichever thread shows an image (demo/model_thread.py)
    a = (np.clip(x.detach().float().cpu().numpy(), -1, 1) + 1) * np.float32(127.5)
    return Image.fromarray(np.rint(a).astype(np.uint8).transpose(1, 2, 0))
