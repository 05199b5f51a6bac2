"""Metrics against independent references, image loading robustness, in-code tokenizers."""

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from inversion.images import ImageError, fit_size, load_image, to_pil
from inversion.metrics import latent_psnr, lpips, psnr, ssim
from inversion.models.tokenizers import WORDS, build_clip_tokenizer, build_t5_tokenizer, learn_merges


def _pair():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 3, 40, 48, generator=g) * 2 - 1
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    return a, b


def test_psnr_known_values():
    a = torch.zeros(1, 3, 8, 8)
    b = a + 0.2  # 0.1 on the [0, 1] scale -> MSE 0.01 -> 20 dB
    assert psnr(b, a) == pytest.approx(20.0, abs=1e-4)
    assert psnr(-a - 1, a + 1) == pytest.approx(0.0, abs=1e-9)  # black against white: MSE 1 -> 0 dB
    assert math.isinf(psnr(a, a))
    assert latent_psnr(a + 1, a) == pytest.approx(0.0, abs=1e-9)  # constant reference: peak 1, MSE 1
    ramp = torch.linspace(-1, 1, 64).view(1, 1, 8, 8)  # range 2
    assert latent_psnr(ramp + 0.1, ramp) == pytest.approx(10 * math.log10(4 / 0.01), abs=1e-6)  # 26.02 dB
    assert latent_psnr(ramp + 0.1, 3 * ramp) == pytest.approx(10 * math.log10(36 / float(((ramp + 0.1 - 3 * ramp) ** 2).mean())), abs=1e-6)


def test_metrics_clamp_to_the_image_range_and_take_single_images():
    a, b = _pair()
    assert psnr(b * 3, a) == pytest.approx(psnr((b * 3).clamp(-1, 1), a), abs=1e-9)  # out-of-range pixels are clipped
    assert psnr(b * 3, a) != pytest.approx(psnr(b, a), abs=1e-3)
    assert ssim(b[0], a[0]) == pytest.approx(ssim(b, a), abs=1e-12)  # (3, H, W) as (1, 3, H, W)
    assert math.isinf(latent_psnr(a, a))


