"""Serves gradio's status tracker with its timer loop stopped when nothing is pending.

gradio 6.31's status tracker counts a pending event's seconds in a requestAnimationFrame loop that
only checks its own "running" flag; the tracker of the page's loading screen sets the flag and is
removed before it can clear it, so every open page runs that loop 60 times a second forever. Measured
(headless chromium, this page idle): 0.07 s of CPU per second, against 0.000 for a blank page and
for this page with the fix. A visitor's laptop pays it in battery; a 2-core server that also runs
the browser pays it in edit time. The fix: the loop goes on only while the tracker's event is
pending, and clears the flag when it stops (so the next pending event starts it again); and it ticks
ten times a second, the resolution of the seconds it shows (one decimal), not at every frame. It
applies only to the exact bundled code it replaces: another gradio release is served as shipped
(tests/test_timer_fix.py says so; tests/test_browser.py counts the page's frames in chromium).
"""

from __future__ import annotations

from pathlib import Path

import gradio

ASSETS = Path(gradio.__file__).parent / "templates" / "frontend" / "assets"
LEAKY = "function ze(){me(()=>{F(Pe,(performance.now()-w(de))/1e3),W&&ze()})}"
FIXED = "function ze(){setTimeout(()=>{F(Pe,(performance.now()-w(de))/1e3),W&&o.status===`pending`?ze():W=!1},100)}"


def patched_assets(assets: Path = ASSETS) -> dict[str, bytes]:
    """{"/assets/<file>": fixed bytes} for each bundled status tracker that has the leaky loop once."""
    out = {}
    for path in sorted(assets.glob("statustracker-*.js")):
        text = path.read_text(encoding="utf-8")
        if text.count(LEAKY) == 1:
            out[f"/assets/{path.name}"] = text.replace(LEAKY, FIXED).encode("utf-8")
    return out


class TimerFix:
    """ASGI middleware: the fixed tracker for its own path; every other request passes straight through
    (a plain ASGI layer: no per-request wrapping of gradio's event streams)."""

    def __init__(self, app, patched: dict[str, bytes] | None = None):
        self.app = app
        self.patched = patched_assets() if patched is None else patched

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        at = path.rfind("/assets/")  # from there on: the page may be served under a prefix (a proxy's root path)
        body = self.patched.get(path[at:]) if at >= 0 and scope["type"] == "http" and scope.get("method") in ("GET", "HEAD") else None
        if body is None:
            await self.app(scope, receive, send)
            return
        headers = [(b"content-type", b"text/javascript; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                   (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})
