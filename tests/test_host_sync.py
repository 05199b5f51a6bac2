"""No host synchronisation per UNet call, proved on CPU.

On CUDA, reading a device value on the host (`float(t)`, `.item()`, `if t:`, `.tolist()`,
`.cpu()`, a linalg error check, boolean indexing) or copying host data to the device (`.to(dev)`,
indexing a device tensor with a Python list) waits for every queued kernel. The `probe` below
finds those points on a CPU run: the model's "device" is `cpu:0` (what `.device` of a device-side
tensor reports while probing), its weights and inputs are marked as device data and every op
passes the mark on, so a read of a marked tensor or a copy of an unmarked one to the device is
counted with its source line. The counts must not grow with the number of steps: host reads
happen once per inversion or edit (the residuals, the trajectory, the finiteness check), not per
step or per UNet call. The one exception is a convergence test that decides whether the UNet is
called again (fixed-point, RNRI beyond two iterations, ReNoise's divergence guard): those are
counted exactly, one per iteration but the last, as their docstrings say. An op that mixes device
data with a host tensor of more than one element would fail on CUDA ("expected all tensors to be on
the same device"): none may happen.
"""

import collections
import contextlib
import traceback

import pytest
import torch
from conftest import NaNInFloat16
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from editing import edit
from inversion.images import load_image
from inversion.inverters import get_inverter
from inversion.models import ModelError, load_model
from inversion.pipeline import invert

DEVICE = torch.device("cpu", 0)  # stands for the accelerator
MARK = "_probe_on_device"
READ_OPS = {"_local_scalar_dense", "_linalg_check_errors", "nonzero", "masked_select", "_unique2", "unique_consecutive", "unique_dim", "is_nonzero", "equal"}
INDEX_OPS = {
    "index",
    "index_put",
    "index_put_",
    "_index_put_impl_",
    "index_select",
    "index_add",
    "index_add_",
    "gather",
    "scatter",
    "scatter_",
    "scatter_add",
    "scatter_add_",
    "take",
    "index_copy",
    "index_copy_",
}
STEPS = (2, 5)
PROMPT = "a cat sitting on the grass"


# ---- the probe ----------------------------------------------------------------------------
def mark(*tensors):
    for t in tensors:
        if isinstance(t, torch.Tensor):
            setattr(t, MARK, True)


def marked(t) -> bool:
    return isinstance(t, torch.Tensor) and getattr(t, MARK, False)


def on_device(model):
    """The model as if on an accelerator: `cpu:0` as its device, its weights marked."""
    model.device = DEVICE
    for m in vars(model).values():
        if isinstance(m, torch.nn.Module):
            mark(*m.parameters(), *m.buffers())
    return model


def _is_device(d) -> bool:
    return isinstance(d, torch.device | str) and torch.device(d) == DEVICE


class Probe(TorchDispatchMode):
    """Counts (kind, first inversion/ or editing/ source line) of every would-be synchronisation."""

    def __init__(self):
        super().__init__()
        self.events = collections.Counter()

    def note(self, kind: str) -> None:
        frames = traceback.extract_stack()[:-2]
        site = next(
            (
                f"{f.filename.rsplit('/', 2)[-2]}/{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}"
                for f in reversed(frames)
                if "/inversion/" in f.filename or "/editing/" in f.filename
            ),
            "?",
        )
        self.events[(kind, site)] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        device_in = any(marked(a) for a in tensors)
        if name in READ_OPS and device_in:
            self.note(f"read:{name}")
        if name in INDEX_OPS and marked(args[0]):
            index = [a for a in tree_flatten(args[1:])[0] if isinstance(a, torch.Tensor) and a.dtype in (torch.long, torch.int, torch.bool)]
            if any(not marked(i) and i.dim() > 0 for i in index):
                self.note("h2d:host index")
            if name == "index" and any(i.dtype == torch.bool for i in index):
                self.note("read:boolean index")
        if name == "copy_" and marked(args[1]) != marked(args[0]) and args[1].dim() > 0:
            self.note("d2h:copy_" if marked(args[1]) else "h2d:copy_")
        elif device_in and name not in INDEX_OPS and any(not marked(a) and a.dim() > 0 for a in tensors):
            self.note(f"mixed:{name}")  # a host tensor (not a CPU scalar) in a device op: an error on CUDA
        out = func(*args, **kwargs)
        if device_in or (not tensors and _is_device(kwargs.get("device"))):  # derived from device data, or made there
            mark(*(o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)))
        return out

    def count(self, keep=lambda kind, site: True) -> int:
        return sum(n for (kind, site), n in self.events.items() if keep(kind, site))


