"""Words to token positions, and Prompt-to-Prompt's token maps, on the in-code CLIP tokenizer
(listed words are one token; others, e.g. "zebrafish", are several byte-level tokens)."""

import pytest
import torch

from editing.words import WordError, equalizer, find_word, refine_alignment, replace_mapper, word_tokens
from inversion.models.tokenizers import build_clip_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_clip_tokenizer()


def test_word_tokens_follow_each_whitespace_chunk(tok):
    assert word_tokens(tok, "a cat and a cat") == [("a", [1]), ("cat", [2]), ("and", [3]), ("a", [4]), ("cat", [5])]  # repeats advance
    assert word_tokens(tok, "A CAT, sitting.") == [("A", [1]), ("CAT,", [2, 3]), ("sitting.", [4, 5])]  # punctuation joins its chunk
    zebra = word_tokens(tok, "a zebrafish swims")
    assert zebra[1] == ("zebrafish", list(range(2, 11)))
    long = " ".join(["cat"] * 100)  # truncated at 77 tokens: later chunks have none
    chunks = word_tokens(tok, long, 77)
    assert chunks[74] == ("cat", [75]) and chunks[75] == ("cat", []) and all(not t for _, t in chunks[75:])


def test_find_word_ignores_case_and_punctuation_and_finds_every_occurrence(tok):
    assert find_word(tok, "A CAT, sitting.", "cat") == [2]
    assert find_word(tok, "a cat and a cat", "Cat") == [2, 5]
    assert find_word(tok, "a zebrafish swims", "zebrafish") == list(range(2, 11))
    assert find_word(tok, "the cat's toy", "cat's") == find_word(tok, "the cat's toy", "'cat's-")  # quotes and hyphens at the ends


def test_find_word_refusals_say_why(tok):
    with pytest.raises(WordError, match="give one word, got 'two words'"):
        find_word(tok, "a cat", "two words")
    with pytest.raises(WordError, match="give one word"):
        find_word(tok, "a cat", "'-")
    with pytest.raises(WordError, match=r"'dog' is not a word of the prompt 'a cat and a cat'; its words are: a, cat, and$"):
        find_word(tok, "a cat and a cat", "dog")
    long = " ".join(["cat"] * 80) + " dog"
    with pytest.raises(WordError, match="'dog' is beyond the text encoder's 77-token limit"):
        find_word(tok, long, "dog")


def test_replace_mapper_swaps_words_and_spreads_a_longer_word_evenly(tok):
    m = replace_mapper(tok, "a cat sitting", "a dog sitting")
    assert torch.equal(m, torch.eye(77))  # one token each: the identity
    m = replace_mapper(tok, "a cat sitting", "a zebrafish sitting")  # source: BOS a cat sitting EOS; target: BOS a zebra(9) sitting EOS
    assert torch.allclose(m[2, 2:11], torch.full((9,), 1 / 9)) and float(m[2].sum()) == pytest.approx(1.0)  # mass kept
    assert m[3, 11] == 1 and m[4, 12] == 1  # "sitting", then the end token, follow
    assert m[0, 0] == 1 and all(m[4 + k, 12 + k] == 1 for k in range(77 - 12))  # padding follows the end token
    assert float(m.sum()) == pytest.approx(1 + 1 + 1 + 1 + (77 - 12))  # nothing else is mapped
    m = replace_mapper(tok, "a zebrafish sitting", "a cat sitting")
    assert torch.allclose(m[2:11, 2], torch.ones(9))  # every source token of the word feeds the one target token
    m = replace_mapper(tok, "a cat", "a zebrafish")  # the spread word is the last: the tail starts right after it
    assert torch.allclose(m[2, 2:11], torch.full((9,), 1 / 9)) and m[3, 11] == 1 and float(m[:, 11:].sum()) == 77 - 11
    with pytest.raises(WordError, match="same number of words: 3 in 'a cat sitting', 4 in"):
        replace_mapper(tok, "a cat sitting", "a big dog sitting")


def test_refine_alignment_maps_shared_tokens_and_frees_new_ones(tok):
    index, alpha = refine_alignment(tok, "a cat sitting", "a big cat sitting on grass")
    # target: BOS a big cat sitting on grass EOS; source: BOS a cat sitting EOS
    assert alpha[:8].tolist() == [1, 1, 0, 1, 1, 0, 0, 1]
    assert index[:2].tolist() == [0, 1] and index[3] == 2 and index[4] == 3
    assert index[7] == 4 and all(index[7 + k] == 4 + k for k in range(77 - 7))  # end token and padding follow the source's
    assert bool((alpha[7:] == 1).all())


def test_equalizer_scales_only_the_chosen_words(tok):
    eq = equalizer(tok, "a cat and a cat sitting", {"cat": 2.5, "sitting": 0.5})
    assert eq[2] == eq[5] == 2.5 and eq[6] == 0.5
    assert float(eq.sum()) == pytest.approx(77 - 3 + 2.5 * 2 + 0.5)


def _lcs(a, b) -> int:
    """Length of the longest common subsequence, by the textbook recursion (memoised)."""
    from functools import cache

    @cache
    def go(i, j):
        if i == len(a) or j == len(b):
            return 0
        return 1 + go(i + 1, j + 1) if a[i] == b[j] else max(go(i + 1, j), go(i, j + 1))

    return go(0, 0)


def test_refine_s_alignment_pairs_equal_tokens_in_order_as_many_as_a_longest_common_subsequence():
    """Needleman-Wunsch with gap 0 and mismatch -1 never pairs unequal tokens, so an optimal
    alignment is a longest common subsequence: checked on random token lists against the textbook LCS."""
    import random

    from editing.words import _align

    rng = random.Random(0)
    for _ in range(300):
        a = [rng.randrange(4) for _ in range(rng.randrange(0, 8))]
        b = [rng.randrange(4) for _ in range(rng.randrange(0, 8))]
        out = _align(a, b)
        pairs = [(i, j) for j, i in enumerate(out) if i is not None]
        assert len(out) == len(b)
        assert all(a[i] == b[j] for i, j in pairs)  # only equal tokens
        assert all(i1 < i2 for (i1, _), (i2, _) in zip(pairs, pairs[1:]))  # in order, each source token once
        assert len(pairs) == _lcs(tuple(a), tuple(b)), (a, b, out)
