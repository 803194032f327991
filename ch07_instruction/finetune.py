"""Finetune a pretrained GPT model to follow instructions, then save the test set's responses (chapter 7).

The code is the course's own: the package ``gpt_from_scratch`` is generated from the notebooks'
export cells, so this script uses the very ``InstructionDataset``, ``instruction_collate``,
``train_model`` and ``respond`` that chapters 5 and 7 build.

Examples (from the repository root):

    python ch07_instruction/finetune.py --epochs 2 --lr 2e-4              # writes checkpoints/ch07
    python ch07_instruction/finetune.py --mask-prompt --out-dir checkpoints/ch07-masked
    python ch07_instruction/finetune.py --weights gpt2 --size 355M --lr 5e-5   # the book's set-up
    python ch07_instruction/finetune.py --limit 200 --epochs 1 --out-dir checkpoints/ch07-200
    python ch07_instruction/finetune.py --quick          # quick mode: checkpoints/ch07-quick
    python ch07_instruction/finetune.py --resume         # continue an interrupted run

The base model comes from ``load_base_model`` (chapter 5): GPT-2 if its weights are available,
else the course's model pretrained on books; the script prints which. The data are split 85/5/10
(train/validation/test) with ``--seed``. Training is chapter 5's ``train_model`` at the constant
learning rate ``--lr``, without gradient clipping (as the chapter's ``train_model_simple``); a
progress bar shows the steps and the losses of every evaluation. Written to ``--out-dir``
(default ``checkpoints/ch07``):

* ``epoch-<k>.pth`` after every epoch and ``model.pth`` at the end (model, optimizer, config,
  arguments, losses; chapter 5's checkpoint format). With ``--lora-rank`` (chapter 6's adapters)
  the epoch checkpoints hold the model with adapters (load them after ``apply_lora``), while
  ``model.pth`` holds the merged model, which loads into a plain ``GPTModel``;
* ``responses.json``: the test entries with the finetuned model's ``model_response``, and with
  ``--base-responses`` also ``responses-base.json`` from the model before finetuning;
* ``train_log.json``: the losses and the timing.

``ch07_instruction/evaluate.py`` scores the responses. Every file of a run carries its run id.

What can go wrong: a folder that holds a run (``model.pth``, ``responses.json``, ...) needs
``--resume`` (continue it from its last ``epoch-<k>.pth``, with the run's own settings; a finished
run only writes its responses again) or ``--overwrite``, which removes those files first, so old
responses never sit beside a new model; malformed instruction JSON is named by file, line and
entry. Every file is written whole or not at all (a temporary file, then a rename): an interrupted
run never leaves half a file. An unreadable file, a failed download or Ctrl-C gives one line and
exit code 1 (130 for Ctrl-C); ``--debug`` shows the traceback. A bad value is refused before any
work.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from gpt_from_scratch.ch05 import (
    CourseFileError,
    atomic_write_text,
    load_base_model,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    train_model,
)
from gpt_from_scratch.ch07 import (
    InstructionDataset,
    create_instruction_loader,
    generate_responses,
    load_instruction_data,
    save_responses,
    split_instruction_data,
)
from shared.cli import (
    add_out_dir,
    add_overwrite,
    add_seed,
    claim_out_dir,
    course_file_or_path,
    load_base,
    nonneg_float,
    nonneg_int,
    plain_args,
    positive_float,
    positive_int,
    resume_run,
    script_main,
    script_parser,
    setup_runtime,
)

RUN_OUTPUTS = ("model.pth", "epoch-*.pth", "responses*.json", "train_log.json")  # one run's files
RUN_ARGS = (  # what defines a run; restored from its last epoch checkpoint on --resume
    "data init_from epochs batch_size lr weight_decay max_length mask_prompt lora_rank lora_alpha limit"
    " eval_freq eval_iter seed weights size books_dir quick"
).split()
QUICK = {"limit": 40, "epochs": 1, "max_new_tokens": 16}  # --quick: a few entries, one epoch, short replies


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = script_parser(
        __doc__,
        __file__,
        device=True,
        threads=True,
        base_model="355M",
        quick=f"the first {QUICK['limit']} entries of each split, one epoch, {QUICK['max_new_tokens']} "
        "new tokens per response, the quick books model",
    )
    add_seed(p, default=123, detail="; here the 85/5/10 split, the order of the batches and dropout")
    add_out_dir(p, "ch07", "checkpoints, responses and the training log")
    add_overwrite(p)
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out-dir from its last epoch-<k>.pth"
    )
    p.add_argument("--data", default="instruction-data.json", help="course file name or path to a JSON list")
    p.add_argument(
        "--init-from", default=None, metavar="PATH", help="start from this finetuned checkpoint (model.pth)"
    )
    p.add_argument("--epochs", type=positive_int, default=2, help="passes over the training entries")
    p.add_argument("--batch-size", type=positive_int, default=8, help="entries per training step")
    p.add_argument(
        "--lr", type=positive_float, default=2e-4, help="learning rate (the book uses 5e-5 for GPT-2 355M)"
    )
    p.add_argument("--weight-decay", type=nonneg_float, default=0.1, help="AdamW's weight decay")
    p.add_argument(
        "--max-length", type=positive_int, default=128, help="truncate examples (capped at the context)"
    )
    p.add_argument("--mask-prompt", action="store_true", help="leave the prompt tokens out of the loss")
    p.add_argument(
        "--lora-rank",
        type=nonneg_int,
        default=0,
        help="train LoRA adapters of this rank instead of all weights (0: full finetuning)",
    )
    p.add_argument(
        "--lora-alpha", type=positive_float, default=16.0, help="LoRA alpha (updates scaled by alpha/rank)"
    )
    p.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="use only the first N entries of each split",
    )
    p.add_argument("--eval-freq", type=positive_int, default=10, help="evaluate every N steps")
    p.add_argument("--eval-iter", type=positive_int, default=5, help="batches per evaluation")
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="longest response generated")
    p.add_argument("--no-responses", action="store_true", help="do not generate the test set's responses")
    p.add_argument(
        "--base-responses",
        action="store_true",
        help="also save the responses of the model before finetuning (responses-base.json)",
    )
    args = p.parse_args(argv)
    resume_run(p, args, RUN_ARGS, lambda path: read_checkpoint(path)["extra"])  # the run's own settings
    if args.resume:
        args.books_dir = None if args.books_dir is None else Path(args.books_dir)
    if args.quick:  # same code path, smaller sizes; never the GPT-2 download
        args.limit = QUICK["limit"] if args.limit is None else args.limit
        args.epochs, args.max_new_tokens = QUICK["epochs"], min(args.max_new_tokens, QUICK["max_new_tokens"])
        args.weights = "books" if args.weights == "auto" else args.weights
    return args


def finetune(
    model: torch.nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    args: argparse.Namespace,
    on_step: Callable[[dict], None],
    state: dict | None,
    stop_at_step: int,
) -> dict:
    """Chapter 5's training core at the constant rate ``--lr``, no clipping, from ``state`` to a step.

    ``on_step(state)`` follows every optimizer step (``state["history"]`` holds the losses so far);
    the state returned resumes the run exactly (the batches' order, dropout, the losses so far).
    """
    return train_model(
        model,
        train_loader,
        val_loader,
        optimizer,
        device,
        num_epochs=args.epochs,
        eval_freq=args.eval_freq,
        eval_iter=args.eval_iter,
        peak_lr=args.lr,
        min_lr=args.lr,  # no warmup, no decay
        max_grad_norm=math.inf,  # no clipping, as chapter 7's train_model_simple
        seed=args.seed,
        state=state,
        stop_at_step=stop_at_step,
        verbose=False,
        on_step=on_step,
    )


@script_main(CourseFileError)
def main(argv: list[str] | None = None) -> int:
    """Finetune, save checkpoints and responses; return the exit code."""
    args = parse_args(argv)
    from gpt_from_scratch.ch07 import InstructionDataError
    from shared.runtime import set_seed
    from shared.tokenizer import get_gpt2_tokenizer

    try:
        data = load_instruction_data(course_file_or_path(args.data, "--data"))
    except InstructionDataError as err:
        raise SystemExit(f"error: {err}") from None
    device = setup_runtime(args)
    tokenizer = get_gpt2_tokenizer()
    out_dir = args.out_dir
    if not args.resume:  # before any work: never two runs in one folder
        claim_out_dir(out_dir, RUN_OUTPUTS, args.overwrite, ", or --resume to continue it")
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"  # carried by every file of the run
    last, resumed = args._resumed or (None, None)  # where --resume continues, read by parse_args
    if resumed is not None:
        if "train_state" not in resumed:
            raise CourseFileError(
                f"{last} comes from a version without --resume; start again with --overwrite"
            )
        run_id = resumed["run_id"]

    base = load_base(args, load_base_model, device)
    model, source = base.model, base.description
    print(f"base model: {source}")
    if args.init_from and resumed is None:  # a resumed run loads its own weights below
        extra = load_checkpoint(args.init_from, model, map_location=device)
        print(f"starting from {args.init_from} (finetuned for {extra.get('epochs', '?')} epochs)")
    model.to(device)
    max_length = min(args.max_length, model.cfg["context_length"])
    if args.lora_rank:
        from gpt_from_scratch.ch06 import apply_lora

        apply_lora(model, rank=args.lora_rank, alpha=args.lora_alpha)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"LoRA rank {args.lora_rank}: {trainable:,} trainable parameters")

    train, val, test = split_instruction_data(data, seed=args.seed)
    if args.limit is not None:
        train, val, test = train[: args.limit], val[: args.limit], test[: args.limit]
    set_seed(args.seed)
    datasets = [InstructionDataset(split, tokenizer, max_length=max_length) for split in (train, val, test)]
    prompt_lens = [n for ds in datasets[:2] for _, n in ds.encoded]
    if args.mask_prompt and max(prompt_lens) >= max_length:  # no response token left: a NaN loss
        cut = sum(n >= max_length for n in prompt_lens)
        raise SystemExit(
            f"error: --max-length {max_length} cuts {cut} prompt(s) before their response (longest prompt "
            f"{max(prompt_lens)} tokens): with --mask-prompt they leave no target; raise --max-length"
        )
    train_loader = create_instruction_loader(
        datasets[0],
        args.batch_size,
        shuffle=True,
        drop_last=True,
        mask_prompt=args.mask_prompt,
        device=device,
    )
    val_loader = create_instruction_loader(
        datasets[1], args.batch_size, shuffle=False, mask_prompt=args.mask_prompt, device=device
    )
    if len(train_loader) == 0 or len(val_loader) == 0:
        raise SystemExit(
            f"error: too few entries for batches of {args.batch_size} (train {len(train)}, "
            f"validation {len(val)}); lower --batch-size or raise --limit"
        )
    for name, ds in zip(("train", "validation", "test"), datasets):
        print(f"{name}: {len(ds)} entries, {len(ds.truncated)} longer than {max_length} tokens (truncated)")

    if args.base_responses and not args.no_responses and not (out_dir / "responses-base.json").is_file():
        base = generate_responses(model, tokenizer, test, args.max_new_tokens, progress=True)
        base = [{**entry, "run_id": run_id} for entry in base]  # evaluate.py checks it against train_log.json
        print("saved", save_responses(base, out_dir / "responses-base.json"))

    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * args.epochs
    set_seed(args.seed)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=args.weight_decay
    )
    run_info = {"cfg": model.cfg, "source": source, "args": plain_args(args), "run_id": run_id}
    state, seconds_before = None, 0.0
    if resumed is not None:
        load_checkpoint(last, model, optimizer, map_location=device)  # the weights with adapters, if any
        state, seconds_before = resumed["train_state"], resumed["seconds"]
        print(f"resuming from {last.name}: {resumed['epochs']} of {args.epochs} epoch(s) done")
    bar = tqdm(
        total=total_steps, initial=0 if state is None else state["step"], desc="finetuning", unit="step"
    )

    evaluations = [0 if state is None else len(state["history"]["val_losses"])]  # shown by the bar

    def on_step(live: dict) -> None:
        """Advance the bar, show a new evaluation's losses."""
        bar.update(1)
        history = live["history"]
        if len(history["val_losses"]) > evaluations[0]:
            evaluations[0] = len(history["val_losses"])
            bar.set_postfix(
                train=f"{history['train_losses'][-1]:.3f}", val=f"{history['val_losses'][-1]:.3f}"
            )

    start = time.time()
    for epoch in range(0 if state is None else state["step"] // steps_per_epoch, args.epochs):
        state = finetune(
            model,
            train_loader,
            val_loader,
            optimizer,
            device,
            args,
            on_step,
            state,
            (epoch + 1) * steps_per_epoch,
        )
        # a checkpoint after every epoch, with the state that --resume continues from
        seconds = seconds_before + time.time() - start
        extras = dict(epochs=epoch + 1, train_state=state, seconds=seconds, **run_info)
        save_checkpoint(out_dir / f"epoch-{epoch + 1}.pth", model, optimizer, **extras)
    bar.close()
    history = state["history"]
    if args.lora_rank:
        from gpt_from_scratch.ch06 import merge_lora

        merge_lora(model)  # plain linear layers again: the checkpoint loads into a GPTModel
    minutes = (seconds_before + time.time() - start) / 60
    history = {key: history[key] for key in ("train_losses", "val_losses", "tokens_seen")}  # per evaluation
    final_optimizer = None if args.lora_rank else optimizer  # LoRA: the merged model has no adapters left
    save_checkpoint(
        out_dir / "model.pth", model, final_optimizer, epochs=args.epochs, history=history, **run_info
    )
    log = {
        "source": source,
        "minutes": round(minutes, 3),
        "steps": total_steps,
        **history,
        "args": run_info["args"],
        "run_id": run_id,
    }
    atomic_write_text(out_dir / "train_log.json", json.dumps(log, indent=2) + "\n")
    print(
        f"finetuned for {total_steps} steps in {minutes:.2f} minutes; last losses: "
        f"train {history['train_losses'][-1]:.3f}, validation {history['val_losses'][-1]:.3f}"
    )
    print("saved", out_dir / "model.pth")

    if not args.no_responses:
        results = generate_responses(model, tokenizer, test, args.max_new_tokens, progress=True)
        results = [{**entry, "run_id": run_id} for entry in results]  # the run that wrote them
        print("saved", save_responses(results, out_dir / "responses.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
