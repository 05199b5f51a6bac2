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
