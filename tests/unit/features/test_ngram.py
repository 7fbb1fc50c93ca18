"""The n-gram tokeniser of the fast default text encoder (pure Python half)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from banditd.features.ngram import NgramTokenizer, ngram_ids, ngrams


def test_ngrams_are_in_text_order_word_by_word() -> None:
    """Each word contributes its unigram, the bigram with the previous word, then trigrams."""
    assert ngrams("Hi Bo") == ["w:hi", "c: hi", "c:hi ", "w:bo", "b:hi bo", "c: bo", "c:bo "]


def test_ngrams_normalise_case_and_unicode() -> None:
    """NFKC + lower-case: full-width and upper-case letters give the same n-grams."""
    assert ngrams("ＰＹＴＨＯＮ code") == ngrams("python code")


@given(st.text(max_size=200), st.integers(1, 50), st.integers(2, 1 << 16))
def test_truncation_keeps_the_start_of_the_text(text: str, max_tokens: int, buckets: int) -> None:
    """Ids under a smaller max_tokens are a prefix of those under a larger one, all in range."""
    short = ngram_ids(text, buckets, max_tokens)
    long = ngram_ids(text, buckets, max_tokens + 25)
    assert long[: len(short)] == short
    assert len(short) <= max_tokens
    assert all(1 <= i < buckets for i in long)


def test_tokenizer_pads_with_zero_and_masks_padding() -> None:
    """A batch is padded to its longest row with id 0 and mask 0; empty text gets width 1."""
    out = NgramTokenizer(1 << 10, 64)(["hello world", ""])
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == mask.shape
    assert mask[0].sum() == len(ngrams("hello world"))
    assert mask[1].sum() == 0
    assert (ids[mask == 0] == 0).all()
