"""`inversion/images.py`: every user-facing message as a whole, the image's label in it, and the exact
values at the edges of each range (array scales, wide greys, clipping, resampling, masks placed back).

Expectations are written out here, not computed by the module. Fast: header-only PNGs stand in for
huge images (the size check comes before decoding).
"""

import io
import re
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import inversion.images as images
from inversion.images import ImageError, centre_square, load_image, mask_on_upload, to_model_tensor, to_pil

UNREADABLE = "is not an image this program can read (PNG, JPEG, WebP, BMP, TIFF, GIF)"


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def _png_header(w: int, h: int) -> bytes:
    """A PNG whose header says w x h (its pixel data is an 8x8 image's, so decoding would fail)."""
    b = _png(Image.new("L", (8, 8)))
    chunk = b"IHDR" + struct.pack(">II", w, h) + b[24:29]
    return b[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + b[33:]


def _raises(exact: str, source, **kw):
    with pytest.raises(ImageError, match="^" + re.escape(exact) + "$"):
        load_image(source, **kw)


def _truncated() -> bytes:
    return _png(Image.new("RGB", (64, 64), (1, 2, 3)))[:60]


# ---- messages, whole -------------------------------------------------------------------------


def test_the_size_limit_message_states_the_size_the_megapixels_and_the_limit():
    _raises("the uploaded data is 10000x5750 (58 MP); the limit is 50 MP", _png_header(10000, 5750))
    _raises("photo.png is 5750x10000 (58 MP); the limit is 50 MP", _png_header(5750, 10000), name="photo.png")


def test_the_stated_limit_is_the_module_limit_in_megapixels(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 3_500_000)
    _raises("big.png is 2500x2000 (5 MP); the limit is 4 MP", _png(Image.new("L", (2500, 2000))), name="big.png")


def test_exactly_the_limit_is_allowed():
    # 10000 x 5000 = 50 MP is not over the limit: it gets as far as decoding (and this one is truncated)
    _raises("the uploaded data looks like an image but is damaged or truncated (OSError)", _png_header(10000, 5000))
    # a long thin image is judged by its area, not its aspect
    _raises("the uploaded data is 50001x1000 (50 MP); the limit is 50 MP", _png_header(50001, 1000))


def test_a_decompression_bomb_is_refused_as_too_large_not_as_unreadable():
    """Above 89.5 MP PIL refuses the file inside Image.open, before our own size check: the user is
    told it is too large (it said 'not an image this program can read')."""
    _raises("the uploaded data is too large (100 MP); the limit is 50 MP", _png_header(10000, 10000))  # PIL's warning
    _raises("the uploaded data is too large (400 MP); the limit is 50 MP", _png_header(20000, 20000))  # PIL's error


def test_unreadable_and_damaged_data_messages_in_full():
    _raises("the uploaded data " + UNREADABLE, b"garbage")
    _raises("the uploaded data " + UNREADABLE, b"")
    _raises("the uploaded data looks like an image but is damaged or truncated (OSError)", _truncated())
    _raises("upload 3 looks like an image but is damaged or truncated (OSError)", _truncated(), name="upload 3")


def test_messages_about_files_name_the_path_or_the_given_name(tmp_path):
    bad, damaged = tmp_path / "bad.png", tmp_path / "damaged.png"
    bad.write_bytes(b"garbage")
    damaged.write_bytes(_truncated())
    _raises(f"{bad} " + UNREADABLE, bad)
    _raises(f"{bad} " + UNREADABLE, str(bad))
    _raises("your image " + UNREADABLE, bad, name="your image")
    _raises(f"{damaged} looks like an image but is damaged or truncated (OSError)", damaged)
    _raises("your image looks like an image but is damaged or truncated (OSError)", damaged, name="your image")
    _raises(f"no image file at {tmp_path / 'missing.png'}", tmp_path / "missing.png")
    _raises("no image file at your image", tmp_path / "missing.png", name="your image")
    _raises("no image file at your image", tmp_path, name="your image")  # a folder is not a file


def test_a_good_file_loads_from_a_path_and_a_string(tmp_path):
    p = tmp_path / "ok.png"
    p.write_bytes(_png(Image.new("RGB", (12, 9), (10, 20, 30))))
    for source in (p, str(p)):
        out = load_image(source)
        assert out.mode == "RGB" and out.size == (12, 9) and out.getpixel((11, 8)) == (10, 20, 30)
    assert load_image(p, name="ok").getpixel((0, 0)) == (10, 20, 30)


def test_other_messages_in_full():
    _raises("cannot read an image from a int", 3)
    _raises("cannot read an image from a list", [[0, 1]])
    _raises("an image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape (4, 4, 2)", np.zeros((4, 4, 2)))
    _raises("an image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape (4,)", np.zeros(4))
    _raises("the image is 5x20; both sides must be at least 8 pixels", Image.new("RGB", (5, 20)))
    _raises("the image is 20x7; both sides must be at least 8 pixels", np.zeros((7, 20, 3), np.uint8))
    _raises("the image is 0x0; both sides must be at least 8 pixels", np.zeros((0, 0, 3), np.float32))
    _raises("the image is 0x0; both sides must be at least 8 pixels", Image.new("I;16", (0, 0)))


# ---- array ranges, exactly -------------------------------------------------------------------


def _grey(values, dtype) -> list[int]:
    a = np.zeros((8, 8), dtype)
    a[0, : len(values)] = values
    return [load_image(a).getpixel((i, 0))[0] for i in range(len(values))]


def test_float_arrays_up_to_one_are_unit_range_and_clipped_below_zero():
    assert _grey([0.0, 0.5, 1.0], np.float64) == [0, 128, 255]  # a maximum of exactly 1 is still [0, 1]
    assert _grey([-0.5, 0.25], np.float64) == [0, 64]  # negatives clip to black
    # float32 data is scaled in float64: 0.2529412 (float32) * 255 is just above 64.5
    assert _grey([np.float32(0.2529412)], np.float32) == [65]


def test_arrays_up_to_255_are_8_bit_and_above_are_16_bit():
    assert _grey([0.0, 2.0, 100.0], np.float64) == [0, 2, 100]  # max 100 > 1: 8-bit values
    assert _grey([0.0, 2.0], np.float64) == [0, 2]  # max 2 > 1 (not [0, 1] clipped)
    assert _grey([0.0, 255.0, 128.0], np.float64) == [0, 255, 128]  # max exactly 255 is still 8-bit
    assert _grey([256.0, 0.0], np.float64) == [1, 0]  # max 256: 16-bit; 256 / 65535 * 255 = 0.996
    assert _grey([1000, 0], np.int32) == [4, 0]  # 1000 / 65535 * 255 = 3.89
    assert _grey([33025, 65535], np.int32) == [129, 255]  # 33025 / 65535 * 255 = 128.504 (over 65536: 128.50)
    assert _grey([70000, 65700, 0], np.int64) == [255, 255, 0]  # beyond 16 bits: clipped to white


# ---- wide greys (PIL modes I;16 and I) -------------------------------------------------------


def test_wide_grey_modes_scale_and_clip_exactly():
    i16 = Image.fromarray(np.array([[33025, 65535, 0, 0, 0, 0, 0, 0]] * 8, np.uint16))
    assert [load_image(i16).getpixel((i, 0))[0] for i in range(3)] == [129, 255, 0]
    small = np.zeros((8, 8), np.int32)
    small[0, :3] = [200, 128, 0]  # max <= 255: taken as 8-bit values as they are
    assert [load_image(Image.fromarray(small, "I")).getpixel((i, 0))[0] for i in range(3)] == [200, 128, 0]
    wide = np.zeros((8, 8), np.int32)
    wide[0, :3] = [-100, 70000, 65535]  # signed 32-bit: clipped to the 16-bit range's ends
    assert [load_image(Image.fromarray(wide, "I")).getpixel((i, 0))[0] for i in range(3)] == [0, 255, 255]
    neg = np.zeros((8, 8), np.int32)
    neg[0, :2] = [-100, 100]
    assert [load_image(Image.fromarray(neg, "I")).getpixel((i, 0))[0] for i in range(2)] == [0, 100]


def test_float_mode_images_give_8_bit_values():
    out = load_image(Image.fromarray(np.full((8, 8), 0.5, np.float32), "F"))
    assert out.getpixel((0, 0)) == (128, 128, 128)


# ---- transparency ----------------------------------------------------------------------------


def test_palette_with_alpha_goes_on_white():
    pa = Image.new("PA", (8, 8))
    pa.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    pa.putpixel((0, 0), (1, 0))  # colour 1, transparent
    pa.putpixel((1, 0), (1, 255))  # colour 1, opaque
    notes = []
    out = load_image(pa, notes=notes)
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 0)) == (200, 10, 10)
    assert notes == ["transparent areas were filled with white"]


