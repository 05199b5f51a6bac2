"""One monotone progress bar per request, from the library's per-loop callbacks.

The library reports (done, total, description) for each loop it runs: every
stage of a cascade inversion starts again at 1. A `Progress` maps each phase of
a request (inverting, editing; one inverter after another in a comparison) onto
its own span of one bar and counts cascade stages, so the bar never jumps back
and its text says "stage 2/2". `sink(fraction, text)` is the UI's progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    def __init__(self, sink: Callable[[float, str], None]):
        self.sink = sink

    def phase(self, label: str, start: float, end: float, stages: int = 1) -> Callable[[int, int, str], None]:
        state = {"stage": 0, "last": 0}

        def update(done: int, total: int, _desc: str = "") -> None:
            if done <= state["last"]:
                state["stage"] = min(state["stage"] + 1, stages - 1)
            state["last"] = done
            within = (state["stage"] + done / max(total, 1)) / stages
            text = f"{label}, stage {state['stage'] + 1}/{stages}" if stages > 1 else label
            self.sink(start + (end - start) * min(within, 1.0), f"{text}: step {done}/{total}")

        return update


def throttled(sink: Callable[[float, str], None], first: float = 0.5, every: float = 0.25, clock=time.monotonic) -> Callable[[float, str], None]:
    """`sink`, passed an update only once `first` seconds have gone since this call (a request's start) and then
    at most every `every` seconds. A sub-second edit draws no bar (the page's own timer says it is working), and
    a long job still moves it four times a second. Why: every update the page draws takes CPU, and on a small
    machine that serves the browser too it is taken from the model (2 cores, the page's fresh edit measured
    1.09 s with an update per network call, 0.94 s with none)."""
    start, last = clock(), [float("-inf")]

    def send(fraction: float, text: str) -> None:
        now = clock()
        if now - start >= first and now - last[0] >= every:
            last[0] = now
            sink(fraction, text)

    return send
