"""One attention-control substrate for every editor.

- `layer_registry(unet)`: each attention layer's place (down/mid/up), block,
  resolution level, execution order and kind (self/cross), parsed from the
  processor names -- never from dict order (diffusers lists down, up, mid) and
  never from hard-coded layer counts, so SD-, SDXL- and tiny-shaped UNets share
  one configuration.
- `Controller`: per-edit state the processors read. The editing loop sets the
  step and the batch layout (which UNet row is which branch and guidance half)
  before each UNet call, so extra calls never shift a call counter.
- `EditAttnProcessor`: one processor, numerically the same as diffusers'
  AttnProcessor2_0 (SDPA, probabilities never built), that hands q/k/v to the
  controller, which may route them between branches. Attention maps are
  computed explicitly only in the layers and token columns a controller asks
  for, and averaged, never all stored.
- `controlled(unet, controller)`: installs the processors on the layers the
  controller wants and always restores the originals, also when an edit raises.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from inversion.errors import UnsupportedAttention

_NAME = re.compile(
    r"^(?P<place>down_blocks|mid_block|up_blocks)(?:\.(?P<block>\d+))?\.attentions\.(?P<att>\d+)"
    r"\.transformer_blocks\.(?P<tb>\d+)\.(?P<which>attn1|attn2)\.processor$"
)
_PLACE_RANK = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


@dataclass(frozen=True)
class LayerInfo:
    name: str  # processor key
    place: str  # "down", "mid", "up"
    block: int
    attention: int
    transformer: int
    kind: str  # "self" or "cross"
    level: int  # 0 = full latent resolution, grows with depth
    side: int  # the level's map side at the UNet's native size (config sample_size): SD at 512 px 64, 32, 16, 8
    order: int  # execution order among all controlled attention layers
    block_order: int  # execution order of its transformer block (attn1/attn2 share it)

    @property
    def is_self(self) -> bool:
        return self.kind == "self"


def layer_registry(unet) -> list[LayerInfo]:
    """Parse every attention processor of a UNet2DConditionModel into LayerInfo, in execution order."""
    n_levels = len(unet.config.block_out_channels)
    native = unet.config.sample_size or 64
    native = min(native) if isinstance(native, (list, tuple)) else native
    parsed = []
    for name in unet.attn_processors:
        m = _NAME.match(name)
        if m is None:
            continue
        place = m["place"]
        block = int(m["block"] or 0)
        level = {"down_blocks": block, "mid_block": n_levels - 1, "up_blocks": n_levels - 1 - block}[place]
        key = (_PLACE_RANK[place], block, int(m["att"]), int(m["tb"]), m["which"])
        parsed.append((key, name, place.split("_")[0], block, int(m["att"]), int(m["tb"]), "self" if m["which"] == "attn1" else "cross", level))
    if not parsed:
        raise UnsupportedAttention(
            "this UNet has no separate self-/cross-attention layers (e.g. DeepFloyd-IF's joint added-KV attention); "
            "Prompt-to-Prompt and MasaCtrl need them. DiffEdit works on any model."
        )
    parsed.sort()
    blocks = sorted({k[:4] for k, *_ in parsed})
    return [
        LayerInfo(name, place, block, att, tb, kind, level, -(-native // 2**level), order, blocks.index(key[:4]))
        for order, (key, name, place, block, att, tb, kind, level) in enumerate(parsed)
    ]


def spatial_shape(tokens: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of a layer with `tokens` queries, from the latent's (H, W) (stride-2 levels, ceil)."""
    h, w = latent_hw
    while h * w > tokens:
        h, w = (h + 1) // 2, (w + 1) // 2
    if h * w != tokens:
        raise ValueError(f"cannot place {tokens} tokens on a {latent_hw} latent")
    return h, w


def fraction_to_steps(fraction: float, num_steps: int, over: int | None = None) -> int:
    """Steps a schedule fraction covers: int(fraction * over) as the official Prompt-to-Prompt
    counts (over = num_steps + 1 for its cross-attention schedule, num_steps for self-attention),
    at least one when fraction > 0 (at 4 LCM steps 0.2 must still control a step), at most all."""
    if fraction <= 0:
        return 0
    return min(num_steps, max(1, int(fraction * (num_steps if over is None else over))))


def attention_levels(layers: list[LayerInfo], kind: str) -> list[int]:
    return sorted({info.level for info in layers if info.kind == kind})


OFFICIAL_SIDE = 16  # the official P2P and MasaCtrl codes' word maps: SD's 16x16 level at its native 512 px


