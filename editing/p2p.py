"""Prompt-to-Prompt (Hertz et al., "Prompt-to-Prompt Image Editing with Cross
Attention Control", ICLR 2023) on the shared attention substrate.

The target branch's cross-attention maps are replaced by the source's during
the first `cross_replace` fraction of the steps, and its self-attention maps in
the deep levels (the official "at most 16x16" at SD's 512 px: SD's 16x16 and 8x8;
SDXL's deepest level; `deep_levels`) during the first `self_replace` fraction. Edit types:
- replace (same word count): A_tgt <- A_src M, M the word-swap token mapper;
- refine (words added/removed): A_tgt[:, t] <- A_src[:, idx_t] where the target
  token aligns to a source token, its own map elsewhere;
- reweight: A <- A diag(eq) on the chosen words, applied to the whole edited map
  (after replace or refine: (A_src[:, index] alpha + A_tgt (1 - alpha)) diag(eq),
  as the official AttentionReweight wraps its previous controller).
Every edit is linear in the token axis, so maps are never built: they become
value mixing inside SDPA, A M v = SDPA(q_src, k_src, M v_tgt) (and the same for
refine/reweight); self-attention replacement is SDPA(q_src, k_src, v_tgt).
Only the conditional rows are edited (the unconditional half runs untouched).
LocalBlend (`blend_words`): the words' cross-attention maps at the official 16x16
level (SD's; SDXL's deepest, `word_map_level`), summed over steps, 3x3 max-pooled, max-normalised and
thresholded, give a mask; outside it the target latent is reset to the source.
Defaults: cross 0.8, self 0.4 (the paper's examples), LocalBlend threshold 0.3.

Where we differ from the official code, on purpose:
- schedules count steps as it does (cross-attention int(f * (n + 1)), self-attention
  int(f * n)) but control at least one step whenever f > 0 (at 4 LCM steps the
  official self-attention count of 0.2 would be none);
- LocalBlend upsamples its mask bilinearly (official: nearest);
- refine aligns the target's end token and padding with the source's end token and
  padding at the same offset (official: padding indices continue from the target's
  length); both leave the words' alignment (Needleman-Wunsch on token ids) the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from inversion.params import Param

from .attention import Controller, WordMaps, deep_levels, fraction_to_steps, layer_registry, word_map_level
from .base import EditLatents, Editor
from .loop import edit_both
from .words import WordError, equalizer, find_word, refine_alignment, replace_mapper


class P2PController(Controller):
    def __init__(self, layers, mode, mapper, index, alpha, eq, cross_steps, self_steps, capture=None):
        super().__init__(layers, capture)
        self.mode = mode
        self.mapper, self.index, self.alpha, self.eq = mapper, index, alpha, eq
        self.cross_steps, self.self_steps = cross_steps, self_steps
        self.self_levels = deep_levels(layers, "self")

    def wants(self, info) -> bool:
        return (not info.is_self) or info.level in self.self_levels

    def self_attention(self, info, q, k, v):
        idx = self.routing("c", q.device) if self.step < self.self_steps and info.level in self.self_levels else None
        if idx is None:
            return F.scaled_dot_product_attention(q, k, v)
        # the target's self-attention map becomes the source's: q, k from the source, v its own
        return F.scaled_dot_product_attention(q[idx], k[idx], v)

    def target_values(self, v_t: torch.Tensor) -> torch.Tensor:
        """M (eq * v): the values that turn the source's map into the edited target map.
        The token maps reach the device once per edit (`on_device`), not once per layer."""
        v_eq = v_t * self.on_device("eq", lambda: self.eq, v_t)[:, None] if self.eq is not None else v_t
        if self.mode == "replace":
            return (self.on_device("mapper", lambda: self.mapper, v_t) @ v_eq).to(v_t.dtype)
        if self.mode == "refine":
            a = self.on_device("alpha", lambda: self.alpha, v_t)[:, None]
            return torch.zeros_like(v_eq).index_add_(-2, self.index_on("refine", self.index, v_t.device), v_eq * a)
        return v_eq  # reweight alone: the source map, reweighted

    def cross_attention(self, info, q, k, v):
        idx = self.routing("c", q.device) if self.step < self.cross_steps else None
        if idx is None:
            return self.plain_cross(info, q, k, v)
        pairs = [(s, t) for s, t, r in self.pairs() if r == "c"]
        if self.capture is not None and self.capture.wants(info):
            self.plain_cross(info, q, k, v)  # LocalBlend reads the unedited maps
        v_new = v.clone()
        for _, t in pairs:
            v_new[t] = self.target_values(v[t])
        out = F.scaled_dot_product_attention(q[idx], k[idx], v_new)
        if self.mode == "refine":  # tokens only the target has keep their own attention, reweighted too
            own = (1 - self.on_device("alpha", lambda: self.alpha, v))[:, None]
            if self.eq is not None:
                own = own * self.on_device("eq", lambda: self.eq, v)[:, None]
            for _, t in pairs:
                out[t] = out[t] + F.scaled_dot_product_attention(q[t], k[t], v[t] * own)
        return out


class P2P(Editor):
    name = "p2p"
    title = "Prompt-to-Prompt"
    paper = "Hertz et al., Prompt-to-Prompt Image Editing with Cross Attention Control, ICLR 2023"
    params = {
        "mode": Param("auto", str, choices=("auto", "replace", "refine", "reweight"), help="auto: replace if word counts match, else refine"),
        "cross_replace": Param(0.8, float, 0.0, 1.0, "fraction of steps whose cross-attention maps come from the source"),
        "self_replace": Param(0.4, float, 0.0, 1.0, "fraction of steps whose deep self-attention maps come from the source"),
        "reweight_words": Param("", str, help="comma-separated word:scale pairs of the target prompt, e.g. 'red:2'"),
        "blend_words": Param("", str, help="LocalBlend words (source or target prompt), comma-separated; empty = off"),
        "blend_threshold": Param(0.3, float, 0.0, 1.0, "LocalBlend mask threshold on max-normalised maps"),
        "blend_start": Param(0.2, float, 0.0, 1.0, "fraction of steps after which LocalBlend acts"),
        "pin_source": Param(False, bool, help="reset the source branch to the inverted trajectory each step (Direct Inversion)"),
    }

    def plan(self, model, source, target_prompt, p):
        """Mode, token maps and equaliser for this prompt pair (raises WordError when impossible)."""
        super().validate(model, source, target_prompt, p)
        layer_registry(model.unet)
        tok, length = model.tokenizer, model.max_tokens
        mode = p["mode"]
        if mode == "auto":
            mode = "replace" if len(source.split()) == len(target_prompt.split()) else "refine"
        mapper = index = alpha = None
        if mode == "replace":
            mapper = replace_mapper(tok, source, target_prompt, length)
        elif mode == "refine":
            index, alpha = refine_alignment(tok, source, target_prompt, length)
        elif source.split() != target_prompt.split():
            raise WordError("reweight keeps the prompt: give the same target prompt with reweight_words (or use replace/refine)")
        weights = parse_weights(p["reweight_words"])
        if mode == "reweight" and not weights:
            raise WordError("reweight needs reweight_words, e.g. 'red:2'")
        eq = equalizer(tok, target_prompt, weights, length) if weights else None
        blend = [w.strip() for w in p["blend_words"].split(",") if w.strip()]
        blend_tokens = _blend_tokens(tok, source, target_prompt, blend, length) if blend else None
        return mode, mapper, index, alpha, eq, blend_tokens

    def validate(self, model, source_prompt, target_prompt, p):
        self.plan(model, source_prompt, target_prompt, p)

    def edit(self, model, inv, target_prompt, guidance, p, progress=None, region=None) -> EditLatents:
        mode, mapper, index, alpha, eq, blend_tokens = self.plan(model, inv.prompt, target_prompt, p)
        region = None if region is None else region.to(model.device)  # once, not per step
        layers = layer_registry(model.unet)
        n = inv.num_steps
        capture = WordMaps(blend_tokens, word_map_level(layers)) if blend_tokens and region is None else None
        ctrl = P2PController(layers, mode, mapper, index, alpha, eq, fraction_to_steps(p["cross_replace"], n, over=n + 1), fraction_to_steps(p["self_replace"], n), capture)
        after = None
        masks = {}
        if capture is not None or region is not None:
            blend_from = int(p["blend_start"] * n)

            def after(j, x):
                if j < blend_from:
                    return x
                if region is not None:  # a painted region is LocalBlend's mask as it is (on the device since the start)
                    mask = region.to(x)
                else:
                    size = tuple(x.shape[-2:])
                    ms = [m for m in (capture.mask("src", size, p["blend_threshold"]), capture.mask("tgt", size, p["blend_threshold"])) if m is not None]
                    if not ms:
                        return x
                    mask = torch.clamp(sum(ms), 0, 1).to(x)
                masks["last"] = mask
                x[1:2] = x[0:1] + mask * (x[1:2] - x[0:1])
                return x

        target, source = edit_both(model, inv, target_prompt, guidance, ctrl, p["pin_source"], after, progress)
        return EditLatents(target, source, {**p, "mode": mode}, masks.get("last"), {"cross_steps": ctrl.cross_steps, "self_steps": ctrl.self_steps})


def _blend_tokens(tok, source, target, words, length) -> dict[str, list[int]]:
    out = {"src": [], "tgt": []}
    for w in words:
        found = False
        for branch, prompt in (("src", source), ("tgt", target)):
            try:
                out[branch] += find_word(tok, prompt, w, length)
                found = True
            except WordError:
                pass
        if not found:
            raise WordError(f"LocalBlend word {w!r} is in neither prompt ({source!r}, {target!r})")
    return out


def parse_weights(text: str) -> dict[str, float]:
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        word, sep, scale = item.partition(":")
        try:
            out[word.strip()] = float(scale) if sep else 2.0
        except ValueError:
            raise WordError(f"reweight_words takes word:scale pairs, got {item!r}") from None
    return out
