"""Chapter 5 speed companion: ``GPTModelFast``, the fast cached generator and the low-memory loader.

``GPTModelFast`` must compute what ``GPTModel`` computes (logits within float32 rounding, the
same greedy tokens) from the same state dict, on random weights and on a GPT-2-format checkpoint
written here; the checks must catch a planted error (two swapped weights).
"""

from __future__ import annotations

import copy

import pytest
import torch

from gpt_from_scratch.ch03 import MultiHeadAttention
from gpt_from_scratch.ch04 import GPTModel, KVCache, TransformerBlock, generate_text_simple
from gpt_from_scratch.ch05 import (
    FastDecoder,
    FastTransformerBlock,
    FusedQKVAttention,
    GPTModelFast,
    calc_loss_batch,
    generate,
    generate_text_fast,
    grouped_matvec,
    load_gpt2_model_lowmem,
    load_hf_weights_into_gpt,
    read_safetensors,
    write_hf_safetensors,
)

MODEL_CLASSES = [GPTModel, GPTModelFast]
ATOL, RTOL = 1e-5, 1e-4  # float32 rounding: fused products and kernels add in another order
BF16_LOSS_RTOL = 0.02  # a bf16 autocast step's loss within 2% of float32's


@pytest.fixture(autouse=True)
def _threads(one_thread):
    """Tiny models run on one thread (the suite's fixture)."""


@pytest.fixture
def cfg(tiny_cfg):
    """The suite's tiny configuration with GPT-2's query/key/value biases."""
    return tiny_cfg(qkv_bias=True)


