"""demo/fetch_watch.py: the edit handler learns when the page has fetched its edited image (in chromium, through
the app: tests/test_browser.py::test_enter_reset_random_seed_and_stop)."""

import asyncio

from demo import fetch_watch
from demo.fetch_watch import FetchWatch, watched


def _get(path: str, chunks: int = 2):
    """A GET of `path` through the middleware to an app that sends its body in `chunks`; returns what each
    send saw of the watched events (set or not) and whether the app was handed the client's own send."""
    seen_at_send, handed = [], []

    async def app(scope, receive, send):
        handed.append(send is client_send)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(chunks):
            await send({"type": "http.response.body", "body": b"x", "more_body": i < chunks - 1})

    async def client_send(message):
        seen_at_send.append([e.is_set() for e in fetch_watch._pending.values()])

    async def receive():
        return {"type": "http.request"}

    asyncio.run(FetchWatch(app)({"type": "http", "method": "GET", "path": path}, receive, client_send))
    return seen_at_send, handed


def test_a_watched_image_is_seen_only_once_its_last_byte_is_sent():
    with watched("edit-view") as (name, fetched):
        assert name.startswith("edit-view-") and name.endswith(".png")
        with watched("edit-view") as (other, _):
            assert other != name  # every request's image has a name of its own
            sends, handed = _get(f"/gradio_api/file=/tmp/gradio/0a1b/{name}", chunks=3)
            assert fetched.is_set() and handed == [False]
            assert sends == [[False, False]] * 4  # not before the last chunk went out; the other image not at all
    assert fetch_watch._pending == {}  # forgotten once the handler is past it


def test_other_requests_pass_straight_through():
    with watched("edit-view") as (name, fetched):
        for path in (f"/gradio_api/upload/{name}", "/gradio_api/file=/tmp/gradio/0a1b/edit-view.png", "/"):
            _, handed = _get(path)
            assert handed == [True], path
        assert not fetched.is_set()
    _, handed = _get("/gradio_api/file=/tmp/x.png")  # nothing watched: not even a look at the path
    assert handed == [True]


def test_a_handler_stopped_at_its_yield_forgets_its_image():
    def handler():
        with watched("edit-view") as (name, fetched):
            yield name
            fetched.wait(fetch_watch.WAIT_S)

    steps = handler()
    name = next(steps)
    assert name in fetch_watch._pending
    steps.close()  # gradio closes a generator whose event was stopped
    assert fetch_watch._pending == {}
