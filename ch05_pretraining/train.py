"""Pretrain a GPT model on a text file, with checkpoints and exact resuming (chapter 5).

The model and the training loop come from the course's package, ``gpt_from_scratch``, generated
from the notebooks' export cells (``pip install -e .``): the very ``GPTModel``, ``train_model`` and
``save_checkpoint`` that chapters 4 and 5 build.

Examples (from the repository root):

    python ch05_pretraining/train.py --text the-verdict.txt --model tiny --epochs 2
    python ch05_pretraining/train.py --text my_book.txt --model 124M --context-length 256 \\
        --epochs 10 --lr 4e-4 --warmup 20 --checkpoint-dir checkpoints/ch05
    python ch05_pretraining/train.py --checkpoint-dir checkpoints/ch05 --resume   # continue

``--text`` is a course file name (see shared/registry.py, e.g. ``the-verdict.txt``) or a path.
Training uses linear warmup, cosine decay to ``--min-lr`` and gradient clipping (section 5.6).
A checkpoint (``last.pth``) holds the model, the optimizer, the step, the RNG state and the
arguments; ``--resume`` continues from it and gives the same losses as a run that was never
interrupted. The arguments that shape the run (text, model, epochs, batch size, learning rates,
seed) are taken from the checkpoint when resuming.

``--data books`` pretrains the course's own base model (ch05_pretraining/base_model.ipynb) on the
fifteen Project Gutenberg books of the registry: each book's licence header and footer are
stripped, the books are tokenized once into uint16 token files on disk, whole books are held out
for validation (``--val-books``), and every step trains on random windows of the token array.
It evaluates on the held-out books every ``--eval-freq`` steps (and writes a text sample), saves
``history.json`` for loss curves, and at the last step writes the base-model folder
(``model.safetensors`` + ``config.json``) that ``load_base_model`` reads:

    python ch05_pretraining/train.py --data books --minutes 60          # about an hour: checkpoints/books
    python ch05_pretraining/train.py --data books --resume              # continue an interrupted run
    python ch05_pretraining/train.py --data books --model tiny --books 844,1513 --val-books 1513 \\
        --steps 30 --checkpoint-dir checkpoints/books-quick   # seconds

``--minutes`` sets the number of steps (and with it the cosine schedule) from the speed of four
timed trial steps; on a machine whose load changes, ``--resume --extend-to N`` stretches the
schedule of a run under way to N steps (the change is recorded in history.json and config.json).

Speed: ``--fast`` (the default) trains ``GPTModelFast`` (ch05_pretraining/speed.ipynb: the
parameters of ``GPTModel``, the same results up to float rounding, computed faster; ``--no-fast``
for the chapter's ``GPTModel``); checkpoints of both load into either. ``--precision auto`` (the
default) picks bf16, bfloat16 autocast around the forward pass and the loss, where the device has
bfloat16 arithmetic (a CUDA GPU with bf16, a CPU with AVX-512 BF16 or AMX), else fp32; the choice
is printed at the start and kept by ``--resume``.

Several processes, GPUs or machines: run the script under ``torchrun``. Every process trains on
its own share of the rows of every batch (``--batch-size`` is the global batch, split evenly),
PyTorch's DistributedDataParallel averages the gradients, and the logged losses are the mean over
all processes: N processes follow the run of one process with the same batch, up to float
rounding, when ``--drop-rate`` is 0 (with dropout each process draws its own masks, so the runs
agree only statistically). Only rank 0 prints and writes checkpoints, history.json, samples and
the base-model folder; ``--resume`` continues exactly (every process's random state is in the
checkpoint). On CUDA each process uses the GPU of its ``LOCAL_RANK`` and NCCL; on CPU the
processes talk through gloo:

    # one machine with 8 GPUs (a global batch of 64: 8 rows per GPU)
    torchrun --standalone --nproc_per_node 8 ch05_pretraining/train.py --data books --batch-size 64
    # two machines with 8 GPUs each: run on both, --node_rank 0 on the first, 1 on the second
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d \\
        --rdzv_endpoint first-machine:29500 ch05_pretraining/train.py --data books --batch-size 128
    # (or, without rendezvous: --master_addr first-machine --master_port 29500 instead of --rdzv_*)
    # two CPU processes on one machine (gloo), one thread each
    torchrun --standalone --nproc_per_node 2 ch05_pretraining/train.py --threads 1 --device cpu
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from gpt_from_scratch.ch02 import create_dataloader
from gpt_from_scratch.ch04 import GPT_CONFIG_124M, GPTModel, gpt2_config
from gpt_from_scratch.ch05 import (
    GPTModelFast,
    bf16_supported,
    fixed_windows,
    generate,
    load_checkpoint,
    lr_at_step,
    pretrain_on_tokens,
    read_token_file,
    save_base_model,
    save_checkpoint,
    split_books,
    strip_gutenberg,
    text_to_token_ids,
    token_ids_to_text,
    train_model,
    windows_loss,
    write_token_file,
)

TINY = {"emb_dim": 64, "n_layers": 2, "n_heads": 2, "context_length": 64}
# The books model's size (base_model.ipynb, section 6, which measures the candidates): the widest
# layers cost little next to the 50,257-wide output head, so depth is cheap and width is not.
BOOKS_MODEL = {"emb_dim": 128, "n_layers": 8, "n_heads": 4, "context_length": 256}
BOOKS_STEPS = 2500  # 61 minutes on 2 CPU cores with bfloat16 (measured; see the notebook)
DEFAULTS = {  # per --data: the defaults of the options that differ between the two modes
    "text": dict(
        model="tiny",
        drop_rate=0.1,
        batch_size=2,
        lr=4e-4,
        min_lr=1e-5,
        warmup=10,
        eval_freq=10,
        save_every=50,
        checkpoint_dir="checkpoints/ch05",
        prompt="Every effort moves you",
    ),
    "books": dict(
        model="books",
        drop_rate=0.0,
        batch_size=8,
        lr=2e-3,
        min_lr=2e-4,
        warmup=100,
        eval_freq=50,
        save_every=50,
        checkpoint_dir="checkpoints/books",
        prompt="It was late in the evening when",
    ),
}
RUN_ARGS = (  # what defines a run; restored from the checkpoint on --resume
    "data",
    "books",
    "val_books",
    "steps",
    "minutes",
    "eval_windows",
    "text",
    "model",
    "context_length",
    "emb_dim",
    "n_layers",
    "n_heads",
    "drop_rate",
    "epochs",
    "batch_size",
    "lr",
    "min_lr",
    "warmup",
    "weight_decay",
    "seed",
    "val_ratio",
    "fast",
    "precision",
)
LEGACY = {"data": "text", "fast": False, "precision": "fp32"}  # what a checkpoint without the key used
CHECKPOINT = "last.pth"
HISTORY = "history.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (defaults that depend on --data are filled in from DEFAULTS)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])

    def both(what: str) -> str:
        return f"(default: {DEFAULTS['text'][what]} for text, {DEFAULTS['books'][what]} for books)"

    p.add_argument("--data", choices=("text", "books"), default="text", help="one text file, or the books")
    p.add_argument("--text", default="the-verdict.txt", help="course file name or path to a UTF-8 text")
    p.add_argument("--model", default=None, help=f"'tiny', 'books' or a GPT-2 size (124M...) {both('model')}")
    p.add_argument("--context-length", type=int, default=None, help="default: 64 (tiny), else 256")
    p.add_argument("--emb-dim", type=int, default=None, help="override the model's width")
    p.add_argument("--n-layers", type=int, default=None, help="override the model's depth")
    p.add_argument("--n-heads", type=int, default=None, help="override the model's number of heads")
    p.add_argument("--drop-rate", type=float, default=None, help=both("drop_rate"))
    p.add_argument("--epochs", type=int, default=2, help="passes over the text (text mode)")
    p.add_argument("--batch-size", type=int, default=None, help=both("batch_size"))
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate {both('lr')}")
    p.add_argument("--min-lr", type=float, default=None, help=f"last step's learning rate {both('min_lr')}")
    p.add_argument("--warmup", type=int, default=None, help=f"warmup steps {both('warmup')}")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--val-ratio", type=float, default=0.1, help="share of the text kept for validation")
    p.add_argument(
        "--books", default="all", help="books mode: Gutenberg eBook numbers, e.g. 84,98 (default: all)"
    )
    p.add_argument("--val-books", default="84", help="books mode: held-out books (default: 84, Frankenstein)")
    p.add_argument("--steps", type=int, default=BOOKS_STEPS, help="books mode: training steps in all")
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="books mode: set --steps so that training takes about this long (speed measured on 4 steps)",
    )
    p.add_argument("--eval-windows", type=int, default=32, help="books mode: windows per evaluation")
    p.add_argument(
        "--extend-to",
        type=int,
        default=None,
        help="books mode, with --resume: stretch the schedule to this many steps in all (the learning rate "
        "then follows the longer cosine; the change is recorded in the run's history)",
    )
    p.add_argument("--eval-freq", type=int, default=None, help=f"evaluate every N steps {both('eval_freq')}")
    p.add_argument("--eval-iter", type=int, default=5, help="batches per evaluation (text mode)")
    p.add_argument(
        "--save-every", type=int, default=None, help=f"checkpoint every N steps {both('save_every')}"
    )
    p.add_argument("--max-steps", type=int, default=None, help="stop after this global step (resumable)")
    p.add_argument("--checkpoint-dir", default=None, help=f"folder of last.pth {both('checkpoint_dir')}")
    p.add_argument("--resume", action="store_true", help="continue from <checkpoint-dir>/last.pth")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: PyTorch's choice)")
    p.add_argument("--prompt", default=None, help=f"sample prompt {both('prompt')}")
    p.add_argument(
        "--fast",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train GPTModelFast (ch05_pretraining/speed.ipynb; default), or GPTModel with --no-fast",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="bf16: bfloat16 autocast; auto (default): bf16 where the device has bfloat16 arithmetic",
    )
    args = p.parse_args(argv)
    if args.checkpoint_dir is None:
        args.checkpoint_dir = DEFAULTS[args.data]["checkpoint_dir"]
    return args


def is_main() -> bool:
    """True in the one process that prints and writes files: rank 0 under torchrun, else the only one."""
    return not dist.is_initialized() or dist.get_rank() == 0


def log(*args, **kwargs) -> None:
    """``print``, in the main process only (under torchrun every process has the same story to tell)."""
    if is_main():
        print(*args, **kwargs)


def start_processes(args: argparse.Namespace) -> torch.device:
    """This process's device; under torchrun, join the process group first (NCCL on CUDA, gloo on CPU)."""
    from shared.runtime import get_device

    device = get_device(args.device)
    if "WORLD_SIZE" not in os.environ:  # started without torchrun: one process
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))  # one GPU per process
        torch.cuda.set_device(device)
        bind = "device_id" in inspect.signature(dist.init_process_group).parameters  # torch >= 2.3
        dist.init_process_group("nccl", **({"device_id": device} if bind else {}))
    elif device.type == "cpu":
        dist.init_process_group("gloo")
    else:
        raise SystemExit(f"torchrun: use --device cuda or cpu (NCCL or gloo), not {device.type}")
    world = dist.get_world_size()
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} does not split evenly over {world} processes")
    backend = dist.get_backend()
    log(f"torchrun: {world} processes ({backend}), each trains on {args.batch_size // world} rows of a batch")
    return device


