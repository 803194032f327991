"""Finetune a pretrained GPT model into an SMS spam classifier, or classify messages with one (chapter 6).

The code comes from the course's package, ``gpt_from_scratch``, generated from the notebooks' export
cells: the data preparation, ``SpamDataset``, ``train_classifier``, ``classify_text`` and the LoRA
adapter of chapter 6, and ``load_base_model`` of chapter 5.

Examples (from the repository root):

    python ch06_classification/finetune.py                        # the chapter's run (last block)
    python ch06_classification/finetune.py --weights books --epochs 3
    python ch06_classification/finetune.py --lora --rank 8 --alpha 16
    python ch06_classification/finetune.py --trainable all --out-dir checkpoints/ch06-all
    python ch06_classification/finetune.py --classify "WINNER! Claim your prize now" "See you at 6"
    python ch06_classification/finetune.py --quick                # a subset and one short epoch

Training keeps one copy of each message, balances the classes by undersampling, splits 70/10/20
with ``--split-seed`` (by default ``--seed``, which also sets the head's start and the order of the
batches), and saves ``classifier.pth`` in ``--out-dir`` (default ``checkpoints/ch06``) after every
epoch (LoRA adapters are merged into the saved copy). ``--classify`` loads that file and prints the
label and its probability for each message, without training.

What can go wrong: a folder with a ``classifier.pth`` needs ``--overwrite`` (or another
``--out-dir``); a damaged ``classifier.pth`` for ``--classify``: delete it and train again. Every
file is written whole or not at all (a temporary file, then a rename): an interrupted run never
leaves half a file. An unreadable file, a failed download or Ctrl-C gives one line and exit code 1
(130 for Ctrl-C); ``--debug`` shows the traceback. A bad value is refused before any work.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from gpt_from_scratch.ch05 import CourseFileError, load_base_model
from gpt_from_scratch.ch06 import (
    SPAM_LABELS,
    SpamDataset,
    add_classification_head,
    apply_lora,
    balance_classes,
    binary_metrics,
    calc_accuracy_loader,
    classify_text,
    load_classifier,
    merge_lora,
    parameter_counts,
    predict_loader,
    read_sms_spam,
    save_classifier,
    split_data_frame,
    train_classifier,
)
from shared.cli import (
    add_out_dir,
    add_overwrite,
    add_seed,
    claim_out_dir,
    load_base,
    nonneg_float,
    plain_args,
    positive_float,
    positive_int,
    script_main,
    script_parser,
    setup_runtime,
)

CHECKPOINT = "classifier.pth"
# The chapter's learning rates: (GPT-2 weights, the books model), for the last block and for LoRA
DEFAULT_LR = {"last_block": (5e-5, 3e-4), "lora": (5e-4, 2e-3)}


def spam_splits(seed: int, quick: bool = False) -> tuple:
    """Section 6.2's data: one copy per message, balanced, labels 0/1, split 70/10/20 with ``seed``."""
    from shared.data import fetch

    messages = read_sms_spam(fetch("sms+spam+collection.zip", quiet=True)).drop_duplicates("Text")
    balanced = balance_classes(messages, seed=seed, n_per_class=20 if quick else None)
    balanced["Label"] = balanced["Label"].map({name: i for i, name in enumerate(SPAM_LABELS)})
    return split_data_frame(balanced, train_frac=0.7, val_frac=0.1, seed=seed)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = script_parser(
        __doc__,
        __file__,
        device=True,
        threads=True,
        base_model="124M",
        quick="a data subset (20 messages per class), one epoch, the quick books model",
    )
    add_seed(p, default=123, detail="; here the head's start and the order of the batches")
    add_out_dir(p, "ch06", f"{CHECKPOINT}, which --classify reads")
    add_overwrite(p)
    p.add_argument("--classify", nargs="+", metavar="TEXT", help="classify these messages with a saved model")
    p.add_argument(
        "--trainable",
        choices=("head", "last_block", "all"),
        default="last_block",
        help="what trains besides the new head: nothing else, the last block and the final norm, or all",
    )
    p.add_argument("--lora", action="store_true", help="train LoRA adapters on every linear layer instead")
    p.add_argument("--rank", type=positive_int, default=8, help="LoRA rank")
    p.add_argument(
        "--alpha", type=positive_float, default=16.0, help="LoRA alpha (updates scaled by alpha/rank)"
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="passes over the training messages (default: as in the chapter: 5 with GPT-2, 2 with books)",
    )
    p.add_argument("--batch-size", type=positive_int, default=8, help="messages per training step")
    p.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help="learning rate (default: as in the chapter, see DEFAULT_LR)",
    )
    p.add_argument("--weight-decay", type=nonneg_float, default=0.1, help="AdamW's weight decay")
    p.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        help="pad or cut messages to this many tokens (default: the longest training message)",
    )
    p.add_argument("--eval-freq", type=positive_int, default=50, help="estimate the losses every N steps")
    p.add_argument("--eval-iter", type=positive_int, default=5, help="batches per estimate")
    p.add_argument(
        "--split-seed",
        type=int,
        default=None,
        help="the balancing and the 70/10/20 split (default: --seed); keep it fixed to compare --seed runs",
    )
    return p.parse_args(argv)


def classify(args: argparse.Namespace) -> int:
    """Print the label and probability of each ``--classify`` message."""
    from shared.tokenizer import get_gpt2_tokenizer

    path = args.out_dir / CHECKPOINT
    if not path.is_file():
        raise SystemExit(f"--classify: no classifier at {path}; train one first (run without --classify)")
    device = setup_runtime(args)
    model, extra = load_classifier(path, device=device)
    tokenizer = get_gpt2_tokenizer()
    for text in args.classify:
        try:
            label, proba = classify_text(text, model, tokenizer, device, max_length=extra["max_length"])
        except ValueError as err:
            raise SystemExit(f"--classify {text!r}: {err}") from None
        print(f"{label}\t{proba:.3f}\t{text}")
    return 0


