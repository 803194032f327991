"""Chapter 2: word tokenizer, GPT-2 tokenizer and the sliding-window data loader."""

from __future__ import annotations

import math

import pytest
import torch

from gpt_from_scratch.ch02 import GPTDataset, SimpleTokenizer, create_dataloader, split_words

VERDICT_BPE_TOKENS = 5145  # GPT-2 tokens in "The Verdict"
VERDICT_WORD_TOKENS = 4690  # split_words tokens in "The Verdict"
VERDICT_VOCAB = 1130  # distinct split_words tokens


def expected_samples(n_tokens: int, max_length: int, stride: int) -> int:
    """Windows start at 0, stride, 2*stride, ... while start + max_length < n_tokens."""
    return math.ceil((n_tokens - max_length) / stride)


@pytest.fixture(scope="module")
def verdict_ids(gpt2_tokenizer, verdict_text) -> list[int]:
    return gpt2_tokenizer.encode(verdict_text)


@pytest.fixture(scope="module")
def verdict_vocab(verdict_text) -> dict[str, int]:
    return {w: i for i, w in enumerate(sorted(set(split_words(verdict_text))))}


# ---------------------------------------------------------------- split_words / SimpleTokenizer


def test_split_words_separates_punctuation_and_drops_whitespace():
    got = split_words("Hello, world. Is this-- a test?\n  'Yes'!")
    assert got == ["Hello", ",", "world", ".", "Is", "this", "--", "a", "test", "?", "'", "Yes", "'", "!"]


def test_verdict_counts(verdict_text, verdict_vocab):
    assert len(verdict_text) == 20479
    assert len(split_words(verdict_text)) == VERDICT_WORD_TOKENS
    assert len(verdict_vocab) == VERDICT_VOCAB


def test_simple_tokenizer_round_trip_on_verdict(verdict_text, verdict_vocab):
    tok = SimpleTokenizer(verdict_vocab)
    ids = tok.encode(verdict_text)
    assert len(ids) == VERDICT_WORD_TOKENS
    assert sorted(set(ids)) == list(range(VERDICT_VOCAB))
    decoded = tok.decode(ids)
    assert split_words(decoded) == split_words(verdict_text)
    assert tok.encode(decoded) == ids


def test_simple_tokenizer_decode_removes_space_before_punctuation(verdict_vocab):
    tok = SimpleTokenizer(verdict_vocab)
    text = "It was the last he painted, you know, Mrs. Gisburn said."
    assert tok.decode(tok.encode(text)) == text


def test_missing_word_without_unk_raises_helpful_keyerror(verdict_vocab):
    tok = SimpleTokenizer(verdict_vocab)
    with pytest.raises(KeyError) as info:
        tok.encode("Hello, do you like tea?")
    message = info.value.args[0]
    assert "'Hello'" in message and "<|unk|>" in message


def test_unknown_words_map_to_unk_when_present(verdict_vocab):
    vocab = dict(verdict_vocab)
    vocab["<|endoftext|>"] = len(vocab)
    vocab["<|unk|>"] = len(vocab)
    tok = SimpleTokenizer(vocab)
    ids = tok.encode("Hello, do you like tea? <|endoftext|> In the sunlit terraces of the palace.")
    assert ids.count(vocab["<|unk|>"]) == 2
    assert ids.count(vocab["<|endoftext|>"]) == 1
    assert tok.decode(ids) == "<|unk|>, do you like tea? <|endoftext|> In the sunlit terraces of the <|unk|>."


# ---------------------------------------------------------------- GPT-2 tokenizer


def test_tiktoken_round_trip_and_known_ids(gpt2_tokenizer, verdict_text, verdict_ids):
    assert len(verdict_ids) == VERDICT_BPE_TOKENS
    assert gpt2_tokenizer.decode(verdict_ids) == verdict_text
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
    ids = gpt2_tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    assert ids == [
        15496,
        11,
        466,
        345,
        588,
        8887,
        30,
        220,
        50256,
        554,
        262,
        4252,
        18250,
        8812,
        2114,
        286,
        617,
        34680,
        27271,
        13,
    ]
    assert gpt2_tokenizer.decode(ids) == text
    assert gpt2_tokenizer.encode("Akwirw ier") == [33901, 86, 343, 86, 220, 959]


# ---------------------------------------------------------------- GPTDataset / create_dataloader