def _official_level(layers: list[LayerInfo], kind: str) -> int:
    """The coarsest `kind` level whose maps are still at least 16x16 at the UNet's native size (SD and
    LCM Dreamshaper: level 2, 16x16 at 512 px, 24x24 at 768; SDXL: level 2, 32x32 at 1024 px, 16x16 at
    SDXL-Turbo's 512; our shapes: level 1, 16x16 at 32 px); where none is, the finest (the tiny test models)."""
    levels = {info.level: info.side for info in layers if info.kind == kind}
    wide = [level for level, side in levels.items() if side >= OFFICIAL_SIDE]
    return max(wide) if wide else min(levels)


def word_map_level(layers: list[LayerInfo]) -> int:
    """The cross-attention level word maps are read from (P2P's LocalBlend, MasaCtrl's masks): the
    official codes read SD's 16x16 maps, here the level that plays their part at any UNet's native size."""
    return _official_level(layers, "cross")


def deep_levels(layers: list[LayerInfo], kind: str = "self") -> set[int]:
    """P2P's self-attention levels: the official code replaces maps of at most 16x16 at SD's 512 px, here
    the word-map level and every coarser one (SD: 16x16 and 8x8; SDXL: its deepest level only)."""
    first = _official_level(layers, kind)
    return {info.level for info in layers if info.kind == kind and info.level >= first}