def main_process_first(make: Callable[[], object]) -> object:
    """``make()`` in the main process, then, when it is done (it may write files), in the others."""
    if is_main():
        result = make()
    if dist.is_initialized():
        dist.barrier()
    if not is_main():
        result = make()
    return result


def wrap_model(model: torch.nn.Module, device: torch.device, seed: int) -> torch.nn.Module:
    """The model in DistributedDataParallel under torchrun (gradients averaged over ranks), else itself."""
    if not dist.is_initialized():
        return model
    rank = dist.get_rank()
    if rank > 0:  # rank 0 keeps the random stream of a one-process run; the others draw their own dropout
        torch.manual_seed(seed + rank)
    ids = [device.index] if device.type == "cuda" else None
    names = inspect.signature(DistributedDataParallel).parameters  # torch 2.13 renamed the option:
    no_sync = "forward_sync_buffers" if "forward_sync_buffers" in names else "broadcast_buffers"
    return DistributedDataParallel(model, device_ids=ids, **{no_sync: False})  # buffers (masks) are constants


def rng_extras(state: dict) -> dict:
    """Under torchrun, every process's random state (rank 0 saves it with the checkpoint): exact resume."""
    if not dist.is_initialized():
        return {}
    mine = {key: state[key] for key in ("rng_state", "cuda_rng_state") if key in state}
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, mine)
    return {"rank_rng_states": states}


