"""Cached greedy generation speed on CPU: the course's generators vs. Hugging Face and the book's package.

Run by hand from the repository root (not a test; about ten minutes at the defaults):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_generation.py [--repeats 5] [--threads 2]

GPT-2 124M with random (seeded) weights, all methods with the same float32 weights (Hugging
Face's initialisation, copied into the other models by chapter 5's ``load_hf_weights_into_gpt``
and by the book's ``load_weights_into_gpt``), batch 1, a 10-token prompt, 100 and 500 new tokens
(``--new-tokens``), greedy. Each call builds its own cache. Methods, where installed:

- Hugging Face ``GPT2LMHeadModel.generate(do_sample=False, use_cache=True)`` (sdpa), built offline
  from a ``GPT2Config``;
- the book's package: ``llms_from_scratch.kv_cache.gpt2.GPTModel`` and its ``KVCache``, driven by a
  short greedy loop written here (the package's ``kv_cache.generate`` expects a model with
  ``reset_kv_cache``, which its GPT-2 lacks);
- the course: ``generate_text_cached`` (chapter 4, section 4.8: a plain preallocated KV cache);
  the course's library decoder ``generate_text_fast`` (chapter 5's speed notebook; ``FastDecoder``
  runs the model's own layers with stacked query/key/value weights, every product through
  ``F.linear``, and chapter 4's preallocated cache) with ``GPTModelFast`` in float32, untied
  (163M parameters, as the course trains it) and tied (124M, what Hugging Face runs), the same with
  ``grouped=True`` (every product through ``grouped_matvec``, faster on some CPUs), and with the model
  converted to bfloat16 once (weights and cache in bf16, with either product; extra rows, their
  tokens may differ). Until the tables of 2026-12-05 the float32 default was ``grouped=True``, and the
  tables of ``benchmarks/README.md`` name their rows accordingly.

All run in this one process, interleaved (every method once per round, ``--repeats`` rounds),
after one untimed warm-up call each. The script checks that every float32 method produced the
same tokens as Hugging Face in every run, and says how many of the bf16 row's tokens differ.
The table gives the median tokens/s with the min-max spread over the rounds, and the ratio to
Hugging Face per round (median and min-max). ``--profile`` prints torch.profiler's top operators
for one call of each method.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import bench_common as bc
import torch

import gpt_from_scratch.ch04 as ch04
import gpt_from_scratch.ch05 as ch05

PROMPT_TOKENS = 10
HF = "Hugging Face `generate` (use_cache=True), fp32"
FAST = "course `generate_text_fast` (`GPTModelFast`), fp32"
FAST_TIED = "course `generate_text_fast` (`GPTModelFast`, tied head: 124M as GPT-2), fp32"
FAST_GROUPED = "course `generate_text_fast`, `grouped=True` (every product through `grouped_matvec`), fp32"
FAST_BF16 = "course `generate_text_fast` (`GPTModelFast`), bf16 weights and cache (`F.linear`, the default)"
FAST_BF16_GROUPED = "course `generate_text_fast`, `grouped=True`, bf16 weights and cache"
TARGET = 2.0  # the fast generator vs. Hugging Face, fp32 weights, same tokens


def book_generate(model: torch.nn.Module, kv_cache_cls, idx: torch.Tensor, n: int) -> torch.Tensor:
    """Greedy decoding with the book package's GPT-2 KV-cache model: a prefill, then one token per call."""
    model.current_pos = 0  # the model counts positions itself; a new sequence starts at 0
    cache = kv_cache_cls(n_layers=len(model.trf_blocks))
    out = [idx]
    with torch.no_grad():
        logits = model(idx, use_cache=True, cache=cache)  # (1, T, vocab_size)
        for i in range(n):
            next_id = logits[:, -1].argmax(dim=-1, keepdim=True)  # (1, 1)
            out.append(next_id)
            if i < n - 1:
                logits = model(next_id, use_cache=True, cache=cache)  # (1, 1, vocab_size)
    return torch.cat(out, dim=1)


