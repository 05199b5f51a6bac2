"""Shared fixtures: offline environment and models built once per session."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"


def pytest_configure(config):
    """Each pytest-xdist worker its own gradio file cache: the cache is content-addressed and an app deletes every file
    it put there when it closes, so a test server closing in one worker deleted an upload of the same image that another
    worker's request was about to read ("no longer on this server"). Set here, where the worker's name is known, and
    set anew in each worker: a worker inherits the environment of the process that started it, so a default set
    there (or when this file is imported, before PYTEST_XDIST_WORKER is) gave every worker one folder."""
    worker = getattr(config, "workerinput", {}).get("workerid")
    folder = os.path.join(tempfile.gettempdir(), f"gradio-tests-{worker or 'main'}")
    if worker:
        os.environ["GRADIO_TEMP_DIR"] = folder
    else:
        os.environ.setdefault("GRADIO_TEMP_DIR", folder)


@pytest.fixture(scope="session")
def tiny_sd():
    from inversion.models import load_model

    return load_model("tiny-sd")


@pytest.fixture(scope="session")
def tiny_lcm():
    from inversion.models import load_model

    return load_model("tiny-lcm")


@pytest.fixture(scope="session")
def shapes_lcm():
    from inversion.models import load_model

    return load_model("shapes-lcm")


@pytest.fixture(scope="session")
def tiny_if():
    from inversion.models import load_model

    return load_model("tiny-if")


@pytest.fixture(scope="session")
def oracle():
    from inversion.models import load_model

    return load_model("oracle")


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory):
    """A Hugging Face cache holding every hub model as a tiny repository (tests/hub_fixtures.py)."""
    from hub_fixtures import build_hub_cache

    return build_hub_cache(tmp_path_factory.mktemp("hub"))


@pytest.fixture(scope="session")
def cat_image():
    return ASSETS / "chelsea.jpg"


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def serve_app(model_name: str, mcp: bool = False):
    """The app on loopback (as app.py builds it; `mcp`: with its MCP server); yields (engine, url)."""
    from demo.engine import Engine
    from demo.ui import build, launch_options, queued

    engine = Engine(model_name)
    demo = queued(build(engine))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, mcp_server=mcp, **launch_options())
    try:
        yield engine, f"http://127.0.0.1:{port}"
    finally:
        demo.close()


@pytest.fixture(scope="session")
def shapes_app():
    """The app on the offline default model, shared by the browser, README and visitor tests: (engine, url)."""
    yield from serve_app("shapes-lcm")


def chromium_or_skip() -> str:
    import shutil

    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail("chromium is required (REQUIRE_BROWSER=1) but not installed")
        pytest.skip("Debian chromium not installed")
    return chromium


def sdxl_shaped_unet():
    """A tiny UNet with SDXL's shape: several transformer blocks per attention, no top-level attention."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 3), cross_attention_dim=32, attention_head_dim=(2, 4, 8),
    ).eval()


def record_edits(engine, monkeypatch, field: str) -> list:
    """Wrap the app engine's `edit` so a test sees one field of every request that reaches it."""
    seen, real = [], engine.edit

    def recording(session, req, progress=None):
        seen.append(getattr(req, field))
        return real(session, req, progress)

    monkeypatch.setattr(engine, "edit", recording)
    return seen


class NaNInFloat16(torch.nn.Module):
    """Wraps a UNet: its `at`-th call in float16 (counting from 1) returns NaN, the fp16 overflow
    failure; with `always`, every call in any dtype does."""

    def __init__(self, inner, at=1, always=False):
        super().__init__()
        self.inner, self.at, self.always, self.calls = inner, at, always, 0

    @property
    def fired(self) -> bool:
        return self.always or self.calls >= self.at

    def forward(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        half = next(self.inner.parameters()).dtype == torch.float16
        self.calls += half
        if self.always or (half and self.calls == self.at):
            out = (out[0] * float("nan"),) + tuple(out[1:]) if isinstance(out, tuple) else out * float("nan")
        return out

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)