@pytest.mark.parametrize("side", [11, 12, 16])
def test_ssim_matches_scikit_image_on_small_and_dark_images(side):
    """Down to the window's own size; dark, flat images are where the constant C1 matters.
    (Below 11 px we shrink the Gaussian window, scikit-image pads a full one: they differ.)"""
    g = torch.Generator().manual_seed(side)
    a = -1 + 0.05 * torch.rand(1, 3, side, side, generator=g)
    b = (a + 0.02 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    win = 11
    ref = structural_similarity(
        ((a[0].permute(1, 2, 0).numpy() + 1) / 2), ((b[0].permute(1, 2, 0).numpy() + 1) / 2), channel_axis=2,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, win_size=win,
    )
    assert ssim(b, a) == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("side, win", [(8, 7), (9, 7), (10, 9), (5, 3)])
def test_ssim_below_the_window_uses_the_largest_odd_window_that_fits(side, win):
    """Below 11 px the Gaussian window (sigma 1.5) shrinks to the largest odd size below the
    side; checked against the formula written out position by position in numpy."""
    g = torch.Generator().manual_seed(side)
    a = torch.rand(1, 3, side, side + 3, generator=g) * 2 - 1
    b = (a + 0.2 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    r = np.arange(win) - win // 2
    w1 = np.exp(-(r**2) / (2 * 1.5**2))
    w = np.outer(w1, w1) / w1.sum() ** 2
    x, y = ((a[0].double().numpy() + 1) / 2), ((b[0].double().numpy() + 1) / 2)
    vals = []
    for ch in range(3):
        for i in range(side - win + 1):
            for j in range(side + 3 - win + 1):
                px, py = x[ch, i : i + win, j : j + win], y[ch, i : i + win, j : j + win]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy, cxy = (w * px * px).sum() - mx**2, (w * py * py).sum() - my**2, (w * px * py).sum() - mx * my
                vals.append((2 * mx * my + 1e-4) * (2 * cxy + 9e-4) / ((mx**2 + my**2 + 1e-4) * (vx + vy + 9e-4)))
    assert ssim(b, a) == pytest.approx(float(np.mean(vals)), abs=1e-7)  # (inputs rounded to float32 first)


def test_ssim_matches_scikit_image():
    a, b = _pair()
    ref = structural_similarity(
        ((a[0].permute(1, 2, 0).numpy() + 1) / 2), ((b[0].permute(1, 2, 0).numpy() + 1) / 2),
        channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
    )
    assert ssim(b, a) == pytest.approx(ref, abs=1e-6)
    assert ssim(a, a) == pytest.approx(1.0)


def test_image_metrics_pass_both_images_to_lpips(monkeypatch):
    import inversion.lpips as L
    from inversion.metrics import image_metrics

    seen = []
    monkeypatch.setattr(L, "lpips_distance", lambda a, b: seen.append((a, b)) or 0.25)
    a, b = _pair()
    out = image_metrics(b, a)
    assert out["lpips"] == 0.25 and seen[0][0] is b and seen[0][1] is a
    assert out["psnr"] == psnr(b, a) and out["ssim"] == ssim(b, a)


def test_lpips_is_null_without_local_weights(monkeypatch, tmp_path):
    import inversion.lpips as L

    monkeypatch.setenv("INVERSION_LPIPS_BACKBONE", str(tmp_path / "missing.pth"))
    L._model.cache_clear()
    a, b = _pair()
    assert lpips(a, b) is None
    L._model.cache_clear()


def test_lpips_computes_from_local_weights(monkeypatch, tmp_path):
    """With weight files on disk (here random ones) LPIPS is a real distance: 0 for identical images."""
    import inversion.lpips as L

    torch.manual_seed(0)
    feats = L._alexnet_features()
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, tmp_path / "alex.pth")
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(L._CHANNELS)}, tmp_path / "lin.pth")
    monkeypatch.setenv("INVERSION_LPIPS_BACKBONE", str(tmp_path / "alex.pth"))
    monkeypatch.setenv("INVERSION_LPIPS_LINEAR", str(tmp_path / "lin.pth"))
    L._model.cache_clear()
    a, b = _pair()
    assert lpips(a, a) == pytest.approx(0.0, abs=1e-7)
    assert lpips(a, b) > 0
    L._model.cache_clear()


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def test_images_of_every_mode_become_rgb():
    rgb = Image.new("RGB", (20, 10), (10, 200, 30))
    cases = {
        "grey": rgb.convert("L"),
        "cmyk": rgb.convert("CMYK"),
        "palette": rgb.convert("P"),
        "alpha": Image.new("RGBA", (20, 10), (255, 0, 0, 0)),
        "la": rgb.convert("LA"),
        "16bit": Image.fromarray((np.full((10, 20), 40000)).astype(np.uint16)),
    }
    for name, img in cases.items():
        out = load_image(_png(img, format="TIFF" if name == "cmyk" else "PNG"))
        assert out.mode == "RGB" and out.size == (20, 10), name
    assert load_image(_png(cases["alpha"])).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    assert load_image(_png(cases["16bit"])).getpixel((0, 0))[0] == round(40000 / 65535 * 255)