def build_methods(
    args, cfg: dict, hf, notes: list[str]
) -> dict[str, Callable[[torch.Tensor, int], torch.Tensor]]:
    """Every method whose packages are installed: a function (prompt, new tokens) -> all tokens."""
    ctx = cfg["context_length"]
    methods: dict[str, Callable] = {}
    state = hf.state_dict()

    def hf_generate(idx: torch.Tensor, n: int) -> torch.Tensor:
        return hf.generate(
            idx,
            attention_mask=torch.ones_like(idx),
            do_sample=False,
            use_cache=True,
            max_new_tokens=n,
            min_new_tokens=n,
            pad_token_id=0,
        )

    methods[HF] = hf_generate

    kv_gpt2 = bc.optional_import("llms_from_scratch.kv_cache.gpt2")
    book_ch05 = bc.optional_import("llms_from_scratch.ch05")
    if kv_gpt2 is None or book_ch05 is None:
        notes.append(bc.BOOK_MISSING)
    else:
        book_cfg = {k: cfg[k] for k in ch04.GPT_CONFIG_124M}
        book_model = kv_gpt2.GPTModel(book_cfg).eval()
        book_ch05.load_weights_into_gpt(book_model, bc.hf_to_book_params(state, cfg["n_layers"]))
        name = "book package `kv_cache.gpt2.GPTModel` + `KVCache`, fp32"
        try:  # a short run first: the package's GPT-2 cache may fail at the first cached step
            book_generate(book_model, kv_gpt2.KVCache, torch.zeros(1, 3, dtype=torch.long), 2)
        except RuntimeError as err:
            notes.append(
                f"book package {bc.version_of(bc.BOOK_PACKAGE)}: `kv_cache.gpt2.GPTModel` fails at the first "
                f"cached step (`{str(err).splitlines()[0]}`), so the book has no working cached GPT-2 "
                "generation to time; row skipped"
            )
        else:
            methods[name] = lambda idx, n: book_generate(book_model, kv_gpt2.KVCache, idx, n)

    model = ch04.GPTModel(cfg).eval()
    ch05.load_hf_weights_into_gpt(model, state)  # the mapping taught in chapter 5
    methods["course `generate_text_cached` (chapter 4, plain KV cache), fp32"] = lambda idx, n: (
        ch04.generate_text_cached(model, idx, n, ctx)
    )

    generate_fast = ch05.generate_text_fast  # the course's library decoder
    fast = ch05.GPTModelFast(cfg).eval()
    fast.load_state_dict(model.state_dict())  # same parameter names and shapes as GPTModel
    methods[FAST] = lambda idx, n: generate_fast(fast, idx, n, ctx)
    tied = ch05.GPTModelFast(cfg, tie_weights=True).eval()
    tied.load_state_dict(model.state_dict())  # Hugging Face's head is its embedding: one matrix
    methods[FAST_TIED] = lambda idx, n: generate_fast(tied, idx, n, ctx)
    methods[FAST_GROUPED] = lambda idx, n: generate_fast(fast, idx, n, ctx, grouped=True)
    fast16 = ch05.GPTModelFast(cfg).eval()
    fast16.load_state_dict(model.state_dict())
    fast16 = fast16.to(torch.bfloat16)  # converted once, as a user decoding in bf16 would
    methods[FAST_BF16] = lambda idx, n: generate_fast(fast16, idx, n, ctx)
    methods[FAST_BF16_GROUPED] = lambda idx, n: generate_fast(fast16, idx, n, ctx, grouped=True)
    return methods


