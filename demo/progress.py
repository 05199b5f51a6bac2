"""One monotone progress bar per request, from the library's per-loop callbacks.

The library reports (done, total, description) for each loop it runs: every
stage of a cascade inversion starts again at 1. A `Progress` maps each phase of
a request (inverting, editing; one inverter after another in a comparison) onto
its own span of one bar and counts cascade stages, so the bar never jumps back
and its text says "stage 2/2". `sink(fraction, text)` is the UI's progress.
"""

from __future__ import annotations

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
