"""Words -> token positions through the model's own tokenizer, and the token
maps Prompt-to-Prompt edits with (replace mapper, refine alignment, reweight).

Positions come from the tokenizer's character offsets on the very input ids the
text encoder sees, so capitals, punctuation, multi-token words and truncation
cannot shift them. A word that is not in the prompt is an error, never a silent
empty mask (the classic P2P failure where LocalBlend resets the edit).
"""

from __future__ import annotations

import re

import torch

from inversion.errors import WordError

WORD = re.compile(r"[\w'-]+", re.UNICODE)


def _norm(word: str) -> str:
    return word.lower().strip("'-")


def word_tokens(tokenizer, prompt: str, max_length: int = 77) -> list[tuple[str, list[int]]]:
    """[(word, token positions in the encoded ids)] for each whitespace-separated word of the prompt."""
    enc = tokenizer(prompt, return_offsets_mapping=True, truncation=True, max_length=max_length)
    offsets = enc["offset_mapping"]
    out, pos = [], 0
    for chunk in prompt.split():
        start = prompt.index(chunk, pos)
        end = start + len(chunk)
        pos = end
        toks = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
        out.append((chunk, toks))
    return out


def find_word(tokenizer, prompt: str, word: str, max_length: int = 77) -> list[int]:
    """Token positions of every occurrence of `word` (case and punctuation insensitive)."""
    target = _norm(word)
    if not target or " " in word.strip():
        raise WordError(f"give one word, got {word!r}")
    offsets = tokenizer(prompt, return_offsets_mapping=True, truncation=True, max_length=max_length)["offset_mapping"]
    hits, seen = [], []
    for m in WORD.finditer(prompt):
        seen.append(_norm(m.group()))
        if seen[-1] != target:
            continue
        toks = [i for i, (a, b) in enumerate(offsets) if b > a and a < m.end() and b > m.start()]
        if not toks:
            raise WordError(f"{word!r} is beyond the text encoder's {max_length}-token limit in {prompt!r}")
        hits += toks
    if not hits:
        raise WordError(f"{word!r} is not a word of the prompt {prompt!r}; its words are: {', '.join(dict.fromkeys(seen))}")
    return hits


def _last_token(tokenizer, prompt: str, max_length: int) -> int:
    """Index of the end-of-text token (its tail follows)."""
    return len(tokenizer(prompt, truncation=True, max_length=max_length).input_ids) - 1


def replace_mapper(tokenizer, source: str, target: str, length: int = 77) -> torch.Tensor:
    """M (length x length) with A_target_new[:, t] = sum_s A_source[:, s] M[s, t] (word swap).

    Prompts need the same number of words. A word whose token count changes spreads
    its source attention evenly over its target tokens (mass preserved).
    """
    sw, tw = word_tokens(tokenizer, source, length), word_tokens(tokenizer, target, length)
    if len(sw) != len(tw):
        raise WordError(
            f"replace needs prompts with the same number of words: {len(sw)} in {source!r}, {len(tw)} in {target!r}; "
            "use refine for prompts that add or remove words"
        )
    m = torch.zeros(length, length)
    m[0, 0] = 1.0
    for (_, s_toks), (_, t_toks) in zip(sw, tw):
        if len(s_toks) == len(t_toks):
            for s, t in zip(s_toks, t_toks):
                m[s, t] = 1.0
        else:
            for s in s_toks:
                for t in t_toks:
                    m[s, t] = 1.0 / len(t_toks)
    _map_tail(m, _last_token(tokenizer, source, length), _last_token(tokenizer, target, length), length)
    return m


def _map_tail(m: torch.Tensor, s_end: int, t_end: int, length: int) -> None:
    for k in range(length - max(s_end, t_end)):
        m[s_end + k, t_end + k] = 1.0


def _align(a: list[int], b: list[int]) -> list[int | None]:
    """Needleman-Wunsch (match +1, mismatch -1, gap 0): for each b item, the aligned a index or None."""
    n, k = len(a), len(b)
    score = [[0] * (k + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, k + 1):
            score[i][j] = max(score[i - 1][j], score[i][j - 1], score[i - 1][j - 1] + (1 if a[i - 1] == b[j - 1] else -1))
    out: list[int | None] = [None] * k
    i, j = n, k
    while i > 0 and j > 0:
        if score[i][j] == score[i - 1][j - 1] + (1 if a[i - 1] == b[j - 1] else -1):
            out[j - 1] = i - 1
            i, j = i - 1, j - 1
        elif score[i][j] == score[i - 1][j]:
            i -= 1
        else:
            j -= 1
    return out


def refine_alignment(tokenizer, source: str, target: str, length: int = 77) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, alpha): target token t takes the source map column index[t] where alpha[t] = 1,
    and keeps its own attention where alpha[t] = 0 (tokens that only the target has)."""
    s_ids = tokenizer(source, truncation=True, max_length=length).input_ids
    t_ids = tokenizer(target, truncation=True, max_length=length).input_ids
    index = torch.arange(length)
    alpha = torch.zeros(length)
    aligned = _align(s_ids[1:-1], t_ids[1:-1])
    index[0], alpha[0] = 0, 1.0
    for j, i in enumerate(aligned):
        if i is not None:
            index[j + 1], alpha[j + 1] = i + 1, 1.0
    s_end, t_end = len(s_ids) - 1, len(t_ids) - 1
    for k in range(length - max(s_end, t_end)):
        index[t_end + k], alpha[t_end + k] = s_end + k, 1.0
    return index, alpha


def equalizer(tokenizer, prompt: str, weights: dict[str, float], length: int = 77) -> torch.Tensor:
    """Per-token scale of the attention to each word (1 elsewhere)."""
    eq = torch.ones(length)
    for word, scale in weights.items():
        eq[find_word(tokenizer, prompt, word, length)] = float(scale)
    return eq
