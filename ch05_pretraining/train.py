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
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from gpt_from_scratch.ch02 import create_dataloader
from gpt_from_scratch.ch04 import GPT_CONFIG_124M, GPTModel, gpt2_config
from gpt_from_scratch.ch05 import (
    generate,
    load_checkpoint,
    save_checkpoint,
    text_to_token_ids,
    token_ids_to_text,
    train_model,
)

TINY = {"emb_dim": 64, "n_layers": 2, "n_heads": 2, "context_length": 64}
RUN_ARGS = (  # what defines a run; restored from the checkpoint on --resume
    "text",
    "model",
    "context_length",
    "drop_rate",
    "epochs",
    "batch_size",
    "lr",
    "min_lr",
    "warmup",
    "weight_decay",
    "seed",
    "val_ratio",
)
CHECKPOINT = "last.pth"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--text", default="the-verdict.txt", help="course file name or path to a UTF-8 text")
    p.add_argument("--model", default="tiny", help="'tiny' or a GPT-2 size: 124M, 355M, 774M, 1558M")
    p.add_argument("--context-length", type=int, default=None, help="default: 64 (tiny), 256 (GPT-2 sizes)")
    p.add_argument("--drop-rate", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=4e-4, help="peak learning rate")
    p.add_argument("--min-lr", type=float, default=1e-5, help="learning rate at the last step")
    p.add_argument("--warmup", type=int, default=10, help="warmup steps")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--val-ratio", type=float, default=0.1, help="share of the text kept for validation")
    p.add_argument("--eval-freq", type=int, default=10, help="evaluate every N steps")
    p.add_argument("--eval-iter", type=int, default=5, help="batches per evaluation")
    p.add_argument("--save-every", type=int, default=50, help="save a checkpoint every N steps")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this global step (resumable)")
    p.add_argument("--checkpoint-dir", default="checkpoints/ch05", help="where last.pth is written")
    p.add_argument("--resume", action="store_true", help="continue from <checkpoint-dir>/last.pth")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--prompt", default="Every effort moves you", help="sample prompt printed at the end")
    return p.parse_args(argv)


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
    else:
        try:
            cfg = gpt2_config(args.model, context_length=256)
        except ValueError as err:
            raise SystemExit(f"--model: {err}; or use 'tiny'") from None
    if args.context_length is not None:
        cfg["context_length"] = args.context_length
    cfg["drop_rate"] = args.drop_rate
    return cfg


def main(argv: list[str] | None = None) -> int:
    """Train (or resume), saving checkpoints; return the exit code."""
    args = parse_args(argv)
    ckpt_path = Path(args.checkpoint_dir) / CHECKPOINT
    if args.resume and not ckpt_path.is_file():
        raise SystemExit(f"--resume: no checkpoint at {ckpt_path}; train without --resume first")
    from shared.runtime import get_device, set_seed
    from shared.tokenizer import get_gpt2_tokenizer

    state = None
    if args.resume:
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=True)["extra"]["args"]
        for key in RUN_ARGS:
            setattr(args, key, saved[key])

    device = get_device(args.device)
    tokenizer = get_gpt2_tokenizer()
    text = read_text(args.text)
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
    model = GPTModel(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    if args.resume:
        state = load_checkpoint(ckpt_path, model, optimizer, map_location=device)
        state.pop("cfg", None)
        state.pop("args", None)
        print(f"resuming from step {state['step']}")

    steps_per_epoch = len(train_loader)
    total = args.epochs * steps_per_epoch
    end = total if args.max_steps is None else min(args.max_steps, total)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model {args.model}: {n_params:,} parameters, context {ctx}; device {device}")
    print(f"{steps_per_epoch} steps per epoch, {total} steps in all; training until step {end}")

    schedule = dict(
        num_epochs=args.epochs,
        eval_freq=args.eval_freq,
        eval_iter=args.eval_iter,
        peak_lr=args.lr,
        min_lr=args.min_lr,
        warmup_steps=min(args.warmup, total),
        seed=args.seed,
    )
    step = 0 if state is None else state["step"]
    start = time.time()
    with tqdm(total=end, initial=min(step, end), unit="step", dynamic_ncols=True) as bar:
        while step < end:
            stop = min(end, (step // args.save_every + 1) * args.save_every)
            state = train_model(
                model,
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
            save_checkpoint(ckpt_path, model, optimizer, cfg=cfg, args=vars(args), **state)
    if state is None:
        print("nothing to do: the checkpoint already reached the last step")
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


if __name__ == "__main__":
    sys.exit(main())
