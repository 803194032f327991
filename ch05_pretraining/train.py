"""Pretrain a GPT model on a text file or on the course's books, with checkpoints and exact resuming.

Examples (from the repository root):

    python ch05_pretraining/train.py --text the-verdict.txt --model tiny --epochs 2
    python ch05_pretraining/train.py --text my_book.txt --model 124M --context-length 256 \\
        --epochs 10 --lr 4e-4 --warmup 20 --out-dir checkpoints/ch05
    python ch05_pretraining/train.py --out-dir checkpoints/ch05 --resume   # continue
    python ch05_pretraining/train.py --data books --minutes 60    # about an hour: checkpoints/books
    python ch05_pretraining/train.py --data books --resume        # continue an interrupted run
    python ch05_pretraining/train.py --data books --model tiny --books 844,1513 --val-books 1513 \\
        --steps 30 --out-dir checkpoints/books-quick   # seconds

``--data text`` trains on one text file (a course file name or a path) for ``--epochs`` passes
(section 5.6's ``train_model``). ``--data books`` pretrains the course's base model (base_model.ipynb)
with ``pretrain_on_tokens`` on random windows of the registry's Gutenberg books, with whole books held
out (``--val-books``), and ends by writing the folder that ``load_base_model`` reads. Both modes use
chapter 5's training core (warmup, cosine decay, clipping), evaluate every ``--eval-freq`` steps with
a sample (temperature 0.8, top-k 40, the same seed each time), and write ``last.pth`` and
``history.json`` every ``--save-every`` steps; ``--resume`` continues with the same losses as an
uninterrupted run. ``--minutes`` sets the steps from four timed trial steps; ``--resume --extend-to N``
stretches a run's schedule to N steps.

Under ``torchrun`` each process trains on its share of the rows of every batch (``--batch-size`` is
the global batch); N processes follow the run of one up to float rounding (with ``--drop-rate`` 0).
Rank 0 prints and writes; CUDA uses NCCL, CPUs gloo (several machines: see the README):

    torchrun --standalone --nproc_per_node 8 ch05_pretraining/train.py --data books --batch-size 64
    torchrun --standalone --nproc_per_node 2 ch05_pretraining/train.py --threads 1 --device cpu

What can go wrong: a folder that holds a run needs ``--resume`` (continue it) or ``--overwrite``
(replace it); ``--resume`` refuses settings (``--lr``, ``--steps``, ...) other than the run's. Files
are written whole or not at all (a temporary file, then a rename). An unreadable file (a damaged
``last.pth``: delete it, train again), a failed download or Ctrl-C gives one line and exit code 1
(130 for Ctrl-C); ``--debug`` shows the traceback. A bad value is refused before any work.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from gpt_from_scratch.ch02 import create_dataloader
from gpt_from_scratch.ch04 import GPT_CONFIG_124M, GPTModel, gpt2_config
from gpt_from_scratch.ch05 import (
    CourseFileError,
    GPTModelFast,
    atomic_write_text,
    bf16_supported,
    generate_text_fast,
    load_checkpoint,
    lr_at_step,
    pretrain_on_tokens,
    read_checkpoint,
    save_checkpoint,
    text_to_token_ids,
    token_ids_to_text,
    train_model,
)
from shared.cli import (
    add_out_dir,
    add_overwrite,
    add_seed,
    claim_out_dir,
    course_file_or_path,
    dropout_rate,
    nonneg_float,
    nonneg_int,
    open_fraction,
    plain_args,
    positive_float,
    positive_int,
    restore_run_args,
    script_main,
    script_parser,
    setup_runtime,
)
from shared.data import read_text as read_course_text
from shared.distributed import is_main, log, main_process_first, start_processes, wrap_model
from shared.registry import GUTENBERG_BOOKS
from shared.runtime import set_seed
from shared.tokenizer import get_gpt2_tokenizer

TINY = {"emb_dim": 64, "n_layers": 2, "n_heads": 2, "context_length": 64}
# The books model's size (base_model.ipynb, section 6, which measures the candidates): the widest
# layers cost little next to the 50,257-wide output head, so depth is cheap and width is not.
BOOKS_MODEL = {"emb_dim": 128, "n_layers": 8, "n_heads": 4, "context_length": 256}
BOOKS_STEPS = 2500  # 61 minutes on 2 CPU cores with bfloat16 (measured; see the notebook)
DEFAULTS = {  # per --data: the defaults of the options that differ between the two modes
    "text": dict(model="tiny", drop_rate=0.1, batch_size=2, lr=4e-4, min_lr=1e-5, warmup=10, eval_freq=10),
    "books": dict(model="books", drop_rate=0.0, batch_size=8, lr=2e-3, min_lr=2e-4, warmup=100, eval_freq=50),
}
PROMPTS = {"text": "Every effort moves you", "books": "It was late in the evening when"}
OUT_DIRS = {"text": "ch05", "books": "books"}  # checkpoint_dir names: checkpoints/ch05, checkpoints/books
RUN_ARGS = (  # what defines a run; restored from the checkpoint on --resume
    "data books val_books steps minutes eval_windows text model context_length emb_dim n_layers n_heads"
    " drop_rate epochs batch_size lr min_lr warmup weight_decay seed val_ratio fast precision"
).split()
LEGACY = {"data": "text", "fast": False, "precision": "fp32"}  # what a checkpoint without the key used
CHECKPOINT, HISTORY, SAMPLE_TOKENS = "last.pth", "history.json", 30
RUN_OUTPUTS = (CHECKPOINT, HISTORY, "model.safetensors", "config.json")  # tokens/ is a cache: kept
OUT_HELP = "checkpoints/ch05 for text, checkpoints/books for books"
PRECISION_HELP = "bf16: bfloat16 autocast; auto: bf16 where the device has bfloat16 arithmetic, else fp32"


def build_parser() -> argparse.ArgumentParser:
    """The command line (defaults that depend on --data are filled in after parsing, from DEFAULTS)."""
    p = script_parser(__doc__, __file__, device=True, threads=True)
    add = p.add_argument
    both = lambda what: f"(default: {DEFAULTS['text'][what]} for text, {DEFAULTS['books'][what]} for books)"
    add("--data", choices=("text", "books"), default="text", help="train on one text file, or on the books")
    add("--text", default="the-verdict.txt", help="text mode: a course file name or the path of a text")
    add("--model", help=f"tiny, books or a GPT-2 size (124M, 355M, ...) {both('model')}")
    add("--context-length", type=positive_int, help="the model's context (default: 64 for tiny, else 256)")
    add("--emb-dim", type=positive_int, help="the model's width (default: the --model's)")
    add("--n-layers", type=positive_int, help="the model's depth (default: the --model's)")
    add("--n-heads", type=positive_int, help="the model's attention heads (default: the --model's)")
    add("--drop-rate", type=dropout_rate, help=f"dropout rate {both('drop_rate')}")
    add("--epochs", type=positive_int, default=2, help="text mode: passes over the text")
    add("--batch-size", type=positive_int, help=f"rows per step, all processes together {both('batch_size')}")
    add("--lr", type=positive_float, help=f"peak learning rate {both('lr')}")
    add("--min-lr", type=nonneg_float, help=f"learning rate of the last step {both('min_lr')}")
    add("--warmup", type=nonneg_int, help=f"linear warmup steps {both('warmup')}")
    add("--weight-decay", type=nonneg_float, default=0.1, help="AdamW's weight decay")
    add_seed(p, detail=": the weights, the batches and dropout (kept by --resume)")
    add("--val-ratio", type=open_fraction, default=0.1, help="text mode: share of the text for validation")
    add("--books", default="all", help="books mode: Gutenberg eBook numbers, e.g. 84,98, or all")
    add("--val-books", default="84", help="books mode: the held-out books (84: Frankenstein)")
    add("--steps", type=positive_int, default=BOOKS_STEPS, help="books mode: training steps in all")
    add("--minutes", type=positive_float, help="books mode: set --steps for about this long (4 trial steps)")
    add("--eval-windows", type=positive_int, default=32, help="books mode: windows per evaluation")
    add("--extend-to", type=positive_int, help="books mode, with --resume: stretch the schedule to N steps")
    add("--eval-freq", type=positive_int, help=f"evaluate and sample every N steps {both('eval_freq')}")
    add("--eval-iter", type=positive_int, default=5, help="text mode: batches per evaluation")
    add("--save-every", type=positive_int, default=50, help="write last.pth and history.json every N steps")
    add("--max-steps", type=positive_int, help="stop after this global step (then continue with --resume)")
    add_out_dir(p, lambda a: OUT_DIRS[a.data], "last.pth, history.json and the books model", OUT_HELP)
    add("--resume", action="store_true", help="continue the run of <out-dir>/last.pth")
    add_overwrite(p)
    add("--prompt", help=f"the samples' prompt (default: {PROMPTS['text']!r}; books: {PROMPTS['books']!r})")
    add("--fast", action=argparse.BooleanOptionalAction, default=True, help="GPTModelFast, or GPTModel")
    add("--precision", choices=("auto", "fp32", "bf16"), default="auto", help=PRECISION_HELP)
    return p


def choose_precision(args: argparse.Namespace, device: torch.device) -> str:
    """fp32 or bf16, from --precision (auto: bf16 where the device has bfloat16 arithmetic); why."""
    if args.precision in ("fp32", "bf16"):
        return "as asked" if not args.resume else "as the checkpoint's run"
    args.precision = "bf16" if bf16_supported(device) else "fp32"
    if args.precision == "fp32":
        return f"auto: no bfloat16 arithmetic found on {device.type}"
    return f"auto: {'this GPU supports bfloat16' if device.type == 'cuda' else 'AVX-512 BF16 or AMX'}"


def model_config(args: argparse.Namespace) -> dict:
    """The GPT configuration for ``--model`` and the size options."""
    if args.model in ("tiny", "books"):
        cfg = {**GPT_CONFIG_124M, **(TINY if args.model == "tiny" else BOOKS_MODEL)}
    else:
        try:
            cfg = gpt2_config(args.model, context_length=256)
        except ValueError as err:
            raise SystemExit(f"--model: {err}; or use 'tiny' or 'books'") from None
    for key in ("context_length", "emb_dim", "n_layers", "n_heads"):
        if getattr(args, key, None) is not None:
            cfg[key] = getattr(args, key)
    if cfg["emb_dim"] % cfg["n_heads"]:
        raise SystemExit(f"--n-heads {cfg['n_heads']} must divide the width (--emb-dim {cfg['emb_dim']})")
    return {**cfg, "drop_rate": args.drop_rate}


def book_names(value: str, flag: str) -> list[str]:
    """The registered books of ``--books``/``--val-books`` (``all`` or numbers such as ``84,1342``)."""
    try:
        chosen = list(GUTENBERG_BOOKS) if value == "all" else [int(n) for n in value.split(",") if n.strip()]
    except ValueError:
        raise SystemExit(f"{flag} {value!r}: expected 'all' or eBook numbers such as 84,98") from None
    if unknown := sorted(set(chosen) - set(GUTENBERG_BOOKS)):
        raise SystemExit(f"{flag}: {unknown} are not registered; choose from {list(GUTENBERG_BOOKS)}")
    return [f"pg{n}" for n in chosen]


def book_tokens(args: argparse.Namespace, folder: Path, tokenizer) -> tuple:
    """The training and validation token arrays (memory-mapped), tokenized once into ``folder/tokens``."""
    from gpt_from_scratch.ch05 import read_token_file, split_books, strip_gutenberg, write_token_file

    books = book_names(args.books, "--books"), book_names(args.val_books, "--val-books")
    train_names, val_names = split_books(*books)
    arrays = []
    for split, wanted in (("train", train_names), ("val", val_names)):
        path = folder / "tokens" / f"{split}.bin"
        meta = Path(f"{path}.json")
        try:
            listed = json.loads(meta.read_text())["books"] if meta.is_file() and path.is_file() else []
        except (ValueError, KeyError, TypeError):  # a damaged .json: tokenize again
            listed = []
        if [b["name"] for b in listed] != wanted:  # tokenize once; again only for other books
            texts = {n: strip_gutenberg(read_course_text(f"gutenberg/{n}.txt")) for n in wanted}
            write_token_file(texts, tokenizer, path)
        tokens, spans = read_token_file(path)
        counts = ", ".join(f"{n} {end - start:,}" for n, (start, end) in spans.items())
        log(f"{split}: {len(spans)} book(s), {len(tokens):,} tokens ({counts})")
        arrays.append(tokens)
    return arrays[0], arrays[1], train_names, val_names


def steps_for_minutes(model: torch.nn.Module, train_tokens, val_tokens, device, args) -> int:
    """Steps that take about ``args.minutes``, from 4 trial steps (then undone; rank 0's timing decides)."""
    saved, times = {k: v.clone() for k, v in model.state_dict().items()}, []
    trial = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    for step in range(4):  # one step each
        begin = time.time()
        pretrain_on_tokens(
            model, trial, train_tokens, val_tokens, device, total_steps=10**6, batch_size=args.batch_size,
            peak_lr=args.lr, eval_every=10**9, eval_windows=1, seed=args.seed + step, stop_at_step=1,
            precision=args.precision,
        )  # fmt: skip
        times.append(time.time() - begin)
    model.load_state_dict(saved)  # the trial steps leave no trace
    seconds = sorted(times[1:])[1]  # the median of the last three (the first one warms up)
    decided = [max(1, int(args.minutes * 60 * 0.95 / seconds)), seconds]  # 5% for evaluations and samples
    if dist.is_initialized():
        dist.broadcast_object_list(decided, src=0)  # every process runs the same schedule
    log(f"{decided[1]:.2f} s per step measured: {decided[0]} steps for about {args.minutes:g} minutes")
    return decided[0]


def extend_schedule(state: dict, args: argparse.Namespace) -> int:
    """Stretch a resumed run's cosine schedule to ``args.extend_to`` steps; record the change."""
    old, step = state["total_steps"], state["step"]
    if args.extend_to < max(old, step + 1):
        raise SystemExit(f"--extend-to {args.extend_to}: the run already has {old} steps (at step {step})")
    before = lr_at_step(step, old, min(args.warmup, old), args.lr, args.min_lr)
    after = lr_at_step(step, args.extend_to, min(args.warmup, args.extend_to), args.lr, args.min_lr)
    state["total_steps"] = args.steps = args.extend_to
    change = dict(step=step, from_steps=old, to_steps=args.extend_to, lr_before=before, lr_after=after)
    state["history"].setdefault("schedule_changes", []).append(change)
    lrs = f"learning rate {before:.2e} -> {after:.2e}"
    log(f"schedule stretched at step {step} from {old} to {args.extend_to} steps ({lrs})")
    return args.extend_to


def sample(model: torch.nn.Module, prompt_ids: torch.Tensor, tokenizer, seed: int | None = None) -> str:
    """The prompt's continuation on one line: greedy, or with ``seed`` at temperature 0.8 and top-k 40."""
    model.eval()
    sampled = {} if seed is None else {"temperature": 0.8, "top_k": 40}
    with torch.random.fork_rng(devices=[]):  # the training's random state is left as it was
        if seed is not None:
            torch.manual_seed(seed)
        out = generate_text_fast(model, prompt_ids, SAMPLE_TOKENS, model.cfg["context_length"], **sampled)
    model.train()
    return token_ids_to_text(out.cpu(), tokenizer).replace("\n", " ")


def write_books_model(model, folder: Path, state: dict, args, val_tokens, names: tuple, device) -> None:
    """Books mode, at the last step: the loss on every held-out token, and the base-model folder."""
    from gpt_from_scratch.ch05 import fixed_windows, save_base_model, windows_loss

    facts = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    if facts.get("steps") != state["step"] or not (folder / "model.safetensors").is_file():
        val_loss = windows_loss(model, fixed_windows(val_tokens, model.cfg["context_length"]), device)
        seconds, tokens_seen = state.get("train_seconds", 0.0), state["tokens_seen"]
        facts = dict(
            tokens_seen=tokens_seen, steps=state["step"], batch_size=args.batch_size, val_loss=val_loss,
            val_perplexity=math.exp(val_loss), books=names[0], val_books=names[1],
            val_tokens=len(val_tokens), train_seconds=round(seconds, 1),
            tokens_per_second=round(tokens_seen / max(seconds, 1e-9), 1), threads=torch.get_num_threads(),
            lr=args.lr, min_lr=args.min_lr, warmup=args.warmup, seed=args.seed,
            load_average=[round(x, 2) for x in os.getloadavg()],  # 1, 5 and 15 minutes, this run included
            schedule_changes=state["history"].get("schedule_changes", []), model_class=type(model).__name__,
            precision=args.precision, processes=dist.get_world_size() if dist.is_initialized() else 1,
        )  # fmt: skip
        save_base_model(model, folder, **facts)
    loss, perplexity = facts["val_loss"], facts["val_perplexity"]
    held_out = f"{', '.join(facts['val_books'])} ({len(val_tokens):,} tokens)"
    print(f"held-out loss on {held_out}: {loss:.3f} (perplexity {perplexity:,.1f})")
    where = os.path.relpath(folder) if folder.resolve().is_relative_to(Path.cwd().resolve()) else folder
    print(f"books model written to {where} (model.safetensors, config.json)")


def train(args: argparse.Namespace, folder: Path, device: torch.device) -> int:
    """Both modes: set up, train in chunks of --save-every steps with a checkpoint after each, finish."""
    books, ckpt_path = args.data == "books", folder / CHECKPOINT
    device = start_processes(device, args.batch_size)
    cls, why = GPTModelFast if args.fast else GPTModel, choose_precision(args, device)
    log(f"model class {cls.__name__}, precision {args.precision} ({why})")
    tokenizer = main_process_first(get_gpt2_tokenizer)
    cfg = model_config(args)
    ctx = cfg["context_length"]
    if books:
        train_tokens, val_tokens, *names = main_process_first(lambda: book_tokens(args, folder, tokenizer))
    else:
        text = main_process_first(lambda: course_file_or_path(args.text, "--text").read_text("utf-8-sig"))
        split = int((1 - args.val_ratio) * len(text))
        train_loader, val_loader = (
            create_dataloader(part, tokenizer, args.batch_size, ctx, ctx, shuffle=shuffle, drop_last=shuffle)
            for part, shuffle in ((text[:split], True), (text[split:], False))
        )
    set_seed(args.seed)
    model = cls(cfg).to(device)
    net = wrap_model(model, device, args.seed)  # `model` itself under torchrun: DDP around it

    def train_steps(state: dict | None, stop: int, on_step: Callable[[dict], None]) -> dict:
        """Train ``net`` from ``state`` up to step ``stop`` with the mode's loop (5.6's, or the books')."""
        run = dict(peak_lr=args.lr, min_lr=args.min_lr, warmup_steps=min(args.warmup, total), seed=args.seed)
        run.update(state=state, stop_at_step=stop, on_step=on_step, precision=args.precision)
        if books:
            return pretrain_on_tokens(
                net, optimizer, train_tokens, val_tokens, device, total, args.batch_size,
                eval_every=args.eval_freq, eval_windows=args.eval_windows, **run,
            )  # fmt: skip
        return train_model(
            net, train_loader, val_loader, optimizer, device, num_epochs=args.epochs,
            eval_freq=args.eval_freq, eval_iter=args.eval_iter, verbose=False, **run,
        )  # fmt: skip

    if args.extend_to is not None and not (args.resume and books):
        raise SystemExit("--extend-to needs --data books and --resume: it stretches the schedule of a run")
    if args.minutes is not None and books and not args.resume:
        args.steps = steps_for_minutes(net, train_tokens, val_tokens, device, args)
    total = args.steps if books else args.epochs * len(train_loader)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    state = load_checkpoint(ckpt_path, model, optimizer, map_location=device) if args.resume else None
    if state is not None:
        state = {key: value for key, value in state.items() if key not in ("cfg", "args")}
        log(f"resuming from step {state['step']}")
        if args.extend_to is not None:
            total = extend_schedule(state, args)
    end = total if args.max_steps is None else min(args.max_steps, total)
    n_params, threads = sum(p.numel() for p in model.parameters()), torch.get_num_threads()
    shape = f"emb_dim {cfg['emb_dim']}, {cfg['n_layers']} layers, {cfg['n_heads']} heads, context {ctx}"
    log(f"model {args.model}: {n_params:,} parameters ({shape}); device {device}, {threads} thread(s)")
    per_epoch = "" if books else f" ({len(train_loader)} per epoch)"
    log(f"{total} steps{per_epoch} of {args.batch_size} x {ctx} tokens in all; training until step {end}")

    step = step0 = 0 if state is None else state["step"]
    seconds_before = 0.0 if state is None else state.get("train_seconds", 0.0)
    start, prompt_ids = time.time(), text_to_token_ids(args.prompt, tokenizer).to(device)
    bar = tqdm(total=end, initial=min(step, end), unit="step", mininterval=2, disable=not is_main())

    def on_step(live: dict) -> None:
        """Update the bar; after an evaluation, record the time and a text sample (main process only)."""
        if not is_main():
            return
        hist, rate = live["history"], (live["step"] - step0) * args.batch_size * ctx / (time.time() - start)
        if hist["tokens_seen"] and hist["tokens_seen"][-1] == live["tokens_seen"]:  # evaluated at this step
            live["train_seconds"] = seconds_before + time.time() - start
            hist.setdefault("seconds", []).append(live["train_seconds"])
            row = {key: live[key] for key in ("step", "tokens_seen")}
            text = sample(model, prompt_ids, tokenizer, seed=args.seed)
            hist.setdefault("samples", []).append({**row, "text": text})
        val = {"val": f"{hist['val_losses'][-1]:.3f}"} if hist["val_losses"] else {}
        bar.set_postfix({"tok/s": f"{rate:,.0f}", **val}, refresh=False)
        bar.update(1)

    with bar:
        while step < end:
            state = train_steps(state, min(end, (step // args.save_every + 1) * args.save_every), on_step)
            step, state["train_seconds"] = state["step"], seconds_before + time.time() - start
            if is_main():  # the state holds every process's random state: rank 0 writes it
                save_checkpoint(ckpt_path, model, optimizer, cfg=cfg, args=plain_args(args), **state)
                atomic_write_text(folder / HISTORY, json.dumps(state["history"], indent=1) + "\n")
    if not is_main() or state is None:
        return 0  # the rest (the final evaluation, the base-model folder) is rank 0's
    if step == step0:
        print("nothing to do: the checkpoint already reached step", state["step"])
    else:
        print(f"trained steps {step0} to {step} in {(time.time() - start) / 60:.1f} min; checkpoint saved")
    seconds, tokens_seen, hist = state.get("train_seconds", 0.0), state["tokens_seen"], state["history"]
    speed = f"{seconds / 60:.1f} min ({tokens_seen / max(seconds, 1e-9):,.0f} tokens/s)"
    print(f"step {state['step']} of {total}: {tokens_seen:,} tokens seen in {speed}")
    if hist["val_losses"]:
        losses = f"train loss {hist['train_losses'][-1]:.3f}, val loss {hist['val_losses'][-1]:.3f}"
        print(f"last evaluation: {losses}")
    if state["step"] < total:
        print(f"not finished: run again with --resume to train up to step {total}")
    elif books:
        write_books_model(model, folder, state, args, val_tokens, names, device)
    print("greedy sample:", sample(model, prompt_ids, tokenizer))
    return 0


@script_main(CourseFileError)
def main(argv: list[str] | None = None) -> int:
    """Train (or resume), saving checkpoints; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    folder = args.out_dir
    if not args.resume:  # a new run never mixes its files with an old run's
        claim_out_dir(folder, RUN_OUTPUTS, args.overwrite, ", or --resume to continue it")
    if args.resume and not (folder / CHECKPOINT).is_file():
        raise SystemExit(f"--resume: no checkpoint at {folder / CHECKPOINT}; train without --resume first")
    if args.resume:
        saved = read_checkpoint(folder / CHECKPOINT)["extra"]["args"]  # CourseFileError if unreadable
        restore_run_args(parser, args, saved, RUN_ARGS, LEGACY)
    for key, value in {**DEFAULTS[args.data], "prompt": PROMPTS[args.data]}.items():
        if getattr(args, key) is None:  # the default of the mode (--data)
            setattr(args, key, value)
    model_config(args)  # the model's shape and the books are checked before any work
    if args.data == "books":
        for value, flag in ((args.books, "--books"), (args.val_books, "--val-books")):
            book_names(value, flag)
    device = setup_runtime(args)  # --threads, --seed and --device
    try:
        code = train(args, folder, device)
        if dist.is_initialized():
            dist.barrier()  # no process tears the group down while another is still using it
        return code
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