def restore_rank_rng(state: dict) -> None:
    """Give this process its own random state from a checkpoint written under torchrun (if it has one)."""
    states = state.pop("rank_rng_states", None)  # rank 0's state is also the checkpoint's own rng_state
    world = dist.get_world_size() if dist.is_initialized() else 1
    if states is not None and len(states) == world:
        state.update(states[dist.get_rank() if world > 1 else 0])
    elif states is not None or world > 1:
        n = 1 if states is None else len(states)
        log(f"note: the checkpoint comes from {n} process(es), this run has {world}: the batches are the")
        log("same, but dropout masks (if any) are not those of an uninterrupted run")


def choose_precision(args: argparse.Namespace, device: torch.device) -> str:
    """fp32 or bf16, from --precision (auto: bf16 where the device has bfloat16 arithmetic); printed."""
    if args.precision in ("fp32", "bf16"):
        why = "as asked" if not args.resume else "as the checkpoint's run"
    elif bf16_supported(device):
        args.precision = "bf16"
        why = "auto: this GPU supports bfloat16" if device.type == "cuda" else "auto: AVX-512 BF16 or AMX"
    else:
        args.precision = "fp32"
        why = f"auto: no bfloat16 arithmetic found on {device.type}"
    return why


def fill_defaults(args: argparse.Namespace) -> None:
    """Give every option left unset the default of its mode (--data)."""
    for key, value in DEFAULTS[args.data].items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def read_text(name: str) -> str:
    """A registered course file by name, else a text file by path."""
    from shared.data import read_text as read_course_text
    from shared.registry import FILES

    if name in FILES:
        return read_course_text(name)
    path = Path(name)
    if not path.is_file():
        raise SystemExit(f"--text {name!r} is neither a course file (shared/registry.py) nor a file")
    return path.read_text(encoding="utf-8")


