"""Shared fixtures: offline environment and models built once per session."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"


@pytest.fixture(scope="session")
def tiny_sd():
    from inversion.models import load_model

    return load_model("tiny-sd")


@pytest.fixture(scope="session")
def tiny_lcm():
    from inversion.models import load_model

    return load_model("tiny-lcm")


@pytest.fixture(scope="session")
def tiny_if():
    from inversion.models import load_model

    return load_model("tiny-if")


@pytest.fixture(scope="session")
def oracle():
    from inversion.models import load_model

    return load_model("oracle")


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


def serve_app(model_name: str):
    """The app on loopback (as app.py builds it); yields (engine, url)."""
    from demo.engine import Engine
    from demo.ui import CSS, build

    engine = Engine(model_name)
    demo = build(engine)
    demo.queue(default_concurrency_limit=1)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, css=CSS)
    try:
        yield engine, f"http://127.0.0.1:{port}"
    finally:
        demo.close()


def chromium_or_skip() -> str:
    import shutil

    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail("chromium is required (REQUIRE_BROWSER=1) but not installed")
        pytest.skip("Debian chromium not installed")
    return chromium