def test_palette_with_a_transparent_index_goes_on_white():
    p = Image.new("P", (8, 8), 0)
    p.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 1
    notes = []
    out = load_image(p, notes=notes)
    assert out.getpixel((0, 0)) == (10, 20, 30) and out.getpixel((1, 0)) == (255, 255, 255)
    assert notes == ["transparent areas were filled with white"]


# ---- resizing, crops and masks ---------------------------------------------------------------


def _ramp(w, h) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([x * 7 % 256, y * 11 % 256, (x * y) % 256], -1).astype(np.uint8))


def _tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, np.float32).copy()).permute(2, 0, 1)[None] / 127.5 - 1


def test_downscaling_uses_lanczos_and_upscaling_bicubic():
    big = _ramp(90, 60)
    out = to_model_tensor(big, 48, 16, False, 48)  # 90x60 -> 48x32
    assert out.dtype == torch.float32 and out.shape == (1, 3, 32, 48)
    assert torch.equal(out, _tensor(big.resize((48, 32), Image.Resampling.LANCZOS)))
    small = _ramp(30, 20)
    out = to_model_tensor(small, 48, 16, False, 48)  # 30x20 -> 48x32
    assert torch.equal(out, _tensor(small.resize((48, 32), Image.Resampling.BICUBIC)))
    same_long = _ramp(64, 50)
    out = to_model_tensor(same_long, 64, 16, False, 64)  # 64x50 -> 64x48: the long side stays, bicubic
    assert torch.equal(out, _tensor(same_long.resize((64, 48), Image.Resampling.BICUBIC)))


