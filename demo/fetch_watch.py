"""Tells the page's edit handler when the page has fetched the edited image it was sent.

After its first update (the edited image) the handler measures: the reconstruction, its metrics, the files. On a
machine that also runs the visitor's browser (a small Space opened on the same box, this project's tests and
benchmarks) that work took the CPU from the browser's fetch and decode of the image just sent. Measured on 2 cores
(cached RNRI edits on `shapes-lcm` in chromium, 7 clicks a run, server timestamps against the page's clock): from the
edit's message sent to the image decoded, a median of 46 ms measuring at once and 30 ms waiting for the fetch (the
fetch itself 23-32 ms and 9 ms; a fixed 60-ms pause instead: 36 and 24 ms). So the handler waits until the image's
file has been served, at most `WAIT_S` (a browser elsewhere, a phone whose image is below the fold and loaded
lazily): the metrics follow that much later at worst, the image shows sooner.

The file is named uniquely (`watched`), and gradio serves it under that name from its cache; `FetchWatch` is a plain
ASGI layer that sets the name's event once the response's last byte is sent.
"""

from __future__ import annotations

import contextlib
import threading
import uuid

WAIT_S = 0.15  # the longest the measuring waits for the page's fetch
_pending: dict[str, threading.Event] = {}  # file name -> set once the page has fetched it
_lock = threading.Lock()


@contextlib.contextmanager
def watched(stem: str, suffix: str = ".png"):
    """A unique file name to send, and the event set once it has been fetched; forgotten on exit (also when the
    handler is stopped), so the table holds only images whose handler still runs."""
    name, seen = f"{stem}-{uuid.uuid4().hex[:12]}{suffix}", threading.Event()
    with _lock:
        _pending[name] = seen
    try:
        yield name, seen
    finally:
        with _lock:
            _pending.pop(name, None)


class FetchWatch:
    """ASGI middleware: a GET of a watched file sets its event after the response's last byte; every other request
    passes straight through."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "") if scope["type"] == "http" and _pending else ""
        seen = _pending.get(path.rsplit("/", 1)[-1]) if "/file=" in path else None
        if seen is None:
            await self.app(scope, receive, send)
            return

        async def sending(message):
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                seen.set()

        await self.app(scope, receive, sending)