def model_config(args: argparse.Namespace) -> dict:
    """The GPT configuration for ``--model`` and ``--context-length``."""
    if args.model == "tiny":
        cfg = {**GPT_CONFIG_124M, **TINY}
    elif args.model == "books":
        cfg = {**GPT_CONFIG_124M, **BOOKS_MODEL}
    else:
        try:
            cfg = gpt2_config(args.model, context_length=256)
        except ValueError as err:
            raise SystemExit(f"--model: {err}; or use 'tiny' or 'books'") from None
    for key in ("context_length", "emb_dim", "n_layers", "n_heads"):
        if getattr(args, key, None) is not None:
            cfg[key] = getattr(args, key)
    cfg["drop_rate"] = args.drop_rate
    return cfg


def shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies inside it (no machine paths in logs)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def book_numbers(value: str) -> list[int]:
    """``all`` (every registered Gutenberg book) or a comma-separated list of eBook numbers."""
    from shared.registry import GUTENBERG_BOOKS

    if value == "all":
        return list(GUTENBERG_BOOKS)
    numbers = [int(n) for n in value.split(",") if n.strip()]
    unknown = sorted(set(numbers) - set(GUTENBERG_BOOKS))
    if unknown:
        raise SystemExit(f"--books: {unknown} are not registered; choose from {list(GUTENBERG_BOOKS)}")
    return numbers


