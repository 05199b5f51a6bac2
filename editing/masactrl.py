"""MasaCtrl: mutual self-attention control (Cao et al., "MasaCtrl: Tuning-Free
Mutual Self-Attention Control for Consistent Image Synthesis and Editing",
ICCV 2023) on the shared attention substrate.

From a start step and a start layer on, the target's self-attention queries
attend to the *source's* keys and values (in each guidance half), so the target
keeps the source's content and appearance while its own prompt (cross-attention
is untouched) changes layout and pose: SDPA(q_tgt, k_src, v_src).
Schedules are fractions, so they mean the same at 4 LCM steps and at 50 DDIM
steps: the official start step 4 of 50 is 0.08, start layer 10 of SD's 16
transformer blocks is 0.625 (the decoder's 32 and 64 px levels); at least step 0
stays free (the target forms its layout) and at least one step is controlled.
Optional mask guidance (the paper's MasaCtrl-Mask with automatic masks, as the
official MaskAuto): `mask_word` names the object in the source prompt and
`mask_target_word` in the target prompt (the same word by default); their
cross-attention maps of the previous step at the 16x16-resolution level (SD's;
the second-deepest cross-attention level of any UNet) are min-max normalised and
thresholded into fore- and background masks for both branches; target foreground
queries attend to source foreground keys, background to background. A word
missing from its prompt, or a flat map, is refused with a message.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from inversion.errors import WordError
from inversion.params import Param

from .attention import Controller, WordMaps, attention_levels, layer_registry, spatial_shape
from .base import EditLatents, Editor
from .loop import edit_both
from .words import find_word


class MasaCtrlController(Controller):
    def __init__(self, layers, start_step, start_block, capture=None, mask_threshold=0.1):
        super().__init__(layers, capture)
        self.start_step, self.start_block = start_step, start_block
        self.mask_threshold = mask_threshold
        self.masks: dict[str, torch.Tensor] = {}  # branch -> (h*w) foreground of the previous step

    def controls(self, info) -> bool:
        return info.is_self and info.block_order >= self.start_block

    def wants(self, info) -> bool:
        return self.controls(info) or super().wants(info)

    def begin_step(self, step, num_steps, rows, latent_hw):
        if self.capture is not None and self.capture.total:
            for branch in ("src", "tgt"):
                m = self.capture.minmax_mask(branch, self.mask_threshold)
                if m is None:
                    raise WordError(f"MasaCtrl could not build the {'source' if branch == 'src' else 'target'} mask at step {step}: the word's attention map is flat")
                self.masks[branch] = m
            self.capture.total = {}
        super().begin_step(step, num_steps, rows, latent_hw)

    def self_attention(self, info, q, k, v):
        idx = self.routing() if self.step >= self.start_step and self.controls(info) else None
        if idx is None:
            return F.scaled_dot_product_attention(q, k, v)
        idx = idx.to(q.device)
        fg = self._masks(q.shape[-2]) if len(self.masks) == 2 else None
        if fg is None or fg[0].all():  # before the first maps exist, or all foreground: plain MasaCtrl
            return F.scaled_dot_product_attention(q, k[idx], v[idx])
        m_s, m_t = fg
        out = F.scaled_dot_product_attention(q, k, v)
        for s, t, _role in self.pairs():
            o_fg = F.scaled_dot_product_attention(q[t], k[s], v[s], attn_mask=m_s[None, None, :])
            o_bg = F.scaled_dot_product_attention(q[t], k[s], v[s], attn_mask=~m_s[None, None, :])
            out[t] = torch.where(m_t[None, :, None], o_fg, o_bg)
        return out

    def _masks(self, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        hw = spatial_shape(tokens, self.latent_hw)
        out = []
        for b in ("src", "tgt"):
            m = F.interpolate(self.masks[b], size=hw, mode="nearest")
            out.append(m.flatten() > 0.5)
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
        start_step = min(n - 1, max(1, int(p["start_step"] * n + 0.5))) if n > 1 else 0
        start_block = min(n_blocks - 1, int(p["start_layer"] * n_blocks + 0.5))
        tokens = self.mask_tokens(model, inv.prompt, target_prompt, p) if region is None else None
        capture = WordMaps(tokens, mask_level(layers)) if tokens else None
        ctrl = MasaCtrlController(layers, start_step, start_block, capture, p["mask_threshold"])
        if region is not None:  # a painted foreground, the same for both branches, from the first controlled step
            ctrl.masks = {"src": region.float(), "tgt": region.float()}
        target, source = edit_both(model, inv, target_prompt, guidance, ctrl, p["pin_source"], progress=progress)
        info = {"start_step": start_step, "start_block": start_block, "blocks": n_blocks}
        return EditLatents(target, source, p, ctrl.masks.get("tgt"), info)


def mask_level(layers) -> int:
    """The cross-attention level masks are read from: SD's 16x16, the second-deepest of any UNet."""
    levels = attention_levels(layers, "cross")
    return levels[-2] if len(levels) > 1 else levels[-1]
