"""The app on loopback: named endpoints via gradio_client, the inversion cache, a real browser."""

import os
import shutil
import socket
from pathlib import Path

import pytest
from conftest import ROOT
from PIL import Image

APP_MODEL = os.environ.get("TEST_APP_MODEL", "tiny-sd")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _serve(model_name: str):
    import app

    engine = app.Engine(model_name)
    demo = app.build(engine)
    demo.queue(default_concurrency_limit=1)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield engine, f"http://127.0.0.1:{port}"
    demo.close()


@pytest.fixture(scope="module")
def served():
    yield from _serve(APP_MODEL)


@pytest.fixture(scope="module")
def served_shapes():
    """The app's offline default, with a scene it was trained for: what the screenshot shows."""
    yield from _serve("shapes")


@pytest.fixture()
def client(served):
    from gradio_client import Client

    return Client(served[1], verbose=False)


def _image_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()
    return Image.open(path).size


def test_named_endpoints_invert_edit_compare(client, served, cat_image):
    from gradio_client import handle_file

    engine = served[0]
    size = tuple(engine.prepare(Image.open(cat_image)).shape[-1:-3:-1])
    recon, m = client.predict(handle_file(str(cat_image)), "a cat", "rnri", 5, 0, 1.0, "{}", api_name="/invert")
    assert _image_size(recon) == size
    assert all(isinstance(m[k], float) for k in ("psnr", "ssim", "latent_psnr", "vae_psnr")) and m["nfe"] == 10
    edited, recon2, m = client.predict(handle_file(str(cat_image)), "a cat", "a dog", "rnri", "masactrl", 5, 0, 1.0, 7.5, "{}", "{}", api_name="/edit")
    assert _image_size(edited) == size and _image_size(recon2) == size
    assert isinstance(m["reconstruction"]["psnr"], float) and isinstance(m["edit_vs_input"]["psnr"], float)
    gallery, rows = client.predict(handle_file(str(cat_image)), "a cat", 5, 0, 1.0, api_name="/compare")
    assert [r["inverter"] for r in rows] == engine.inverters() and len(gallery) == len(rows)
    assert all(isinstance(r["psnr"], float) for r in rows)


def test_a_second_edit_with_a_new_target_prompt_does_no_inversion(client, cat_image):
    from gradio_client import handle_file

    args = [handle_file(str(cat_image)), "a cat on grass", None, "fixed-point", "p2p", 4, 7, 1.0, 7.5, "{}", "{}"]
    args[2] = "a dog on grass"
    *_, first = client.predict(*args, api_name="/edit")
    args[2] = "a fox on grass"
    *_, second = client.predict(*args, api_name="/edit")
    assert first["inversion_nfe"] > 0 and not first["inversion_cached"]
    assert second["inversion_cached"] and second["inversion_nfe"] == 0 and second["edit_nfe"] == 4


def test_user_errors_come_back_as_messages_and_the_app_keeps_serving(client, cat_image, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    cases = [
        ((handle_file(str(cat_image)), "a cat", "a big dog", "rnri", "p2p", 4, 0, 1.0, 7.5, "{}", '{"mode": "replace"}'), "same number of words"),
        ((handle_file(str(cat_image)), "a cat", "a dog", "iterinv", "p2p", 4, 0, 1.0, 7.5, "{}", "{}"), "cascade"),
        ((handle_file(str(cat_image)), "a cat", "a dog", "rnri", "masactrl", 1, 0, 1.0, 7.5, "{}", "{}"), "at least 2 steps"),
        ((handle_file(str(cat_image)), "a cat", "a dog", "rnri", "p2p", 4, 0, 1.0, 7.5, "{bad json", "{}"), "JSON"),
        ((handle_file(str(cat_image)), "a cat", "", "rnri", "p2p", 4, 0, 1.0, 7.5, "{}", "{}"), "empty"),
    ]
    for args, needle in cases:
        with pytest.raises(Exception, match=needle):
            client.predict(*args, api_name="/edit")
    with pytest.raises(Exception, match="not an image"):
        client.predict(handle_file(str(bad)), "a cat", "rnri", 4, 0, 1.0, "{}", api_name="/invert")
    recon, m = client.predict(handle_file(str(cat_image)), "a cat", "ddim", 3, 0, 1.0, "{}", api_name="/invert")
    assert m["nfe"] == 3


def test_cache_is_per_session_and_bounded():
    import torch

    import app

    class Fake:
        def __init__(self, n):
            self.n = n

        def nbytes(self):
            return self.n

    cache = app.InversionCache(max_bytes=1000, max_sessions=2)
    entry = lambda n: app.Entry(Fake(n), torch.zeros(0), torch.zeros(0), {})  # noqa: E731
    cache.put("a", "k1", entry(600))
    cache.put("a", "k2", entry(600))  # over the byte bound: k1 goes
    assert cache.get("a", "k1") is None and cache.get("a", "k2") is not None
    assert cache.get("b", "k2") is None  # another session never sees it
    cache.put("b", "k", entry(10))
    cache.put("c", "k", entry(10))  # third session: the least recent (a) goes
    assert cache.get("a", "k2") is None and cache.nbytes() == 20
    total = app.InversionCache(max_bytes=1000, max_sessions=10, max_total=1500)
    for sess in ("a", "b", "c"):
        total.put(sess, "k", entry(600))  # the third pushes the total over: the least recent session's entry goes
    assert total.get("a", "k") is None and total.get("b", "k") is not None and total.nbytes() == 1200


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_browser_edit_shows_slider_and_metrics(served_shapes, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail("chromium is required (REQUIRE_BROWSER=1) but not installed")
        pytest.skip("Debian chromium not installed")
    from playwright.sync_api import sync_playwright

    url = served_shapes[1]
    scene = Path(ROOT) / "assets" / "shapes" / "examples" / "scene0.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url, wait_until="networkidle")
        page.locator("#input input[type=file]").set_input_files(str(scene))
        page.locator("#input img").first.wait_for(timeout=30000)
        page.locator("#source textarea").fill("a red circle on a blue background")
        page.locator("#target textarea").fill("a green circle on a blue background")
        page.locator("#edit-btn").click()
        page.locator("#slider img").nth(1).wait_for(timeout=120000)
        page.locator("#summary table").wait_for(timeout=30000)
        summary = page.locator("#summary").inner_text()
        assert "Reconstruction (rnri)" in summary and "dB" in summary and "NFE" in summary
        shot = tmp_path / "screenshot.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert Image.open(shot).size[0] >= 1000
    if os.environ.get("UPDATE_SCREENSHOT"):
        shutil.copy(shot, Path(ROOT) / "assets" / "screenshot.png")