def pair(cfg: dict, seed: int = 123, **fast_args) -> tuple[GPTModel, GPTModelFast]:
    """A random GPTModel and a GPTModelFast holding its state dict, both in eval mode."""
    torch.manual_seed(seed)
    ref = GPTModel(cfg).eval()
    fast = GPTModelFast(cfg, **fast_args).eval()
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def tokens(cfg: dict, b: int = 2, t: int | None = None, seed: int = 0) -> torch.Tensor:
    """Random token IDs of shape (b, t)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg["vocab_size"], (b, t or cfg["context_length"]), generator=g)


@pytest.mark.parametrize("tie", [False, True])
def test_state_dict_names_and_shapes_identical(cfg, tie):
    ref, fast = GPTModel(cfg), GPTModelFast(cfg, tie_weights=tie)
    assert {k: v.shape for k, v in ref.state_dict().items()} == {
        k: v.shape for k, v in fast.state_dict().items()
    }
    GPTModel(cfg).load_state_dict(fast.state_dict())  # and back: strict loading both ways


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_logits_equal_gptmodel_on_random_weights(tiny_cfg, qkv_bias):
    cfg = tiny_cfg(qkv_bias=qkv_bias)
    ref, fast = pair(cfg)
    x = tokens(cfg)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(
            fast(x[:, :5]), ref(x[:, :5]), atol=ATOL, rtol=RTOL
        )  # shorter than context


def test_gradients_equal_gptmodel(cfg):
    ref, fast = pair(cfg)
    x, y = tokens(cfg, seed=1), tokens(cfg, seed=2)
    calc_loss_batch(x, y, ref, "cpu").backward()
    calc_loss_batch(x, y, fast, "cpu").backward()
    grads_fast = dict(fast.named_parameters())
    for name, p in ref.named_parameters():
        torch.testing.assert_close(grads_fast[name].grad, p.grad, atol=1e-5, rtol=1e-3, msg=name)


def test_planted_error_is_caught(cfg):
    ref, fast = pair(cfg)
    att = fast.trf_blocks[1].att
    with torch.no_grad():  # plant an error: query and key weights swapped in one block
        q = att.W_query.weight.clone()
        att.W_query.weight.copy_(att.W_key.weight)
        att.W_key.weight.copy_(q)
        x = tokens(cfg)
        assert not torch.allclose(fast(x), ref(x), atol=ATOL, rtol=RTOL)


def test_logits_equal_on_gpt2_format_checkpoint(cfg, tmp_path):
    torch.manual_seed(7)
    source = GPTModel(cfg)
    source.out_head.weight = source.tok_emb.weight  # GPT-2 ties them
    path = write_hf_safetensors(source, tmp_path / "model.safetensors")
    state = read_safetensors(path)
    ref, fast = GPTModel(cfg).eval(), GPTModelFast(cfg).eval()
    load_hf_weights_into_gpt(ref, state)  # chapter 5's loader fills both classes
    load_hf_weights_into_gpt(fast, state)
    x = tokens(cfg)
    with torch.no_grad():
        torch.testing.assert_close(ref(x), source.eval()(x))
        torch.testing.assert_close(fast(x), ref(x), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("model_class", [GPTModel, GPTModelFast])
@pytest.mark.parametrize("with_prefix", [False, True])
def test_meta_loading_gives_same_logits(cfg, tmp_path, model_class, with_prefix):
    torch.manual_seed(7)
    source = GPTModel(cfg).eval()
    source.out_head.weight = source.tok_emb.weight
    path = write_hf_safetensors(
        source, tmp_path / "model.safetensors", with_prefix=with_prefix, with_buffers=True
    )
    model = load_gpt2_model_lowmem(path, model_class=model_class, cfg=cfg)
    assert isinstance(model, model_class) and not model.training
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert model.out_head.weight is model.tok_emb.weight
    x = tokens(cfg)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("batch", [1, 2, 3])
@pytest.mark.parametrize("context_size", [16, 6])  # the model's context, and a sliding window
def test_greedy_tokens_identical(cfg, context_size, batch):
    ref, fast = pair(cfg)
    prompt = tokens(cfg, b=batch, t=3)
    expected = generate_text_simple(ref, prompt, 20, context_size)
    assert torch.equal(generate_text_simple(fast, prompt, 20, context_size), expected)
    assert torch.equal(generate_text_fast(ref, prompt, 20, context_size), expected)
    assert torch.equal(generate_text_fast(fast, prompt, 20, context_size), expected)
    assert torch.equal(generate_text_fast(fast, prompt, 20, context_size, grouped=False), expected)
    assert torch.equal(generate_text_fast(fast, prompt, 0, context_size), prompt)
    assert torch.equal(generate_text_fast(ref, prompt, 1, context_size), expected[:, :4])
    if context_size == cfg["context_length"]:  # the default window is the model's context
        assert torch.equal(generate_text_fast(ref, prompt, 20), expected)


def test_generate_text_fast_tied_and_bf16(cfg):
    _, fast = pair(cfg, tie_weights=False)
    torch.manual_seed(3)
    tied = GPTModelFast(cfg, tie_weights=True).eval()
    prompt = tokens(cfg, t=4)
    assert torch.equal(generate_text_fast(tied, prompt, 10, 16), generate_text_simple(tied, prompt, 10, 16))
    out16 = generate_text_fast(fast, prompt, 10, 16, dtype=torch.bfloat16)  # runs; tokens may differ
    assert out16.shape == (2, 14) and torch.equal(out16[:, :4], prompt)


def test_generate_text_fast_refuses_too_long_windows_like_simple(cfg):
    ref, _ = pair(cfg)
    prompt = tokens(cfg, t=4)
    with pytest.raises(ValueError, match="context length"):
        generate_text_simple(ref, prompt, 20, context_size=40)
    with pytest.raises(ValueError, match="context length"):
        generate_text_fast(ref, prompt, 20, context_size=40)
    # a window larger than the context is fine while the sequence fits, as in the uncached loop
    assert torch.equal(generate_text_fast(ref, prompt, 8, 40), generate_text_simple(ref, prompt, 8, 40))


def test_subclasses_share_the_lesson_classes(cfg):
    """One model family: the fast classes are the lesson's with other layer classes, no own forward."""
    assert issubclass(GPTModelFast, GPTModel) and issubclass(FastTransformerBlock, TransformerBlock)
    assert issubclass(FusedQKVAttention, MultiHeadAttention)
    assert "forward" not in vars(FastTransformerBlock)  # TransformerBlock.forward runs the fast block
    _, fast = pair(cfg)
    assert all(isinstance(block.att, FusedQKVAttention) for block in fast.trf_blocks)


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
@pytest.mark.parametrize("context_size", [16, 5])
@pytest.mark.parametrize(("temperature", "top_k"), [(1.0, None), (0.7, 10), (1.5, 1)])
def test_sampling_same_tokens_as_generate(cfg, model_class, context_size, temperature, top_k):
    """Sampled with the same seed, the fast decoder draws the tokens of chapter 5's ``generate``."""
    ref, fast = pair(cfg)
    model = ref if model_class is GPTModel else fast
    prompt = tokens(cfg, b=2, t=3)
    for seed in range(3):
        torch.manual_seed(seed)
        want = generate(model, prompt, 20, context_size, temperature=temperature, top_k=top_k)
        torch.manual_seed(seed)
        got = generate_text_fast(model, prompt, 20, context_size, temperature=temperature, top_k=top_k)
        assert torch.equal(got, want), seed
    torch.manual_seed(0)
    greedy_by_top1 = generate_text_fast(model, prompt, 20, context_size, temperature=1.0, top_k=1)
    assert torch.equal(greedy_by_top1, generate_text_simple(model, prompt, 20, context_size))
    with pytest.raises(ValueError, match="temperature"):
        generate_text_fast(model, prompt, 3, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        generate_text_fast(model, prompt, 3, top_k=0)


@pytest.mark.parametrize("model_class", MODEL_CLASSES)
@pytest.mark.parametrize("batch", [1, 3])
def test_eos_stops_like_generate(cfg, model_class, batch):
    """With ``eos_id``, the tokens of ``generate``: finished rows padded with eos, a stop when all end."""
    ref, fast = pair(cfg)
    model = ref if model_class is GPTModel else fast
    prompt = tokens(cfg, b=batch, t=3, seed=5)
    greedy = generate_text_simple(model, prompt, 20, 16)
    firsts = [int(t) for t in greedy[:, 3]]  # each row's first new token: that row stops at once
    for eos in (None, 7, firsts[0], int(greedy[-1, 6])):
        for n in (0, 1, 5, 20):  # 20: past the context of 16, the window slides
            want = generate(model, prompt, n, 16, eos_id=eos)
            got = generate_text_fast(model, prompt, n, eos_id=eos)
            assert torch.equal(got, want), (eos, n)
    if batch == 1:  # stops right after the end token, which it keeps
        out = generate_text_fast(model, prompt, 20, eos_id=firsts[0])
        assert out.shape == (1, 4) and int(out[0, -1]) == firsts[0]
    else:  # a row that finished is padded with eos until every row has finished
        out = generate_text_fast(model, prompt, 20, eos_id=firsts[0])
        for row in range(batch):
            ids = out[row, 3:].tolist()
            if firsts[0] in ids:
                assert set(ids[ids.index(firsts[0]) :]) == {firsts[0]}


def test_decoder_products_are_f_linear_unless_grouped_is_asked(cfg):
    """F.linear by default in every dtype (PyTorch's own product); grouped_matvec only when asked."""
    ref, fast = pair(cfg)
    assert FastDecoder(fast, 1).linear is torch.nn.functional.linear and FastDecoder(fast, 1).grouped is False
    assert FastDecoder(fast, 1, dtype=torch.bfloat16).linear is torch.nn.functional.linear
    assert FastDecoder(fast, 1, grouped=True).linear is grouped_matvec
    assert FastDecoder(fast, 1, dtype=torch.bfloat16, grouped=True).linear is grouped_matvec
    prompt = tokens(cfg, t=4)
    for grouped in (True, False):
        out16 = generate_text_fast(ref, prompt, 10, 16, dtype=torch.bfloat16, grouped=grouped)
        assert out16.shape == (2, 14) and torch.equal(out16[:, :4], prompt)
    assert all(p.dtype == torch.float32 for p in ref.parameters())  # the model itself is not converted


def test_decoder_shares_the_model_weights(cfg):
    """The decoder runs a GPTModelFast on the model's own tensors (float32): no copy, no change."""
    ref, _ = pair(cfg)
    before = {k: v.clone() for k, v in ref.state_dict().items()}
    decoder = FastDecoder(ref, 2)
    assert isinstance(decoder.model, GPTModelFast) and not decoder.model.training
    assert decoder.model.tok_emb.weight.data_ptr() == ref.tok_emb.weight.data_ptr()
    assert isinstance(decoder.cache, KVCache)  # chapter 4's cache
    generate_text_fast(ref, tokens(cfg, t=3), 20, 6)
    assert all(torch.equal(before[k], v) for k, v in ref.state_dict().items())
    assert ref.tok_emb.weight.requires_grad  # the decoder's copy is frozen, not the model


def test_decoder_step_logits_and_a_planted_error(cfg):
    """Each step's logits equal the model's last position; a planted error in the stacked weights shows."""
    ref, fast = pair(cfg)
    seq = tokens(cfg, b=2, t=10, seed=3)
    decoder = FastDecoder(fast, 2, max_len=10)
    logits = [decoder.step(seq[:, :4])] + [decoder.step(seq[:, i : i + 1]) for i in range(4, 10)]
    with torch.no_grad():
        want = [ref(seq[:, : i + 1])[:, -1] for i in range(3, 10)]
    for got, expected in zip(logits, want):
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)
    planted = FastDecoder(fast, 2, max_len=10)
    weight, bias = planted.qkv[1]
    planted.qkv[1] = (weight.roll(1, dims=0), bias)  # query, key and value rows shifted by one
    assert not torch.allclose(planted.step(seq[:, :4]), want[0], atol=ATOL, rtol=RTOL)


