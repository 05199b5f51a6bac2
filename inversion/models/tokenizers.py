"""Tokenizers (and small text encoders) built in code, so offline models need no download.

Real models load their own tokenizers from the hub. The tiny and `shapes` models
use a CLIP-style byte-level BPE whose merges are learned here by a small,
deterministic BPE learner over a fixed word list: every listed word becomes one
token (which keeps Prompt-to-Prompt word indices simple), and any other text
still tokenizes through the 256 byte symbols. The learner is ours, not
`tokenizers`' trainer, so the vocabulary cannot change with a library version:
the weights of a trained model stay aligned with their token ids.
"""

from __future__ import annotations

import collections
from functools import cache

from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Tokenizer

MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Words that must be single tokens: the shapes world's vocabulary first (colours,
# shapes, layout words), then common words used in examples and tests.
WORDS = (
    "a an the on and of with in at to is two one background photo picture image "
    "red green blue yellow orange purple white black pink cyan gray grey brown "
    "circle square triangle star cross diamond heart shape shapes "
    "left right top bottom middle small big large tiny "
    "cat dog bird horse car house tree flower apple man woman face person "
    "astronaut coffee cup camera rocket moon sky grass water painting sketch "
    "sitting standing running wearing holding smiling sleeping "
    "blurry sharp bright dark old new colorful beautiful"
).split()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode map (the standard byte-level alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Learn BPE merges until every word is one symbol; ties break lexicographically."""
    byte_map = bytes_to_unicode()
    seqs = []
    for w in dict.fromkeys(words):
        chars = [byte_map[b] for b in w.encode("utf-8")]
        chars[-1] += "</w>"
        seqs.append(chars)
    merges: list[tuple[str, str]] = []
    while True:
        counts: collections.Counter = collections.Counter()
        for s in seqs:
            for pair in zip(s, s[1:]):
                counts[pair] += 1
        if not counts:
            return merges
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        for k, s in enumerate(seqs):
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[k] = out


@cache
def clip_vocab(words: tuple[str, ...]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    alphabet = list(bytes_to_unicode().values())
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    merges = learn_merges(list(words))
    vocab_list += [a + b for a, b in merges]
    vocab_list += [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    return vocab, merges


def build_clip_tokenizer(words: tuple[str, ...] = tuple(WORDS)) -> CLIPTokenizer:
    """A CLIP tokenizer (77 tokens, BOS/EOS, pads with EOS) whose vocabulary is built here."""
    vocab, merges = clip_vocab(tuple(words))
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=MAX_LENGTH)


def build_t5_tokenizer(words: tuple[str, ...] = tuple(WORDS)) -> T5Tokenizer:
    """A T5-style unigram tokenizer for the tiny DeepFloyd-IF cascade.

    Pieces: whole words (with the SentencePiece space marker) score highest, then
    single lower- and upper-case letters, digits and punctuation as a fallback.
    """
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + w, -1.0) for w in dict.fromkeys(words)]
    singles = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-:;()"
    pieces += [(c, -5.0) for c in singles] + [("\u2581" + c, -4.0) for c in singles]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=MAX_LENGTH)


def clip_text_encoder(tok: CLIPTokenizer, hidden: int, intermediate: int, heads: int, layers: int) -> CLIPTextModel:
    """A randomly initialised CLIP text encoder sized for `tok` (77 positions, its special tokens)."""
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok),
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_attention_heads=heads,
            num_hidden_layers=layers,
            max_position_embeddings=MAX_LENGTH,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    )
