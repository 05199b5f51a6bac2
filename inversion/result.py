"""`Inversion`: what an inverter returns and what reconstruction and editors consume.

It holds the whole trajectory, not just z_T: editors pin their source branch to
it (and DiffEdit pastes its background from it), and stochastic samplers (LCM)
need the per-step noise to retrace it. It also records the sampler and its
timesteps, so a consumer can check compatibility instead of silently resampling,
and it saves to / loads from one safetensors file for reuse.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import IncompatibleInversion
from .schedule import Sampler


@dataclass
class Inversion:
    model: str
    inverter: str
    prompt: str
    guidance: float
    sampler: str  # "ddim", "lcm" or "euler_a"
    timesteps: tuple[int, ...]  # sampling order (descending)
    latents: torch.Tensor  # (N+1, B, C, H, W); [0] = clean x0, [k] at timesteps[N-k], [N] = z_T
    noises: torch.Tensor | None = None  # (N, B, C, H, W): the noise of sampling step j, the last step's residual (stochastic samplers)
    params: dict = field(default_factory=dict)
    nfe: int = 0
    seconds: float = 0.0
    residuals: list[list[float]] = field(default_factory=list)  # per inversion step, one per UNet call
    negative_prompt: str = ""
    stage: int = 0  # cascade stage (0 = base)
    condition_noise: torch.Tensor | None = None  # SR stages: the augmentation noise of the low-res condition
    seed: int = 0
    schedule_steps: int = 0  # the schedule's step count when strength < 1 inverted only its last steps (0: all)

    @property
    def num_steps(self) -> int:
        """Steps inverted (and sampled again by reconstructions and edits)."""
        return len(self.timesteps)

    @property
    def steps(self) -> int:
        """The schedule's step count (what the user asked for); num_steps of them were inverted."""
        return self.schedule_steps or self.num_steps

    @property
    def z_T(self) -> torch.Tensor:
        return self.latents[-1]

    @property
    def x0(self) -> torch.Tensor:
        return self.latents[0]

    def latent_before(self, j: int) -> torch.Tensor:
        """The latent at timesteps[j]: the input of sampling step j."""
        return self.latents[self.num_steps - j]

    def latent_after(self, j: int) -> torch.Tensor:
        """What sampling step j must land on."""
        return self.latents[self.num_steps - j - 1]

    def noise(self, j: int) -> torch.Tensor | None:
        return None if self.noises is None else self.noises[j]

    def to(self, device) -> Inversion:
        """This inversion with its tensors on `device`, one copy each (the same object where they are
        there already). Editors replay the trajectory and the recorded noise from it, so their
        steps read device tensors instead of copying host tensors over (a host sync on CUDA)."""
        moved = {k: getattr(self, k).to(device) for k in ("latents", "noises", "condition_noise") if getattr(self, k) is not None}
        return self if all(v is getattr(self, k) for k, v in moved.items()) else replace(self, **moved)

    def check_compatible(self, sampler: Sampler, model_name: str | None = None) -> None:
        if model_name is not None and model_name != self.model:
            raise IncompatibleInversion(f"this inversion was made with {self.model!r}, not {model_name!r}")
        if sampler.kind != self.sampler or tuple(sampler.timesteps) != tuple(self.timesteps):
            raise IncompatibleInversion(
                f"this inversion used the {self.sampler} sampler at timesteps {list(self.timesteps)}; "
                f"asked for {sampler.kind} at {list(sampler.timesteps)}. Invert again with the same number of steps."
            )
        if sampler.stochastic and self.noises is None:
            raise IncompatibleInversion("a stochastic sampler needs the inversion's recorded noise")

    def nbytes(self) -> int:
        tensors = [self.latents, self.noises, self.condition_noise]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def summary(self) -> dict:
        """JSON-friendly description (no tensors)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("latents", "noises", "condition_noise", "residuals")}
        d["timesteps"] = list(self.timesteps)
        d["shape"] = list(self.latents.shape[1:])
        return d

    # ---- persistence ----------------------------------------------------------------
    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        out = {f"{prefix}latents": self.latents}
        if self.noises is not None:
            out[f"{prefix}noises"] = self.noises
        if self.condition_noise is not None:
            out[f"{prefix}condition_noise"] = self.condition_noise
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def metadata(self) -> dict:
        d = self.summary()
        d.pop("shape")
        d["residuals"] = self.residuals
        return d

    @classmethod
    def from_parts(cls, meta: dict, tensors: dict[str, torch.Tensor], prefix: str = "") -> Inversion:
        meta = dict(meta)
        meta["timesteps"] = tuple(meta["timesteps"])
        return cls(
            **meta,
            latents=tensors[f"{prefix}latents"],
            noises=tensors.get(f"{prefix}noises"),
            condition_noise=tensors.get(f"{prefix}condition_noise"),
        )

    def save(self, path: str | Path) -> Path:
        return save_inversion(self, path)


@dataclass
class CascadeInversion:
    """One `Inversion` per stage of a pixel cascade (base first)."""

    stages: list[Inversion]

    @property
    def model(self) -> str:
        return self.stages[0].model

    @property
    def inverter(self) -> str:
        return self.stages[-1].inverter

    @property
    def nfe(self) -> int:
        return sum(s.nfe for s in self.stages)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    @property
    def residuals(self) -> list[list[float]]:
        return [r for s in self.stages for r in s.residuals]

    @property
    def num_steps(self) -> int:
        return self.stages[0].num_steps

    @property
    def steps(self) -> int:
        return self.stages[0].steps

    def nbytes(self) -> int:
        return sum(s.nbytes() for s in self.stages)

    def summary(self) -> dict:
        return {"model": self.model, "inverter": self.inverter, "nfe": self.nfe, "seconds": self.seconds, "stages": [s.summary() for s in self.stages]}

    def save(self, path: str | Path) -> Path:
        return save_inversion(self, path)


def stage_inversions(inv: Inversion | CascadeInversion) -> list[Inversion]:
    """One inversion per stage (a single model's inversion is a list of one)."""
    return inv.stages if isinstance(inv, CascadeInversion) else [inv]


def packed(stages: list[Inversion], multistage: bool) -> Inversion | CascadeInversion:
    """What the public API returns: a CascadeInversion for pixel cascades, else the one Inversion."""
    return CascadeInversion(stages) if multistage else stages[0]


def save_inversion(inv: Inversion | CascadeInversion, path: str | Path) -> Path:
    path = Path(path)
    stages = stage_inversions(inv)
    tensors, metas = {}, []
    for i, s in enumerate(stages):
        tensors.update(s.tensors(prefix=f"stage{i}."))
        metas.append(s.metadata())
    kind = "cascade" if isinstance(inv, CascadeInversion) else "single"
    save_file(tensors, str(path), metadata={"format": "inversion/1", "kind": kind, "stages": json.dumps(metas)})
    return path


def load_inversion(path: str | Path) -> Inversion | CascadeInversion:
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises several types for a bad file
        raise IncompatibleInversion(f"{path} is not an inversion file ({type(e).__name__})") from e
    if meta.get("format") != "inversion/1":
        raise IncompatibleInversion(f"{path} is a safetensors file but not an inversion saved by this program")
    stages = [Inversion.from_parts(m, tensors, prefix=f"stage{i}.") for i, m in enumerate(json.loads(meta["stages"]))]
    return CascadeInversion(stages) if meta["kind"] == "cascade" else stages[0]