def chapter_epochs(weights: str) -> int:
    """The epochs of the chapter's run (section 6.7): the book's 5 for GPT-2, 2 for the books model."""
    return 5 if weights == "gpt2" else 2


@script_main(CourseFileError)
def main(argv: list[str] | None = None) -> int:
    """Finetune and save a spam classifier (or classify messages); return the exit code."""
    args = parse_args(argv)
    if args.classify:
        return classify(args)
    claim_out_dir(args.out_dir, (CHECKPOINT,), args.overwrite)  # before any work: one run per folder
    from shared.runtime import set_seed
    from shared.tokenizer import get_gpt2_tokenizer

    device = setup_runtime(args)
    tokenizer = get_gpt2_tokenizer()
    if args.quick:  # same code path, smaller sizes; never the 500 MB GPT-2 download
        args.epochs, args.eval_freq, args.eval_iter = 1, 2, 1
        args.weights = "books" if args.weights == "auto" else args.weights

    split_seed = args.seed if args.split_seed is None else args.split_seed
    train_df, val_df, test_df = spam_splits(split_seed, quick=args.quick)

    base = load_base(args, load_base_model, device)  # section 6.4
    model, source = base.model, base.description
    print(source)
    if args.lr is None:
        args.lr = DEFAULT_LR["lora" if args.lora else "last_block"][0 if base.weights == "gpt2" else 1]
    if args.epochs is None:
        args.epochs = chapter_epochs(base.weights)
    context_length = model.cfg["context_length"]

    train_ds = SpamDataset(train_df, tokenizer, max_length=args.max_length)
    if train_ds.max_length > context_length:  # longer than the model can read: cut to the context
        print(f"messages are cut to the model's context length, {context_length} tokens")
        train_ds = SpamDataset(train_df, tokenizer, max_length=context_length)
    val_ds = SpamDataset(val_df, tokenizer, max_length=train_ds.max_length)
    test_ds = SpamDataset(test_df, tokenizer, max_length=train_ds.max_length)
    truncated = train_ds.num_truncated + val_ds.num_truncated + test_ds.num_truncated
    print(
        f"{len(train_ds)} training, {len(val_ds)} validation, {len(test_ds)} test messages; "
        f"{train_ds.max_length} tokens each ({truncated} truncated); "
        f"split seed {split_seed}, seed {args.seed}"
    )
    shuffle_gen = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(train_ds, args.batch_size, shuffle=True, drop_last=True, generator=shuffle_gen)
    val_loader = DataLoader(val_ds, args.batch_size)
    test_loader = DataLoader(test_ds, args.batch_size)

    # Classification head, what trains, and LoRA (sections 6.5 and 6.9.2)
    set_seed(args.seed)
    model = add_classification_head(model, num_classes=len(SPAM_LABELS), trainable=args.trainable)
    if args.lora:
        apply_lora(model, rank=args.rank, alpha=args.alpha)
    trainable, total = parameter_counts(model)
    what = f"LoRA rank {args.rank}, alpha {args.alpha}" if args.lora else args.trainable
    print(
        f"training {trainable:,} of {total:,} parameters ({what}), learning rate {args.lr:g}; device {device}"
    )

    # Finetuning (section 6.7), with a progress bar and a checkpoint after every epoch
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    ckpt_path = args.out_dir / CHECKPOINT
    steps_per_epoch = len(train_loader)
    bar = tqdm(total=args.epochs * steps_per_epoch, unit="step", dynamic_ncols=True)

    def on_step(info: dict) -> None:
        bar.update(1)
        bar.set_postfix(epoch=info["epoch"] + 1, loss=f"{info['loss']:.3f}")
        if (info["step"] + 1) % steps_per_epoch == 0:  # the epoch's last step: save a checkpoint
            to_save = merge_lora(copy.deepcopy(model)) if args.lora else model
            save_classifier(
                ckpt_path,
                to_save,
                max_length=train_ds.max_length,
                base_weights=source,
                epoch=info["epoch"] + 1,
                args=plain_args(args),
            )

    start = time.time()
    history = train_classifier(
        model,
        train_loader,
        val_loader,
        optimizer,
        device,
        num_epochs=args.epochs,
        eval_freq=args.eval_freq,
        eval_iter=args.eval_iter,
        verbose=False,
        on_step=on_step,
    )
    bar.close()
    print(f"trained {args.epochs} epochs in {(time.time() - start) / 60:.2f} min; saved {ckpt_path}")
    for epoch, (train_acc, val_acc) in enumerate(zip(history["train_accs"], history["val_accs"]), start=1):
        print(
            f"epoch {epoch}: training accuracy {train_acc:.2%}, validation accuracy {val_acc:.2%} "
            f"(estimated on {args.eval_iter} batches)"
        )

    # Final numbers on every message of each split (sections 6.7 and 6.9.1)
    for name, loader in [("training", train_loader), ("validation", val_loader), ("test", test_loader)]:
        print(f"{name} accuracy: {calc_accuracy_loader(loader, model, device):.2%}")
    m = binary_metrics(*predict_loader(test_loader, model, device))
    print(
        f"test spam precision {m['precision']:.3f}, recall {m['recall']:.3f}, F1 {m['f1']:.3f} "
        f"(tp {m['tp']}, fp {m['fp']}, fn {m['fn']}, tn {m['tn']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