@contextlib.contextmanager
def probing():
    probe = Probe()
    T = torch.Tensor
    saved = {n: T.__dict__.get(n) for n in ("tolist", "numpy", "cpu", "__array__", "to", "device")}
    base = {n: getattr(T, n) for n in saved}

    def reader(n):
        def read(self, *a, **k):
            if marked(self):
                probe.note(f"d2h:{n}")
            return base[n](self, *a, **k)

        return read

    def to(self, *a, **k):
        target = next((x for x in (*a, *k.values()) if isinstance(x, torch.Tensor | torch.device | str)), None)
        dst_device = marked(target) if isinstance(target, torch.Tensor) else _is_device(target) if target is not None else marked(self)
        if _is_device(target):  # really: stay on the CPU
            a = tuple(torch.device("cpu") if x is target else x for x in a)
            k = {n: torch.device("cpu") if x is target else x for n, x in k.items()}
        out = base["to"](self, *a, **k)
        if dst_device and not marked(self):
            probe.note("h2d:to")
            out = out.clone() if out is self else out  # a copy, as on the accelerator
            mark(out)
        elif target is not None and not dst_device and marked(self):
            probe.note("d2h:to")
        return out

    for n in ("tolist", "numpy", "cpu", "__array__"):
        setattr(T, n, reader(n))
    T.to = to
    T.device = property(lambda self: DEVICE if marked(self) else torch._C.TensorBase.device.__get__(self))
    try:
        with probe:
            yield probe
    finally:
        for n, v in saved.items():
            if v is None:
                delattr(T, n)
            else:
                setattr(T, n, v)


# ---- the models, as on an accelerator ---------------------------------------------------------
@pytest.fixture(scope="module")
def models():
    return {name: on_device(load_model(name)) for name in ("tiny-sd", "tiny-lcm")}


def _inputs(model, image):
    """x0 and a fresh conditioning, device data as `encode_image` and `encode_prompt` make them."""
    x0 = model.encode_image(model.prepare_image(load_image(image)))
    cond = model.encode_prompt(PROMPT)
    mark(x0, cond.text, cond.uncond)
    return x0, cond


def _convergence_reads(name: str, inv, p: dict) -> int:
    """The documented host reads: one per iteration that decides whether the UNet is called again."""
    total = 0
    for k, res in enumerate(inv.residuals):
        if name in ("fixed-point", "rnri") and p.get("newton") != "l1":
            total += max(0, min(len(res) - 1, p["iterations"] - 2))
        elif name == "renoise":
            stop = get_inverter("renoise").averaging_range(inv.timesteps[inv.num_steps - 1 - k], p)[1]
            total += len(res) - (len(res) == stop)  # the last iteration's guard is decided on the device
    return total


def _is_convergence_test(kind: str, site: str) -> bool:
    return (
        kind == "read:_local_scalar_dense"
        and site.split(":")[0] in ("inverters/fixed_point.py", "inverters/rnri.py", "inverters/renoise.py")
        and "solve_step" in site.split(" ")[-1]  # under mutmut: xǁ...ǁsolve_step__mutmut_orig
    )


