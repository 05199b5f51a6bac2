"""Edit an inverted image: the library's editing entry point.

    from inversion import load_model, invert
    from editing import edit
    model = load_model("shapes")
    inv = invert(model, image, "a red circle on a blue background", inverter="rnri", steps=20)
    out = edit(model, inv, "a green circle on a blue background", editor="p2p")
    out.image, out.source_image, out.nfe, out.seconds

On a pixel cascade the base stage is edited; each super-resolution stage then
samples from its own inverted z_T (with its recorded noise) conditioned on the
edited low-res image, so detail the SR inversion recovered carries over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from inversion.errors import IncompatibleChoice, ParameterError, PromptError
from inversion.models.base import DiffusionModel
from inversion.models.cascade import Cascade, as_cascade, base_stage
from inversion.result import CascadeInversion, Inversion, stage_inversions
from inversion.sampling import reconstruct_latent

from .base import Editor
from .diffedit import DiffEdit
from .loop import run_branches
from .masactrl import MasaCtrl
from .p2p import P2P

EDITORS: dict[str, Editor] = {e.name: e for e in (P2P(), MasaCtrl(), DiffEdit())}


@dataclass
class EditOutput:
    image: torch.Tensor  # the edit, (1, 3, H, W) in [-1, 1]
    editor: str
    params: dict
    nfe: int
    seconds: float
    mask: torch.Tensor | None = None
    info: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # raised during this edit (e.g. a float16 fallback)
    previewed: bool = False  # the image came from the fast preview decoder, not the full one
    source: Callable[[], torch.Tensor | None] = field(default=lambda: None, repr=False)  # makes the source branch's top-stage latent
    decode: Callable | None = field(default=None, repr=False)  # the top stage's decoder, for `source_image`
    guidance: float | None = None  # the target branch's guidance, as used (the model's default when none was given)
    _made: dict = field(default_factory=dict, init=False, repr=False)

    @property
    def source_latent(self) -> torch.Tensor | None:
        """The source branch (= the reconstruction) at the top stage, when the editor ran one. A
        cascade's SR stages make it on first use (not counted in `nfe`): callers usually hold the
        reconstruction already, and the edit alone samples the SR stages at batch 1."""
        if "latent" not in self._made:
            self._made["latent"] = self.source()
        return self._made["latent"]

    @property
    def source_image(self) -> torch.Tensor | None:
        """The source branch as an image, decoded on first use (on a latent model the VAE decode is a
        large share of an edit)."""
        if "image" not in self._made:
            z = self.source_latent
            self._made["image"] = None if z is None else self.decode(z)
        return self._made["image"]


def get_editor(name: str) -> Editor:
    try:
        return EDITORS[name]
    except KeyError:
        raise ParameterError(f"unknown editor {name!r}; choose one of: {', '.join(EDITORS)}") from None


def validate_edit(model: DiffusionModel | Cascade, source_prompt: str, target_prompt: str, editor: str, **params) -> dict:
    """Check an edit's choices before inverting anything; returns the resolved parameters."""
    ed = get_editor(editor)
    if not isinstance(target_prompt, str) or not target_prompt.strip():
        raise PromptError("the target prompt is empty: describe the edited image")
    base = base_stage(model)
    base.check_prompt(target_prompt)
    p = ed.resolve_params(base.defaults, **params)
    ed.validate(base, source_prompt, target_prompt, p)
    return p