def profile_method(name: str, fn: Callable, prompt: torch.Tensor, n: int, top: int) -> str:
    """torch.profiler's top operators (by self CPU time) for one call of ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(prompt, n)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
    return f"Profile of one call, {n} new tokens, {name}:\n\n{table}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds of every method")
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="profile one call of each method")
    parser.add_argument("--profile-tokens", type=int, default=100)
    parser.add_argument("--profile-top", type=int, default=12)
    parser.add_argument("--tiny", action="store_true", help="a tiny model (for the smoke test), not GPT-2's")
    args = parser.parse_args()
    bc.set_threads(args.threads)
    if bc.optional_import("transformers") is None:
        raise SystemExit("transformers is not installed: it is the reference of this benchmark")

    cfg = ch04.gpt2_config("124M", qkv_bias=True, drop_rate=0.0, context_length=1024)
    if args.tiny:
        cfg.update(emb_dim=32, n_layers=2, n_heads=2, context_length=128, vocab_size=512)
    if PROMPT_TOKENS + max(args.new_tokens) > cfg["context_length"]:
        raise SystemExit(f"prompt + new tokens must fit the context of {cfg['context_length']} tokens")
    hf_cfg = bc.gpt2_hf_config(
        n_layer=cfg["n_layers"],
        n_embd=cfg["emb_dim"],
        n_head=cfg["n_heads"],
        n_positions=cfg["context_length"],
        vocab_size=cfg["vocab_size"],
    )
    hf = bc.build_hf_model(hf_cfg).eval()
    notes: list[str] = []
    methods = build_methods(args, cfg, hf, notes)

    print(bc.header("Cached greedy generation, batch 1"))
    print(
        f"Model: GPT-2 124M{' (TINY, smoke test)' if args.tiny else ''}, random weights (the same in "
        f"every method); prompt {PROMPT_TOKENS} tokens; new tokens {args.new_tokens}; "
        f"{args.repeats} interleaved rounds after one warm-up call each  "
    )
    for note in notes:
        print(f"Note: {note}  ")
    print(flush=True)

    torch.manual_seed(bc.SEED)
    prompt = torch.randint(0, cfg["vocab_size"], (1, PROMPT_TOKENS))
    for fn in methods.values():
        fn(prompt, 5)  # warm-up: first calls allocate and initialise
    secs = {(name, n): [] for n in args.new_tokens for name in methods}
    reference: dict[int, torch.Tensor] = {}  # Hugging Face's tokens for each length
    differ: dict[tuple[str, int], int] = {}  # (method, n) -> most tokens that differed in a run
    for rnd in range(args.repeats):
        for n in args.new_tokens:
            for name, fn in methods.items():
                start = time.perf_counter()
                out = fn(prompt, n)
                secs[name, n].append(time.perf_counter() - start)
                print(
                    f"round {rnd + 1}, {n} tokens: {n / secs[name, n][-1]:6.1f} tokens/s  {name}",
                    file=sys.stderr,
                )
                if name == HF:
                    reference.setdefault(n, out)
                if out.shape != reference[n].shape:
                    raise SystemExit(
                        f"{name}: {tuple(out.shape)} tokens, expected {tuple(reference[n].shape)}"
                    )
                wrong = int((out[:, PROMPT_TOKENS:] != reference[n][:, PROMPT_TOKENS:]).sum())
                differ[name, n] = max(differ.get((name, n), 0), wrong)
                if wrong and "bf16" not in name:
                    raise SystemExit(f"{name}, {n} new tokens: {wrong} tokens differ from Hugging Face's")

    def ratios(name: str, n: int) -> list[float]:
        return [h / s for s, h in zip(secs[name, n], secs[HF, n])]

    for n in args.new_tokens:
        rows = []
        for name in methods:
            tps = [n / s for s in secs[name, n]]
            same = "yes" if differ[name, n] == 0 else f"no: {differ[name, n]} of {n} differ"
            rows.append([name, bc.spread(tps, "{:.1f}"), bc.spread(ratios(name, n)) + "x", same])
        print(f"**{n} new tokens**\n")
        print(
            bc.markdown_table(
                ["method", "tokens/s, median (min–max)", "vs. Hugging Face", "same tokens"], rows
            )
        )
        print()
    for name in (FAST, FAST_TIED):
        for n in args.new_tokens:
            med = statistics.median(ratios(name, n))
            print(
                f"- {name} vs. Hugging Face, {n} new tokens: {bc.spread(ratios(name, n))}x by round, "
                f"target >= {TARGET}x: {bc.verdict(med, TARGET)}"
            )
    print(f"\n{bc.load_line()}", flush=True)
    if args.profile:
        for name, fn in methods.items():
            print("\n" + profile_method(name, fn, prompt, args.profile_tokens, args.profile_top), flush=True)


if __name__ == "__main__":
    main()
