"""Chapter 4: the GPT model's parts, its configuration helpers and greedy generation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gpt_from_scratch.ch03 import MultiHeadAttention
from gpt_from_scratch.ch04 import (
    GELU,
    GPT_CONFIG_124M,
    FeedForward,
    GPTModel,
    LayerNorm,
    TransformerBlock,
    check_config,
    generate_text_simple,
    gpt2_config,
)


@pytest.fixture(scope="module")
def small_cfg(tiny_cfg):
    """The suite's tiny configuration."""
    return tiny_cfg()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def tiny_model(small_cfg):
    torch.manual_seed(0)
    return GPTModel(small_cfg).eval()


def test_layernorm_matches_torch():
    torch.manual_seed(0)
    x = torch.randn(4, 5, 64) * 3 + 1
    ours, ref = LayerNorm(64), nn.LayerNorm(64, eps=1e-5)
    with torch.no_grad():
        ours.scale.copy_(torch.randn(64))
        ours.shift.copy_(torch.randn(64))
        ref.weight.copy_(ours.scale)
        ref.bias.copy_(ours.shift)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
    normed = LayerNorm(64)(x)
    torch.testing.assert_close(normed.mean(-1), torch.zeros(4, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(normed.var(-1, unbiased=False), torch.ones(4, 5), atol=1e-3, rtol=0)


def test_gelu_matches_torch_tanh_approximation():
    x = torch.linspace(-6, 6, 2001)
    expected = nn.functional.gelu(x, approximate="tanh")
    torch.testing.assert_close(GELU()(x), expected, atol=1e-6, rtol=1e-6)


def test_shapes(small_cfg, tiny_model):
    x = torch.rand(2, 5, 32)
    assert FeedForward(small_cfg)(x).shape == x.shape
    assert FeedForward(small_cfg).layers[0].out_features == 4 * 32
    assert TransformerBlock(small_cfg).eval()(x).shape == x.shape
    idx = torch.randint(0, 97, (3, 7))
    assert tiny_model(idx).shape == (3, 7, 97)


def test_layer_classes_are_class_attributes(small_cfg):
    """A subclass that names other layer classes gets them, with the same parameter names."""
    assert (TransformerBlock.attention_class, TransformerBlock.norm_class) == (MultiHeadAttention, LayerNorm)
    assert (GPTModel.block_class, GPTModel.norm_class) == (TransformerBlock, LayerNorm)

    class OtherNorm(LayerNorm):
        """A LayerNorm under another name."""

    class OtherBlock(TransformerBlock):
        norm_class = OtherNorm

    class OtherModel(GPTModel):
        block_class, norm_class = OtherBlock, OtherNorm

    model, ref = OtherModel(small_cfg), GPTModel(small_cfg)
    assert isinstance(model.trf_blocks[0], OtherBlock) and isinstance(model.final_norm, OtherNorm)
    assert type(model.trf_blocks[1].norm2) is OtherNorm and type(ref.trf_blocks[1].norm2) is LayerNorm
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }


def test_parameter_counts_124m():
    with torch.device("meta"):
        model = GPTModel(GPT_CONFIG_124M)
    total = sum(p.numel() for p in model.parameters())
    assert total == 163_009_536
    assert total - model.out_head.weight.numel() == 124_412_160
    with torch.device("meta"):
        with_bias = GPTModel(gpt2_config("124M", qkv_bias=True))
    tied = sum(p.numel() for p in with_bias.parameters()) - with_bias.out_head.weight.numel()
    assert tied == 124_439_808  # OpenAI's released GPT-2 small


@pytest.mark.parametrize(
    "size, emb_dim, n_layers, n_heads",
    [("124M", 768, 12, 12), ("355M", 1024, 24, 16), ("774M", 1280, 36, 20), ("1558M", 1600, 48, 25)],
)
def test_gpt2_config_sizes(size, emb_dim, n_layers, n_heads):
    cfg = gpt2_config(size)
    assert (cfg["emb_dim"], cfg["n_layers"], cfg["n_heads"]) == (emb_dim, n_layers, n_heads)
    assert cfg["vocab_size"] == 50257 and cfg["context_length"] == 1024
    check_config(cfg)  # a preset is a complete, valid configuration


def test_gpt2_config_overrides_do_not_leak():
    cfg = gpt2_config("355M", context_length=256, drop_rate=0.0)
    assert cfg["context_length"] == 256 and cfg["drop_rate"] == 0.0 and cfg["emb_dim"] == 1024
    assert GPT_CONFIG_124M["context_length"] == 1024
    assert gpt2_config("355M")["context_length"] == 1024


def test_gpt2_config_unknown_size_lists_valid_ones():
    with pytest.raises(ValueError) as err:
        gpt2_config("7B")
    for size in ("124M", "355M", "774M", "1558M"):
        assert size in str(err.value)


def test_gpt2_config_wrong_key():
    with pytest.raises(KeyError, match="context_lenght"):
        gpt2_config("124M", context_lenght=256)


def test_check_config_catches_missing_and_unknown_keys(small_cfg):
    cfg = dict(small_cfg)
    del cfg["qkv_bias"]
    with pytest.raises(KeyError, match="qkv_bias"):
        check_config(cfg)
    with pytest.raises(KeyError, match="n_head"):
        check_config({**small_cfg, "n_head": 4})
    with pytest.raises(KeyError):
        GPTModel({**small_cfg, "dropout": 0.1})


def test_generate_is_greedy_and_appends(tiny_model):
    torch.manual_seed(1)
    idx = torch.randint(0, 97, (2, 5))
    out = generate_text_simple(tiny_model, idx, max_new_tokens=4, context_size=16)
    assert out.shape == (2, 9)
    assert torch.equal(out[:, :5], idx)
    with torch.no_grad():
        first = tiny_model(idx)[:, -1].argmax(-1)
    assert torch.equal(out[:, 5], first)


def test_generate_crops_a_long_prompt(tiny_model):
    torch.manual_seed(2)
    idx = torch.randint(0, 97, (2, 23))  # longer than the context of 16
    out = generate_text_simple(tiny_model, idx, max_new_tokens=6, context_size=16)
    cropped = generate_text_simple(tiny_model, idx[:, -16:], max_new_tokens=6, context_size=16)
    assert torch.equal(out[:, :23], idx)
    assert torch.equal(out[:, 23:], cropped[:, 16:])


def test_generate_rejects_an_empty_prompt(tiny_model):
    with pytest.raises(ValueError):
        generate_text_simple(tiny_model, torch.zeros(1, 0, dtype=torch.long), 3, 16)


def test_model_rejects_input_longer_than_context(tiny_model):
    tiny_model(torch.zeros(1, 16, dtype=torch.long))  # exactly the context length is fine
    with pytest.raises(ValueError, match="context length"):
        tiny_model(torch.zeros(1, 17, dtype=torch.long))
