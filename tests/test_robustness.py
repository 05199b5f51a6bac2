"""Bad input, fp16 NaN fallback, out-of-memory reporting, concurrent sessions."""

import io
import threading

import pytest
import torch
from conftest import NaNInFloat16
from PIL import Image

from inversion.images import ImageError, load_image
from inversion.models import PromptError, load_model
from inversion.pipeline import invert


def test_huge_images_are_refused_before_decoding():
    buf = io.BytesIO()
    Image.new("L", (9000, 6000)).save(buf, format="PNG")  # 54 MP, a small file
    with pytest.raises(ImageError, match="limit is 50 MP"):
        load_image(buf.getvalue())


def test_large_images_are_resized_to_the_model_cap(tiny_sd):
    x = tiny_sd.prepare_image(Image.new("RGB", (3000, 1000), (10, 20, 30)))
    assert max(x.shape[-2:]) == 64 and x.shape[-1] % 16 == 0 and x.shape[-2] % 16 == 0


def test_over_long_prompts_explain_the_token_limit(tiny_sd, cat_image):
    with pytest.raises(PromptError, match=r"at most 77.*shorten it by about \d+ tokens"):
        invert(tiny_sd, cat_image, "a very " * 60 + "cat", "ddim", steps=2)


def test_empty_source_prompt_is_the_unconditional_prompt(tiny_sd, cat_image):
    inv = invert(tiny_sd, cat_image, "", "ddim", steps=2)
    assert inv.prompt == ""


def test_fp16_nan_in_the_unet_falls_back_to_fp32():
    m = load_model("tiny-sd")
    m.unet_module.to(torch.float16)
    m.text_encoder.to(torch.float16)
    m.dtype = torch.float16
    m.unet_module = NaNInFloat16(m.unet_module)
    with m.measure() as meter:
        eps = m.predict_noise(torch.randn(1, 4, 8, 8), 501, m.encode_prompt("a cat"))
    assert torch.isfinite(eps).all() and m.unet_module.fired
    assert m.dtype == torch.float32 and next(m.unet_module.inner.parameters()).dtype == torch.float32
    assert any("float16" in w for w in meter.warnings)  # told to the request that caused it
    with m.measure() as later:
        m.predict_noise(torch.randn(1, 4, 8, 8), 501, m.encode_prompt("a cat"))
    assert later.warnings == [] and later.nfe == 1  # and not to every later request


def test_fp16_nan_in_the_vae_falls_back_to_fp32():
    m = load_model("tiny-sd")
    m.vae.to(torch.float16)
    decode = m.vae.decode
    state = {"fired": False}

    def nan_decode(z, *a, **k):
        out = decode(z, *a, **k)
        if not state["fired"] and m.vae.dtype == torch.float16:
            state["fired"] = True
            out.sample = out.sample * float("nan")
        return out

    m.vae.decode = nan_decode
    with m.measure() as meter:
        img = m.decode(torch.randn(1, 4, 8, 8))
    assert torch.isfinite(img).all() and state["fired"] and m.vae.dtype == torch.float32
    assert any("VAE" in w for w in meter.warnings)


def test_non_finite_output_in_float32_is_an_error_not_a_black_image():
    from inversion.models import ModelError

    m = load_model("tiny-sd")
    m.unet_module = NaNInFloat16(m.unet_module)
    with pytest.raises(ModelError, match="NaN or inf"):
        m.predict_noise(torch.full((1, 4, 8, 8), float("nan")), 501, m.encode_prompt("a cat"))


def test_out_of_memory_reports_a_size_that_fits(monkeypatch, cat_image):
    import demo.engine as engine_mod

    engine = engine_mod.Engine("tiny-sd")
    req = engine_mod.InversionRequest(Image.open(cat_image), "a cat", "ddim", 3, 0, 1.0)

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(engine_mod, "invert", oom)
    with pytest.raises(engine_mod.OutOfMemory, match=r"at 64x48 pixels\. Try a long side of 64 px or less"):
        engine.invert("s", req)
    monkeypatch.undo()
    entry, cached = engine.invert("s", req)
    assert not cached and entry.inversion.nfe == 3  # still serving
    assert "768 px" in engine_mod.oom_message(torch.zeros(1, 3, 1024, 1100))


