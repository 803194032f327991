"""Chapter 4, section 4.8: generation with a KV cache gives exactly the uncached tokens and logits."""

from __future__ import annotations

import pytest
import torch

from gpt_from_scratch.ch04 import (
    GPTModel,
    KVCache,
    forward_with_cache,
    generate_text_cached,
    generate_text_simple,
)
from gpt_from_scratch.ch05 import GPTModelFast

MODEL_CLASSES = [GPTModel, GPTModelFast]  # forward_with_cache works for both: the same parameter names

CTX = 16


@pytest.fixture(scope="module")
def small_cfg(tiny_cfg):
    """The suite's tiny configuration with dropout on: eval-mode generation must not depend on it."""
    cfg = tiny_cfg(drop_rate=0.1)
    assert cfg["context_length"] == CTX
    return cfg


def make_model(small_cfg, qkv_bias: bool, seed: int = 0, model_class: type = GPTModel):
    torch.manual_seed(seed)
    model = model_class({**small_cfg, "qkv_bias": qkv_bias}).eval()
    with torch.no_grad():  # non-trivial norms and biases, so that every weight matters
        for name, p in model.named_parameters():
            if name.endswith(("scale", "shift", "bias")):
                p.add_(torch.randn_like(p) * 0.3)
    return model


def outcome(generate, *args):
    """The tokens a generator returns, or the type of the error it raises."""
    try:
        return generate(*args)
    except (ValueError, RuntimeError) as err:
        return type(err)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
@pytest.mark.parametrize("qkv_bias", [False, True])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("prompt_len", [1, 3, CTX - 1, CTX, CTX + 5])
def test_same_tokens_as_uncached(small_cfg, qkv_bias, batch, prompt_len, model_class):
    model = make_model(small_cfg, qkv_bias, model_class=model_class)
    torch.manual_seed(100 + prompt_len)
    idx = torch.randint(0, small_cfg["vocab_size"], (batch, prompt_len))
    new = CTX + 4  # always runs past the context length
    expected = generate_text_simple(model, idx, max_new_tokens=new, context_size=CTX)
    got = generate_text_cached(model, idx, max_new_tokens=new, context_size=CTX)
    assert got.shape == (batch, prompt_len + new)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("context_size", [1, 6, CTX])
@pytest.mark.parametrize("prompt_len", [2, 9, CTX + 3])  # shorter and longer than the smaller windows
def test_same_tokens_with_a_window_up_to_the_context(small_cfg, batch, context_size, prompt_len):
    model = make_model(small_cfg, qkv_bias=True, seed=3)
    torch.manual_seed(context_size * 31 + prompt_len)
    idx = torch.randint(0, small_cfg["vocab_size"], (batch, prompt_len))
    expected = generate_text_simple(model, idx, max_new_tokens=15, context_size=context_size)
    assert torch.equal(generate_text_cached(model, idx, 15, context_size), expected)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize(
    ("prompt_len", "new", "context_size"),
    [
        (4, 13, CTX + 4),  # longest window 16 = the context length: fits, nothing cropped
        (4, 12, 100),  # 15 tokens
        (CTX, 1, CTX + 1),  # a full-length prompt and one new token
        (4, 14, CTX + 1),  # 17 tokens: too many for the model
        (4, 20, 40),  # used to return wrong tokens silently (a negative slice start)
        (2, 30, 100),  # used to fail with the cache's error, not the context length's
        (CTX + 2, 3, CTX + 4),  # a prompt longer than the context, not cropped by the window
    ],
)
def test_context_size_larger_than_the_context_length(small_cfg, batch, prompt_len, new, context_size):
    """Same tokens where the uncached loop works; a ValueError naming the context length where it fails."""
    model = make_model(small_cfg, qkv_bias=False, seed=4)
    torch.manual_seed(prompt_len + new)
    idx = torch.randint(0, small_cfg["vocab_size"], (batch, prompt_len))
    expected = outcome(generate_text_simple, model, idx, new, context_size)
    got = outcome(generate_text_cached, model, idx, new, context_size)
    if isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor) and torch.equal(got, expected)
    else:
        assert expected is got is ValueError
        with pytest.raises(ValueError, match="more than the context length 16"):
            generate_text_cached(model, idx, new, context_size)


