"""Training speed on CPU: tokens/s of one optimizer step, course vs. Hugging Face vs. the book's package.

Run by hand from the repository root (not a test; about ten minutes at the defaults):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_training.py [--repeats 5] [--threads 2]

One step is forward + cross-entropy loss + backward + ``torch.optim.AdamW`` step, batch 2 x 256
tokens (random token IDs), GPT-2 124M's shape (12 layers, 768 wide, 50,257-token vocabulary,
1,024 positions, biases in the query/key/value projections), dropout 0 by default (the course's
books pretraining; ``--drop-rate 0.1`` for GPT-2's). Rows, where installed:

- Hugging Face ``GPT2LMHeadModel`` (``attn_implementation="sdpa"``), float32 and bfloat16 autocast;
- the book's package ``llms-from-scratch``: ``GPTModel`` and its bonus ``GPTModelFast``, float32
  and bfloat16 autocast;
- the course: ``GPTModel`` (chapter 4) float32; ``GPTModelFast`` (chapter 5's speed notebook)
  float32, bfloat16 autocast, with tied weights, and with the fused AdamW.

The rows run interleaved in this one process: in each of ``--repeats`` rounds every row builds
its model and optimizer afresh (seeded), runs ``--warmup`` steps (not timed: the first step
allocates gradients and the optimizer's state), then ``--steps`` timed steps; the model is freed
before the next row (one model and its optimizer at a time, about 2.6 GB). The table gives the
median tokens/s over the rounds with the min-max spread, and ratios per round against Hugging
Face float32 and bfloat16 (median and min-max of the per-round ratios). ``--profile ROW`` (repeatable,
a substring of a row's name) prints torch.profiler's top operators for one step of that row.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import time
from collections.abc import Callable

import bench_common as bc
import torch
import torch.nn.functional as F

import gpt_from_scratch.ch04 as ch04
import gpt_from_scratch.ch05 as ch05

HF_FP32 = "Hugging Face `GPT2LMHeadModel` (sdpa), fp32"
HF_BF16 = "Hugging Face `GPT2LMHeadModel` (sdpa), bf16 autocast"
FAST_FP32 = "course `GPTModelFast`, fp32"
FAST_BF16 = "course `GPTModelFast`, bf16 autocast"
TARGETS = [  # (row, reference row, target ratio)
    (FAST_FP32, HF_FP32, 1.1),
    (FAST_BF16, HF_FP32, 2.0),
    (FAST_BF16, HF_BF16, 1.0),
]


class Row:
    """One benchmarked configuration: how to build the model, its optimizer and its forward pass."""

    def __init__(
        self,
        name: str,
        build: Callable[[], torch.nn.Module],
        bf16: bool = False,
        fused: bool = False,
        forward: Callable | None = None,
    ):
        self.name, self.build, self.bf16, self.fused = name, build, bf16, fused
        self.forward = forward or (lambda model, x: model(x))


def course_cfg(args, **overrides) -> dict:
    """The course's configuration of GPT-2 124M's shape (or the tiny one of ``--tiny``)."""
    cfg = ch04.gpt2_config("124M", qkv_bias=True, drop_rate=args.drop_rate, context_length=1024)
    if args.tiny:
        cfg.update(emb_dim=32, n_layers=2, n_heads=2, context_length=64, vocab_size=512)
    cfg.update(overrides)
    return cfg


def make_rows(args) -> tuple[list[Row], list[str]]:
    """Every row whose packages are installed, and a note for each one skipped."""
    notes = []
    rows = []
    cfg = course_cfg(args)

    def seeded(make: Callable[[], torch.nn.Module]) -> Callable[[], torch.nn.Module]:
        def build() -> torch.nn.Module:
            torch.manual_seed(bc.SEED)
            return make().train()

        return build

    if bc.optional_import("transformers") is None:
        notes.append("transformers not installed: the Hugging Face rows (the reference) are skipped")
    else:
        hf_cfg = bc.gpt2_hf_config(
            n_layer=cfg["n_layers"],
            n_embd=cfg["emb_dim"],
            n_head=cfg["n_heads"],
            n_positions=cfg["context_length"],
            vocab_size=cfg["vocab_size"],
            pdrop=args.drop_rate,
        )

        def hf_forward(model, x):
            return model(input_ids=x, use_cache=False).logits

        hf_build = seeded(lambda: bc.build_hf_model(hf_cfg))
        rows.append(Row(HF_FP32, hf_build, forward=hf_forward))
        rows.append(Row(HF_BF16, hf_build, bf16=True, forward=hf_forward))

    book = bc.optional_import("llms_from_scratch.ch04")
    if book is None:
        notes.append(bc.BOOK_MISSING)
    else:
        book_cfg = {k: cfg[k] for k in ch04.GPT_CONFIG_124M}
        rows.append(Row("book package `GPTModel`, fp32", seeded(lambda: book.GPTModel(book_cfg))))
        rows.append(
            Row("book package `GPTModel`, bf16 autocast", seeded(lambda: book.GPTModel(book_cfg)), True)
        )
        rows.append(Row("book package `GPTModelFast`, fp32", seeded(lambda: book.GPTModelFast(book_cfg))))
        rows.append(
            Row(
                "book package `GPTModelFast`, bf16 autocast",
                seeded(lambda: book.GPTModelFast(book_cfg)),
                True,
            )
        )

    rows.append(Row("course `GPTModel` (chapter 4), fp32", seeded(lambda: ch04.GPTModel(cfg))))
    fast = getattr(ch05, "GPTModelFast", None)
    if fast is None:
        notes.append("`GPTModelFast` not in gpt_from_scratch.ch05 yet: its rows are skipped")
    else:
        rows.append(Row(FAST_FP32, seeded(lambda: fast(cfg))))
        rows.append(Row(FAST_BF16, seeded(lambda: fast(cfg)), bf16=True))
        rows.append(
            Row("course `GPTModelFast`, tied weights, fp32", seeded(lambda: fast(cfg, tie_weights=True)))
        )
        rows.append(
            Row(
                "course `GPTModelFast`, tied weights, bf16 autocast",
                seeded(lambda: fast(cfg, tie_weights=True)),
                bf16=True,
            )
        )
        rows.append(
            Row("course `GPTModelFast`, fused AdamW, bf16 autocast", seeded(lambda: fast(cfg)), True, True)
        )
    if args.only:
        rows = [r for r in rows if any(s in r.name for s in args.only)]
    return rows, notes


def make_step(row: Row, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], float]:
    """One training step of ``model`` on (x, y): forward, loss, backward, AdamW; returns the loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=row.fused or None)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if row.bf16 else contextlib.nullcontext()

    def step() -> float:
        with amp:
            logits = row.forward(model, x)  # (b, T, vocab_size)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def profile_row(row: Row, x: torch.Tensor, y: torch.Tensor, top: int) -> str:
    """torch.profiler's table of the top operators (by self CPU time) for one step of ``row``."""
    from torch.profiler import ProfilerActivity, profile

    model = row.build()
    step = make_step(row, model, x, y)
    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
    del model, step
    gc.collect()
    return f"Profile of one step, {row.name}:\n\n{table}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds of every row, interleaved")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per row and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per row and round")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--drop-rate", type=float, default=0.0)
    parser.add_argument("--only", action="append", help="run only rows whose name contains this (repeatable)")
    parser.add_argument("--profile", action="append", default=[], help="profile rows containing this")
    parser.add_argument("--profile-top", type=int, default=15)
    parser.add_argument("--tiny", action="store_true", help="a tiny model (for the smoke test), not GPT-2's")
    args = parser.parse_args()
    bc.set_threads(args.threads)
    if args.tiny:
        args.seq_len = min(args.seq_len, 32)

    rows, notes = make_rows(args)
    cfg = course_cfg(args)
    print(bc.header("Training speed: forward + loss + backward + AdamW step"))
    print(
        f"Model: GPT-2 124M shape{' (TINY, smoke test)' if args.tiny else ''}; batch {args.batch_size} x "
        f"{args.seq_len} tokens; dropout {args.drop_rate}; {args.repeats} interleaved rounds of "
        f"{args.warmup} untimed + {args.steps} timed steps per row  "
    )
    for note in notes:
        print(f"Note: {note}  ")
    print(flush=True)

    g = torch.Generator().manual_seed(bc.SEED)
    data = torch.randint(0, cfg["vocab_size"], (args.batch_size, args.seq_len + 1), generator=g)
    x, y = data[:, :-1], data[:, 1:]
    tokens = args.batch_size * args.seq_len * args.steps
    secs: dict[str, list[float]] = {r.name: [] for r in rows}
    losses: dict[str, float] = {}
    for rnd in range(args.repeats):  # interleaved: a busy moment of the machine hits every row alike
        for row in rows:
            model = row.build()
            step = make_step(row, model, x, y)
            for _ in range(args.warmup):
                losses[row.name] = step()
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            secs[row.name].append(time.perf_counter() - start)
            print(
                f"round {rnd + 1}: {tokens / secs[row.name][-1]:7.0f} tokens/s  {row.name}", file=sys.stderr
            )
            del model, step
            gc.collect()

    def ratios(name: str, ref: str) -> list[float]:
        return [r / s for s, r in zip(secs[name], secs[ref])]

    refs = [r for r in (HF_FP32, HF_BF16) if r in secs]
    head = ["method", "tokens/s, median (min–max)", "loss (warm-up step)"]
    head += ["vs. HF fp32" if r == HF_FP32 else "vs. HF bf16" for r in refs]
    table = []
    for row in rows:
        tps = [tokens / s for s in secs[row.name]]
        cells = [row.name, bc.spread(tps, "{:.0f}"), f"{losses[row.name]:.3f}"]
        cells += [bc.spread(ratios(row.name, r)) + "x" for r in refs]
        table.append(cells)
    print(bc.markdown_table(head, table))
    print()
    for name, ref, target in TARGETS:
        if name in secs and ref in secs:
            med = statistics.median(ratios(name, ref))
            print(
                f"- {name} vs. {ref}: {bc.spread(ratios(name, ref))}x by round, "
                f"target >= {target}x: {bc.verdict(med, target)}"
            )
    print(f"\n{bc.load_line()}", flush=True)
    for wanted in args.profile:
        for row in rows:
            if wanted in row.name:
                print("\n" + profile_row(row, x, y, args.profile_top), flush=True)


if __name__ == "__main__":
    main()