def edit(
    model: DiffusionModel | Cascade,
    inv: Inversion | CascadeInversion,
    target_prompt: str,
    editor: str = "p2p",
    guidance: float | None = None,
    progress=None,
    region=None,
    preview: bool = False,
    **params,
) -> EditOutput:
    """Edit the base stage with the editor; a cascade's SR stages then sample the edit (and the
    source branch, batched) from their own inverted z_T, conditioned on the edited low-res image.

    `region`: an optional mask of the input image (H x W, nonzero = edit here; tensor or array),
    painted by the user: it replaces DiffEdit's automatic mask, serves as P2P's LocalBlend and as
    MasaCtrl's foreground. It is brought to the base stage's latent grid, a cell counting as
    painted when any of its pixels is. `preview`: decode the edit with the model's fast preview
    decoder where it has one (TAESD on SD-family models; live mode), else as usual."""
    ed = get_editor(editor)
    cascade, stages = as_cascade(model), stage_inversions(inv)
    if len(stages) != len(cascade.stages):
        raise IncompatibleChoice(f"this inversion does not belong to {model.name}")
    p = validate_edit(model, stages[0].prompt, target_prompt, editor, **params)
    g = cascade.base.default_edit_guidance if guidance is None else float(guidance)
    with cascade.measure() as meter:
        painted = latent_region(region, stages[0].x0)
        # the finiteness of the base stage's noise predictions is read once, after the edit (fp16 fallback: the edit again)
        result = cascade.base.checked(lambda: ed.edit(cascade.base, stages[0], target_prompt, g, p, progress=progress, region=painted))
        # DiffEdit promises the input outside its mask: the SR stages paste their own inverted trajectory there too
        kept = result.mask if ed.name == "diffedit" and result.mask is not None else None
        image = _through_sr_stages(cascade, stages, target_prompt, result.latent, kept)
        image = (cascade.top.preview if preview else cascade.top.decode)(image)

    def source():
        return None if result.source_latent is None else _through_sr_stages(cascade, stages, stages[0].prompt, result.source_latent)

    return EditOutput(image, ed.name, result.params, meter.nfe, meter.seconds, result.mask, result.info, meter.warnings, preview and cascade.top.has_preview,
                      source, cascade.top.decode, guidance=g)


@torch.no_grad()
def _through_sr_stages(cascade: Cascade, stages: list[Inversion], prompt: str, latent: torch.Tensor, kept: torch.Tensor | None = None) -> torch.Tensor:
    """A base-stage latent through a cascade's SR stages: each samples from its own inverted z_T (and
    recorded noise), conditioned on `prompt` and the stage below's image. `kept`: the base stage's edit
    mask; outside it (brought to each stage's grid, any overlap counting as edited) every SR step is
    pasted from the stage's inverted trajectory, so the input stays the input there at full size."""
    for s in range(1, len(cascade.stages)):
        stage, r = cascade.stages[s], stages[s]
        cond = cascade.condition(s, prompt, r.guidance, r.negative_prompt, cascade.stages[s - 1].decode(latent), r.condition_noise)
        if kept is None:
            latent = reconstruct_latent(stage, r, cond)
            continue
        m = (F.interpolate(kept.float(), size=r.x0.shape[-2:], mode="bilinear", align_corners=False) > 0).float().to(stage.device)
        trajectory = r.to(stage.device)

        def paste(j, x, m=m, trajectory=trajectory):
            return x * m + trajectory.latent_after(j).to(x) * (1 - m)

        latent = run_branches(stage, r, cond, r.z_T, after_step=paste)
    return latent


def latent_region(region, latent: torch.Tensor) -> torch.Tensor | None:
    """A painted mask (H x W, or (1, 1, H, W)) on the latent's grid: max-pooled, so a cell counts as
    painted when any pixel of it is; refused when empty (nothing to edit)."""
    if region is None:
        return None
    m = torch.as_tensor(region).float()
    while m.dim() < 4:
        m = m[None]
    if m.shape[0] != 1 or m.shape[1] != 1:
        raise ParameterError(f"the edit region must be one mask (H x W), got shape {tuple(m.shape)}")
    m = (m > 0).float()
    if not m.any():
        raise ParameterError("the painted edit region is empty: paint where the edit should happen, or clear it")
    h, w = latent.shape[-2:]
    if m.shape[-2] % h == 0 and m.shape[-1] % w == 0:
        m = F.max_pool2d(m, (m.shape[-2] // h, m.shape[-1] // w))
    else:
        m = (F.interpolate(m, size=(h, w), mode="area") > 0).float()
    return m.to(latent.device)