def test_four_concurrent_sessions_get_their_own_results(cat_image, tmp_path):
    """Through the app's queue on loopback: no cross-session cache, results equal to serial runs."""
    from conftest import serve_app
    from gradio_client import Client, handle_file

    from demo.cache import CACHE_BYTES_PER_SESSION

    served = serve_app("tiny-sd")
    engine, url = next(served)
    try:
        jobs = [("a cat on grass", "a dog on grass"), ("a cat on grass", "a fox on grass"), ("a cat indoors", "a dog indoors"), ("a cat on grass", "a dog on grass")]
        results = [None] * len(jobs)

        def run(i):
            c = Client(url, verbose=False)
            src, tgt = jobs[i]
            results[i] = c.predict(image=handle_file(str(cat_image)), source_prompt=src, target_prompt=tgt, inverter="rnri", editor="p2p", steps=4, api_name="/edit")

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert all(r is not None for r in results)
        for _edited, _, metrics in results:
            assert not metrics["inversion"]["cached"] and metrics["inversion"]["nfe"] == 8  # never another session's
        # sessions 0 and 3 asked the same thing: identical images; 0 and 1 differ only in the target
        same = [Image.open(results[i][0]).tobytes() for i in (0, 3, 1)]
        assert same[0] == same[1] and same[0] != same[2]
        visitors = [s for s in engine.cache.sessions if s != "examples"]  # "examples": the page's first result, made at start-up
        assert len(visitors) == 4 and sum(engine.cache.nbytes(s) for s in visitors) < CACHE_BYTES_PER_SESSION * 4
    finally:
        served.close()


def test_an_output_file_is_never_read_partly_written(tmp_path):
    """`written` writes a temporary file and renames it: a reader polling the path sees nothing or the
    whole file, never a prefix, while writers replace it again and again."""
    import threading

    from demo.glue import written

    path, stop, seen = tmp_path / "edit.png", threading.Event(), set()
    sizes = [200_000, 300_000]

    def writer():
        for k in range(60):
            written(path, lambda p, k=k: p.write_bytes(bytes([k % 251]) * sizes[k % 2]))
        stop.set()

    t = threading.Thread(target=writer)
    t.start()
    while not stop.is_set():
        try:
            seen.add(len(path.read_bytes()))
        except FileNotFoundError:
            pass
    t.join()
    assert seen <= set(sizes) and seen, seen
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind



def test_a_re_edit_encodes_the_unchanged_input_once(tmp_path, monkeypatch):
    """`png_once`: a cached inversion's input (and reconstruction) is encoded for the page once; again only when its
    file is gone or half the files' age has passed (the sweep removes a folder a whole age after its last file), and
    what it writes is the image, losslessly."""
    import time
    from pathlib import Path

    import numpy as np

    import demo.glue as glue

    for d in "abcde":
        (tmp_path / d).mkdir()
    x = torch.rand(1, 3, 40, 30) * 2 - 1
    saves = []
    real_save = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", lambda self, *a, **k: (saves.append(k), real_save(self, *a, **k))[1])
    shown = {}
    first = glue.png_once(shown, x, "input.png", tmp_path / "a")
    assert glue.png_once(shown, x, "input.png", tmp_path / "b") == first and len(saves) == 1
    assert saves[0]["compress_level"] == glue.PNG_LEVEL
    np.testing.assert_array_equal(np.asarray(Image.open(first)), np.asarray(glue.show(x)))
    Path(first).unlink()  # swept: written again, where this request's files go
    assert glue.png_once(shown, x, "input.png", tmp_path / "c") == str(tmp_path / "c" / "input.png") and len(saves) == 2
    key = ("input.png", glue.DISPLAY_SIDE)
    shown[key] = (shown[key][0], time.time() - glue.OUTPUT_AGE / 2 - 1)  # half an age old: written again
    assert glue.png_once(shown, x, "input.png", tmp_path / "d") == str(tmp_path / "d" / "input.png") and len(saves) == 3
    assert glue.png_once(shown, x, "input.png", tmp_path / "e", at_least=1) != glue.png_once(shown, x, "input.png", tmp_path / "d") and len(saves) == 4
    assert Image.open(shown[("input.png", 1)][0]).size == (30, 40)  # another size, its own file: the API's full-size copy

def test_an_upload_removed_while_its_request_waited_is_said_in_plain_words(tmp_path):
    """load.py's 32 sessions with 60 s file age on a busy machine: requests that queued longer lost their upload."""
    import demo.engine as engine_mod

    engine = engine_mod.Engine("tiny-sd")
    gone = tmp_path / "upload.png"
    with pytest.raises(engine_mod.ImageError, match="no longer on this server .* upload it again"):
        engine.invert("s", engine_mod.InversionRequest(str(gone), "a cat", "ddim", 3, 0, 1.0))
