"""Chapter 4, section 4.8: generation with a KV cache gives exactly the uncached tokens and logits."""

from __future__ import annotations

import pytest
import torch

import gpt_from_scratch.ch04 as ch04
from gpt_from_scratch.ch04 import (
    GPTModel,
    KVCache,
    _linear,
    _num_groups,
    forward_with_cache,
    generate_text_cached,
    generate_text_simple,
)

CTX = 16


@pytest.fixture(scope="module")
def small_cfg(tiny_cfg):
    """The suite's tiny configuration with dropout on: eval-mode generation must not depend on it."""
    cfg = tiny_cfg(drop_rate=0.1)
    assert cfg["context_length"] == CTX
    return cfg


def make_model(small_cfg, qkv_bias: bool, seed: int = 0):
    torch.manual_seed(seed)
    model = GPTModel({**small_cfg, "qkv_bias": qkv_bias}).eval()
    with torch.no_grad():  # non-trivial norms and biases, so that every weight matters
        for name, p in model.named_parameters():
            if name.endswith(("scale", "shift", "bias")):
                p.add_(torch.randn_like(p) * 0.3)
    return model


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("qkv_bias", [False, True])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("prompt_len", [1, 3, CTX - 1, CTX, CTX + 5])
def test_same_tokens_as_uncached(small_cfg, qkv_bias, batch, prompt_len):
    model = make_model(small_cfg, qkv_bias)
    torch.manual_seed(100 + prompt_len)
    idx = torch.randint(0, small_cfg["vocab_size"], (batch, prompt_len))
    new = CTX + 4  # always runs past the context length
    expected = generate_text_simple(model, idx, max_new_tokens=new, context_size=CTX)
    got = generate_text_cached(model, idx, max_new_tokens=new, context_size=CTX)
    assert got.shape == (batch, prompt_len + new)
    assert torch.equal(got, expected)


def test_same_tokens_with_a_smaller_window(small_cfg):
    model = make_model(small_cfg, qkv_bias=True, seed=3)
    idx = torch.randint(0, small_cfg["vocab_size"], (2, 4))
    expected = generate_text_simple(model, idx, max_new_tokens=15, context_size=6)
    assert torch.equal(generate_text_cached(model, idx, 15, 6), expected)


def test_zero_new_tokens_and_empty_prompt(small_cfg):
    model = make_model(small_cfg, qkv_bias=False)
    idx = torch.randint(0, small_cfg["vocab_size"], (1, 5))
    assert torch.equal(generate_text_cached(model, idx, 0, CTX), idx)
    with pytest.raises(ValueError):
        generate_text_cached(model, torch.zeros(1, 0, dtype=torch.long), 3, CTX)


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_step_logits_match_uncached_last_position(small_cfg, qkv_bias):
    """Replays generate_text_cached's schedule and compares every step's logits with a full pass."""
    model = make_model(small_cfg, qkv_bias, seed=1)
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


def test_forward_with_cache_guards(small_cfg):
    model = make_model(small_cfg, qkv_bias=False)
    cache = KVCache(model, batch_size=1, max_len=8)
    forward_with_cache(model, torch.zeros(1, 8, dtype=torch.long), cache)
    assert cache.length == 8
    with pytest.raises(ValueError):
        forward_with_cache(model, torch.zeros(1, 1, dtype=torch.long), cache)  # cache full
    with pytest.raises(ValueError):
        KVCache(model, batch_size=1, max_len=CTX + 1)  # longer than the context
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        forward_with_cache(model, torch.zeros(1, 1, dtype=torch.long), KVCache(model, 1))


def test_result_is_an_ordinary_tensor(small_cfg):
    model = make_model(small_cfg, qkv_bias=False)
    out = generate_text_cached(model, torch.zeros(1, 2, dtype=torch.long), 3, CTX)
    assert not out.is_inference()
    out += 0  # in-place use outside inference mode works


def test_prefill_in_chunks(small_cfg):
    """Several new tokens after cached ones: positions and the causal mask are offset correctly."""
    model = make_model(small_cfg, qkv_bias=True, seed=2)
    seq = torch.randint(0, small_cfg["vocab_size"], (2, 12))
    cache = KVCache(model, batch_size=2)
    chunks = [forward_with_cache(model, seq[:, a:b], cache) for a, b in ((0, 3), (3, 7), (7, 12))]
    with torch.no_grad():
        torch.testing.assert_close(torch.cat(chunks, dim=1), model(seq), atol=1e-5, rtol=0)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("out_features", [48, 97, 50257])  # 2 groups, 1 (prime: the layer), 29
@pytest.mark.parametrize("rows", [1, 2, 8, 9])  # 9 > MATVEC_MAX_ROWS: the layer itself
def test_linear_helper_matches_the_layer(bias, out_features, rows):
    torch.manual_seed(out_features + rows)
    layer = torch.nn.Linear(64, out_features, bias=bias)
    x = torch.randn(rows, 64)
    with torch.no_grad():
        got = _linear(x, layer)
        torch.testing.assert_close(got, layer(x), atol=1e-5, rtol=0)
    assert got.shape == (rows, out_features)


def test_num_groups():
    assert ch04.MATVEC_MAX_ROWS == 8
    assert [_num_groups(n) for n in (768, 3072, 50257, 97, 67 * 71, 1)] == [2, 2, 29, 1, 1, 1]


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


@pytest.mark.parametrize(
    ("batch", "max_rows"),
    [(2, 8), (9, 8), (2, 0)],  # torch.bmm; 9 rows per step, above the limit; 0: the layers always
)
def test_same_tokens_with_a_grouped_output_head(small_cfg, monkeypatch, batch, max_rows):
    """A vocabulary of 98 = 2 x 49 sends the output head through torch.bmm too."""
    monkeypatch.setattr(ch04, "MATVEC_MAX_ROWS", max_rows)
    torch.manual_seed(5)
    model = GPTModel({**small_cfg, "vocab_size": 98, "qkv_bias": True}).eval()
    idx = torch.randint(0, 98, (batch, 4))
    expected = generate_text_simple(model, idx, max_new_tokens=CTX, context_size=CTX)
    assert torch.equal(generate_text_cached(model, idx, CTX, CTX), expected)


def test_linear_helper_other_inputs():
    """Non-contiguous rows use torch.bmm; 3-D input, subclasses and non-contiguous weights use the layer."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 48)
    with torch.no_grad():
        wide = torch.randn(64, 3)
        torch.testing.assert_close(_linear(wide.T, layer), layer(wide.T), atol=1e-5, rtol=0)
        cube = torch.randn(2, 3, 64)
        assert torch.equal(_linear(cube, layer), layer(cube))

        class Doubled(torch.nn.Linear):
            def forward(self, x):
                return 2 * super().forward(x)

        doubled = Doubled(64, 48)
        x = torch.randn(1, 64)
        assert torch.equal(_linear(x, doubled), doubled(x))

        transposed = torch.nn.Linear(64, 48)  # a weight stored (in, out), as a transposed view
        transposed.weight = torch.nn.Parameter(torch.randn(64, 48).T)
        assert torch.equal(_linear(x, transposed), transposed(x))  # the layer, not a copy