class WordMaps:
    """Cross-attention maps of chosen tokens, per branch (conditional rows only), summed
    over heads' mean, layers of one resolution level and steps -- the only maps kept."""

    def __init__(self, tokens: dict[str, list[int]], level: int):
        self.tokens = tokens  # branch -> token positions
        self.level = level
        self.total: dict[str, torch.Tensor] = {}
        self.hw: tuple[int, int] | None = None

    def wants(self, info: LayerInfo) -> bool:
        return not info.is_self and info.level == self.level

    def add(self, probs: torch.Tensor, controller: Controller) -> None:
        self.hw = spatial_shape(probs.shape[-2], controller.latent_hw)
        for branch, toks in self.tokens.items():
            i = controller.row(branch, "c")
            if i is not None and toks:
                m = probs[i].index_select(-1, controller.index_on(("tokens", branch), toks, probs.device)).sum(-1).mean(0)
                self.total[branch] = self.total.get(branch, 0) + m

    def mask(self, branch: str, size: tuple[int, int], threshold: float) -> torch.Tensor | None:
        """(1, 1, H, W) binary mask: 3x3 max-pooled, upsampled, max-normalised, thresholded (P2P LocalBlend).

        The official LocalBlend upsamples nearest; we upsample bilinearly (a smoother edge at
        SD's 8x latent-to-map ratio, the same mask where the map is flat)."""
        if branch not in self.total or self.hw is None:
            return None
        m = self.total[branch].view(1, 1, *self.hw)
        m = F.max_pool2d(m, 3, stride=1, padding=1)
        m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        m = m / m.max().clamp_min(1e-12)
        return (m > threshold).float()

    def minmax_mask(self, branch: str, threshold: float) -> torch.Tensor | None:
        """(1, 1, h, w) binary mask at the maps' own resolution, min-max normalised and thresholded
        (MasaCtrl's MaskAuto); None when the map is flat (no mask can be built). One host read;
        the editing loop uses `minmax_mask_flat`, which reads nothing."""
        built = self.minmax_mask_flat(branch, threshold)
        if built is None or bool(built[1]):
            return None
        return built[0]

    def minmax_mask_flat(self, branch: str, threshold: float) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mask, flat) on the device: `minmax_mask`'s mask and whether the map is flat (a 0-dim bool;
        the mask is then all foreground, which attends as plain MasaCtrl); None without a map."""
        if branch not in self.total or self.hw is None:
            return None
        m = self.total[branch].view(1, 1, *self.hw)
        lo, hi = m.min(), m.max()
        flat = (hi - lo).double() <= 1e-12  # as float(hi - lo) <= 1e-12 compared on the host
        mask = ((m - lo) / (hi - lo) > threshold).float()
        return torch.where(flat, torch.ones_like(mask), mask), flat


class Controller:
    """Default: plain attention (what diffusers computes). Editors override `self_attention` /
    `cross_attention` and `wants`, and read `rows`, `step` and `num_steps`."""

    def __init__(self, layers: list[LayerInfo], capture: WordMaps | None = None):
        self.layers = layers
        self.step = 0
        self.num_steps = 1
        self.rows: list[tuple[str, str]] = []  # (branch, role) per UNet batch row
        self.latent_hw = (1, 1)
        self.enabled = True
        self.capture = capture
        self._device_consts: dict = {}  # see `on_device`

    def on_device(self, key, make, like: torch.Tensor) -> torch.Tensor:
        """`make()` (a host tensor: routing indices, token maps, weights) on `like`'s device and in its
        dtype, copied once per edit, not per attention call: on CUDA a host-to-device copy waits for
        every queued kernel, and the processors run once per layer per step."""
        key = (key, str(like.device), like.dtype)
        if key not in self._device_consts:
            self._device_consts[key] = make().to(like)
        return self._device_consts[key]

    def index_on(self, key, index, device) -> torch.Tensor:
        """A list (or tensor) of indices as a long tensor on `device`, copied once per edit."""
        key = ("index", key, str(device))
        if key not in self._device_consts:
            self._device_consts[key] = torch.as_tensor(index, dtype=torch.long).to(device)
        return self._device_consts[key]

    def finish(self) -> None:
        """Called once after the editing loop: checks deferred there to keep host reads out of it."""

    def begin_step(self, step: int, num_steps: int, rows: list[tuple[str, str]], latent_hw: tuple[int, int]) -> None:
        self.step, self.num_steps, self.rows, self.latent_hw = step, num_steps, list(rows), latent_hw

    def wants(self, info: LayerInfo) -> bool:
        """Whether this layer gets the controlling processor at all."""
        return self.capture is not None and self.capture.wants(info)

    def row(self, branch: str, role: str) -> int | None:
        """The batch row of (branch, role), or None."""
        try:
            return self.rows.index((branch, role))
        except ValueError:
            return None

    def pairs(self, source: str = "src", target: str = "tgt") -> list[tuple[int, int, str]]:
        """(source row, target row, role) for every guidance half where both branches are present."""
        out = []
        for i, (branch, role) in enumerate(self.rows):
            if branch == target:
                s = self.row(source, role)
                if s is not None:
                    out.append((s, i, role))
        return out

    def routing(self, role: str | None = None, device=None) -> torch.Tensor | None:
        """Row index where each target row (of `role`, or any) reads the source row instead; None if no pair.
        With `device`: on it, copied there once per edit (the layout is the same every step)."""
        pairs = [(s, t) for s, t, r in self.pairs() if role is None or r == role]
        if not pairs:
            return None
        idx = list(range(len(self.rows)))
        for s, t in pairs:
            idx[t] = s
        return torch.tensor(idx) if device is None else self.index_on(("routing", tuple(idx)), idx, device)

    def attend(self, info: LayerInfo, q, k, v) -> torch.Tensor:
        if not self.enabled:
            return F.scaled_dot_product_attention(q, k, v)
        if info.is_self:
            return self.self_attention(info, q, k, v)
        return self.cross_attention(info, q, k, v)

    def self_attention(self, info, q, k, v) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v)

    def cross_attention(self, info, q, k, v) -> torch.Tensor:
        return self.plain_cross(info, q, k, v)

    def plain_cross(self, info, q, k, v) -> torch.Tensor:
        """Unedited cross-attention; builds the probabilities only where maps are captured."""
        if self.capture is None or not self.capture.wants(info):
            return F.scaled_dot_product_attention(q, k, v)
        probs = attention_probs(q, k)
        self.capture.add(probs, self)
        return (probs @ v.float()).to(v.dtype)


def attention_probs(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Explicit softmax(q k^T / sqrt(d)) in float32 (upcast like diffusers' get_attention_scores)."""
    scale = q.shape[-1] ** -0.5
    return torch.softmax((q.float() @ k.float().transpose(-1, -2)) * scale, dim=-1)


class EditAttnProcessor:
    """AttnProcessor2_0's computation with the q/k/v -> output step delegated to a controller."""

    def __init__(self, info: LayerInfo, controller: Controller):
        self.info = info
        self.controller = controller

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        if attention_mask is not None:
            raise UnsupportedAttention("attention masks are not supported by the editing processor")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = self.controller.attend(self.info, query, key, value)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@contextlib.contextmanager
def controlled(unet, controller: Controller):
    """Install the controller's processors; restore the UNet's own on exit, also after an error."""
    original = dict(unet.attn_processors)
    wanted = {info.name: info for info in controller.layers if controller.wants(info)}
    new = {name: (EditAttnProcessor(wanted[name], controller) if name in wanted else proc) for name, proc in original.items()}
    unet.set_attn_processor(new)
    try:
        yield controller
    finally:
        unet.set_attn_processor(dict(original))
