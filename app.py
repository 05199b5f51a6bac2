"""Gradio app: pick a model, an inverter and an editor; see the original, the
reconstruction and the edit side by side with metrics and timings.

    python app.py [--model auto|shapes-lcm|shapes|lcm-dreamshaper-v7|...] [--host H] [--port P] [--share]

Host and port default to GRADIO_SERVER_NAME / GRADIO_SERVER_PORT when set (as on
Hugging Face Spaces), else 127.0.0.1:7860; the flags win. The page and the API
live in `demo/` (docs/ARCHITECTURE.md); this file only builds and launches.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import gradio as gr  # noqa: E402

from demo.engine import Engine  # noqa: E402
from demo.ui import build, launch_options, make_first_example, queued  # noqa: E402
from inversion.models import MODELS  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.environ.get("APP_MODEL", "auto"), help=f"auto, or one of: {', '.join(MODELS)}")
    ap.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    ap.add_argument("--share", action="store_true")
    ap.add_argument("--mcp", action="store_true", help="also serve /invert, /edit, /compare and /interpolate as MCP tools (/gradio_api/mcp/)")
    a = ap.parse_args(argv)
    import torch

    # every core for the model thread, where all model work runs (demo/model_thread.py); the others stay at one
    # torch thread, so none of them starts a thread team of its own
    threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1
    torch.set_num_threads(1)
    engine = Engine(a.model, threads=threads)
    if engine.notice:
        print(engine.notice.replace("**", "") + " On a GPU start it with --model lcm-dreamshaper-v7.", flush=True)
    demo = queued(build(engine))
    demo.launch(server_name=a.host, server_port=a.port, share=a.share, theme=gr.themes.Soft(), mcp_server=a.mcp, prevent_thread_lock=True, **launch_options())
    make_first_example(demo)  # listening already: the first visitor finds the page's first edit made
    demo.block_thread()


if __name__ == "__main__":
    main()
