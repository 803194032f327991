"""Proof of correctness: the course's GPTModel is GPT-2.

Hugging Face's ``GPT2LMHeadModel`` is an independent implementation of GPT-2. We build it
with random weights (nothing is downloaded), copy its state dict into the course's model
with ``load_hf_weights_into_gpt`` (the mapping chapter 5.5 teaches), and require the same
logits (float32, max abs difference <= 1e-4) and the same 50 greedily generated tokens,
for a tiny configuration and for the full 124M one (qkv_bias=True, tied embeddings).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may be downloaded
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

import gpt_from_scratch.ch05 as ch05
from gpt_from_scratch.ch04 import GPTModel, generate_text_simple, gpt2_config
from gpt_from_scratch.ch05 import load_hf_weights_into_gpt, write_hf_safetensors


@pytest.fixture(scope="module")
def small_cfg(tiny_cfg):
    """The suite's tiny configuration, wider and deeper, with GPT-2's query/key/value biases."""
    return tiny_cfg(vocab_size=211, context_length=64, emb_dim=48, n_layers=3, qkv_bias=True)


NEW_TOKENS = 50


def hf_config(cfg: dict) -> GPT2Config:
    """Hugging Face's GPT2Config for a course config (dropout off, GPT-2's GELU and epsilon)."""
    return GPT2Config(
        vocab_size=cfg["vocab_size"],
        n_positions=cfg["context_length"],
        n_embd=cfg["emb_dim"],
        n_layer=cfg["n_layers"],
        n_head=cfg["n_heads"],
        activation_function="gelu_new",  # the tanh approximation, as the course's GELU
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,  # never stop early: the course's greedy loop has no end token
        pad_token_id=0,
    )


def build_pair(cfg: dict, seed: int = 0):
    """A random HF GPT-2 and a course GPTModel loaded from its state dict, both in eval mode."""
    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(hf_config(cfg)).eval()
    with torch.no_grad():  # HF starts biases at 0 and norms at 1: randomize so no mix-up hides
        for p in hf.parameters():  # tied lm_head/wte is one parameter, perturbed once
            p.add_(0.02 * torch.randn_like(p))
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # tied, as GPT-2
    ours = GPTModel(cfg).eval()
    state = hf.state_dict()
    assert any(k.startswith("transformer.h.0.attn.c_attn") for k in state)  # Hugging Face's names
    load_hf_weights_into_gpt(ours, state)
    return hf, ours


def check_parity(hf, ours, cfg: dict, seq_len: int, prompt_len: int = 6) -> None:
    """Same logits on a random batch, and the same 50 greedy tokens after a short prompt."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, cfg["vocab_size"], (2, seq_len), generator=g)
    with torch.no_grad():
        ref = hf(ids).logits
        got = ours(ids)
    assert got.dtype == ref.dtype == torch.float32
    diff = (got - ref).abs().max().item()
    assert diff <= 1e-4, f"logits differ by {diff}"

    prompt = ids[:1, :prompt_len]
    course_out = generate_text_simple(ours, prompt, NEW_TOKENS, cfg["context_length"])
    with torch.no_grad():
        hf_out = hf.generate(
            prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=NEW_TOKENS
        )
    assert course_out.shape == hf_out.shape == (1, prompt_len + NEW_TOKENS)
    assert torch.equal(course_out, hf_out)


def test_tiny_gpt2_matches_hugging_face(small_cfg):
    cfg = gpt2_config("124M", **small_cfg)
    hf, ours = build_pair(cfg)
    check_parity(hf, ours, cfg, seq_len=cfg["context_length"])


@pytest.mark.slow
def test_gpt2_124m_matches_hugging_face():
    cfg = gpt2_config("124M", qkv_bias=True, drop_rate=0.0)
    assert (cfg["vocab_size"], cfg["context_length"], cfg["emb_dim"]) == (50257, 1024, 768)
    hf, ours = build_pair(cfg)
    check_parity(hf, ours, cfg, seq_len=32, prompt_len=2)  # short: the course loop has no cache


def test_a_wrong_mapping_is_detected(small_cfg):
    """The parity check has teeth: swapping query and key weights in one block breaks it."""
    cfg = gpt2_config("124M", **small_cfg)
    hf, ours = build_pair(cfg)
    att = ours.trf_blocks[1].att
    with torch.no_grad():
        w = att.W_query.weight.clone()
        att.W_query.weight.copy_(att.W_key.weight)
        att.W_key.weight.copy_(w)
    with pytest.raises(AssertionError, match="logits differ"):
        check_parity(hf, ours, cfg, seq_len=cfg["context_length"])


def written_then_read_by_hugging_face(cfg: dict, path) -> tuple[GPT2LMHeadModel, GPTModel]:
    """A random tied course model, written by ``write_hf_safetensors`` and loaded by Hugging Face."""
    from safetensors.torch import load_file

    torch.manual_seed(3)
    ours = GPTModel(cfg).eval()
    ours.out_head.weight = ours.tok_emb.weight  # GPT-2's files hold no head: tied
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.02 * torch.randn_like(p))
    write_hf_safetensors(ours, path)
    hf = GPT2LMHeadModel(hf_config(cfg)).eval()
    missing, unexpected = hf.transformer.load_state_dict(load_file(str(path)), strict=False)
    assert not unexpected and all(k.endswith((".attn.bias", ".attn.masked_bias")) for k in missing), missing
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # still tied
    return hf, ours


def test_written_file_matches_hugging_face(small_cfg, tmp_path):
    """The writer, checked independently: Hugging Face's GPT-2 reads its file and computes our logits."""
    cfg = gpt2_config("124M", **small_cfg)
    hf, ours = written_then_read_by_hugging_face(cfg, tmp_path / "model.safetensors")
    check_parity(hf, ours, cfg, seq_len=cfg["context_length"])


@pytest.mark.parametrize("direction", ["reading", "writing"])
def test_a_wrong_entry_in_the_mapping_is_caught(small_cfg, tmp_path, monkeypatch, direction):
    """Queries and keys swapped in GPT2_TO_COURSE, the one table: both directions fail against Hugging Face.

    A round trip through our own writer and reader cannot see this (both use the table); the
    comparison with an independent implementation does.
    """
    wrong = dict(ch05.GPT2_TO_COURSE)
    query, key, value = wrong["h.{i}.attn.c_attn.weight"]
    wrong["h.{i}.attn.c_attn.weight"] = (key, query, value)
    monkeypatch.setattr(ch05, "GPT2_TO_COURSE", wrong)
    cfg = gpt2_config("124M", **small_cfg)
    if direction == "reading":
        hf, ours = build_pair(cfg)
    else:
        hf, ours = written_then_read_by_hugging_face(cfg, tmp_path / "model.safetensors")
    with pytest.raises(AssertionError, match="logits differ"):
        check_parity(hf, ours, cfg, seq_len=cfg["context_length"])
