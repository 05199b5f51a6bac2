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
Optional mask guidance (`mask_word`, the paper's MasaCtrl-Mask with automatic
masks): the word's cross-attention maps from the previous step give fore-
and background masks for both branches; target foreground queries attend to
source foreground keys, background to background.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from inversion.models.base import Conditioning
from inversion.params import Param

from .attention import Controller, WordMaps, attention_levels, controlled, layer_registry
from .base import Editor, EditResult
from .loop import run_branches, source_condition
from .p2p import _blend_tokens, _target_condition


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
            self.masks = {b: m for b in ("src", "tgt") if (m := self.capture.mask(b, latent_hw, self.mask_threshold)) is not None}
            self.capture.total = {}
        super().begin_step(step, num_steps, rows, latent_hw)

    def self_attention(self, info, q, k, v, attn):
        idx = self.routing() if self.step >= self.start_step and self.controls(info) else None
        if idx is None:
            return F.scaled_dot_product_attention(q, k, v)
        idx = idx.to(q.device)
        fg = self._masks(q.shape[-2]) if len(self.masks) == 2 else None
        if fg is None or not fg[0].any() or fg[0].all():  # no (or a degenerate) source mask: plain MasaCtrl
            return F.scaled_dot_product_attention(q, k[idx], v[idx])
        m_s, m_t = fg
        out = F.scaled_dot_product_attention(q, k, v)
        for s, t, _role in self.pairs():
            o_fg = F.scaled_dot_product_attention(q[t], k[s], v[s], attn_mask=m_s[None, None, :])
            o_bg = F.scaled_dot_product_attention(q[t], k[s], v[s], attn_mask=~m_s[None, None, :])
            out[t] = torch.where(m_t[None, :, None], o_fg, o_bg)
        return out

    def _masks(self, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        from .attention import spatial_shape

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
        "mask_word": Param("", str, help="a word in both prompts whose attention separates fore- and background (empty = off)"),
        "mask_threshold": Param(0.1, float, 0.0, 1.0, "threshold of the max-normalised word map"),
        "pin_source": Param(False, bool, help="reset the source branch to the inverted trajectory each step (Direct Inversion)"),
    }

    def validate(self, model, source_prompt, target_prompt, p):
        super().validate(model, source_prompt, target_prompt, p)
        layer_registry(model.unet)
        if p["mask_word"].strip():
            _blend_tokens(model.tokenizer, source_prompt, target_prompt, [p["mask_word"].strip()], model.max_tokens)

    def edit(self, model, inv, target_prompt, guidance, p, progress=None, image_cond=None) -> EditResult:
        self.validate(model, inv.prompt, target_prompt, p)
        layers = layer_registry(model.unet)
        n = inv.num_steps
        n_blocks = max(i.block_order for i in layers) + 1
        start_step = min(n - 1, max(1, int(p["start_step"] * n + 0.5))) if n > 1 else 0
        start_block = min(n_blocks - 1, int(p["start_layer"] * n_blocks + 0.5))
        capture = None
        if p["mask_word"].strip():
            tokens = _blend_tokens(model.tokenizer, inv.prompt, target_prompt, [p["mask_word"].strip()], model.max_tokens)
            capture = WordMaps(tokens, attention_levels(layers, "cross")[-1])
        ctrl = MasaCtrlController(layers, start_step, start_block, capture, p["mask_threshold"])
        cond = Conditioning.cat([source_condition(model, inv, image_cond), _target_condition(model, target_prompt, guidance, inv, image_cond)])
        nfe0, start = model.nfe, time.perf_counter()
        with controlled(model.unet, ctrl):
            x = run_branches(model, inv, cond, inv.z_T.repeat(2, 1, 1, 1), controller=ctrl, pin_source=p["pin_source"], progress=progress)
        info = {"start_step": start_step, "start_block": start_block, "blocks": n_blocks}
        mask = ctrl.masks.get("tgt")
        return EditResult(x[1:2], x[0:1], self.name, p, model.nfe - nfe0, time.perf_counter() - start, mask, info)
