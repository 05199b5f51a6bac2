"""The one small interface every algorithm talks to.

A `DiffusionModel` is one denoising stage: the training schedule and the
timesteps for N steps, `predict_noise` (classifier-free guidance inside, one NFE
per UNet batch), the image codec (VAE or identity for pixel models) and the
prompt encoder. Inverters, reconstruction and editors never touch a UNet or a
scheduler directly, so the same code runs on Stable Diffusion, LCM, DeepFloyd-IF
stages, our trained `shapes` cascade and the closed-form oracle.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import torch
from PIL import Image

from ..errors import ModelError, ParameterError, PromptError
from ..images import to_model_tensor
from ..schedule import LCM_TIMESTEP_SCALING, Sampler, clamp_x0

log = logging.getLogger("inversion")
T = TypeVar("T")


@dataclass
class Meter:
    """What one operation cost and raised: UNet calls (NFE), seconds, user-visible warnings.

    Opened with `measuring(stages)` around the operation, so every operation counts its own
    calls instead of reading a total shared by all requests on the model."""

    nfe: int = 0
    warnings: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    check: Callable[[], None] | None = None  # called before every UNet call: raises to stop the operation (a cancel)


@contextlib.contextmanager
def measuring(stages):
    """A Meter that counts the UNet calls and collects the warnings of `stages` inside the block."""
    meter = Meter()
    for s in stages:
        s.meters.append(meter)
    try:
        yield meter
    finally:
        for s in stages:
            s.meters.remove(meter)
        meter.seconds = time.perf_counter() - meter.started


class FiniteCheck:
    """A device-side AND of `isfinite` over every noise prediction of one operation: noting a
    prediction launches two small kernels and reads nothing; `ok()` is the one host read."""

    def __init__(self) -> None:
        self.flag: torch.Tensor | None = None
        self.calls = 0

    def note(self, eps: torch.Tensor) -> None:
        self.calls += 1
        finite = torch.isfinite(eps.detach()).all()
        self.flag = finite if self.flag is None else self.flag & finite

    def ok(self) -> bool:
        return self.flag is None or bool(self.flag)


@dataclass
class Conditioning:
    """Per-row conditioning for one batched UNet call.

    `guidance` is the classifier-free guidance scale of each row; rows with
    guidance 1 use the conditional prediction alone. For LCM-distilled models
    guidance enters as the UNet's w-embedding instead (no unconditional pass).
    `image` / `noise_level` are the (noise-augmented, upsampled) low-resolution
    condition of a super-resolution stage. SDXL adds the second text encoder's pooled
    embedding (`pooled`, `uncond_pooled` for the negative prompt) and its size
    micro-conditioning `time_ids` (original size, crop corner, target size); without
    `time_ids` the model takes the size of the latent it denoises (diffusers' default).
    """

    prompts: list[str]
    text: torch.Tensor  # (B, L, D)
    uncond: torch.Tensor | None  # (B, L, D) negative-prompt embeddings
    guidance: torch.Tensor  # (B,)
    image: torch.Tensor | None = None  # (B, C, H, W)
    noise_level: torch.Tensor | None = None  # (B,)
    pooled: torch.Tensor | None = None  # (B, P) SDXL: text_encoder_2's pooled, projected embedding
    uncond_pooled: torch.Tensor | None = None  # (B, P) the same for the negative prompt
    time_ids: torch.Tensor | None = None  # (B, 6) SDXL: (orig_h, orig_w, crop_top, crop_left, target_h, target_w)
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # see `memo`

    ROWS = ("text", "uncond", "guidance", "image", "noise_level", "pooled", "uncond_pooled", "time_ids")  # the per-row tensors

    def __len__(self) -> int:
        return self.text.shape[0]

    def memo(self, key, make: Callable[[], T]) -> T:
        """`make()` once per conditioning: what every UNet call derives from it (guidance on the
        device, the guidance embedding, the doubled batch of a guidance pass). A host-to-device copy
        is a host synchronisation on CUDA; made per call, every UNet call would wait for the last.
        A conditioning is not changed in place after it is built (`replace` makes a new one)."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def on_device(self, name: str, device, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Field `name` (e.g. the host-side `guidance`) on `device`, copied once per conditioning."""
        return self.memo(("on", name, str(device), dtype), lambda: getattr(self, name).to(device=device, dtype=dtype))

    def rows(self, index: list[int]) -> Conditioning:
        idx = torch.as_tensor(index, device=self.text.device)

        def pick(t):
            return None if t is None else t[idx.to(t.device)]

        return Conditioning(prompts=[self.prompts[i] for i in index], **{name: pick(getattr(self, name)) for name in self.ROWS})

    def unconditional(self) -> Conditioning:
        """The negative prompt's rows in place of the prompt's (the guidance pass's first half)."""
        return replace(self, text=self.uncond, pooled=self.uncond_pooled)

    def with_guidance(self, guidance: float | list[float]) -> Conditioning:
        g = torch.as_tensor(guidance, dtype=torch.float32).expand(len(self)).clone()
        return replace(self, guidance=g)

    def with_image(self, image: torch.Tensor | None, noise_level: torch.Tensor | None) -> Conditioning:
        return replace(self, image=image, noise_level=noise_level)

    @staticmethod
    def cat(items: list[Conditioning]) -> Conditioning:
        def join(name):
            vals = [getattr(c, name) for c in items]
            if all(v is None for v in vals):
                return None
            if any(v is None for v in vals):
                raise ValueError(f"cannot batch conditionings where only some have {name}")
            return torch.cat(vals)

        return Conditioning(prompts=[p for c in items for p in c.prompts], **{name: join(name) for name in Conditioning.ROWS})


class NonFinite(ModelError):
    """The network's prediction overflowed (NaN/inf) even in float32: its input had left every range it
    knows (a diverging inversion, a corrupt latent)."""


def inverted_steps(num_steps: int, strength: float) -> int:
    """How many of a schedule's steps an inversion of `strength` covers (the last ones): at least one."""
    return max(1, min(num_steps, int(num_steps * strength + 1e-9)))


@dataclass(kw_only=True, eq=False)
class DiffusionModel:
    """Base class: schedule, NFE counting and guidance; subclasses supply `_forward`."""

    name: str
    family: str  # "sd", "lcm", "if", "shapes", "oracle"
    sampler_kind: str  # "ddim", "lcm" or "euler_a"
    alphas_cumprod: torch.Tensor  # float64 training schedule
    final_alpha: float
    timestep_fn: object = None  # callable n -> list[int] (descending)
    timestep_scaling: float = LCM_TIMESTEP_SCALING  # LCM's boundary-condition scaling, from its scheduler's config
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    latent_channels: int = 4
    latent_scale: int = 1  # image pixels per latent pixel (8 for SD's VAE)
    default_steps: int = 50
    max_steps: int = 1000  # the most its sampler supports (LCM: its distillation skeleton, original_inference_steps)
    default_guidance: float = 1.0  # guidance used for inversion and the source branch
    default_edit_guidance: float = 7.5  # guidance of an edit's target branch
    uses_cfg: bool = True  # False: LCM-distilled, guidance is the w-embedding
    image_size: int = 512  # default long side of the input image
    fixed_size: bool = False  # pixel models: inputs are resized to image_size x image_size
    size_multiple: int = 64  # image sides are rounded to this
    max_image_side: int = 1024
    max_tokens: int = 77
    clip_x0: float | None = None  # pixel models: clamp the guided x0 estimate to [-c, c]
    vocabulary: frozenset[str] | None = None  # the words it was trained on, where that is a closed set (shapes)
    default_inverter: str = "rnri"  # what the app offers first (README: why shapes-lcm's is ddim)
    description: str = ""
    meters: list[Meter] = field(default_factory=list, repr=False)  # the operations measuring this stage now
    checks: dict[int, FiniteCheck] = field(default_factory=dict, init=False, repr=False)  # thread -> its running `checked` operation's

    @property
    def defaults(self) -> tuple[str, ...]:
        """Keys that pick per-model parameter defaults, most specific first: the family
        (e.g. shapes' clamped denoiser), then the sampler (few-step LCM settings)."""
        return (self.family, self.sampler_kind)

    # ---- schedule -------------------------------------------------------------------
    def timesteps(self, num_steps: int) -> list[int]:
        if num_steps < 1:
            raise ValueError(f"steps must be at least 1, got {num_steps}")
        if num_steps > self.max_steps:
            raise ParameterError(f"{self.name}'s {self.sampler_kind.upper()} sampler takes at most {self.max_steps} steps, got {num_steps}")
        return [int(t) for t in self.timestep_fn(num_steps)]

    def measure(self):
        """`with model.measure() as m:` ... m.nfe, m.seconds, m.warnings."""
        return measuring([self])

    def warn(self, message: str) -> None:
        """A notice for whoever is measuring (the request that caused it) and the log."""
        log.warning("%s: %s", self.name, message)
        for m in self.meters:
            m.warnings.append(message)

    def sampler(self, num_steps: int, strength: float = 1.0) -> Sampler:
        """The sampler for a schedule of `num_steps`; with `strength` < 1 only its last
        int(strength x num_steps) steps (at least one), as img2img and the official RNRI code start."""
        full = Sampler(self.sampler_kind, tuple(self.timesteps(num_steps)), self.alphas_cumprod, self.final_alpha, timestep_scaling=self.timestep_scaling)
        return full if strength >= 1 else full.tail(inverted_steps(num_steps, strength))

    def sampler_for(self, inv) -> Sampler:
        """The sampler an inversion was made on (its schedule, from the step it started at)."""
        return self.sampler(inv.steps).tail(min(inv.num_steps, inv.steps))

    # ---- prompts --------------------------------------------------------------------
    @staticmethod
    def prompt_list(prompts: str | list[str]) -> list[str]:
        """One prompt or several, as a list of text (anything else refused with a message)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        for p in prompts:
            if not isinstance(p, str):
                raise PromptError(f"a prompt must be text, got {type(p).__name__}")
        return prompts

    def encode_prompt(self, prompts: str | list[str], guidance: float | None = None, negative: str = "") -> Conditioning:
        """Embed prompts (one row each) and the negative prompt used for guidance."""
        prompts = self.prompt_list(prompts)
        g = self.default_guidance if guidance is None else float(guidance)
        text = self._embed(prompts)
        uncond = self._embed([negative] * len(prompts)) if self.uses_cfg else None
        return Conditioning(list(prompts), text, uncond, torch.full((len(prompts),), g))

    def _embed(self, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def token_count(self, prompt: str) -> int:
        """Tokens the prompt takes, including start/end tokens."""
        raise NotImplementedError

    def check_prompt(self, prompt: str) -> None:
        n = self.token_count(prompt)
        if n > self.max_tokens:
            raise PromptError(
                f"the prompt is {n} tokens long but {self.name}'s text encoder reads at most {self.max_tokens} "
                f"(start and end tokens included); shorten it by about {n - self.max_tokens} tokens"
            )

    # ---- noise prediction -----------------------------------------------------------
    def uses_guidance_pass(self, cond: Conditioning) -> bool:
        return self.uses_cfg and bool((cond.guidance != 1).any())

    def batch_layout(self, cond: Conditioning) -> list[tuple[int, str]]:
        """(row of `cond`, "u"/"c") for each row of the UNet batch that predict_noise builds."""
        rows = [(i, "c") for i in range(len(cond))]
        if self.uses_guidance_pass(cond):
            rows = [(i, "u") for i in range(len(cond))] + rows
        return rows

    def predict_noise(self, x: torch.Tensor, t: int, cond: Conditioning) -> torch.Tensor:
        """eps(x_t, t | cond) with guidance per row; counts one NFE per UNet batch."""
        if x.shape[0] != len(cond):
            raise ValueError(f"batch of {x.shape[0]} latents but {len(cond)} conditioning rows")
        for m in self.meters:
            if m.check is not None:
                m.check()
            m.nfe += 1
        eps = self._guided(x, t, cond)
        check = self.checks.get(threading.get_ident())
        if check is not None:  # inside `checked`: noted on the device, read once at its end
            check.note(eps)
        elif not torch.isfinite(eps).all():  # a lone call: one host read, the call redone in fp32 if needed
            eps = self._recover_non_finite(lambda: self._guided(x, t, cond), "noise prediction")
        if self.clip_x0 is not None:
            eps = clamp_x0(x.float(), eps, float(self.alphas_cumprod[t]), self.clip_x0)
        return eps

    def _guided(self, x: torch.Tensor, t: int, cond: Conditioning) -> torch.Tensor:
        if not self.uses_guidance_pass(cond):
            return self._eps(x, t, cond)
        g = cond.on_device("guidance", x.device, torch.float32).view(-1, 1, 1, 1)
        both = cond.memo("guidance pass", lambda: Conditioning.cat([cond.unconditional(), cond]))
        eps_u, eps_c = self._eps(torch.cat([x, x]), t, both).chunk(2)
        return torch.where(g == 1, eps_c, eps_u + g * (eps_c - eps_u))

    def _recover_non_finite(self, compute, what: str) -> torch.Tensor:
        """fp16 overflow (NaN/inf, the "black image" failure): redo the call in fp32, once."""
        self._fall_back_to_float32(what)
        out = compute()
        if not torch.isfinite(out).all():
            raise NonFinite(f"{self.name} produced NaN or inf in its {what} even in float32")
        return out

    def _fall_back_to_float32(self, what: str) -> None:
        if self.dtype == torch.float32:
            raise NonFinite(f"{self.name} produced NaN or inf in its {what} even in float32")
        self.to_float32()
        self.warn(f"{what} overflowed in float16 (NaN/inf); {self.name} now runs in float32")

    def checked(self, operation: Callable[[], T]) -> T:
        """Run `operation` (a whole inversion, sampling run or edit on this stage) with the finiteness
        of its noise predictions kept on the device and read once, at its end, instead of after every
        UNet call (on CUDA a read is a host synchronisation: the host would wait for each call).

        The fp16 fallback stays: if any prediction was NaN/inf, the model moves to float32 (with
        the warning a lone call gives) and the operation runs again from its start, once; in float32
        that is a ModelError. An exception raised by the operation after a non-finite prediction
        (NaN making a step fail) counts as that prediction's failure. The NFE the discarded attempt
        added to the open meters is taken back (NFE counts the calls of the run that made the result,
        as the per-call fallback never counted its redone call); seconds keep it. Nested: an inner
        `checked` on the same stage runs inside the outer one's check. One check per thread: calls
        from another thread are not folded into this operation's."""
        thread = threading.get_ident()
        if thread in self.checks:
            return operation()
        what = "noise prediction"
        for attempt in range(2):
            check = FiniteCheck()
            open_meters = list(self.meters)
            self.checks[thread] = check
            try:
                out = operation()
            except Exception as e:
                if check.ok():  # a real failure, not a consequence of a non-finite prediction
                    raise
                if attempt == 1:
                    raise NonFinite(f"{self.name} produced NaN or inf in its {what} even in float32") from e
                self._fall_back_to_float32(what)
            else:
                if check.ok():
                    return out
                if attempt == 1:
                    raise NonFinite(f"{self.name} produced NaN or inf in its {what} even in float32")
                self._fall_back_to_float32(what)
            finally:
                del self.checks[thread]
            for m in open_meters:
                m.nfe -= check.calls
        raise AssertionError("unreachable")

    def to_float32(self) -> None:
        """Move the model's modules to float32 (the NaN fallback)."""
        self.dtype = torch.float32

    def _eps(self, x: torch.Tensor, t: int, cond: Conditioning) -> torch.Tensor:
        raise NotImplementedError

    # ---- images ---------------------------------------------------------------------
    def prepare_image(self, image: Image.Image, size: int | None = None) -> torch.Tensor:
        """PIL image -> (1, 3, H, W) in [-1, 1] at the size this model takes."""
        return to_model_tensor(
            image,
            long_side=size or self.image_size,
            multiple=self.size_multiple,
            square=self.fixed_size,
            max_side=self.max_image_side,
        ).to(self.device)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] -> the tensor the sampler works on (float32)."""
        raise NotImplementedError

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """The sampler's tensor -> image in [-1, 1] (float32)."""
        raise NotImplementedError

    def preview(self, latent: torch.Tensor) -> torch.Tensor:
        """A fast approximate decode for live previews; the full decode where there is none."""
        return self.decode(latent)

    @property
    def has_preview(self) -> bool:
        return False

    @property
    def unet(self):
        """The UNet whose attention editors control, or None (oracle)."""
        return None
