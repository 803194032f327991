"""The byte pair encoding tokenizer written from scratch (ch02 companion notebook)."""

from __future__ import annotations

import unicodedata

import pytest

from gpt_from_scratch.ch02 import BytePairTokenizer, GPTDataset, byte_to_unicode_map, gpt2_pretokenize_pattern
from shared.data import fetch, read_text
from shared.registry import GUTENBERG_BOOKS

TINY = "low low low low low lower lower newest newest newest newest newest newest widest widest widest"

TRICKY = [
    "",
    " ",
    "  leading and trailing spaces   ",
    "tabs\tand\r\nWindows\r\nline endings\n\n\n",
    "text ending in spaces and a newline  \n",
    "I'M SURE YOU'LL SEE: they'd've gone. It's 'quoted' isn't it''s",
    "3.14159 and 1,000,000 and 2024-01-01 and ½ ² Ⅻ",
    "naïve café, Straße, Ελληνικά, русский, 日本語, عربى, हिन्दी",
    "e\u0301 combining accent and zero\u200bwidth space",
    "emoji 🙂👍🏽 and symbols ©®™ ∑∫√ and 🏳️‍🌈",
    "\u00a0non-breaking\u00a0space, \u2003em space, \u3000ideographic, control \x1c\x1f\x00 chars",
    "<|endoftext|> as plain text",
    "!!!???...---***",
]


@pytest.fixture(scope="module")
def gpt2_bpe():
    files = fetch("encoder.json", quiet=True), fetch("vocab.bpe", quiet=True)
    return BytePairTokenizer.from_gpt2_files(*files)


def test_byte_map():
    mapping = byte_to_unicode_map()
    assert sorted(mapping) == list(range(256))
    assert len(set(mapping.values())) == 256
    assert mapping[ord(" ")] == "Ġ" and mapping[ord("\n")] == "Ċ" and mapping[ord("A")] == "A"
    assert all(c.isprintable() and not c.isspace() for c in mapping.values())


def test_vocabulary_loaded(gpt2_bpe):
    assert gpt2_bpe.n_vocab == 50257
    assert len(gpt2_bpe.merge_ranks) == 50000
    assert gpt2_bpe.special_tokens == {"<|endoftext|>": 50256}
    assert list(gpt2_bpe.merge_ranks)[:3] == [("Ġ", "t"), ("Ġ", "a"), ("h", "e")]


def test_identical_to_tiktoken_on_verdict(gpt2_bpe, gpt2_tokenizer, verdict_text):
    ids = gpt2_bpe.encode(verdict_text)
    assert ids == gpt2_tokenizer.encode(verdict_text)
    assert len(ids) == 5145
    assert gpt2_bpe.decode(ids) == verdict_text


@pytest.mark.parametrize("text", TRICKY)
def test_identical_to_tiktoken_on_edge_cases(gpt2_bpe, gpt2_tokenizer, text):
    ids = gpt2_bpe.encode_ordinary(text)
    assert ids == gpt2_tokenizer.encode_ordinary(text)
    assert gpt2_bpe.decode(ids) == text


def test_special_tokens(gpt2_bpe, gpt2_tokenizer):
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace.<|endoftext|>"
    for allowed in ({"<|endoftext|>"}, "all"):
        ids = gpt2_bpe.encode(text, allowed_special=allowed)
        assert ids == gpt2_tokenizer.encode(text, allowed_special=allowed)
        assert ids.count(50256) == 2
        assert gpt2_bpe.decode(ids) == text
    assert gpt2_bpe.encode(text) == gpt2_tokenizer.encode(text, disallowed_special=())
    assert 50256 not in gpt2_bpe.encode(text)


def test_pattern_matches_regex_module_on_every_assigned_code_point():
    regex = pytest.importorskip("regex")  # installed with tiktoken, which depends on it
    from tiktoken_ext.openai_public import r50k_pat_str

    assigned = [chr(cp) for cp in range(0x110000) if unicodedata.category(chr(cp)) != "Cn"]
    probe = "".join(f"a{c}1{c} {c}" for c in assigned)
    assert gpt2_pretokenize_pattern().findall(probe) == regex.compile(r50k_pat_str).findall(probe)


def test_cache_does_not_change_results(gpt2_bpe, verdict_text):
    fresh = BytePairTokenizer(gpt2_bpe.encoder, list(gpt2_bpe.merge_ranks), gpt2_bpe.special_tokens)
    first = fresh.encode(verdict_text)
    assert fresh.cache  # filled
    assert fresh.encode(verdict_text) == first == gpt2_bpe.encode(verdict_text)


def test_identical_to_tiktoken_on_every_gutenberg_book(mirror, gpt2_bpe, gpt2_tokenizer):
    for number in GUTENBERG_BOOKS:  # read as the companion notebook reads them
        name = f"gutenberg/pg{number}.txt"
        text = read_text(name)
        ids = gpt2_bpe.encode_ordinary(text)
        assert ids == gpt2_tokenizer.encode_ordinary(text), name
        assert gpt2_bpe.decode(ids) == text, name


# ---------------------------------------------------------------- training


def test_training_tiny_text_first_merges():
    bpe = BytePairTokenizer.train(TINY, num_merges=10)
    # worked out by hand: "e s" and "s t" occur 9 times (ties go alphabetically), then "l o", "o w" 7 times
    assert list(bpe.merge_ranks)[:5] == [("e", "s"), ("es", "t"), ("l", "o"), ("lo", "w"), ("e", "w")]
    assert bpe.encoder["est"] == 257 and bpe.encoder["low"] == 259
    assert bpe.n_vocab == 256 + 10 + 1
    assert bpe.special_tokens == {"<|endoftext|>": 266}
    assert [bpe.decode([i]) for i in bpe.encode(" newest lowest")] == [" newest", " low", "est"]


def test_training_stops_when_nothing_is_left_to_merge():
    bpe = BytePairTokenizer.train("aaa", num_merges=50)
    assert list(bpe.merge_ranks) == [("a", "a"), ("aa", "a")]
    assert bpe.encode("aaa") == [bpe.encoder["aaa"]]


def test_trained_tokenizer_round_trip_and_determinism(verdict_text):
    bpe = BytePairTokenizer.train(verdict_text, num_merges=60)
    again = BytePairTokenizer.train(verdict_text, num_merges=60)
    assert bpe.merge_ranks == again.merge_ranks
    first = [a + b for a, b in list(bpe.merge_ranks)[:9]]
    assert first == ["Ġt", "he", "Ġa", "in", "Ġh", "Ġs", "Ġw", "Ġo", "Ġthe"]
    ids = bpe.encode(verdict_text)
    assert len(ids) < len(verdict_text.encode("utf-8"))
    assert bpe.decode(ids) == verdict_text
    for text in TRICKY:  # unseen bytes are spelled byte by byte
        assert bpe.decode(bpe.encode(text)) == text
    assert bpe.encode("<|endoftext|>", allowed_special="all") == [bpe.special_tokens["<|endoftext|>"]]


def test_works_as_dataset_tokenizer(gpt2_bpe, gpt2_tokenizer, verdict_text):
    ours = GPTDataset(verdict_text, gpt2_bpe, max_length=8, stride=8)
    theirs = GPTDataset(verdict_text, gpt2_tokenizer, max_length=8, stride=8)
    assert len(ours) == len(theirs)
    assert all((a == c).all() and (b == d).all() for (a, b), (c, d) in zip(ours, theirs))
