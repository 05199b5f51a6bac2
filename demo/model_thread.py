"""One thread runs every model computation of the app.

Why: torch's CPU kernels share each operation out over OpenMP threads, and OpenMP (libgomp) keeps a team
of helper threads for every thread that starts parallel work. Gradio runs handlers on a pool of worker
threads, so each became the head of a team of its own; once a process holds more OpenMP threads than
cores, libgomp stops spinning between operations and sleeps instead, and every one of the thousands of
small operations of an edit pays a wake-up. On 2 cores a fresh edit served from a worker thread took
1.7x the library's time with 2 torch threads (more than with one). With every computation on this one
thread there is one team, and the app can use every core. No gradio here: the engine uses it.
"""

from __future__ import annotations

import contextvars
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor


class ModelThread:
    """`run(fn, ...)` calls fn on the model thread (inline when already on it) and returns its result or
    raises its exception. `threads`: torch's threads there (None: leave torch's setting as it is)."""

    def __init__(self, threads: int | None = None):
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._pid: int | None = None
        self._ident: int | None = None
        self._lock = threading.Lock()

    def _started(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():  # again in a forked child (ZeroGPU forks per call)
                self._pid, self._ident = os.getpid(), None
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="model", initializer=self._init)
            return self._pool

    def _init(self) -> None:
        self._ident = threading.get_ident()
        if self.threads:
            import torch

            # torch gives a thread, at its first parallel operation, the count last set anywhere (a lazy
            # per-thread init): this thread takes its init now, then its own count; then the process default goes
            # back to one from a passing thread, or a handler thread's first large tensor copy (the inversion's
            # download, a deep copy) would start a team again (measured: a fresh edit from the page 1.4 s, not 1.0)
            torch.get_num_threads()
            torch.set_num_threads(self.threads)
            helper = threading.Thread(target=torch.set_num_threads, args=(1,))
            helper.start()
            helper.join()

    def on_it(self) -> bool:
        return self._pid == os.getpid() and threading.get_ident() == self._ident

    def run(self, fn, *args, **kwargs):
        if self.on_it():
            return fn(*args, **kwargs)
        # the caller's context goes along: gradio's request context, which says whether the client left
        return self._started().submit(contextvars.copy_context().run, fn, *args, **kwargs).result()


def on_model_thread(method):
    """A method of an object with a `worker` (ModelThread) that runs on that thread."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        return self.worker.run(method, self, *args, **kwargs)

    return run
