"""demo/timer_fix.py: gradio's status tracker served with its timer loop stopped when nothing is pending
(the page in chromium: tests/test_browser.py::test_an_idle_page_draws_no_frames)."""

import asyncio

from demo.timer_fix import FIXED, LEAKY, TimerFix, patched_assets


def test_the_pinned_gradio_has_the_leaky_loop_once_and_it_is_replaced():
    patched = patched_assets()
    assert len(patched) == 1, "gradio's bundled status tracker changed: check whether its idle loop is fixed upstream, then update or drop demo/timer_fix.py"
    (path, body), = patched.items()
    assert path.startswith("/assets/statustracker-") and path.endswith(".js")
    text = body.decode()
    assert LEAKY not in text and text.count(FIXED) == 1


def test_a_tracker_without_the_exact_code_is_served_as_shipped(tmp_path):
    (tmp_path / "statustracker-other.js").write_text("function ze(){changed()}")
    (tmp_path / "statustracker-twice.js").write_text(LEAKY + LEAKY)
    assert patched_assets(tmp_path) == {}


def _call(middleware, path, method="GET"):
    sent = []

    async def receive():
        return {"type": "http.request"}

    async def send(message):
        sent.append(message)

    asyncio.run(middleware({"type": "http", "path": path, "method": method}, receive, send))
    return sent


def test_the_middleware_serves_the_fixed_file_and_passes_everything_else_through():
    passed = []

    async def app(scope, receive, send):
        passed.append(scope["path"])

    m = TimerFix(app, patched={"/assets/statustracker-x.js": b"fixed"})
    start, body = _call(m, "/assets/statustracker-x.js")
    assert start["status"] == 200 and (b"content-type", b"text/javascript; charset=utf-8") in start["headers"] and body["body"] == b"fixed"
    assert _call(m, "/assets/statustracker-x.js", "HEAD")[1]["body"] == b""
    assert _call(m, "/space/root/assets/statustracker-x.js")[1]["body"] == b"fixed"  # under a proxy's prefix
    assert _call(m, "/assets/other.js") == [] and _call(m, "/assets/statustracker-x.js", "POST") == []
    assert passed == ["/assets/other.js", "/assets/statustracker-x.js"]