def book_tokens(args: argparse.Namespace, folder: Path, tokenizer) -> tuple:
    """The training and validation token arrays (memory-mapped), tokenized once into ``folder``."""
    from shared.data import read_text as read_course_text

    names = [f"pg{n}" for n in book_numbers(args.books)]
    val_names = [f"pg{n}" for n in book_numbers(args.val_books)]
    train_names, val_names = split_books(names, val_names)
    arrays = []
    for split, wanted in (("train", train_names), ("val", val_names)):
        path = folder / f"{split}.bin"
        meta = Path(f"{path}.json")
        listed = json.loads(meta.read_text())["books"] if meta.is_file() and path.is_file() else []
        if [b["name"] for b in listed] != wanted:  # tokenize once; again only for other books
            texts = {n: strip_gutenberg(read_course_text(f"gutenberg/{n}.txt")) for n in wanted}
            write_token_file(texts, tokenizer, path)
        tokens, spans = read_token_file(path)
        counts = ", ".join(f"{n} {end - start:,}" for n, (start, end) in spans.items())
        log(f"{split}: {len(spans)} book(s), {len(tokens):,} tokens ({counts})")
        arrays.append(tokens)
    return arrays[0], arrays[1], train_names, val_names


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as JSON, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def steps_for_minutes(model: torch.nn.Module, train_tokens, val_tokens, device, args) -> int:
    """Training steps that take about ``args.minutes``, from the speed of 4 trial steps (then undone).

    Under torchrun every process takes the trial steps together; rank 0's measurement decides.
    """
    import copy

    saved = copy.deepcopy(model.state_dict())
    trial = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    times = []
    for step in range(4):  # one step each
        begin = time.time()
        pretrain_on_tokens(
            model,
            trial,
            train_tokens,
            val_tokens,
            device,
            total_steps=10**6,
            batch_size=args.batch_size,
            peak_lr=args.lr,
            eval_every=10**9,
            eval_windows=1,
            seed=args.seed + step,
            stop_at_step=1,
            precision=args.precision,
        )
        times.append(time.time() - begin)
    model.load_state_dict(saved)  # the trial steps leave no trace
    seconds = sorted(times[1:])[1]  # the median of the last three (the first one warms up)
    steps = max(1, int(args.minutes * 60 * 0.95 / seconds))  # 5% for evaluations and samples
    if dist.is_initialized():
        decided = [steps, seconds]
        dist.broadcast_object_list(decided, src=0)  # every process runs the same schedule
        steps, seconds = decided
    log(f"{seconds:.2f} s per step measured: {steps} steps for about {args.minutes:g} minutes")
    return steps


def extend_schedule(state: dict, args: argparse.Namespace) -> int:
    """Stretch a resumed run's cosine schedule to ``args.extend_to`` steps; record the change."""
    old, step = state["total_steps"], state["step"]
    if args.extend_to < max(old, step + 1):
        raise SystemExit(f"--extend-to {args.extend_to}: the run already has {old} steps (at step {step})")
    warmup = min(args.warmup, old)
    before = lr_at_step(step, old, warmup, args.lr, args.min_lr)
    after = lr_at_step(step, args.extend_to, min(args.warmup, args.extend_to), args.lr, args.min_lr)
    state["total_steps"] = args.steps = args.extend_to
    change = {
        "step": step,
        "from_steps": old,
        "to_steps": args.extend_to,
        "lr_before": before,
        "lr_after": after,
    }
    state["history"].setdefault("schedule_changes", []).append(change)
    log(f"schedule stretched at step {step} from {old} to {args.extend_to} steps", end=" ")
    log(f"(learning rate {before:.2e} -> {after:.2e})")
    return args.extend_to