@pytest.mark.parametrize(
    ("max_length", "stride", "pinned"),
    [(4, 1, 5141), (4, 4, 1286), (256, 128, 39), (8, 2, 2569), (2, 2, 2572), (256, 256, 20)],
)
def test_sample_counts(gpt2_tokenizer, verdict_text, max_length, stride, pinned):
    dataset = GPTDataset(verdict_text, gpt2_tokenizer, max_length, stride)
    assert len(dataset) == expected_samples(VERDICT_BPE_TOKENS, max_length, stride) == pinned


@pytest.mark.parametrize(("max_length", "stride"), [(4, 1), (4, 4), (8, 3), (256, 128)])
def test_windows_follow_the_token_stream(gpt2_tokenizer, verdict_text, verdict_ids, max_length, stride):
    dataset = GPTDataset(verdict_text, gpt2_tokenizer, max_length, stride)
    for idx in [0, 1, len(dataset) // 2, len(dataset) - 1]:
        x, y = dataset[idx]
        start = idx * stride
        assert x.dtype == torch.long and x.shape == y.shape == (max_length,)
        assert x.tolist() == verdict_ids[start : start + max_length]
        assert y.tolist() == verdict_ids[start + 1 : start + max_length + 1]  # targets: inputs shifted by one
    last_x, last_y = dataset[len(dataset) - 1]
    assert (len(dataset) - 1) * stride + max_length < len(verdict_ids)  # the last window fits
    assert len(dataset) * stride + max_length >= len(verdict_ids)  # and one more would not


def test_dataset_honours_endoftext(gpt2_tokenizer):
    dataset = GPTDataset("One story. <|endoftext|> Another story here.", gpt2_tokenizer, 4, 1)
    assert any(50256 in x for x, _ in dataset)


def test_batch_shapes_and_order(gpt2_tokenizer, verdict_text, verdict_ids):
    loader = create_dataloader(
        verdict_text, gpt2_tokenizer, batch_size=8, max_length=4, stride=4, shuffle=False
    )
    inputs, targets = next(iter(loader))
    assert inputs.shape == targets.shape == (8, 4)
    assert inputs.flatten().tolist() == verdict_ids[:32]
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    assert inputs[0].tolist() == [40, 367, 2885, 1464]


def test_drop_last(gpt2_tokenizer, verdict_text):
    kwargs = dict(batch_size=8, max_length=4, stride=4, shuffle=False)  # 1286 samples = 160 * 8 + 6
    dropped = create_dataloader(verdict_text, gpt2_tokenizer, drop_last=True, **kwargs)
    kept = create_dataloader(verdict_text, gpt2_tokenizer, drop_last=False, **kwargs)
    assert len(dropped) == 160 and len(kept) == 161
    assert all(len(x) == 8 for x, _ in dropped)
    assert [len(x) for x, _ in kept][-1] == 6


def test_shuffle_is_seeded_and_covers_every_sample(gpt2_tokenizer, verdict_text):
    def first_epoch(shuffle: bool) -> list[list[int]]:
        torch.manual_seed(123)
        loader = create_dataloader(
            verdict_text,
            gpt2_tokenizer,
            batch_size=8,
            max_length=4,
            stride=4,
            shuffle=shuffle,
            drop_last=False,
        )
        return [row for x, _ in loader for row in x.tolist()]

    ordered, shuffled = first_epoch(False), first_epoch(True)
    assert shuffled != ordered
    assert sorted(shuffled) == sorted(ordered)
    assert first_epoch(True) == shuffled  # same seed, same order


def test_defaults_give_training_batches(gpt2_tokenizer, verdict_text):
    loader = create_dataloader(verdict_text, gpt2_tokenizer)  # batch 4, 256 tokens, stride 128
    inputs, targets = next(iter(loader))
    assert inputs.shape == targets.shape == (4, 256)
    assert len(loader) == 39 // 4


@pytest.mark.parametrize("max_length", [3, 4, 256])
def test_text_shorter_than_window_raises_valueerror(gpt2_tokenizer, max_length):
    with pytest.raises(ValueError, match=r"max_length \+ 1"):
        create_dataloader("Too short.", gpt2_tokenizer, max_length=max_length)  # 3 tokens


def test_text_of_exactly_one_window(gpt2_tokenizer):
    dataset = GPTDataset("Too short.", gpt2_tokenizer, max_length=2, stride=1)  # 3 tokens: one window
    assert len(dataset) == 1
