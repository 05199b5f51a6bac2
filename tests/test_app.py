"""The app through its named API on loopback (gradio_client): endpoints, parameter names,
the per-session cache, every user error as one message, the Spaces launch."""

import io
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, free_port, serve_app
from PIL import Image

from inversion.models.cascade import base_stage

APP_MODEL = os.environ.get("TEST_APP_MODEL", "tiny-sd")
SCENE = ROOT / "assets" / "shapes" / "examples" / "scene0.png"


@pytest.fixture(scope="module")
def served():
    yield from serve_app(APP_MODEL)


@pytest.fixture()
def client(served):
    from gradio_client import Client

    return Client(served[1], verbose=False)


def _size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()
    return Image.open(path).size


def _edit(client, image, **kw):
    from gradio_client import handle_file

    args = {"source_prompt": "a cat", "target_prompt": "a dog", "inverter": "rnri", "editor": "p2p", "steps": 4, "seed": 0, **kw}
    return client.predict(image=handle_file(str(image)), api_name="/edit", **args)


def test_named_endpoints_invert_edit_compare(client, served, cat_image):
    from gradio_client import handle_file

    engine = served[0]
    size = tuple(engine.model.prepare_image(Image.open(cat_image)).shape[-1:-3:-1])
    recon, m = client.predict(image=handle_file(str(cat_image)), source_prompt="a cat", inverter="rnri", steps=5, api_name="/invert")
    assert _size(recon) == size
    assert m["inversion"]["nfe"] == 10 and m["model"] == APP_MODEL and m["steps"] == 5
    assert all(isinstance(m["reconstruction"][k], float) for k in ("psnr", "ssim", "latent_psnr", "codec_psnr"))
    edited, recon2, m2 = _edit(client, cat_image, editor="masactrl", steps=5)
    assert _size(edited) == size and _size(recon2) == size
    assert set(m2) >= set(m) and m2["reconstruction"] == m["reconstruction"]  # the same names on both endpoints
    assert isinstance(m2["edit"]["change_psnr"], float) and m2["edit"]["nfe"] == 5
    gallery, rows = client.predict(image=handle_file(str(cat_image)), source_prompt="a cat", steps=5, api_name="/compare")
    assert [r["inverter"] for r in rows] == engine.inverters() and len(gallery) == len(rows)
    nfe = {r["inverter"]: r["nfe"] for r in rows}
    assert nfe["ddim"] == 5 and nfe["easyinv"] == 5 and nfe["rnri"] == 10  # one UNet call per step; RNRI 2 on tiny-sd
    assert all(math.isfinite(r["psnr"]) for r in rows)


def test_api_parameters_have_names_and_defaults(client):
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    names = [p["parameter_name"] for p in info["/edit"]["parameters"]]
    assert names == ["image", "source_prompt", "target_prompt", "inverter", "editor", "steps", "seed", "inversion_guidance",
                     "edit_guidance", "inverter_params", "editor_params", "model", "edit_region"]
    assert [p["parameter_name"] for p in info["/invert"]["parameters"]][:3] == ["image", "source_prompt", "inverter"]
    defaults = {p["parameter_name"]: p.get("parameter_default") for p in info["/edit"]["parameters"]}
    assert defaults["inverter"] == "" and defaults["editor"] == "p2p" and defaults["steps"] is None  # empty: the model's own


def test_a_second_edit_with_a_new_target_prompt_does_no_inversion(client, cat_image):
    *_, first = _edit(client, cat_image, source_prompt="a cat on grass", target_prompt="a dog on grass", inverter="fixed-point", seed=7)
    *_, second = _edit(client, cat_image, source_prompt="a cat on grass", target_prompt="a fox on grass", inverter="fixed-point", seed=7)
    assert first["inversion"]["nfe"] > 0 and not first["inversion"]["cached"]
    assert second["inversion"]["cached"] and second["inversion"]["nfe"] == 0 and second["edit"]["nfe"] == 4


