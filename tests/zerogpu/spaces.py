"""A stand-in for Hugging Face's `spaces` package (ZeroGPU), put on the app's path by a test.

`spaces.GPU` records each decorated call (function, requested duration, seconds taken) as a JSON
line in $SPACES_STANDIN_LOG, and every forward pass of a UNet, VAE (TAESD too) or text encoder made outside a
GPU call is recorded as a violation: on ZeroGPU such a call would find no GPU attached. ZeroGPU runs the call
in a worker process that holds the GPU until the call returns, so any of that process's threads may use it
meanwhile (the app computes on a model thread of its own): "inside" is while any GPU call runs, in any thread.
"""

import functools
import inspect
import json
import os
import threading
import time

_inside = {"depth": 0}  # GPU calls running now, in any thread
_lock = threading.Lock()


def _record(**entry) -> None:
    with _lock, open(os.environ["SPACES_STANDIN_LOG"], "a") as f:
        f.write(json.dumps(entry) + "\n")


def _enter(step: int) -> None:
    with _lock:
        _inside["depth"] += step


def GPU(fn=None, *, duration=60, size="large"):  # noqa: N802 (the real package's name)
    def decorate(f):
        if inspect.isgeneratorfunction(f):  # as ZeroGPU does: the GPU is held while the generator runs

            @functools.wraps(f)
            def streamed(*args, **kwargs):
                asked = duration(*args, **kwargs) if callable(duration) else duration
                _enter(1)
                start = time.perf_counter()
                try:
                    yield from f(*args, **kwargs)
                finally:
                    _enter(-1)
                    _record(call=f.__name__, duration=asked, seconds=time.perf_counter() - start, size=size)

            return streamed

        @functools.wraps(f)
        def wrapped(*args, **kwargs):
            asked = duration(*args, **kwargs) if callable(duration) else duration
            _enter(1)
            start = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                _enter(-1)
                _record(call=f.__name__, duration=asked, seconds=time.perf_counter() - start, size=size)

        return wrapped

    return decorate(fn) if fn is not None else decorate


def _guard(cls, method: str = "forward") -> None:
    real = getattr(cls, method)

    @functools.wraps(real)
    def guarded(self, *args, **kwargs):
        _record(**({"model_call": cls.__name__} if _inside["depth"] else {"outside": f"{cls.__name__}.{method}"}))
        return real(self, *args, **kwargs)

    setattr(cls, method, guarded)


from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel  # noqa: E402

for _cls, _method in ((UNet2DConditionModel, "forward"), (AutoencoderKL, "encode"), (AutoencoderKL, "decode"), (AutoencoderTiny, "decode"), (CLIPTextModel, "forward"),
                      (CLIPTextModelWithProjection, "forward"), (T5EncoderModel, "forward")):
    _guard(_cls, _method)