def test_planted_attention_error_changes_the_tokens(cfg, monkeypatch):
    """Queries and keys swapped in the decoder's attention give other tokens: the comparison sees it."""
    ref, _ = pair(cfg)  # GPTModel: generate_text_simple does not run FusedQKVAttention
    prompt = tokens(cfg, t=3)
    expected = generate_text_simple(ref, prompt, 20, 6)
    assert torch.equal(generate_text_fast(ref, prompt, 20, 6), expected)
    heads = FusedQKVAttention.qkv_heads

    def swapped(self, *args):
        queries, keys, values = heads(self, *args)
        return keys, queries, values

    monkeypatch.setattr(FusedQKVAttention, "qkv_heads", swapped)
    assert not torch.equal(generate_text_fast(ref, prompt, 20, 6), expected)


def test_fused_attention_cached_equals_forward(cfg):
    """forward_cached, a prompt and then one token at a time, gives forward's outputs."""
    torch.manual_seed(0)
    att = FusedQKVAttention(32, 32, 16, dropout=0.0, num_heads=4, qkv_bias=True).eval()
    model = GPTModelFast(cfg).eval()  # only for the cache's shape, dtype and device
    x = torch.randn(2, 9, 32)
    cache = KVCache(model, batch_size=2, max_len=9)
    with torch.no_grad():
        want = att(x)
        parts = [att.forward_cached(x[:, :4], cache, layer=0)]
        cache.length = 4
        for i in range(4, 9):
            parts.append(att.forward_cached(x[:, i : i + 1], cache, layer=0))
            cache.length += 1
        torch.testing.assert_close(torch.cat(parts, dim=1), want, atol=ATOL, rtol=RTOL)
        with pytest.raises(ValueError, match="empty cache"):
            att.forward_cached(x[:, :2], cache, layer=0)


