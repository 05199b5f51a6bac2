"""MasaCtrl: mutual self-attention control (Cao et al., "MasaCtrl: Tuning-Free
Mutual Self-Attention Control for Consistent Image Synthesis and Editing",
ICCV 2023) on the shared attention substrate.

From a start step and a start layer on, the target's self-attention queries
attend to the *source's* keys and values (in each guidance half), so the target
keeps the source's content and appearance while its own prompt (cross-attention
is untouched) changes layout and pose: SDPA(q_tgt, k_src, v_src).
Schedules are fractions, so they mean the same at 4 LCM steps and at 50 DDIM
steps: the official start step 4 of 50 is 0.08, start layer 10 of SD's 16
transformer blocks is 0.625 (the decoder's 32 and 64 px levels), and on SDXL's 70
blocks 0.625 rounds to block 44, the first of the official SDXL script's start layers
(44, 54, 64 of 70, step 4 of 50); at least step 0
stays free (the target forms its layout) and at least one step is controlled.
Optional mask guidance (the paper's MasaCtrl-Mask with automatic masks, as the
official MaskAuto): `mask_word` names the object in the source prompt and
`mask_target_word` in the target prompt (the same word by default); their
cross-attention maps of the previous step at the official 16x16 level (SD's at 512 px;
SDXL's deepest level, 16x16 at SDXL-Turbo's 512 px; `word_map_level`) are min-max normalised and
thresholded into fore- and background masks for both branches; target foreground
queries attend to source foreground keys, background to background. A word
missing from its prompt, or a flat map, is refused with a message (a flat map is
noted on the device and refused when the loop ends: no host read per step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from inversion.errors import WordError
from inversion.params import Param

from .attention import Controller, WordMaps, layer_registry, spatial_shape, word_map_level
from .base import EditLatents, Editor
from .loop import edit_both
from .words import find_word


class MasaCtrlController(Controller):
    def __init__(self, layers, start_step, start_block, capture=None, mask_threshold=0.1):
        super().__init__(layers, capture)
        self.start_step, self.start_block = start_step, start_block
        self.mask_threshold = mask_threshold
        self.masks: dict[str, torch.Tensor] = {}  # branch -> (h*w) foreground of the previous step
        self.flat: dict[str, torch.Tensor] = {}  # branch -> first step whose map was flat (-1: none), on the device
        self._resized: dict = {}  # (branch, h, w) -> (the mask it came from, that mask at this resolution)

    def controls(self, info) -> bool:
        return info.is_self and info.block_order >= self.start_block

    def wants(self, info) -> bool:
        return self.controls(info) or super().wants(info)

    def begin_step(self, step, num_steps, rows, latent_hw):
        if self.capture is not None and self.capture.total:
            for branch in ("src", "tgt"):
                built = self.capture.minmax_mask_flat(branch, self.mask_threshold)
                if built is None:  # no map at all (known on the host)
                    raise WordError(f"MasaCtrl could not build the {'source' if branch == 'src' else 'target'} mask at step {step}: the word's attention map is flat")
                m, flat = built
                first = self.flat.get(branch)
                first = torch.full((), -1, dtype=torch.long, device=m.device) if first is None else first
                self.flat[branch] = torch.where((first < 0) & flat, step, first)  # refused in `finish`
                self.masks[branch] = m
            self.capture.total = {}
        super().begin_step(step, num_steps, rows, latent_hw)

    def finish(self) -> None:
        """The one host read of the mask checks: a flat word map at any step is refused, naming the
        first such step (the source branch first), as if it had been refused when it was built."""
        if not self.flat:
            return
        branches = list(self.flat)
        steps = torch.stack([self.flat[b] for b in branches]).tolist()
        found = [(s, ("src", "tgt").index(b), b) for s, b in zip(steps, branches) if s >= 0]
        if found:
            step, _, branch = min(found)
            raise WordError(f"MasaCtrl could not build the {'source' if branch == 'src' else 'target'} mask at step {step}: the word's attention map is flat")

    def self_attention(self, info, q, k, v):
        idx = self.routing(None, q.device) if self.step >= self.start_step and self.controls(info) else None
        if idx is None:
            return F.scaled_dot_product_attention(q, k, v)
        plain = F.scaled_dot_product_attention(q, k[idx], v[idx])
        if len(self.masks) != 2:  # before the first maps exist: plain MasaCtrl
            return plain
        m_s, m_t = self._masks(q.shape[-2])
        out = F.scaled_dot_product_attention(q, k, v)
        for s, t, _role in self.pairs():
            o_fg = F.scaled_dot_product_attention(q[t], k[s], v[s], attn_mask=m_s[None, None, :])
            o_bg = F.scaled_dot_product_attention(q[t], k[s], v[s], attn_mask=~m_s[None, None, :])
            out[t] = torch.where(m_t[None, :, None], o_fg, o_bg)
        # all foreground: plain MasaCtrl (the background attention would have no key); picked on
        # the device, not read on the host once per layer -- the price is the plain attention's compute
        return torch.where(m_s.all(), plain, out)

    def _masks(self, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        hw = spatial_shape(tokens, self.latent_hw)
        out = []
        for b in ("src", "tgt"):
            made = self._resized.get((b, *hw))
            if made is None or made[0] is not self.masks[b]:  # once per mask and resolution, not per layer
                made = self._resized[(b, *hw)] = (self.masks[b], F.interpolate(self.masks[b], size=hw, mode="nearest").flatten() > 0.5)
            out.append(made[1])
        return out[0], out[1]


class MasaCtrl(Editor):
    name = "masactrl"
    title = "MasaCtrl"
    paper = "Cao et al., MasaCtrl: Tuning-Free Mutual Self-Attention Control for Consistent Image Synthesis and Editing, ICCV 2023"
    params = {
        "start_step": Param(0.08, float, 0.0, 1.0, "fraction of steps before control starts (official 4/50)"),
        "start_layer": Param(0.625, float, 0.0, 1.0, "fraction of transformer blocks (execution order) before control (official 10/16)"),
        "mask_word": Param("", str, help="the object's word in the source prompt: its attention separates fore- and background (empty = off)"),
        "mask_target_word": Param("", str, help="the object's word in the target prompt (empty: mask_word)"),
        "mask_threshold": Param(0.1, float, 0.0, 1.0, "threshold of the min-max normalised word map (official 0.1)"),
        "pin_source": Param(False, bool, help="reset the source branch to the inverted trajectory each step (Direct Inversion)"),
    }

    def validate(self, model, source_prompt, target_prompt, p):
        super().validate(model, source_prompt, target_prompt, p)
        layer_registry(model.unet)
        self.mask_tokens(model, source_prompt, target_prompt, p)

    @staticmethod
    def mask_tokens(model, source_prompt: str, target_prompt: str, p: dict) -> dict[str, list[int]] | None:
        """Token positions of the mask's source and target words, or None without a mask."""
        src_word = p["mask_word"].strip()
        tgt_word = p["mask_target_word"].strip() or src_word
        if not src_word:
            if tgt_word:
                raise WordError("mask_target_word needs mask_word, the object's word in the source prompt")
            return None
        if not source_prompt.strip():
            raise WordError("MasaCtrl's mask needs a source prompt that names the object (mask_word); the source prompt is empty")
        tokens = {}
        try:
            tokens["src"] = find_word(model.tokenizer, source_prompt, src_word, model.max_tokens)
        except WordError as e:
            raise WordError(f"MasaCtrl's mask_word: {e}") from None
        try:
            tokens["tgt"] = find_word(model.tokenizer, target_prompt, tgt_word, model.max_tokens)
        except WordError as e:
            if p["mask_target_word"].strip():
                raise WordError(f"MasaCtrl's mask_target_word: {e}") from None
            raise WordError(f"MasaCtrl's mask_word is not in the target prompt ({e}); set mask_target_word to the object's word there") from None
        return tokens

    def edit(self, model, inv, target_prompt, guidance, p, progress=None, region=None) -> EditLatents:
        self.validate(model, inv.prompt, target_prompt, p)
        layers = layer_registry(model.unet)
        n = inv.num_steps
        n_blocks = max(i.block_order for i in layers) + 1
        start_step = min(n - 1, max(1, int(p["start_step"] * n + 0.5)))  # 0 when there is one step
        start_block = min(n_blocks - 1, int(p["start_layer"] * n_blocks + 0.5))
        tokens = self.mask_tokens(model, inv.prompt, target_prompt, p) if region is None else None
        capture = WordMaps(tokens, word_map_level(layers)) if tokens else None
        ctrl = MasaCtrlController(layers, start_step, start_block, capture, p["mask_threshold"])
        if region is not None:  # a painted foreground, the same for both branches, from the first controlled step
            region = region.to(model.device).float()  # once, not per step
            ctrl.masks = {"src": region, "tgt": region}
        target, source = edit_both(model, inv, target_prompt, guidance, ctrl, p["pin_source"], progress=progress)
        info = {"start_step": start_step, "start_block": start_block, "blocks": n_blocks}
        return EditLatents(target, source, p, ctrl.masks.get("tgt"), info)
