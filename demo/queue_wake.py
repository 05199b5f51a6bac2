"""gradio's queue woken by work instead of polling every millisecond.

gradio 6.31's queue loop looks for work every millisecond (`Queue.sleep_when_free`), idle or not, and its progress
loop every 10 ms. In the process that also runs the model those wakeups are not free on a small machine: an asyncio
loop waking every millisecond beside a two-thread model call on 2 cores made an RNRI inversion and P2P edit 9-13%
slower (0.88-0.89 s -> 1.00 s; a cached edit 0.19 -> 0.21 s; waking every 10 ms: 2%; README, "Live"). Here the
queue's loop sleeps until a request is pushed or a job finishes, and looks anyway every `IDLE_LOOK` seconds;
progress is looked for at the same pace (the page moves its bar at most four times a second).

How, without copying gradio's loop: gradio's `queueing` module calls `asyncio.sleep(self.sleep_when_free)`; the
queue's value becomes a float that carries a wake event (`_Nap`), and the module's `asyncio` a thin stand-in
whose `sleep` ends a `_Nap` early once its event is set (every other name is the real asyncio's). Installed only
where gradio's loop sleeps that way (checked in its source); elsewhere gradio's own polling stays.
"""

from __future__ import annotations

import asyncio
import inspect

IDLE_LOOK = 0.05  # s: how often an idle queue looks for work anyway (a missed wake costs at most this)


class _Nap(float):
    """The queue's idle sleep in seconds, as gradio expects a float, with the event that ends it early (one per
    event loop: a closed app launched again runs its queue in a new loop)."""

    def wake(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if getattr(self, "_loop", None) is not loop:
            self._loop, self._event = loop, asyncio.Event()
        return self._event


class _Asyncio:
    """The `asyncio` gradio's queue module sees: the real one, but a `_Nap` ends when its queue has work."""

    def __getattr__(self, name):
        return getattr(asyncio, name)

    @staticmethod
    async def sleep(delay, result=None):
        if not isinstance(delay, _Nap):
            return await asyncio.sleep(delay, result)
        try:
            await asyncio.wait_for(delay.wake().wait(), float(delay))
        except TimeoutError:
            pass
        delay.wake().clear()  # the loop looks at the queue next: whatever set it is seen then
        return result


def install(queue, idle_look: float = IDLE_LOOK) -> bool:
    """Make `queue` (a gradio Queue, before its loop starts) wake on a push or a finished job; returns whether it
    could (False: this gradio's loop is not the one this was written for, and polls as before)."""
    import gradio.queueing as queueing

    try:
        loop_source = inspect.getsource(queueing.Queue.start_processing)
    except (OSError, TypeError):  # no source to check
        return False
    if "asyncio.sleep(self.sleep_when_free)" not in loop_source:
        return False
    nap = _Nap(idle_look)
    push, process_events = queue.push, queue.process_events

    async def pushed(*args, **kwargs):
        try:
            return await push(*args, **kwargs)
        finally:
            nap.wake().set()

    async def processed(*args, **kwargs):
        try:
            return await process_events(*args, **kwargs)
        finally:  # its slot and its concurrency are free now: the next request can start
            nap.wake().set()

    queue.push, queue.process_events = pushed, processed
    queue.sleep_when_free = nap
    queue.progress_update_sleep_when_free = idle_look
    if not isinstance(queueing.asyncio, _Asyncio):
        queueing.asyncio = _Asyncio()
    return True