def test_models_with_other_layers_decode_through_chapter_4(cfg):
    """A model with LoRA adapters (other parameter names) decodes with chapter 4's forward_with_cache."""
    from gpt_from_scratch.ch06 import apply_lora

    ref, _ = pair(cfg)
    apply_lora(ref, rank=2, alpha=4)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith(".B"):
                p.normal_(std=0.5)  # adapters that change the output
    decoder = FastDecoder(ref, 2)
    assert decoder.model is ref and decoder.qkv is None
    prompt = tokens(cfg, t=3)
    for context_size in (16, 6):
        assert torch.equal(
            generate_text_fast(ref, prompt, 20, context_size),
            generate_text_simple(ref, prompt, 20, context_size),
        )
    with pytest.raises(ValueError, match="own dtype"):
        FastDecoder(ref, 2, dtype=torch.bfloat16)


def test_decoder_refuses_a_prompt_into_a_filled_cache(cfg):
    ref, _ = pair(cfg)
    decoder = FastDecoder(ref, batch_size=2, max_len=8)
    decoder.step(tokens(cfg, t=3))
    with pytest.raises(ValueError, match="empty cache"):
        decoder.step(tokens(cfg, t=2))


@pytest.mark.parametrize("rows", [1, 2, 8, 9])
@pytest.mark.parametrize("out_features", [96, 97])  # 97 is prime: no groups, F.linear
def test_grouped_matvec_equals_linear(rows, out_features):
    torch.manual_seed(0)
    w, b, x = torch.randn(out_features, 32), torch.randn(out_features), torch.randn(rows, 32)
    torch.testing.assert_close(grouped_matvec(x, w, b), torch.nn.functional.linear(x, w, b))
    torch.testing.assert_close(grouped_matvec(x, w), x @ w.T)
    x3 = x.view(1, rows, 32)  # leading dimensions, as F.linear takes them
    torch.testing.assert_close(grouped_matvec(x3, w, b), torch.nn.functional.linear(x3, w, b))