def test_centre_square_boxes():
    assert centre_square((10, 20)) == (0, 5, 10, 15)
    assert centre_square((20, 10)) == (5, 0, 15, 10)
    assert centre_square((13, 40)) == (0, 13, 13, 26)


def test_a_mask_is_placed_back_with_nearest_neighbours_and_stays_boolean():
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = mask[3, 3] = mask[1, 2] = True
    out = mask_on_upload(mask, (12, 8), square=False)  # 3x wide, 2x high: each cell a 3x2 block
    assert out.dtype == bool and out.shape == (8, 12)
    assert np.array_equal(out, np.repeat(np.repeat(mask, 2, axis=0), 3, axis=1))
    out = mask_on_upload(mask, (10, 6), square=False)  # an uneven scale: PIL's nearest neighbour, no blur
    ref = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((10, 6), Image.Resampling.NEAREST)) == 255
    assert out.dtype == bool and np.array_equal(out, ref)
    out = mask_on_upload(mask, (8, 16), square=True)  # the crop is rows 4..11, at 2x
    expected = np.zeros((16, 8), bool)
    expected[4:12] = np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1)
    assert out.dtype == bool and np.array_equal(out, expected)


def test_to_pil_clips_out_of_range_values():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 1.5]).view(1, 1, 5).expand(3, 1, 5)
    assert [to_pil(x).getpixel((i, 0))[0] for i in range(5)] == [0, 0, 128, 255, 255]
    assert to_pil(x[None]).getpixel((4, 0)) == (255, 255, 255)