def test_the_cache_misses_when_anything_that_shapes_the_inversion_changes(client, cat_image, tmp_path):
    other = tmp_path / "other.png"
    Image.open(cat_image).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other)
    base = {"source_prompt": "a cat in a box", "inverter": "ddim", "steps": 3, "seed": 1}
    *_, m = _edit(client, cat_image, **base)
    assert not m["inversion"]["cached"]
    *_, m = _edit(client, cat_image, **base)
    assert m["inversion"]["cached"]
    changes = [("image", other), ("source_prompt", "a cat in a bag"), ("inverter", "easyinv"), ("steps", 4), ("seed", 2),
               ("inversion_guidance", 2.0), ("inverter_params", '{"noise_correction": false}')]
    for name, value in changes:
        image = value if name == "image" else cat_image
        kw = {**base, **({} if name == "image" else {name: value})}
        if name == "inverter_params":
            kw["inverter"] = "rnri"
            *_, m = _edit(client, image, **{**kw, "inverter_params": "{}"})
        *_, m = _edit(client, image, **kw)
        assert not m["inversion"]["cached"], name


def _truncated_jpeg(path) -> bytes:
    buf = io.BytesIO()
    Image.open(path).save(buf, format="JPEG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


def test_every_user_error_is_one_message_without_server_paths(client, cat_image, tmp_path):
    text = tmp_path / "notes.png"
    text.write_bytes(b"this is a text file, renamed")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(_truncated_jpeg(cat_image))
    cases = [
        ({"target_prompt": "a big dog", "editor_params": '{"mode": "replace"}'}, "same number of words"),
        ({"inverter": "iterinv"}, "cascade"),
        ({"editor": "masactrl", "steps": 1}, "at least 2 steps"),
        ({"inverter_params": "{bad json"}, "JSON object"),
        ({"target_prompt": ""}, "target prompt is empty"),
        ({"seed": 2**63}, "seed must be between 0 and"),
        ({"seed": None}, "seed must be a whole number"),
        ({"steps": 2.5}, "steps must be a whole number"),
        ({"edit_guidance": 1e9}, "edit guidance must be a number between 0 and 30"),
        ({"edit_guidance": -1}, "edit guidance must be a number between 0 and 30"),
        ({"model": "no-such-model"}, "unknown model"),
    ]
    for kw, needle in cases:
        with pytest.raises(Exception, match=needle):
            _edit(client, cat_image, **kw)
    for bad, needle in ((text, "not an image this program can read"), (truncated, "damaged or truncated")):
        with pytest.raises(Exception, match=needle) as err:
            _edit(client, bad)
        assert "/tmp" not in str(err.value) and "gradio" not in str(err.value).lower()
    _, _, m = _edit(client, cat_image, inverter="ddim", steps=3)  # still serving
    assert m["inversion"]["nfe"] == 3 or m["inversion"]["cached"]


def test_guidance_that_is_not_a_finite_number_is_refused_before_any_work(served, cat_image):
    """NaN and inf cannot travel through gradio_client's JSON, but a raw HTTP call can send them."""
    from demo.engine import EditRequest, InversionRequest
    from inversion.errors import ParameterError

    engine = served[0]
    for bad in (float("nan"), float("inf"), "lots"):
        with pytest.raises(ParameterError, match="inversion guidance must be a number between 0 and 30"):
            engine.invert("s", InversionRequest(str(cat_image), "a cat", "ddim", 2, 0, bad))
        with pytest.raises(ParameterError, match="edit guidance must be a number between 0 and 30"):
            engine.edit("s", EditRequest(InversionRequest(str(cat_image), "a cat", "ddim", 2), "a dog", "p2p", bad))


def test_an_internal_error_is_logged_and_shown_with_a_reference(client, served, cat_image, monkeypatch, caplog):
    def broken(*a, **k):
        raise RuntimeError("a bug, not the user's fault")

    monkeypatch.setattr(served[0], "edit", broken)
    with pytest.raises(Exception, match=r"Internal error \(reference [0-9a-f]{8}\)") as err:
        _edit(client, cat_image)
    assert "a bug" not in str(err.value)
    assert any("a bug, not the user's fault" in r.message for r in caplog.records)


def test_cache_is_per_session_and_bounded():
    import torch

    from demo.cache import Entry, InversionCache

    class Fake:
        def __init__(self, n):
            self.n = n

        def nbytes(self):
            return self.n

    cache = InversionCache(max_bytes=1000, max_sessions=2)
    entry = lambda n: Entry(Fake(n), torch.zeros(0), torch.zeros(0), {})  # noqa: E731
    cache.put("a", "k1", entry(600))
    cache.put("a", "k2", entry(600))  # over the byte bound: k1 goes
    assert cache.get("a", "k1") is None and cache.get("a", "k2") is not None
    assert cache.get("b", "k2") is None  # another session never sees it
    cache.put("b", "k", entry(10))
    cache.put("c", "k", entry(10))  # third session: the least recent (a) goes
    assert cache.get("a", "k2") is None and cache.nbytes() == 20
    total = InversionCache(max_bytes=1000, max_sessions=10, max_total=1500)
    for sess in ("a", "b", "c"):
        total.put(sess, "k", entry(600))  # the third pushes the total over: the least recent session's entry goes
    assert total.get("a", "k") is None and total.get("b", "k") is not None and total.nbytes() == 1200


def _listening(port: int) -> set[str]:
    """Local addresses listening on `port`, from /proc/net/tcp (no traffic sent)."""
    found = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if int(p, 16) == port and state == "0A":  # LISTEN
            found.add(".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_app_py_listens_where_hugging_face_spaces_expects():
    port = free_port()
    env = {**os.environ, "SYSTEM": "spaces", "SPACE_ID": "someone/inversion-editing", "GRADIO_SERVER_NAME": "0.0.0.0",
           "GRADIO_SERVER_PORT": str(port), "APP_MODEL": "tiny-sd", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not _listening(port) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert _listening(port) == {"0.0.0.0"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_painted_region_replaces_diffedit_s_mask(client, served, cat_image, tmp_path):
    """The region comes as a mask image of the input's size and is cropped and resized as the image."""
    from gradio_client import handle_file

    w, h = Image.open(cat_image).size
    mask = np.zeros((h, w), np.uint8)
    mask[: h // 2, : w // 2] = 255  # the top-left quarter
    path = tmp_path / "region.png"
    Image.fromarray(mask).save(path)
    *_, painted = _edit(client, cat_image, editor="diffedit", edit_region=handle_file(str(path)))
    *_, automatic = _edit(client, cat_image, editor="diffedit")
    assert 0.2 <= painted["edit"]["mask_fraction"] <= 0.3  # about a quarter, on the latent grid
    assert painted["edit"]["mask_fraction"] != automatic["edit"]["mask_fraction"]
    Image.fromarray(np.zeros((h, w), np.uint8)).save(path)
    *_, empty = _edit(client, cat_image, editor="diffedit", edit_region=handle_file(str(path)))
    assert empty["edit"]["mask_fraction"] == automatic["edit"]["mask_fraction"]  # nothing painted: the editor's own
    Image.fromarray(mask[: h // 2]).save(path)
    with pytest.raises(Exception, match="paint on the uploaded image"):
        _edit(client, cat_image, editor="diffedit", edit_region=handle_file(str(path)))



def test_cache_bounds_are_exact_and_least_recently_used_goes_first():
    import torch

    from demo.cache import Entry, InversionCache

    class Fake:
        def __init__(self, n):
            self.n = n

        def nbytes(self):
            return self.n

    def entry(n):
        return Entry(Fake(n), torch.zeros(0), torch.zeros(0), {})

    cache = InversionCache(max_bytes=1000, max_sessions=3, max_total=10_000)
    cache.put("a", "k1", entry(500))
    cache.put("a", "k2", entry(500))  # exactly at the bound: both stay
    assert cache.get("a", "k1") is not None and cache.nbytes("a") == 1000
    cache.put("a", "k3", entry(1))  # k1 was used last, so k2 is the least recent and goes
    assert cache.get("a", "k2") is None and cache.get("a", "k1") is not None and cache.nbytes("a") == 501
    cache.put("a", "big", entry(5000))  # larger than the bound on its own: kept, the others go
    assert cache.get("a", "big") is not None and cache.nbytes("a") == 5000
    cache.put("b", "k", entry(1))
    cache.put("c", "k", entry(1))
    assert cache.nbytes("b") == 1 and cache.nbytes("nobody") == 0 and cache.nbytes() == 5002
    cache.get("a", "big")  # a becomes the most recent session
    cache.put("d", "k", entry(1))  # four sessions: the least recent (b) goes
    assert cache.get("b", "k") is None and cache.get("a", "big") is not None and len(cache.sessions) == 3
    total = InversionCache(max_bytes=1000, max_sessions=10, max_total=1000)
    total.put("a", "k1", entry(300))
    total.put("a", "k2", entry(300))
    total.put("b", "k", entry(400))  # exactly at the total: all stay
    assert total.nbytes() == 1000
    total.put("c", "k", entry(300))  # over: the least recent session (a) loses its oldest entry first
    assert list(total.sessions["a"]) == ["k2"] and total.nbytes() == 1000  # (looked at without touching the order)
    total.put("c", "k2", entry(300))  # over again: a's last entry goes, and a with it
    assert "a" not in total.sessions and total.nbytes() == 1000
    alone = InversionCache(max_bytes=10_000, max_sessions=10, max_total=100)
    alone.put("a", "k", entry(500))  # one session over the total keeps its entry
    assert alone.get("a", "k") is not None
    alone.put("b", "k", entry(50))  # two sessions over the total: the older one (a) goes
    assert "a" not in alone.sessions and alone.get("b", "k") is not None


def test_a_cached_inversion_answers_with_this_upload_s_size_and_notes():
    """Two uploads can give the model the same pixels (a flat image at two sizes): the second is a
    cache hit, but its painted region and its notes belong to its own size."""
    from demo.engine import Engine, InversionRequest

    engine = Engine("shapes-lcm")
    small, large = (Image.new("RGB", (s, s), (200, 30, 30)) for s in (64, 128))
    first, cached = engine.invert("s", InversionRequest(small, "a red square on a red background", "ddim"))
    assert not cached and first.size == (64, 64) and not first.notes
    second, cached = engine.invert("s", InversionRequest(large, "a red square on a red background", "ddim"))
    assert cached and second.inversion is first.inversion and second.size == (128, 128)
    assert any("your 128x128 image was resized to 64x64" in n for n in second.notes)
    region = np.zeros((128, 128), bool)
    region[:64] = True
    assert engine._region(engine.model_for(None), region, second.size).float().mean() == pytest.approx(0.5)


def test_interpolate_endpoint_frames_end_on_the_two_reconstructions(client, served, cat_image, tmp_path):
    """/interpolate inverts both uploads alike; the ends are the reconstructions /invert gives; a
    second image of another shape is centre-cropped to the first's and the reply says so."""
    from gradio_client import handle_file

    portrait = tmp_path / "portrait.png"
    Image.open(cat_image).transpose(Image.Transpose.ROTATE_90).save(portrait)
    frames, m = client.predict(image=handle_file(str(cat_image)), image2=handle_file(str(portrait)), source_prompt="a cat", inverter="ddim",
                               steps=3, frames=4, api_name="/interpolate")
    assert len(frames) == 4 and m["frames"] == 4 and m["nfe"] > 0 and any("centre-cropped" in n for n in m["notes"])
    recon, _ = client.predict(image=handle_file(str(cat_image)), source_prompt="a cat", inverter="ddim", steps=3, api_name="/invert")
    assert np.array_equal(np.asarray(Image.open(frames[0]["image"])), np.asarray(Image.open(recon)))
    assert m["inverter"] == "ddim" and m["inversions"] == ["ddim", "ddim"]
    # the inverter left empty: the reply names the model's default, the one that ran
    _, m = client.predict(image=handle_file(str(cat_image)), image2=handle_file(str(portrait)), source_prompt="a cat", steps=3, frames=2, api_name="/interpolate")
    default = base_stage(served[0].model_for(None)).default_inverter
    assert m["inverter"] == default and m["inversions"] == [default, default]
    with pytest.raises(Exception, match="frames must be"):
        client.predict(image=handle_file(str(cat_image)), image2=handle_file(str(portrait)), source_prompt="a cat", frames=1, api_name="/interpolate")


def test_no_request_bypasses_the_queue(served, cat_image):
    """api_open=False: the /run/ routes that skip the queue's size and concurrency limit answer nothing."""
    import httpx

    url = served[1]
    for name in ("invert", "edit", "compare", "interpolate"):
        r = httpx.post(f"{url}/gradio_api/run/{name}", json={"data": [None, "a cat", "ddim", 3, 0, None, "{}", ""]}, timeout=30)
        assert r.status_code != 200, (name, r.status_code, r.text[:200])
    config = httpx.get(f"{url}/config", timeout=30).json()
    unqueued = [d for d in config["dependencies"] if not d.get("queue", True)]
    # the few handlers left outside the queue decode nothing a client sends and load no model
    assert all(d.get("api_visibility", "private") != "public" for d in unqueued)


def test_a_client_that_cancels_frees_the_worker_within_a_step(client, served, cat_image, monkeypatch):
    from gradio_client import handle_file

    import demo.engine as engine_mod

    engine = served[0]
    model = engine.model
    monkeypatch.setitem(engine_mod.REQUEST_SECONDS, "invert", 3600)  # long, not refused up front: only the cancel stops it
    with model.measure() as meter:
        job = client.submit(image=handle_file(str(cat_image)), source_prompt="a slow cat", inverter="fixed-point", steps=100,
                            inverter_params='{"iterations": 100, "tolerance": 0}', api_name="/invert")
        deadline = time.time() + 60
        while meter.nfe < 20 and time.time() < deadline:
            time.sleep(0.05)
        assert meter.nfe >= 20, job.status()
        job.cancel()
        time.sleep(1.0)
        at = meter.nfe
        time.sleep(1.0)
        assert meter.nfe - at <= 1, (at, meter.nfe)  # stopped: no calls after the cancel took effect
    recon, m = client.predict(image=handle_file(str(cat_image)), source_prompt="a cat", inverter="ddim", steps=3, api_name="/invert")
    assert m["inversion"]["nfe"] == 3 or m["inversion"]["cached"]


def test_a_request_past_its_time_is_stopped_and_a_hopeless_one_refused_up_front(served, cat_image, monkeypatch):
    import demo.engine as engine_mod
    from demo.engine import InversionRequest, TooLong

    engine = served[0]
    monkeypatch.setitem(engine_mod.REQUEST_SECONDS, "invert", 0.5)
    engine.nfe_seconds.pop(engine.model.name, None)  # speed unknown: only the running check can stop it
    slow = InversionRequest(cat_image, "a cat, slowly", "fixed-point", 100, params={"iterations": 100, "tolerance": 0})
    with pytest.raises(TooLong, match="passed the 0 s one request may take"):
        engine.inversion_record("budget", slow)
    engine.nfe_seconds[engine.model.name] = 0.01  # now measured: 10,000 calls cannot fit, refused before any work
    with engine.model.measure() as meter, pytest.raises(TooLong, match="makes up to 10000 network calls, about 100 s"):
        engine.inversion_record("budget", slow)
    assert meter.nfe == 0


def test_a_flood_from_one_client_delays_another_by_one_job_at_most(served, cat_image):
    """One queued heavy request per visitor: of a burst from one client only the running one and its
    latest run; the rest are dropped with a message as they reach the front, so another client's
    request waits for those two at most."""
    from gradio_client import Client, handle_file

    flood, other = Client(served[1], verbose=False), Client(served[1], verbose=False)
    image = handle_file(str(cat_image))
    jobs = [flood.submit(image=image, source_prompt="a cat", inverter="fixed-point", steps=20, seed=k, inverter_params='{"tolerance": 0}', api_name="/invert")
            for k in range(1, 13)]
    time.sleep(0.5)
    mine = other.submit(image=image, source_prompt="a cat", inverter="ddim", steps=3, seed=99, api_name="/invert")
    _, record = mine.result(timeout=300)
    ran, dropped = 0, 0
    for job in jobs:
        try:
            job.result(timeout=300)
            ran += 1
        except Exception as e:
            assert "only the latest runs" in str(e), str(e)
            dropped += 1
    assert ran <= 2 and dropped >= 10 and record["inversion"]["nfe"] == 3


def test_what_a_raw_client_gets_wrong_comes_back_as_a_message(served, cat_image):
    """Raw HTTP calls (no gradio_client to check types): a wrong-typed number, too few inputs, a path
    nobody uploaded, a 400-digit integer, deeply nested JSON, a test-only model: each a message, never
    {"error": null} or "Internal error"; the fields' own refusals in one line."""
    import httpx

    url = served[1]
    with open(cat_image, "rb") as f:
        uploaded = httpx.post(f"{url}/gradio_api/upload", files={"files": ("cat.jpg", f, "image/jpeg")}, timeout=30).json()[0]
    image = {"path": uploaded, "meta": {"_type": "gradio.FileData"}, "orig_name": "cat.jpg"}
    base = [image, "a cat", "a dog", "ddim", "p2p", 3, 0, None, None, "{}", "{}", "", None]

    def error_of(data) -> str:
        eid = httpx.post(f"{url}/gradio_api/call/edit", json={"data": data}, timeout=30).json()["event_id"]
        with httpx.stream("GET", f"{url}/gradio_api/call/edit/{eid}", timeout=120) as s:
            text = "".join(s.iter_text())
        assert "event: error" in text, text[:300]
        return json.loads(text.split("data:", 1)[1].strip().splitlines()[0])["error"]

    one_line = {
        "seed must be a number, got 'abc'": base[:6] + ["abc"] + base[7:],
        "steps must be between 1 and 100, got a 400-digit number": base[:5] + [int("9" * 400)] + base[6:],
        "nested too deeply": base[:9] + ["[" * 5000 + "]" * 5000] + base[10:],
        "this server does not offer 'tiny-if'": base[:11] + ["tiny-if"] + base[12:],
    }
    for needle, data in one_line.items():
        message = error_of(data)
        assert needle in message and "\n" not in message and "Internal error" not in message, message
    assert "not uploaded by a user" in error_of([{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}] + base[1:])
    assert "didn't receive enough input values" in error_of(base[:4])


def _png(path):
    import torch

    a = np.asarray(Image.open(path).convert("RGB"), np.float32)
    return torch.from_numpy(a).permute(2, 0, 1)[None] / 127.5 - 1


def test_every_number_of_invert_edit_and_compare_is_recomputed_from_the_images_beside_it(client, served, cat_image):
    """PSNR/SSIM of /invert's reconstruction, /edit's change from input (a no-op edit's equals the
    reconstruction's), /compare's rows: recomputed from the returned images against the input as the
    model takes it; NFE and seconds are what ran; a cached edit reports no inversion work."""
    from gradio_client import handle_file

    from inversion.images import load_image
    from inversion.metrics import psnr, ssim

    engine = served[0]
    x = engine.model.prepare_image(load_image(cat_image))
    recon, m = client.predict(image=handle_file(str(cat_image)), source_prompt="a cat on a mat", inverter="ddim", steps=4, api_name="/invert")
    rec = m["reconstruction"]
    assert psnr(_png(recon), x) == pytest.approx(rec["psnr"], abs=0.3) and ssim(_png(recon), x) == pytest.approx(rec["ssim"], abs=0.01)
    assert m["inversion"]["nfe"] == 4 and m["inversion"]["seconds"] >= 0 and m["steps"] == 4 and m["seed"] == 0
    edited, recon2, e = _edit(client, cat_image, source_prompt="a cat on a mat", target_prompt="a dog on a mat", inverter="ddim")
    assert e["inversion"]["cached"] and e["inversion"]["nfe"] == 0 and e["inversion"]["seconds"] == 0.0 and e["edit"]["nfe"] == 4
    assert psnr(_png(edited), x) == pytest.approx(e["edit"]["change_psnr"], abs=0.3)
    assert ssim(_png(edited), x) == pytest.approx(e["edit"]["change_ssim"], abs=0.01)
    same, _, noop = _edit(client, cat_image, source_prompt="a cat on a mat", target_prompt="a cat on a mat", inverter="ddim", edit_guidance=m["guidance"])
    assert noop["edit"]["change_psnr"] == pytest.approx(noop["reconstruction"]["psnr"], abs=0.006)  # the no-op edit (same prompt and guidance) is the reconstruction
    gallery, rows = client.predict(image=handle_file(str(cat_image)), source_prompt="a cat on a mat", steps=4, api_name="/compare")
    for item, row in zip(gallery, rows):
        assert item["caption"] == row["inverter"] and psnr(_png(item["image"]), x) == pytest.approx(row["psnr"], abs=0.3)
        assert row["nfe"] >= 4 and row["seconds"] >= 0


def test_the_edited_image_arrives_before_its_metrics_are_computed(client, served, cat_image, monkeypatch):
    """/edit's first output is the edit, sent while the reconstruction and metrics are not computed yet
    (the measuring waits here until the client holds the edit); its last output has every metric."""
    import threading

    from gradio_client import handle_file

    engine, release, measured = served[0], threading.Event(), []
    real = engine.edit_record

    def held(r):
        assert release.wait(60)  # the edit must already be with the client
        measured.append(True)
        return real(r)

    monkeypatch.setattr(engine, "edit_record", held)
    job = client.submit(image=handle_file(str(cat_image)), source_prompt="a cat held back", target_prompt="a dog held back", inverter="ddim", steps=3,
                        editor="p2p", api_name="/edit")
    deadline = time.time() + 60
    while not job.outputs() and time.time() < deadline:
        time.sleep(0.02)
    first = job.outputs()[0]
    assert not measured and first[0] is not None and first[1] is None and "reconstruction" not in first[2] and first[2]["edit"]["nfe"] == 3
    release.set()
    edited, recon, metrics = job.result(timeout=60)
    assert measured and recon is not None and {"reconstruction", "edit", "server"} <= set(metrics)
    assert np.array_equal(np.asarray(Image.open(edited)), np.asarray(Image.open(first[0])))  # the same edit, sent once more with the rest


def test_every_edit_parameter_of_the_api_shows_its_effect(client, cat_image, tmp_path):
    """Each /edit parameter beyond the inversion's (those change the cache key: tested above) changes the
    result or the field that echoes it."""
    base = {"source_prompt": "a cat on a rug", "target_prompt": "a dog on a rug", "inverter": "ddim", "steps": 3}
    _, _, m0 = _edit(client, cat_image, **base)
    changes = {
        "editor": ("masactrl", lambda m: m["edit"]["editor"] == "masactrl"),
        "edit_guidance": (2.5, lambda m: m["edit"]["guidance"] == 2.5 and m["edit"]["change_psnr"] != m0["edit"]["change_psnr"]),
        "editor_params": ('{"cross_replace": 0.3}', lambda m: m["edit"]["params"]["cross_replace"] == 0.3 and m["edit"]["change_psnr"] != m0["edit"]["change_psnr"]),
        "target_prompt": ("a fox on a rug", lambda m: m["edit"]["change_psnr"] != m0["edit"]["change_psnr"]),
        "seed": (5, lambda m: m["seed"] == 5),
    }
    for name, (value, holds) in changes.items():
        _, _, m = _edit(client, cat_image, **{**base, name: value})
        assert holds(m), (name, m["edit"], m.get("seed"))
    from gradio_client import handle_file

    w, h = Image.open(cat_image).size  # edit_region: a mask of the upload's size, its top-left quarter painted
    region = tmp_path / "region.png"
    Image.fromarray(np.pad(np.full((h // 2, w // 2), 255, np.uint8), ((0, h - h // 2), (0, w - w // 2)))).save(region)
    _, _, m = _edit(client, cat_image, **{**base, "editor": "diffedit"}, edit_region=handle_file(str(region)))
    assert m["edit"]["mask_fraction"] is not None and 0 < m["edit"]["mask_fraction"] < 0.6