def train_books(args: argparse.Namespace, ckpt_path: Path) -> int:
    """Books mode: pretrain on random windows of the Gutenberg books; write the base-model folder."""
    from shared.runtime import set_seed
    from shared.tokenizer import get_gpt2_tokenizer

    folder = ckpt_path.parent
    device = start_processes(args)
    cls, why = GPTModelFast if args.fast else GPTModel, choose_precision(args, device)
    log(f"model class {cls.__name__}, precision {args.precision} ({why})")
    tokenizer = main_process_first(get_gpt2_tokenizer)
    train_tokens, val_tokens, train_names, val_names = main_process_first(
        lambda: book_tokens(args, folder / "tokens", tokenizer)
    )
    cfg = model_config(args)
    ctx = cfg["context_length"]

    set_seed(args.seed)
    model = cls(cfg).to(device)
    net = wrap_model(model, device, args.seed)  # `model` itself under torchrun: DDP around it
    if args.minutes is not None and not args.resume:
        args.steps = steps_for_minutes(net, train_tokens, val_tokens, device, args)
    total = args.steps
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    state = None
    if args.resume:
        state = load_checkpoint(ckpt_path, model, optimizer, map_location=device)
        state.pop("cfg", None)
        state.pop("args", None)
        restore_rank_rng(state)
        log(f"resuming from step {state['step']}")
        if args.extend_to is not None:
            total = extend_schedule(state, args)
    elif args.extend_to is not None:
        raise SystemExit("--extend-to needs --resume: it stretches the schedule of a run under way")
    end = total if args.max_steps is None else min(args.max_steps, total)
    n_params = sum(p.numel() for p in model.parameters())
    shape = f"emb_dim {cfg['emb_dim']}, {cfg['n_layers']} layers, {cfg['n_heads']} heads, context {ctx}"
    threads = torch.get_num_threads()
    log(f"model {args.model}: {n_params:,} parameters ({shape}); device {device}, {threads} thread(s)")
    log(f"{total} steps of {args.batch_size} x {ctx} tokens in all; training until step {end}")

    schedule = dict(
        total_steps=total,
        batch_size=args.batch_size,
        peak_lr=args.lr,
        min_lr=args.min_lr,
        warmup_steps=min(args.warmup, total),
        eval_every=args.eval_freq,
        eval_windows=args.eval_windows,
        seed=args.seed,
        precision=args.precision,
    )
    step = 0 if state is None else state["step"]
    seconds_before = 0.0 if state is None else state.get("train_seconds", 0.0)
    start, step0 = time.time(), step
    prompt_ids = text_to_token_ids(args.prompt, tokenizer).to(device)

    def on_step(live: dict) -> None:
        """Update the bar; after an evaluation, record the time and a text sample (main process only)."""
        if not is_main():
            return
        bar.update(1)
        hist = live["history"]
        done = live["step"] - step0
        rate = done * args.batch_size * ctx / max(time.time() - start, 1e-9)
        postfix = {"tok/s": f"{rate:,.0f}"}
        if hist["steps"] and hist["steps"][-1] == live["step"]:  # evaluated at this step
            live["train_seconds"] = seconds_before + time.time() - start
            hist.setdefault("seconds", []).append(live["train_seconds"])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(args.seed)
                out = generate(
                    model, prompt_ids, max_new_tokens=30, context_size=ctx, temperature=0.8, top_k=40
                )
            model.train()
            text = token_ids_to_text(out.cpu(), tokenizer).replace("\n", " ")
            sample = {"step": live["step"], "tokens_seen": live["tokens_seen"], "text": text}
            hist.setdefault("samples", []).append(sample)
        if hist["val_losses"]:
            postfix["val"] = f"{hist['val_losses'][-1]:.3f}"
        bar.set_postfix(postfix, refresh=False)

    bar = tqdm(
        total=end,
        initial=min(step, end),
        unit="step",
        dynamic_ncols=True,
        mininterval=2,
        disable=not is_main(),
    )
    with bar:
        while step < end:
            stop = min(end, (step // args.save_every + 1) * args.save_every)
            state = pretrain_on_tokens(
                net,
                optimizer,
                train_tokens,
                val_tokens,
                device,
                **schedule,
                state=state,
                stop_at_step=stop,
                on_step=on_step,
            )
            step = state["step"]
            state["train_seconds"] = seconds_before + time.time() - start
            rng = rng_extras(state)  # every process takes part; rank 0 writes
            if is_main():
                save_checkpoint(ckpt_path, model, optimizer, cfg=cfg, args=vars(args), **state, **rng)
                write_json(folder / HISTORY, state["history"])
    if not is_main():
        return 0  # the rest (evaluation on every held-out token, the base-model folder) is rank 0's
    if step == step0:
        if state is None:
            state = load_checkpoint(ckpt_path, model, map_location=device)
        print("nothing to do: the checkpoint already reached step", state["step"])
    else:
        minutes = (time.time() - start) / 60
        print(f"trained steps {step0} to {step} in {minutes:.1f} min; checkpoint saved")
    seconds, tokens_seen = state.get("train_seconds", 0.0), state["tokens_seen"]
    rate = tokens_seen / max(seconds, 1e-9)
    summary = f"{tokens_seen:,} tokens seen in {seconds / 60:.1f} min ({rate:,.0f} tokens/s)"
    print(f"step {state['step']} of {total}: {summary}")
    if state["step"] < total:
        print(f"not finished: run again with --resume to train up to step {total}")
        return 0

    config_file = folder / "config.json"
    facts = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if facts.get("steps") != state["step"] or not (folder / "model.safetensors").is_file():
        val_loss = windows_loss(model, fixed_windows(val_tokens, ctx), device)  # every held-out token
        facts = dict(
            tokens_seen=tokens_seen,
            steps=state["step"],
            batch_size=args.batch_size,
            val_loss=val_loss,
            val_perplexity=math.exp(val_loss),
            books=train_names,
            val_books=val_names,
            val_tokens=len(val_tokens),
            train_seconds=round(seconds, 1),
            tokens_per_second=round(rate, 1),
            threads=torch.get_num_threads(),
            lr=args.lr,
            min_lr=args.min_lr,
            warmup=args.warmup,
            seed=args.seed,
            load_average=[round(x, 2) for x in os.getloadavg()],  # 1, 5, 15 min, this run included
            schedule_changes=state["history"].get("schedule_changes", []),
            model_class=type(model).__name__,
            precision=args.precision,
            processes=dist.get_world_size() if dist.is_initialized() else 1,
        )
        save_base_model(model, folder, **facts)
    print(
        f"held-out loss on {', '.join(facts['val_books'])} ({len(val_tokens):,} tokens): "
        f"{facts['val_loss']:.3f} (perplexity {facts['val_perplexity']:,.1f})"
    )
    print(f"books model written to {shown(folder)} (model.safetensors, config.json)")
    model.eval()
    out = generate(model, prompt_ids, max_new_tokens=30, context_size=ctx)
    print("greedy sample:", token_ids_to_text(out.cpu(), tokenizer).replace("\n", " "))
    return 0


def train_text(args: argparse.Namespace, ckpt_path: Path) -> int:
    """Text mode: train on one text file for ``--epochs`` passes (section 5.6's ``train_model``)."""
    from shared.runtime import set_seed
    from shared.tokenizer import get_gpt2_tokenizer

    device = start_processes(args)
    cls, why = GPTModelFast if args.fast else GPTModel, choose_precision(args, device)
    log(f"model class {cls.__name__}, precision {args.precision} ({why})")
    tokenizer = main_process_first(get_gpt2_tokenizer)
    text = main_process_first(lambda: read_text(args.text))
    split = int((1 - args.val_ratio) * len(text))
    cfg = model_config(args)
    ctx = cfg["context_length"]

    set_seed(args.seed)
    train_loader = create_dataloader(
        text[:split],
        tokenizer,
        batch_size=args.batch_size,
        max_length=ctx,
        stride=ctx,
        shuffle=True,
        drop_last=True,
    )
    val_loader = create_dataloader(
        text[split:],
        tokenizer,
        batch_size=args.batch_size,
        max_length=ctx,
        stride=ctx,
        shuffle=False,
        drop_last=False,
    )
    model = cls(cfg).to(device)
    net = wrap_model(model, device, args.seed)  # `model` itself under torchrun: DDP around it
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    state = None
    if args.resume:
        state = load_checkpoint(ckpt_path, model, optimizer, map_location=device)
        state.pop("cfg", None)
        state.pop("args", None)
        restore_rank_rng(state)
        log(f"resuming from step {state['step']}")

    steps_per_epoch = len(train_loader)
    total = args.epochs * steps_per_epoch
    end = total if args.max_steps is None else min(args.max_steps, total)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model {args.model}: {n_params:,} parameters, context {ctx}; device {device}")
    log(f"{steps_per_epoch} steps per epoch, {total} steps in all; training until step {end}")

    schedule = dict(
        num_epochs=args.epochs,
        eval_freq=args.eval_freq,
        eval_iter=args.eval_iter,
        peak_lr=args.lr,
        min_lr=args.min_lr,
        warmup_steps=min(args.warmup, total),
        seed=args.seed,
        precision=args.precision,
    )
    step = 0 if state is None else state["step"]
    start = time.time()
    with tqdm(
        total=end, initial=min(step, end), unit="step", dynamic_ncols=True, disable=not is_main()
    ) as bar:
        while step < end:
            stop = min(end, (step // args.save_every + 1) * args.save_every)
            state = train_model(
                net,
                train_loader,
                val_loader,
                optimizer,
                device,
                **schedule,
                state=state,
                stop_at_step=stop,
                verbose=False,
            )
            bar.update(state["step"] - step)
            step = state["step"]
            hist = state["history"]
            if hist["val_losses"]:
                bar.set_postfix(train=f"{hist['train_losses'][-1]:.3f}", val=f"{hist['val_losses'][-1]:.3f}")
            rng = rng_extras(state)  # every process takes part; rank 0 writes
            if is_main():
                save_checkpoint(ckpt_path, model, optimizer, cfg=cfg, args=vars(args), **state, **rng)
    if state is None:
        log("nothing to do: the checkpoint already reached the last step")
        return 0
    if not is_main():
        return 0
    print(f"step {step} of {total} in {(time.time() - start) / 60:.2f} min; checkpoint saved")
    hist = state["history"]
    if hist["val_losses"]:
        train_loss, val_loss = hist["train_losses"][-1], hist["val_losses"][-1]
        print(f"last evaluation: train loss {train_loss:.3f}, val loss {val_loss:.3f}")
    model.eval()
    idx = text_to_token_ids(args.prompt, tokenizer).to(device)
    out = generate(model, idx, max_new_tokens=20, context_size=ctx)
    print("sample:", token_ids_to_text(out.cpu(), tokenizer).replace("\n", " "))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Train (or resume), saving checkpoints; return the exit code."""
    args = parse_args(argv)
    ckpt_path = Path(args.checkpoint_dir) / CHECKPOINT
    if args.resume and not ckpt_path.is_file():
        raise SystemExit(f"--resume: no checkpoint at {ckpt_path}; train without --resume first")
    if args.resume:
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=True)["extra"]["args"]
        for key in RUN_ARGS:
            setattr(args, key, saved.get(key, LEGACY.get(key, getattr(args, key))))
    fill_defaults(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        return (train_books if args.data == "books" else train_text)(args, ckpt_path)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
