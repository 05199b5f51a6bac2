"""How PnPInversion's scripts run each editor on PIE-Bench, mirrored with this project's editors.

What their scripts do (run_editing_p2p.py, run_editing_masactrl.py; facts, not code):
- **P2P** (every inversion method they pair with it): Stable Diffusion 1.4, 50 DDIM steps, inversion
  with the source prompt at guidance 1, the edit at guidance 7.5; always the *refine* controller
  (`is_replace_controller=False`), cross-attention replaced for 0.4 of the steps, self-attention for
  0.6; where `blended_word` is given, LocalBlend on (source word in the source prompt, target word in
  the target prompt) at its defaults (threshold 0.3, from 0.2 of the steps) and the target word's
  attention reweighted x2 (`eq_params`, on top of refine); where it is empty, neither.
- **MasaCtrl**: the source prompt is *not* used: the image is inverted with the empty prompt, the
  source branch runs with it too, the target branch with the target prompt, guidance 7.5, control
  from step 4 and layer 10 (the project's defaults: 0.08 of the steps, 0.625 of the blocks); no masks.
- **The benchmark's mask is never given to an editor**: every script decodes it, but only Blended
  Latent Diffusion (not an inversion method) uses it. So no editor gets it here either; the mask
  serves the metrics alone.
- **DiffEdit** is not in their scripts. Ours: inverted with the source prompt, its own mask from the
  source and target prompts, its defaults.
Where we differ, knowingly: their word lookup compares space-separated words exactly and silently
ignores a word it cannot find; ours (`editing.words.find_word`) ignores case and punctuation, and
LocalBlend looks each word up in both prompts (theirs: the first word in the source, the second in
the target), which differs only where a blended word occurs in the other prompt too. A word that is
not in its prompt is dropped here, as theirs finds no token for it; an item left with no blend word
runs without LocalBlend (theirs would blend with an empty mask, undoing the edit).
"""

from __future__ import annotations

from editing.words import find_word
from inversion.errors import WordError
from inversion.models.cascade import base_stage

from .data import Item

P2P = {"mode": "refine", "cross_replace": 0.4, "self_replace": 0.6}
REWEIGHT = 2.0


def _has(model, prompt: str, word: str) -> bool:
    base = base_stage(model)
    try:
        find_word(base.tokenizer, prompt, word, base.max_tokens)
        return True
    except WordError:
        return False


def p2p_words(model, item: Item) -> dict:
    """LocalBlend and reweighting from `blended_word`, for the words that are in their prompts."""
    pair = item.blend_pair
    if pair is None:
        return {}
    src_word, tgt_word = pair
    blend = [w for w, prompt in ((src_word, item.source_prompt), (tgt_word, item.target_prompt)) if _has(model, prompt, w)]
    out = {"blend_words": ",".join(dict.fromkeys(blend))} if blend else {}
    if _has(model, item.target_prompt, tgt_word):
        out["reweight_words"] = f"{tgt_word}:{REWEIGHT:g}"
    return out


def plan(model, item: Item, editor: str) -> tuple[str, str, dict]:
    """(prompt to invert with, target prompt, editor parameters) for one item and editor."""
    if editor == "p2p":
        return item.source_prompt, item.target_prompt, {**P2P, **p2p_words(model, item)}
    if editor == "masactrl":
        return "", item.target_prompt, {}
    return item.source_prompt, item.target_prompt, {}