INVERSIONS = [
    ("ddim", {}),
    ("easyinv", {}),
    ("fixed-point", {}),
    ("renoise", {}),
    ("rnri", {}),
    ("rnri", {"iterations": 4, "tolerance": 0.05}),
    ("rnri", {"newton": "l1", "iterations": 3}),
    ("iterinv", {"iterations": 2}),  # its own gradient step (what it runs on SR stages), on a single stage
]


@pytest.mark.parametrize("model_name", ["tiny-sd", "tiny-lcm"])
@pytest.mark.parametrize("name,params", INVERSIONS, ids=[f"{n}-{'-'.join(map(str, p.values()))}" if p else n for n, p in INVERSIONS])
def test_an_inversion_reads_the_host_once_not_per_step(models, cat_image, model_name, name, params):
    model, inverter = models[model_name], get_inverter(name)
    p = inverter.resolve_params(model.defaults, **params)
    counts, seen = {}, {}
    for steps in STEPS:
        x0, cond = _inputs(model, cat_image)
        with probing() as probe:
            inv = inverter.invert(model, x0, cond, steps, **params)
        assert probe.count(_is_convergence_test) == _convergence_reads(name, inv, p), probe.events
        seen[steps] = collections.Counter({(kind, site): n for (kind, site), n in probe.events.items() if not _is_convergence_test(kind, site)})
        counts[steps] = sum(seen[steps].values())
        assert not [e for e in probe.events if e[0].startswith("mixed")], probe.events
    assert counts[STEPS[0]] == counts[STEPS[1]], f"grows with the steps: {seen[STEPS[1]] - seen[STEPS[0]]}"
    assert counts[STEPS[1]] <= 10, seen[STEPS[1]]  # a few per inversion: the results, the finiteness check, one-off copies
    assert all(isinstance(r, float) for res in inv.residuals for r in res)  # read once, still Python floats


EDITS = [
    ("p2p", {}),
    ("p2p", {"blend_words": "cat"}),
    ("p2p", {"pin_source": True, "target": "a small dog sitting on the grass", "reweight_words": "small:2"}),  # refine + reweight
    ("p2p", {"region": True}),
    ("masactrl", {}),
    ("masactrl", {"mask_word": "cat", "mask_target_word": "dog"}),
    ("masactrl", {"region": True}),
    ("diffedit", {}),
    ("diffedit", {"background": "reconstruction"}),
]


@pytest.mark.parametrize("model_name", ["tiny-sd", "tiny-lcm"])
@pytest.mark.parametrize("editor,params", EDITS, ids=[f"{e}-{'-'.join(map(str, p))}" if p else e for e, p in EDITS])
def test_an_edit_reads_the_host_once_not_per_step(models, cat_image, model_name, editor, params):
    model = models[model_name]
    params = dict(params)
    target = params.pop("target", "a dog sitting on the grass")
    if params.pop("region", False):
        params["region"] = torch.zeros(64, 64)
        params["region"][8:30, 20:41] = 1
    counts, seen = {}, {}
    for steps in STEPS:
        inv = invert(model, cat_image, PROMPT, "ddim", steps=steps)  # its tensors are on the host, as the library keeps them
        with probing() as probe:
            edit(model, inv, target, editor, **params)
        counts[steps], seen[steps] = probe.count(), probe.events
        assert not [e for e in probe.events if e[0].startswith("mixed")], probe.events
    assert counts[STEPS[0]] == counts[STEPS[1]], f"grows with the steps: {seen[STEPS[1]] - seen[STEPS[0]]}"
    assert counts[STEPS[1]] <= 20, seen[STEPS[1]]  # per edit: prompts, one-off copies, the mask fraction, decoding, the check