def test_exif_rotation_is_applied():
    img = Image.new("RGB", (30, 10), (0, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees
    out = load_image(_png(img, format="JPEG", exif=exif.tobytes()))
    assert out.size == (10, 30)


@pytest.mark.parametrize("data", [b"", b"not an image at all", _png(Image.new("RGB", (64, 64)))[:60]])
def test_bad_files_raise_clear_errors(data):
    with pytest.raises(ImageError):
        load_image(data)


def test_size_limits(tmp_path):
    with pytest.raises(ImageError, match="at least"):
        load_image(Image.new("RGB", (4, 300)))
    with pytest.raises(ImageError, match="no image file"):
        load_image(tmp_path / "missing.png")
    assert fit_size(4000, 3000, 512, 64, 768) == (512, 384)
    assert fit_size(10, 10, 512, 64, 768) == (512, 512)
    assert fit_size(5000, 100, 512, 64, 768) == (512, 64)


def test_to_pil_roundtrip():
    img = Image.new("RGB", (16, 8), (255, 0, 128))
    from inversion.images import to_model_tensor

    x = to_model_tensor(img, 16, 8, False, 64)
    assert to_pil(x).getpixel((0, 0)) == (255, 0, 128)


def test_clip_tokenizer_words_are_single_tokens_and_build_is_deterministic():
    tok = build_clip_tokenizer()
    for w in WORDS:
        assert len(tok(w, add_special_tokens=False).input_ids) == 1, w
    assert learn_merges(list(WORDS)) == learn_merges(list(WORDS))
    assert tok.decode(tok("a zebra, on Mars!").input_ids, skip_special_tokens=True) == "a zebra , on mars !"
    ids = tok("a cat", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == tok.bos_token_id


def test_t5_tokenizer_builds_offline():
    tok = build_t5_tokenizer()
    ids = tok("a red cat").input_ids
    assert tok.convert_ids_to_tokens(ids) == ["\u2581a", "\u2581red", "\u2581cat", "</s>"]


def test_array_inputs_are_scaled_by_their_range():
    from inversion.images import load_image as li

    assert li(np.full((8, 8), 0.5, np.float32)).getpixel((0, 0)) == (128, 128, 128)  # [0, 1] floats
    assert li(np.full((8, 8, 3), 200.0)).getpixel((0, 0)) == (200, 200, 200)  # [0, 255] floats
    assert li(np.full((8, 8), 65535, np.uint16)).getpixel((0, 0)) == (255, 255, 255)  # 16-bit
    assert li(np.full((8, 8, 1), 7, np.uint8)).getpixel((0, 0)) == (7, 7, 7)
    rgba = np.zeros((8, 8, 4), np.uint8)
    assert li(rgba).getpixel((0, 0)) == (255, 255, 255)  # transparent: white
    for values, top in (([0.0, 0.3, 1.0], 1), ([0.0, 0.5, 2.0], 255), ([0.0, 17.0, 255.0], 255), ([0, 100, 256], 65535), ([-3.0, 0.3, 0.5], 1)):
        a = np.resize(np.array(values, np.float64), (8, 8))  # by the largest value: unit, 8-bit or 16-bit range
        assert (np.asarray(li(a))[..., 0] == np.clip(np.round(a / top * 255), 0, 255)).all(), values
    with pytest.raises(ImageError, match=r"HxW, HxWx1, HxWx3 or HxWx4, got shape \(8, 8, 2\)"):
        li(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(ImageError, match="cannot read an image from a list"):
        li([1, 2, 3])


def test_images_are_cropped_and_resized_as_documented():
    from inversion.images import to_model_tensor

    img = Image.new("RGB", (300, 100), (0, 0, 0))
    img.paste((255, 255, 255), (100, 0, 200, 100))  # a white centre square
    sq = to_model_tensor(img, long_side=64, multiple=1, square=True, max_side=1024)
    assert sq.shape == (1, 3, 64, 64) and float(sq.min()) > 0.99  # the centre crop: all white
    wide = to_model_tensor(img, long_side=512, multiple=64, square=False, max_side=256)
    assert wide.shape == (1, 3, 64, 256)  # capped at max_side, snapped to 64
    assert float(wide.min()) == -1.0 and float(wide.max()) == 1.0
    same = to_model_tensor(Image.new("RGB", (64, 64), (255, 0, 0)), long_side=64, multiple=64, square=False, max_side=1024)
    assert same[0, 0].eq(1).all() and same[0, 1].eq(-1).all()  # no resize: exact values
    assert fit_size(1000, 999, 512, 64, 768) == (512, 512) and fit_size(999, 1000, 512, 1, 768) == (511, 512)


def test_messages_name_the_image_as_told():
    with pytest.raises(ImageError, match="^the upload is not an image this program can read"):
        load_image(b"garbage", name="the upload")
    with pytest.raises(ImageError, match="no image file at the upload"):
        load_image("/nonexistent/x.png", name="the upload")
    notes = []
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert load_image(buf.getvalue(), notes=notes).getpixel((0, 0))[0] > 200 and "2 frames" in notes[0]  # the first frame


@pytest.mark.parametrize("size, square", [((100, 80), True), ((80, 120), True), ((96, 64), False), ((64, 64), True)])
def test_a_model_mask_placed_back_on_the_upload_comes_back_the_same(size, square):
    """mask_on_upload inverts the crop and resize: preparing its output as the app prepares a
    painted region gives the model-resolution mask again (up to edge pixels of a non-integer scale)."""
    from inversion.images import centre_square, mask_on_upload, to_model_tensor

    g = np.random.default_rng(sum(size))
    w, h = (32, 32) if square else (48, 32)
    mask = np.kron(g.random((h // 8, w // 8)) > 0.5, np.ones((8, 8), dtype=bool))
    up = mask_on_upload(mask, size, square)
    assert up.shape == (size[1], size[0])
    if square:
        left, top, right, bottom = centre_square(size)
        assert not up[:, :left].any() and not up[:, right:].any() and not up[:top].any() and not up[bottom:].any()
    img = Image.fromarray(up.astype(np.uint8) * 255).convert("RGB")
    back = to_model_tensor(img, long_side=max(w, h), multiple=16, square=square, max_side=1024)[0, 0].numpy() > 0
    assert back.shape == mask.shape and (back == mask).mean() >= 0.97


def _grey_image(mode: str, a: np.ndarray) -> Image.Image:
    if mode == "I":
        return Image.fromarray(a.astype(np.int32), mode="I")
    if mode == "F":
        return Image.fromarray(a.astype(np.float32), mode="F")
    dtype = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2"}[mode]
    return Image.frombytes(mode, a.shape[::-1], a.astype(dtype).tobytes())


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B", "I"])
@pytest.mark.parametrize("values, top", [([0, 17, 200, 255], 255), ([0, 100, 256], 65535), ([0, 256, 700], 65535), ([3, 33000, 40000, 65535], 65535)])
def test_wide_greys_are_scaled_by_their_range_exactly_and_say_so(mode, values, top):
    """Up to 255 the values are 8-bit already; from 256 up they are 16-bit and scaled (with a note)."""
    a = np.resize(np.array(values), (8, 8))
    notes = []
    out = np.asarray(load_image(_grey_image(mode, a), notes=notes))
    want = np.clip(np.round(a / top * 255), 0, 255)
    assert out.shape == (8, 8, 3) and all((out[..., c] == want).all() for c in range(3))
    assert notes == (["16-bit image: scaled to 8 bits"] if top == 65535 else [])


@pytest.mark.parametrize("values, lo, scale", [([0.0, 0.3, 0.8], 0.0, 1.0), ([0.2, 0.3, 1.0], 0.0, 1.0), ([0.0, 0.3, 1.5], 0.0, 1.5),
                                               ([-1.0, 0.3, 3.0], -1.0, 4.0), ([2.0, 2.0, 2.0], 0.0, 2.0), ([-0.5, 0.3, 0.5], -0.5, 1.5)])
def test_float_images_are_taken_as_unit_range_or_stretched(values, lo, scale):
    """[0, 1] is taken as it is; a wider range is stretched, widened first to include [0, 1]."""
    a = np.resize(np.array(values), (8, 8)).astype(np.float32).astype(np.float64)  # as the image stores them
    out = np.asarray(load_image(_grey_image("F", a)))[..., 0]
    assert (out == np.round((a - lo) / scale * 255)).all()


def test_transparency_goes_on_white_with_a_note_and_opaque_images_keep_theirs():
    def loaded(img):
        notes = []
        return np.asarray(load_image(img, notes=notes)).astype(int), notes

    half = Image.new("RGBA", (8, 8), (200, 100, 0, 128))
    out, notes = loaded(half)
    want = np.array([200, 100, 0]) * 128 / 255 + 255 * (1 - 128 / 255)
    assert np.abs(out - want).max() <= 1 and notes == ["transparent areas were filled with white"]
    out, notes = loaded(Image.new("RGBA", (8, 8), (200, 100, 0, 255)))
    assert (out == (200, 100, 0)).all() and notes == []
    la = Image.new("LA", (8, 8), (50, 255))
    la.putpixel((0, 0), (50, 0))
    out, notes = loaded(la)
    assert (out[0, 0] == 255).all() and (out[1:, 1:] == 50).all() and notes == ["transparent areas were filled with white"]
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.info["transparency"] = 0
    pal.putpixel((0, 0), 0)
    out, notes = loaded(pal)
    assert (out[0, 0] == 255).all() and (out[1:, 1:] == (10, 20, 30)).all() and notes == ["transparent areas were filled with white"]
    out, notes = loaded(Image.new("RGB", (8, 8), (1, 2, 3)))
    assert (out == (1, 2, 3)).all() and notes == []
