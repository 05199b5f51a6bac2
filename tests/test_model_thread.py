"""Every model computation of the app runs on one thread (demo/model_thread.py: with a thread team per
calling thread, libgomp stopped spinning and an edit on 2 cores took 1.7x the library's time)."""

import contextvars
import threading

import pytest
from PIL import Image

from demo.model_thread import ModelThread

WHO = contextvars.ContextVar("who", default="nobody")


def test_the_model_thread_runs_calls_on_one_thread_of_its_own_and_returns_what_they_return():
    worker = ModelThread()
    ident = worker.run(threading.get_ident)
    assert ident != threading.get_ident()
    seen = []

    def from_another_thread():
        seen.append(worker.run(threading.get_ident))

    t = threading.Thread(target=from_another_thread)
    t.start()
    t.join()
    assert seen == [ident]
    assert worker.run(lambda: worker.run(threading.get_ident)) == ident  # nested: inline, no deadlock

    def fails():
        raise ValueError("told")

    with pytest.raises(ValueError, match="told"):
        worker.run(fails)
    WHO.set("the caller")  # gradio's request context travels with the call (whether the client left)
    assert worker.run(WHO.get) == "the caller"


def test_only_the_model_thread_uses_several_torch_threads():
    """Any other thread's large operation runs on its own thread: no second OpenMP team (on Linux, counted)."""
    import os

    import torch

    worker = ModelThread(threads=2)
    assert worker.run(torch.get_num_threads) == 2
    counts, big = [], torch.randn(1 << 21)

    def other():  # a handler thread, new to torch, copying a large tensor
        before = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else None
        counts.append((torch.get_num_threads(), (big * 2).sum().item() != 0))
        after = len(os.listdir("/proc/self/task")) if before is not None else None
        counts.append((before, after))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert counts[0] == (1, True) and counts[1][0] == counts[1][1]
    assert worker.run(torch.get_num_threads) == 2  # the model thread kept its own


def test_every_network_call_of_the_engine_runs_on_its_model_thread(cat_image):
    from demo.engine import EditRequest, Engine, InversionRequest

    engine = Engine("tiny-sd")
    threads = set()
    hook = engine.model.unet_module.register_forward_pre_hook(lambda *_: threads.add(threading.get_ident()))
    try:
        image = Image.open(cat_image)
        req = EditRequest(InversionRequest(image, "a cat", "rnri", 3, 0, 1.0), "a dog", "p2p")
        callers = [threading.Thread(target=lambda s=s: engine.edit_record(engine.edit(s, req))) for s in ("one", "two")]
        for t in callers:
            t.start()
            t.join()
        engine.compare("three", req.source)
    finally:
        hook.remove()
    assert threads == {engine.worker.run(threading.get_ident)}
    assert threading.get_ident() not in threads and not {t.ident for t in callers} & threads