def test_the_probe_sees_reads_and_copies():
    """The probe itself: device-derived values read on the host, host values copied over."""
    w = torch.ones(3)
    mark(w)
    host = torch.arange(3.0)
    with probing() as probe:
        y = w * 2
        float(y.sum()), y.tolist(), y.cpu()
        y = y + host.to(y)  # a host tensor copied to the device
        y[[0, 2]]  # a Python list as an index: copied to the device
        bool(y.sum() > 0), torch.linalg.solve(torch.eye(3, device=y.device) + y.diag(), y[:, None])
        float(host.sum())  # host data: no synchronisation
        y * torch.ones(3), y * torch.tensor(2.0)  # a host tensor in a device op (an error on CUDA); a CPU scalar is fine
    kinds = collections.Counter(kind for kind, _ in probe.events.elements())
    assert kinds == {
        "read:_local_scalar_dense": 2,
        "d2h:tolist": 1,
        "d2h:cpu": 1,
        "h2d:to": 1,
        "h2d:host index": 1,
        "read:_linalg_check_errors": 1,
        "mixed:mul": 1,
    }
    assert torch.Tensor.device is torch._C.TensorBase.device and "to" not in torch.Tensor.__dict__  # restored


# ---- the fp16 fallback, checked once per operation ------------------------------------------------
def _fp16_tiny_sd(**nan):
    m = load_model("tiny-sd")
    m.unet_module.to(torch.float16)
    m.text_encoder.to(torch.float16)
    m.dtype = torch.float16
    m.unet_module = NaNInFloat16(m.unet_module, **nan)
    return m


@pytest.mark.parametrize("inverter", ["ddim", "fixed-point"])
def test_a_float16_nan_mid_inversion_redoes_the_inversion_in_float32(cat_image, inverter):
    """The NaN (third UNet call) is found once, after the loop: the model moves to float32, warns the
    request, and the whole inversion runs again, so the result is a float32 inversion's (no step
    left from float16), NFE counting that run."""
    m = _fp16_tiny_sd(at=3)
    x0, cond = m.encode_image(m.prepare_image(load_image(cat_image))), m.encode_prompt(PROMPT)
    with m.measure() as meter:
        inv = get_inverter(inverter).invert(m, x0, cond, 3)
    assert m.unet_module.calls >= 3 and m.dtype == torch.float32 and any("float16" in w for w in meter.warnings)
    ref = get_inverter(inverter).invert(m, x0, cond, 3)  # the same inputs, float32 from the start
    assert torch.equal(inv.latents, ref.latents) and inv.residuals == ref.residuals and inv.nfe == ref.nfe
    assert meter.nfe == ref.nfe  # the discarded attempt's calls are not NFE


def test_a_float16_nan_mid_edit_redoes_the_edit_in_float32(cat_image):
    m = _fp16_tiny_sd(at=0)  # armed below
    inv = invert(m, cat_image, PROMPT, "ddim", steps=3)
    m.unet_module.at = m.unet_module.calls + 2  # the edit's second UNet call
    out = edit(m, inv, "a dog sitting on the grass", "p2p")
    assert m.dtype == torch.float32 and any("float16" in w for w in out.warnings)
    again = edit(m, inv, "a dog sitting on the grass", "p2p")
    assert torch.equal(out.image, again.image) and out.nfe == again.nfe == 3 and again.warnings == []


def test_nan_in_float32_is_still_an_error_after_the_loop(cat_image):
    m = load_model("tiny-sd")
    m.unet_module = NaNInFloat16(m.unet_module, always=True)
    for inverter in ("ddim", "renoise", "fixed-point"):
        with pytest.raises(ModelError, match="NaN or inf"):
            invert(m, cat_image, PROMPT, inverter, steps=2)
    clean = load_model("tiny-sd")
    inv = invert(clean, cat_image, PROMPT, "ddim", steps=2)
    clean.unet_module = NaNInFloat16(clean.unet_module, always=True)
    for editor, params in (("p2p", {}), ("masactrl", {"mask_word": "cat", "mask_target_word": "dog"}), ("diffedit", {})):
        with pytest.raises(ModelError, match="NaN or inf"):
            edit(clean, inv, "a dog sitting on the grass", editor, **params)