def test_bf16_autocast_training_steps_track_fp32(cfg):
    _, fast32 = pair(cfg)
    fast16 = copy.deepcopy(fast32)
    x, y = tokens(cfg, seed=1), tokens(cfg, seed=2)
    opt32 = torch.optim.AdamW(fast32.parameters(), lr=1e-3)
    opt16 = torch.optim.AdamW(fast16.parameters(), lr=1e-3)
    for _ in range(3):
        opt32.zero_grad()
        loss32 = calc_loss_batch(x, y, fast32, "cpu")
        loss32.backward()
        opt32.step()
        opt16.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss16 = calc_loss_batch(x, y, fast16, "cpu")
        loss16.backward()
        opt16.step()
        assert abs(loss16.item() - loss32.item()) <= BF16_LOSS_RTOL * loss32.item()
    assert all(p.dtype == torch.float32 for p in fast16.parameters())  # autocast leaves weights in fp32


def test_tied_weights_are_one_parameter(cfg):
    torch.manual_seed(0)
    untied, tied = GPTModelFast(cfg), GPTModelFast(cfg, tie_weights=True)
    assert tied.out_head.weight is tied.tok_emb.weight
    n_untied = sum(p.numel() for p in untied.parameters())
    assert n_untied - sum(p.numel() for p in tied.parameters()) == cfg["vocab_size"] * cfg["emb_dim"]
    opt = torch.optim.AdamW(tied.parameters(), lr=1e-2)
    calc_loss_batch(tokens(cfg), tokens(cfg, seed=1), tied, "cpu").backward()
    opt.step()
    assert tied.out_head.weight is tied.tok_emb.weight  # still one matrix after training
    copied = copy.deepcopy(tied)
    assert copied.out_head.weight is copied.tok_emb.weight


def test_tied_model_loading(cfg):
    torch.manual_seed(0)
    tied = GPTModelFast(cfg, tie_weights=True)
    state = GPTModelFast(cfg, tie_weights=True).state_dict()
    tied.load_state_dict(state, assign=True)  # new Parameters: the post-hook ties them again
    assert tied.out_head.weight is tied.tok_emb.weight
    assert torch.equal(tied.tok_emb.weight, state["tok_emb.weight"])
    with pytest.raises(ValueError, match="two different matrices"):
        tied.load_state_dict(GPTModel(cfg).state_dict())  # untied, different head: refused
    tied.out_head.weight = torch.nn.Parameter(tied.tok_emb.weight.detach().clone())  # untied by hand
    with pytest.raises(RuntimeError, match="tie them again"):
        tied(tokens(cfg))


def test_dropout_in_training_only(tiny_cfg):
    cfg = tiny_cfg(drop_rate=0.5)
    torch.manual_seed(0)
    model = GPTModelFast(cfg)
    x = tokens(cfg)
    with torch.no_grad():
        model.train()
        assert not torch.allclose(model(x), model(x))  # dropout draws new masks
        model.eval()
        torch.testing.assert_close(model(x), model(x))
    assert all(block.att.dropout.p == 0.5 for block in model.trf_blocks)


def test_tied_head_starts_small(tiny_cfg):
    cfg = tiny_cfg(vocab_size=500, emb_dim=64)
    torch.manual_seed(0)
    model = GPTModelFast(cfg, tie_weights=True).eval()
    with torch.no_grad():
        loss = calc_loss_batch(tokens(cfg), tokens(cfg, seed=1), model, "cpu").item()
    assert abs(loss - torch.log(torch.tensor(500.0)).item()) < 0.5  # near chance: log(V)
