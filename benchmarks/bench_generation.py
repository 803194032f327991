"""Greedy generation speed on CPU: no cache, the course's KV cache, and Hugging Face.

Run by hand from the repository root (not a test; it takes a few minutes):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_generation.py [--repeats 3]

GPT-2 124M with random (seeded) weights generates 200 tokens after a 10-token prompt with
    1. ``generate_text_simple`` (chapter 4): the whole window is recomputed at every step;
    2. ``generate_text_cached`` (chapter 4, section 4.8): a preallocated KV cache, built in each
       call, and once more with ``MATVEC_MAX_ROWS = 0`` so that every product goes through the
       ``nn.Linear`` layers themselves instead of the batched ``torch.bmm`` of ``_linear`` (an
       ablation: it shows how much of the speed is the cache and how much the way the
       matrix-vector products are called);
    3. ``transformers.GPT2LMHeadModel.generate`` (greedy, ``use_cache=True``) with the same weights.
All run in this one process, in turn, and must produce the same tokens. The script
prints a Markdown table: the best (fastest) of ``--repeats`` runs of each, and ratios.
Nothing is downloaded: the Hugging Face model is built from a config, not from the Hub.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

import gpt_from_scratch.ch04 as ch04  # noqa: E402  (chapter 4's model and generators)
from gpt_from_scratch.ch05 import load_hf_weights_into_gpt  # noqa: E402  (chapter 5's weight mapping)
from shared.tokenizer import END_OF_TEXT_ID

PROMPT_TOKENS = 10
NEW_TOKENS = 200
SEED = 123


def build_hf_model():
    """A randomly initialised (seeded) Hugging Face GPT-2 124M, built offline from a config."""
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    transformers.logging.set_verbosity_error()
    config = GPT2Config(
        n_positions=1024,
        n_embd=768,
        n_layer=12,
        n_head=12,
        vocab_size=50257,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(SEED)
    return GPT2LMHeadModel(config).eval()


def cpu_name() -> str:
    """The CPU's model name, as the operating system reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn) -> tuple[float, torch.Tensor]:
    """Seconds one call of ``fn`` takes, and what it returns."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (best is kept)")
    parser.add_argument("--uncached-repeats", type=int, default=1, help="timed runs without a cache (slow)")
    parser.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    hf = build_hf_model()
    cfg = ch04.gpt2_config("124M", qkv_bias=True, drop_rate=0.0)
    model = ch04.GPTModel(cfg).eval()
    load_hf_weights_into_gpt(model, hf.state_dict())  # the mapping taught in chapter 5

    torch.manual_seed(SEED)
    prompt = torch.randint(0, cfg["vocab_size"], (1, PROMPT_TOKENS))
    ctx = cfg["context_length"]
    n = args.new_tokens

    def cached_through_layers(k: int) -> torch.Tensor:
        saved, ch04.MATVEC_MAX_ROWS = ch04.MATVEC_MAX_ROWS, 0  # _linear then calls the layers
        try:
            return ch04.generate_text_cached(model, prompt, k, ctx)
        finally:
            ch04.MATVEC_MAX_ROWS = saved

    methods = {
        "no cache (`generate_text_simple`)": lambda k: ch04.generate_text_simple(model, prompt, k, ctx),
        "KV cache (`generate_text_cached`)": lambda k: ch04.generate_text_cached(model, prompt, k, ctx),
        "KV cache, products through `nn.Linear` (`MATVEC_MAX_ROWS = 0`)": cached_through_layers,
        "Hugging Face `generate` (use_cache=True)": lambda k: hf.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            use_cache=True,
            max_new_tokens=k,
            min_new_tokens=k,
            pad_token_id=END_OF_TEXT_ID,
        ),
    }

    load_before = os.getloadavg()
    for fn in methods.values():  # warm-up: first calls allocate and initialise
        fn(5)
    times: dict[str, list[float]] = {name: [] for name in methods}
    reference = None  # the tokens of the first timed run; every later run must equal them
    for rep in range(args.repeats):  # interleaved, so that a busy moment hits every method alike
        for name, fn in methods.items():
            if name.startswith("no cache") and rep >= args.uncached_repeats:
                continue
            seconds, out = timed(lambda fn=fn: fn(n))
            times[name].append(seconds)
            if reference is None:
                reference = out
            elif not torch.equal(out, reference):
                raise SystemExit(f"{name}, run {rep + 1}: tokens differ from generate_text_simple's")
    load_after = os.getloadavg()

    best = {name: min(ts) for name, ts in times.items()}
    names = list(methods)
    uncached, cached, through_layers, hf_name = names
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"Date: {date}  ")
    print(f"Machine: {cpu_name()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}  ")
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    print(f"Python {platform.python_version()}, {versions}  ")
    print(f"Load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f}  ")
    print(
        f"GPT-2 124M, random weights, batch 1, prompt {PROMPT_TOKENS} tokens, {n} new tokens, "
        f"float32 on CPU; best of {args.repeats} runs ({args.uncached_repeats} without a cache), "
        "median in brackets. Every timed run produced the same tokens.\n"
    )
    print("| method | seconds | tokens/s | vs. no cache | vs. Hugging Face |")
    print("|---|---:|---:|---:|---:|")
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name in names:
        print(
            f"| {name} | {best[name]:.2f} ({med[name]:.2f}) | {n / best[name]:.1f} | "
            f"{best[uncached] / best[name]:.2f}x | {best[hf_name] / best[name]:.2f}x |"
        )
    for label, t in (("best runs", best), ("medians", med)):
        print(
            f"\n{label}: KV cache vs. no cache {t[uncached] / t[cached]:.2f}x (target >= 5x); "
            f"KV cache vs. Hugging Face {t[hf_name] / t[cached]:.2f}x (target >= 1.2x), "
            f"{t[hf_name] / t[through_layers]:.2f}x with every product through nn.Linear"
        )


if __name__ == "__main__":
    main()
