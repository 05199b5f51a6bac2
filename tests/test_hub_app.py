"""The app started on a hub model (`--model lcm-dreamshaper-v7`, and `--model sdxl-turbo`) against the
hub-layout fixture cache, with a stand-in for ZeroGPU's `spaces` package (tests/zerogpu/spaces.py) on its path."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import ROOT, free_port

MODEL = "lcm-dreamshaper-v7"


def started_app(hub_cache, tmp_path_factory, model: str):
    """app.py --model MODEL on the fixture cache less DeepFloyd IF (one model the picker must offer as
    a download), with the ZeroGPU stand-in on its path; yields (url, log of GPU calls, stdout)."""
    log = tmp_path_factory.mktemp("zerogpu") / "calls.jsonl"
    log.touch()
    cache = tmp_path_factory.mktemp("hub-without-if")
    for repo in hub_cache.iterdir():
        if not repo.name.startswith("models--DeepFloyd--"):
            (cache / repo.name).symlink_to(repo, target_is_directory=True)
    port = free_port()
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "zerogpu"), str(ROOT)]), "SPACES_STANDIN_LOG": str(log), "OMP_NUM_THREADS": "1"}
    out = tmp_path_factory.mktemp("app") / "stdout.txt"
    with open(out, "w") as stdout:
        proc = subprocess.Popen([sys.executable, "app.py", "--model", model, "--port", str(port)], cwd=ROOT, env=env, stdout=stdout, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        assert proc.poll() is None, out.read_text()[-3000:]
        yield url, log, out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def app_on_hub_model(hub_cache, tmp_path_factory):
    yield from started_app(hub_cache, tmp_path_factory, MODEL)


@pytest.fixture(scope="module")
def app_on_sdxl_turbo(hub_cache, tmp_path_factory):
    yield from started_app(hub_cache, tmp_path_factory, "sdxl-turbo")


def _picker(url) -> tuple[str, dict]:
    config = json.loads(urllib.request.urlopen(f"{url}/config", timeout=10).read())
    picker = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "model")["props"]
    return picker["value"], dict((value, label) for label, value in picker["choices"])


def _calls(log) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_the_app_runs_a_hub_model_from_the_cache_through_zerogpu(app_on_hub_model, cat_image):
    from gradio_client import Client, handle_file

    url, log, stdout = app_on_hub_model
    assert "Could not load" not in stdout.read_text()  # no fallback to an offline model
    value, labels = _picker(url)
    assert value == MODEL
    assert labels[MODEL].endswith("— available") and labels["sd-1.5"].endswith("available (downloaded)")  # loaded; in the cache
    assert labels["deepfloyd-if"].endswith("needs download")  # left out of this cache

    client = Client(url, verbose=False)
    args = dict(image=handle_file(str(cat_image)), source_prompt="a cat sitting", target_prompt="a dog sitting", editor="p2p", steps=4)
    edited, recon, metrics = client.predict(**args, api_name="/edit")
    assert metrics["model"] == MODEL and metrics["inverter"] == "rnri" and metrics["inversion"]["nfe"] == 12
    again = client.predict(**{**args, "target_prompt": "a cat standing"}, api_name="/edit")[2]
    assert again["inversion"]["cached"] is True
    rows = client.predict(image=handle_file(str(cat_image)), source_prompt="a cat sitting", steps=4, api_name="/compare")[1]
    assert {r["inverter"] for r in rows} >= {"ddim", "rnri", "renoise", "fixed-point", "easyinv"}

    calls = _calls(log)
    assert not [c for c in calls if "outside" in c]  # every UNet, VAE and text-encoder call ran inside spaces.GPU
    assert {c["model_call"] for c in calls if "model_call" in c} >= {"UNet2DConditionModel", "AutoencoderKL", "CLIPTextModel"}
    gpu = [c for c in calls if "call" in c]
    assert [c["call"] for c in gpu] == ["edit", "edit", "compare"]
    assert [c["duration"] for c in gpu] == [60, 60, 60]  # ZeroGPU's default: these requests take seconds
    assert all(c["seconds"] <= c["duration"] for c in gpu)  # each call fitted in the time it asked for


def test_the_app_runs_sdxl_turbo_from_the_cache_through_zerogpu(app_on_sdxl_turbo, cat_image):
    """The RNRI and ReNoise demos' model: at its native 512 px, RNRI as the official demo (the last 2 of 4
    steps, 2 iterations each, plus our noise correction), both text encoders inside the GPU calls."""
    from gradio_client import Client, handle_file

    url, log, stdout = app_on_sdxl_turbo
    assert "Could not load" not in stdout.read_text()
    value, labels = _picker(url)
    assert value == "sdxl-turbo" and labels["sdxl-turbo"].endswith("— available")
    assert labels["sdxl"].endswith("available (downloaded)") and labels["lcm-sdxl"].endswith("available (downloaded)")
    client = Client(url, verbose=False)
    args = dict(image=handle_file(str(cat_image)), source_prompt="a cat sitting", target_prompt="a dog sitting", editor="p2p")
    edited, recon, metrics = client.predict(**args, api_name="/edit")
    assert metrics["model"] == "sdxl-turbo" and metrics["inverter"] == "rnri" and metrics["steps"] == 4 and metrics["inversion"]["nfe"] == 6
    assert metrics["reconstruction"]["latent_psnr"] > 60 and metrics["edit"]["nfe"] == 2  # exact through the recorded noise; 2 steps edited
    frames, info = client.predict(image=handle_file(str(cat_image)), image2=handle_file(str(cat_image)), source_prompt="a cat sitting",
                                  frames=2, api_name="/interpolate")  # RNRI's strength 0.6 would leave no noise to mix: the whole schedule here
    assert info["inverter"] == "rnri" and info["frames"] == 2 and len(frames) == 2
    calls = _calls(log)
    assert not [c for c in calls if "outside" in c]
    assert {c["model_call"] for c in calls if "model_call" in c} >= {"UNet2DConditionModel", "AutoencoderKL", "CLIPTextModel", "CLIPTextModelWithProjection"}
    assert [c["call"] for c in calls if "call" in c] == ["edit", "interpolate"]


def test_the_gpu_budget_grows_with_the_slowest_successful_run_of_a_kind():
    """A kind of request that took long asks for twice that (+10 s, at most 240 s); a quick one for
    ZeroGPU's default; a failed run is not timed (ZeroGPU's abort would never reach it)."""
    from demo.glue import GpuBudget, gpu

    budget = GpuBudget()
    assert budget.duration("compare")() == 60
    budget.record("compare", 70.0)
    budget.record("compare", 3.0)
    assert budget.duration("compare")() == 150 and budget.duration("edit")() == 60
    budget.record("compare", 500.0)
    assert budget.duration("compare")() == 240

    import demo.glue as glue

    calls = []
    failing = gpu("failing")(lambda: calls.append(1) or 1 / 0)
    with __import__("pytest").raises(ZeroDivisionError):
        failing()
    assert calls and "failing" not in glue.BUDGET.seconds


def test_a_decorated_handler_asks_zerogpu_for_longer_after_a_slow_run(tmp_path, monkeypatch):
    """Through the stand-in `spaces` package, not the budget object alone: a handler decorated with
    `gpu` asks, on its next call, for twice its slowest run + 10 s (a plain and a streaming handler)."""
    import importlib.util

    import demo.glue as glue

    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("SPACES_STANDIN_LOG", str(log))
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

    for cls in (UNet2DConditionModel, AutoencoderKL, AutoencoderTiny, CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel):
        for method in ("forward", "encode", "decode"):  # the stand-in guards these in place: undone after this test
            if method in vars(cls):
                monkeypatch.setattr(cls, method, vars(cls)[method])
    spec = importlib.util.spec_from_file_location("spaces", ROOT / "tests" / "zerogpu" / "spaces.py")
    standin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(standin)
    monkeypatch.setattr(glue, "spaces", standin)
    monkeypatch.setattr(glue, "GPU_SECONDS", (1, 240))
    monkeypatch.setattr(glue, "BUDGET", glue.GpuBudget())

    @glue.gpu("slow")
    def handler(pause):
        time.sleep(pause)
        return pause

    @glue.gpu("streamed")
    def streaming(pause):
        yield 0
        time.sleep(pause)
        yield pause

    for pause in (0.0, 1.5, 0.0):
        handler(pause)
        list(streaming(pause))
    asked = {}
    for c in _calls(log):
        asked.setdefault(c["call"], []).append(c["duration"])
    assert asked["handler"] == [1, 10, 13] and asked["streaming"] == [1, 10, 13]  # then 2 x 0 + 10; after the 1.5 s run 2 x 1.5 + 10
