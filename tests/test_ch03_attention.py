"""Chapter 3: CausalAttention and MultiHeadAttention against PyTorch's reference attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gpt_from_scratch.ch03 import CausalAttention, MultiHeadAttention

# (batch, num_tokens, d_in, d_out, num_heads, context_length, qkv_bias)
MHA_SHAPES = [
    (2, 6, 3, 4, 2, 6, False),
    (3, 5, 8, 12, 3, 10, True),  # num_tokens < context_length
    (1, 1, 4, 4, 1, 4, False),  # a single token
    (2, 17, 16, 32, 8, 32, True),
    (4, 9, 24, 24, 6, 16, False),
]


def make_mha(d_in, d_out, num_heads, context_length, qkv_bias, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return MultiHeadAttention(d_in, d_out, context_length, dropout, num_heads, qkv_bias=qkv_bias)


def reference_mha(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The same attention computed independently: own head split, then PyTorch's SDPA."""
    b, t, _ = x.shape
    h = module.num_heads
    hd = module.d_out // h

    def split(z: torch.Tensor) -> torch.Tensor:
        return z.reshape(b, t, h, hd).permute(0, 2, 1, 3)  # (b, h, T, hd)

    q, k, v = split(module.W_query(x)), split(module.W_key(x)), split(module.W_value(x))
    ctx = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=True)  # (b, h, T, hd)
    ctx = ctx.permute(0, 2, 1, 3).reshape(b, t, module.d_out)  # (b, T, d_out)
    return module.out_proj(ctx)


@pytest.mark.parametrize("b,t,d_in,d_out,heads,ctx,bias", MHA_SHAPES)
def test_multihead_attention_matches_sdpa(b, t, d_in, d_out, heads, ctx, bias):
    mha = make_mha(d_in, d_out, heads, ctx, bias).eval()
    torch.manual_seed(1)
    x = torch.randn(b, t, d_in)
    with torch.no_grad():
        out = mha(x)
        ref = reference_mha(mha, x)
    assert out.shape == (b, t, d_out)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "b,t,d_in,d_out,ctx,bias",
    [(2, 6, 3, 2, 6, False), (3, 7, 8, 5, 12, True), (1, 1, 4, 3, 4, False), (2, 20, 16, 16, 20, True)],
)
def test_causal_attention_matches_sdpa(b, t, d_in, d_out, ctx, bias):
    torch.manual_seed(0)
    ca = CausalAttention(d_in, d_out, ctx, 0.0, qkv_bias=bias).eval()
    x = torch.randn(b, t, d_in)
    with torch.no_grad():
        out = ca(x)
        ref = F.scaled_dot_product_attention(ca.W_query(x), ca.W_key(x), ca.W_value(x), is_causal=True)
    assert out.shape == (b, t, d_out)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)


