"""The app's queue sleeps until work comes (demo/queue_wake.py): a nap ends when its event is set, an idle queue
looks a few times a second instead of a thousand, and a request, or one queued behind another, starts at once."""

import asyncio
import threading
import time

from conftest import ASSETS, free_port

from demo import queue_wake


def test_a_nap_ends_when_its_queue_has_work_and_other_sleeps_are_asyncio_s():
    stand_in = queue_wake._Asyncio()
    assert stand_in.Event is asyncio.Event and stand_in.wait_for is asyncio.wait_for  # every other name is asyncio's

    async def scenario():
        nap = queue_wake._Nap(30.0)
        t0 = time.monotonic()
        asyncio.get_running_loop().call_later(0.05, nap.wake().set)
        await stand_in.sleep(nap)
        woken = time.monotonic() - t0
        assert not nap.wake().is_set()  # cleared for the next nap
        t0 = time.monotonic()
        await stand_in.sleep(queue_wake._Nap(0.05))  # nothing wakes it: it ends on its own
        alone = time.monotonic() - t0
        assert await stand_in.sleep(0, "as asyncio") == "as asyncio"
        return woken, alone

    woken, alone = asyncio.run(scenario())
    assert woken < 10 and alone >= 0.04


def test_an_idle_queue_rests_and_work_wakes_it(monkeypatch):
    """With a 30-s nap, requests still start at once: one pushed to an idle queue, and one queued behind another (one
    model, one request at a time), which starts when the first finishes. Idle, the loop sleeps a few times a second
    (gradio's own loop: a thousand)."""
    import gradio.queueing as queueing
    from gradio_client import Client, handle_file

    from demo.engine import Engine
    from demo.ui import QUEUE, build, launch_options

    engine = Engine("tiny-sd")
    demo = build(engine)
    demo.queue(**QUEUE)
    assert queue_wake.install(demo._queue, idle_look=30.0)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options())
    sleeps, real = [], queueing.asyncio.sleep

    async def counted(delay, result=None):
        sleeps.append(delay)
        return await real(delay, result)

    entered, release, record = threading.Event(), threading.Event(), engine.inversion_record

    def held(*args, **kwargs):  # the first request runs until the second waits behind it
        if not entered.is_set():
            entered.set()
            release.wait(60)
        return record(*args, **kwargs)

    monkeypatch.setattr(engine, "inversion_record", held)
    try:
        monkeypatch.setattr(queueing.asyncio, "sleep", counted)
        time.sleep(1.0)
        # this queue's 30-s naps and its progress loop's; nothing every millisecond (the other sleeps are the 50-ms
        # naps of other apps this process serves, which share the module)
        assert sum(d == 30.0 for d in sleeps) <= 4 and min(sleeps, default=30.0) >= 0.05, sorted(set(sleeps))
        url, image = f"http://127.0.0.1:{port}", handle_file(str(ASSETS / "chelsea.jpg"))
        results = []

        def call(seed):
            results.append(Client(url, verbose=False).predict(image=image, source_prompt="a cat", inverter="ddim", steps=3, seed=seed, api_name="/invert"))

        first = threading.Thread(target=call, args=(1,))
        t0 = time.monotonic()
        first.start()
        assert entered.wait(25)  # pushed to an idle queue: started without waiting out the nap
        second = threading.Thread(target=call, args=(2,))
        second.start()
        deadline = time.monotonic() + 30
        while len(demo._queue) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(demo._queue) == 1  # waiting for the model
        t1 = time.monotonic()
        release.set()
        first.join(60)
        second.join(60)
        assert len(results) == 2 and t1 - t0 < 25 and time.monotonic() - t1 < 25  # the second did not wait out a nap
    finally:
        release.set()
        demo.close()


def test_a_gradio_whose_loop_sleeps_otherwise_keeps_its_own_polling(monkeypatch):
    class Queue:  # the attributes install would replace
        sleep_when_free, progress_update_sleep_when_free = 0.001, 0.01

        async def push(self):
            pass

        async def process_events(self):
            pass

    queue = Queue()
    monkeypatch.setattr(queue_wake.inspect, "getsource", lambda obj: "while True:\n    await other_wait()\n")
    assert not queue_wake.install(queue)
    assert queue.sleep_when_free == 0.001 and type(queue.sleep_when_free) is float and queue.push.__name__ == "push"