def test_zero_new_tokens_and_empty_prompt(small_cfg):
    model = make_model(small_cfg, qkv_bias=False)
    for batch, prompt_len, context_size in [(1, 5, CTX), (2, CTX + 3, CTX), (2, CTX + 3, CTX + 10)]:
        idx = torch.randint(0, small_cfg["vocab_size"], (batch, prompt_len))
        assert torch.equal(generate_text_cached(model, idx, 0, context_size), idx)
        assert torch.equal(generate_text_simple(model, idx, 0, context_size), idx)
    with pytest.raises(ValueError):
        generate_text_cached(model, torch.zeros(1, 0, dtype=torch.long), 3, CTX)


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
@pytest.mark.parametrize("qkv_bias", [False, True])
def test_step_logits_match_uncached_last_position(small_cfg, qkv_bias, model_class):
    """Replays generate_text_cached's schedule and compares every step's logits with a full pass."""
    model = make_model(small_cfg, qkv_bias, seed=1, model_class=model_class)
    torch.manual_seed(7)
    seq = torch.randint(0, small_cfg["vocab_size"], (2, CTX + 8))
    prompt_len = 5
    cache = KVCache(model, batch_size=2, max_len=CTX)
    logits = forward_with_cache(model, seq[:, :prompt_len], cache)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(seq[:, :prompt_len]), atol=1e-5, rtol=0)
    for end in range(prompt_len + 1, seq.shape[1] + 1):
        if cache.length < CTX:
            step = forward_with_cache(model, seq[:, end - 1 : end], cache)
        else:  # past the context: prefill the cropped window, as generate_text_cached does
            cache.reset()
            step = forward_with_cache(model, seq[:, end - CTX : end], cache, last_only=True)
        with torch.no_grad():
            want = model(seq[:, max(0, end - CTX) : end])[:, -1]
        assert step.shape == (2, 1, small_cfg["vocab_size"])
        torch.testing.assert_close(step[:, -1], want, atol=1e-5, rtol=0)


def test_a_planted_error_is_caught(small_cfg, monkeypatch):
    """A cache that gives the new token the wrong position changes the tokens: the comparison sees it."""
    model = make_model(small_cfg, qkv_bias=True, seed=6)
    idx = torch.randint(0, small_cfg["vocab_size"], (2, 3))
    expected = generate_text_simple(model, idx, 8, CTX)  # 11 tokens: the window never slides
    assert torch.equal(generate_text_cached(model, idx, 8, CTX), expected)
    monkeypatch.setattr(KVCache, "reset", lambda self: setattr(self, "length", 1))  # positions off by one
    assert not torch.equal(generate_text_cached(model, idx, 8, CTX), expected)


def test_cache_is_reusable_and_checked(small_cfg):
    model = make_model(small_cfg, qkv_bias=True)
    idx = torch.randint(0, small_cfg["vocab_size"], (2, 3))
    cache = KVCache(model, batch_size=2)
    first = generate_text_cached(model, idx, 20, CTX, cache=cache)
    second = generate_text_cached(model, idx, 20, CTX, cache=cache)
    assert torch.equal(first, second)
    assert torch.equal(first, generate_text_simple(model, idx, 20, CTX))
    with pytest.raises(ValueError):
        generate_text_cached(model, idx[:1], 5, CTX, cache=cache)  # wrong batch size
    with pytest.raises(ValueError):
        generate_text_cached(model, idx, 5, CTX, cache=KVCache(model, batch_size=2, max_len=8))  # too short


def test_forward_with_cache_guards(small_cfg):
    model = make_model(small_cfg, qkv_bias=False)
    cache = KVCache(model, batch_size=1, max_len=8)
    forward_with_cache(model, torch.zeros(1, 8, dtype=torch.long), cache)
    assert cache.length == 8
    with pytest.raises(ValueError):
        forward_with_cache(model, torch.zeros(1, 1, dtype=torch.long), cache)  # cache full
    with pytest.raises(ValueError):
        forward_with_cache(model, torch.zeros(2, 1, dtype=torch.long), KVCache(model, 1))  # wrong batch
    with pytest.raises(ValueError):
        KVCache(model, batch_size=1, max_len=CTX + 1)  # longer than the context
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        forward_with_cache(model, torch.zeros(1, 1, dtype=torch.long), KVCache(model, 1))


def test_result_is_an_ordinary_tensor(small_cfg):
    model = make_model(small_cfg, qkv_bias=False)
    out = generate_text_cached(model, torch.zeros(1, 2, dtype=torch.long), 3, CTX)
    assert not out.is_inference() and not out.requires_grad
    out += 0  # in-place use works


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_prefill_in_chunks(small_cfg, model_class):
    """Several new tokens after cached ones: positions and the causal mask are offset correctly."""
    model = make_model(small_cfg, qkv_bias=True, seed=2, model_class=model_class)
    seq = torch.randint(0, small_cfg["vocab_size"], (2, 12))
    cache = KVCache(model, batch_size=2)
    chunks = [forward_with_cache(model, seq[:, a:b], cache) for a, b in ((0, 3), (3, 7), (7, 12))]
    with torch.no_grad():
        torch.testing.assert_close(torch.cat(chunks, dim=1), model(seq), atol=1e-5, rtol=0)


def test_cache_holds_only_keys_and_values(small_cfg):
    """No copy of the weights: building a cache allocates the two buffers and nothing else."""
    model = make_model(small_cfg, qkv_bias=True)
    cache = KVCache(model, batch_size=3, max_len=10)
    tensors = [v for v in vars(cache).values() if isinstance(v, torch.Tensor)]
    assert len(tensors) == 2
    head_dim = small_cfg["emb_dim"] // small_cfg["n_heads"]
    assert (
        cache.keys.shape
        == cache.values.shape
        == (small_cfg["n_layers"], 3, small_cfg["n_heads"], 10, head_dim)
    )