def both_modules(d_in=8, d_out=12, ctx=16, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return [
        CausalAttention(d_in, d_out, ctx, dropout),
        MultiHeadAttention(d_in, d_out, ctx, dropout, num_heads=3),
    ]


@pytest.mark.parametrize("kind", [0, 1], ids=["CausalAttention", "MultiHeadAttention"])
@pytest.mark.parametrize("cut", [0, 3, 8])
def test_no_position_attends_to_the_future(kind, cut):
    module = both_modules()[kind].eval()
    torch.manual_seed(2)
    x = torch.randn(2, 10, 8)
    x_changed = x.clone()
    x_changed[:, cut + 1 :] += torch.randn_like(x_changed[:, cut + 1 :])  # change every later token
    with torch.no_grad():
        out, out_changed = module(x), module(x_changed)
    assert torch.equal(out[:, : cut + 1], out_changed[:, : cut + 1]), "an earlier output saw a later token"
    assert not torch.allclose(out[:, cut + 1 :], out_changed[:, cut + 1 :])  # the change is visible later


def identity_probe(module: nn.Module, num_tokens: int) -> torch.Tensor:
    """Set up ``module`` so that its output is its (dropped-out) attention weights.

    Zero query/key projections give uniform causal weights, 1/(i+1) in row i; an identity value
    projection (and identity out_proj) on an identity input then returns the weights themselves.
    """
    with torch.no_grad():
        module.W_query.weight.zero_()
        module.W_key.weight.zero_()
        module.W_value.weight.copy_(torch.eye(num_tokens))
        if hasattr(module, "out_proj"):
            module.out_proj.weight.copy_(torch.eye(num_tokens))
            module.out_proj.bias.zero_()
    return torch.eye(num_tokens)


@pytest.mark.parametrize("kind", [0, 1], ids=["CausalAttention", "MultiHeadAttention"])
def test_dropout_scales_kept_weights(kind):
    t, p = 128, 0.5
    torch.manual_seed(0)
    if kind == 0:
        module = CausalAttention(t, t, t, p)
    else:
        module = MultiHeadAttention(t, t, t, p, num_heads=4)
    eye = identity_probe(module, t)
    x = eye.expand(8, t, t)  # 8 sequences of 128 tokens
    rows = torch.arange(t).unsqueeze(1)
    uniform = torch.where(torch.arange(t) <= rows, 1.0 / (rows + 1.0), 0.0)  # (T, T) causal weights

    module.eval()
    with torch.no_grad():
        first, second = module(x), module(x)
    assert torch.equal(first, second), "eval mode must be deterministic"
    torch.testing.assert_close(first, uniform.expand_as(first), atol=1e-6, rtol=1e-5)

    module.train()
    torch.manual_seed(1)
    with torch.no_grad():
        dropped = module(x)
    allowed = (uniform > 0).expand_as(dropped)
    kept = (dropped != 0) & allowed
    assert torch.all(dropped[~allowed] == 0), "dropout must not create weights on the future"
    scaled = (uniform / (1 - p)).expand_as(dropped)
    torch.testing.assert_close(dropped[kept], scaled[kept], atol=1e-6, rtol=1e-5)  # survivors * 2
    fraction = kept.sum().item() / allowed.sum().item()
    assert abs(fraction - (1 - p)) < 0.01, f"kept fraction {fraction:.4f}, expected about {1 - p}"
    assert not torch.equal(dropped, first)


@pytest.mark.parametrize("d_out,heads", [(10, 4), (7, 3), (768, 5)])
def test_indivisible_d_out_raises(d_out, heads):
    with pytest.raises(ValueError) as info:
        MultiHeadAttention(8, d_out, 16, 0.0, num_heads=heads)
    message = str(info.value)
    assert str(d_out) in message and str(heads) in message


@pytest.mark.parametrize("kind", [0, 1], ids=["CausalAttention", "MultiHeadAttention"])
def test_batch_items_are_independent(kind):
    module = both_modules()[kind].eval()
    torch.manual_seed(3)
    x = torch.randn(4, 7, 8)
    with torch.no_grad():
        together = module(x)
        alone = torch.cat([module(x[i : i + 1]) for i in range(4)])
        x_changed = x.clone()
        x_changed[2] = torch.randn(7, 8)
        changed = module(x_changed)
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=1e-5)
    keep = [0, 1, 3]
    torch.testing.assert_close(changed[keep], together[keep], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(changed[2], together[2])


@pytest.mark.parametrize("b,t", [(1, 1), (2, 5), (3, 16)])
def test_output_shapes(b, t):
    ca, mha = both_modules(d_in=8, d_out=12, ctx=16)
    x = torch.randn(b, t, 8)
    assert ca(x).shape == (b, t, 12)
    assert mha(x).shape == (b, t, 12)
    gpt2 = MultiHeadAttention(768, 768, 1024, 0.0, num_heads=12)
    assert gpt2.head_dim == 64
    assert gpt2(torch.randn(b, t, 768)).shape == (b, t, 768)


def test_input_longer_than_context_fails():
    for module in both_modules(ctx=4):
        with pytest.raises(RuntimeError):
            module(torch.randn(1, 5, 8))


@pytest.mark.parametrize("kind", [0, 1], ids=["CausalAttention", "MultiHeadAttention"])
def test_mask_is_a_non_persistent_buffer(kind):
    module = both_modules(ctx=6)[kind]
    assert "mask" in dict(module.named_buffers())
    assert "mask" not in module.state_dict()
    assert all("mask" not in name for name, _ in module.named_parameters())
    assert module.mask.dtype == torch.bool
    assert torch.equal(module.mask, torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1))
    fresh = both_modules(ctx=6, seed=1)[kind]
    fresh.load_state_dict(module.state_dict(), strict=True)  # loads without any mask entry
    x = torch.randn(2, 6, 8)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), module.eval()(x))


def test_gpt2_size_parameter_count():
    mha = MultiHeadAttention(768, 768, 1024, 0.1, num_heads=12, qkv_bias=True)
    assert sum(p.numel() for p in mha.parameters()) == 4 * 768 * 768 + 4 * 768
