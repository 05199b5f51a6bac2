"""A stand-in for Hugging Face's `spaces` package (ZeroGPU), put on the app's path by a test.

`spaces.GPU` records each decorated call (function, requested duration, seconds taken) as a JSON
line in $SPACES_STANDIN_LOG, and every forward pass of a UNet, VAE (TAESD too) or text encoder made outside a
GPU call is recorded as a violation: on ZeroGPU such a call would find no GPU attached.
"""

import functools
import inspect
import json
import os
import threading
import time

_inside = threading.local()
_lock = threading.Lock()


def _record(**entry) -> None:
    with _lock, open(os.environ["SPACES_STANDIN_LOG"], "a") as f:
        f.write(json.dumps(entry) + "\n")


def GPU(fn=None, *, duration=60, size="large"):  # noqa: N802 (the real package's name)
    def decorate(f):
        if inspect.isgeneratorfunction(f):  # as ZeroGPU does: the GPU is held while the generator runs

            @functools.wraps(f)
            def streamed(*args, **kwargs):
                asked = duration(*args, **kwargs) if callable(duration) else duration
                _inside.depth = getattr(_inside, "depth", 0) + 1
                start = time.perf_counter()
                try:
                    yield from f(*args, **kwargs)
                finally:
                    _inside.depth -= 1
                    _record(call=f.__name__, duration=asked, seconds=time.perf_counter() - start, size=size)

            return streamed

        @functools.wraps(f)
        def wrapped(*args, **kwargs):
            asked = duration(*args, **kwargs) if callable(duration) else duration
            _inside.depth = getattr(_inside, "depth", 0) + 1
            start = time.perf_counter()
            try:
                return f(*args, **kwargs)
            finally:
                _inside.depth -= 1
                _record(call=f.__name__, duration=asked, seconds=time.perf_counter() - start, size=size)

        return wrapped

    return decorate(fn) if fn is not None else decorate


def _guard(cls, method: str = "forward") -> None:
    real = getattr(cls, method)

    @functools.wraps(real)
    def guarded(self, *args, **kwargs):
        _record(**({"model_call": cls.__name__} if getattr(_inside, "depth", 0) else {"outside": f"{cls.__name__}.{method}"}))
        return real(self, *args, **kwargs)

    setattr(cls, method, guarded)


from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel  # noqa: E402

for _cls, _method in ((UNet2DConditionModel, "forward"), (AutoencoderKL, "encode"), (AutoencoderKL, "decode"), (AutoencoderTiny, "decode"), (CLIPTextModel, "forward"),
                      (CLIPTextModelWithProjection, "forward"), (T5EncoderModel, "forward")):
    _guard(_cls, _method)
