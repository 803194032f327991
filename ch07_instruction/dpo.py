"""Preference-tune chapter 7's finetuned model with DPO, then compare it before and after (chapter 7).

The code is the course's own: the package ``gpt_from_scratch`` is generated from the notebooks'
export cells, so this script uses the very ``PreferenceDataset``, ``dataset_log_probs``,
``train_dpo`` and ``evaluate_preferences`` that ``ch07_instruction/dpo.ipynb`` builds.

Examples (from the repository root):

    python ch07_instruction/finetune.py --epochs 2                  # first: checkpoints/ch07/model.pth
    python ch07_instruction/dpo.py --beta 0.1 --lr 5e-6 --epochs 2   # writes checkpoints/ch07-dpo
    python ch07_instruction/dpo.py --resume                          # continue an interrupted run
    python ch07_instruction/dpo.py --resume --epochs 3               # one more epoch after the last one
    python ch07_instruction/dpo.py --init-from my/model.pth --out-dir checkpoints/ch07-dpo-b05 --beta 0.5
    python ch07_instruction/dpo.py --quick     # from checkpoints/ch07-quick/model.pth (finetune.py --quick)

The policy starts from ``--init-from`` (default: the ``model.pth`` that chapter 7's ``finetune.py``
writes, which holds its model settings); the reference is a frozen copy, whose log-probabilities
are computed once per pair before training. The preference data (``--data``, default the course file
``instruction-data-with-preference.json``) are split 85/5/10 with ``--seed``, like chapter 7. Written
to ``--out-dir`` (default ``checkpoints/ch07-dpo``):

* ``epoch-<k>.pth`` after every epoch and ``model.pth`` at the end (chapter 5's checkpoint format,
  with the model settings under ``cfg``, so ``--init-from`` of another run can read it);
* ``responses.json``: the test entries with the responses before (``response_before``) and after
  (``model_response``) DPO;
* ``report.json``: the test pairs' preference accuracy (raw: the chosen answer has the higher
  log-probability; implicit reward: DPO's reward relative to the reference, ties counted as half) and
  chapter 7's offline metrics, before and after, the training history and the seconds per epoch.

What can go wrong: without chapter 7's checkpoint the script stops and says which command writes it.
A folder that holds a run needs ``--overwrite`` (which removes its files first) or ``--resume``
(which continues after the last finished epoch with the run's own settings, restored from its
checkpoint as train.py and finetune.py do: a flag given with another value is refused, and only
``--epochs`` may be raised). Every file is written whole or not at all
(a temporary file, then a rename). A damaged or foreign checkpoint, a failed download or Ctrl-C gives
one line and exit code 1 (130 for Ctrl-C); ``--debug`` shows the traceback. A bad value is refused
before any work (exit code 2). A beta that is too small or a learning rate that is too large makes
both answers less likely: watch ``chosen_log_prob`` in the report, not only the accuracies.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import uuid
from pathlib import Path

import torch

from gpt_from_scratch.ch04 import GPTModel
from gpt_from_scratch.ch05 import (
    CourseFileError,
    atomic_write_text,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from gpt_from_scratch.ch07 import (
    OFFLINE_METRICS,
    PREFERENCE_KEYS,
    PreferenceDataset,
    dataset_log_probs,
    evaluate_preferences,
    generate_responses,
    load_instruction_data,
    save_responses,
    score_responses,
    split_instruction_data,
    train_dpo,
)
from shared.cli import (
    add_out_dir,
    add_overwrite,
    add_seed,
    claim_out_dir,
    course_file_or_path,
    plain_args,
    positive_float,
    positive_int,
    resume_run,
    script_main,
    script_parser,
    setup_runtime,
)

RUN_OUTPUTS = ("model.pth", "epoch-*.pth", "responses.json", "report.json")  # one run's files
QUICK = {"limit": 24, "epochs": 1, "max_new_tokens": 12, "batch_size": 4}  # --quick: a few pairs, one epoch
RUN_ARGS = (  # what defines a run; restored from its last epoch checkpoint on --resume (--epochs may grow)
    "init_from data beta lr batch_size limit seed max_length eval_freq max_new_tokens quick"
).split()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = script_parser(
        __doc__,
        __file__,
        device=True,
        threads=True,
        quick=f"the first {QUICK['limit']} pairs of each split, one epoch, batches of {QUICK['batch_size']}, "
        f"{QUICK['max_new_tokens']} new tokens per response, chapter 7's quick checkpoint",
    )
    add_seed(p, default=123, detail="; here the 85/5/10 split and the order of the batches")
    add_out_dir(p, "ch07-dpo", "checkpoints, responses and the report")
    add_overwrite(p)
    p.add_argument(
        "--init-from",
        default=None,
        metavar="PATH",
        help="checkpoint to start from, with its model settings (default: checkpoints/ch07/model.pth, "
        "written by ch07_instruction/finetune.py; checkpoints/ch07-quick/model.pth with --quick)",
    )
    p.add_argument(
        "--data",
        default="instruction-data-with-preference.json",
        help="course file name or path to a JSON list",
    )
    p.add_argument("--beta", type=positive_float, default=0.1, help="DPO's beta: how far the policy may move")
    p.add_argument("--lr", type=positive_float, default=5e-6, help="learning rate (AdamW, no weight decay)")
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="passes over the training pairs (default: 2; 1 with --quick)",
    )
    p.add_argument("--batch-size", type=positive_int, default=8, help="pairs per training step")
    p.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="use only the first N pairs of each split",
    )
    p.add_argument(
        "--max-length", type=positive_int, default=256, help="truncate pairs (capped at the context)"
    )
    p.add_argument(
        "--eval-freq", type=positive_int, default=20, help="evaluate on the validation pairs every N steps"
    )
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="longest response generated")
    p.add_argument("--resume", action="store_true", help="continue the run in --out-dir after its last epoch")
    args = p.parse_args(argv)
    resume_run(p, args, RUN_ARGS, lambda path: read_checkpoint(path)["extra"])  # the run's own settings
    if args.resume and args.epochs is None:  # the run's epochs; --epochs may raise them
        args.epochs = args._resumed[1]["args"].get("epochs")
    if args.quick:  # same code path, smaller sizes
        args.limit = QUICK["limit"] if args.limit is None else args.limit
        args.max_new_tokens = min(args.max_new_tokens, QUICK["max_new_tokens"])
        args.batch_size = min(args.batch_size, QUICK["batch_size"])
    if args.epochs is None:
        args.epochs = QUICK["epochs"] if args.quick else 2
    if args.init_from is None:
        from shared.runtime import course_dir

        args.init_from = course_dir("ch07", quick=args.quick) / "model.pth"
    args.init_from = Path(args.init_from)
    return args


def load_init_model(path: Path) -> tuple[GPTModel, dict]:
    """The model of a checkpoint that carries its settings (``cfg``), and the checkpoint's extras."""
    if not path.is_file():
        raise SystemExit(
            f"error: --init-from {path}: no such file; write it with python ch07_instruction/finetune.py "
            "(add --quick for the quick one) or pass another checkpoint"
        )
    extra = read_checkpoint(path)["extra"]
    cfg = extra.get("cfg")
    if not isinstance(cfg, dict) or "vocab_size" not in cfg:
        raise CourseFileError(
            f"{path} holds no model settings (cfg); pass a checkpoint of finetune.py or dpo.py"
        )
    try:
        model = GPTModel(cfg)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CourseFileError(f"{path} holds unusable model settings ({type(err).__name__}: {err})") from None
    load_checkpoint(path, model)
    return model.eval(), extra


def metric_means(results: list[dict]) -> dict[str, float]:
    """Chapter 7's offline metrics of a set of responses, averaged (rounded to 4 places)."""
    scores = score_responses(results)
    return {name: round(float(scores[name].mean()), 4) for name in OFFLINE_METRICS}


@script_main(CourseFileError)
def main(argv: list[str] | None = None) -> int:
    """Train with DPO, save checkpoints, responses and the report; return the exit code."""
    args = parse_args(argv)
    from gpt_from_scratch.ch07 import InstructionDataError
    from shared.runtime import set_seed
    from shared.tokenizer import get_gpt2_tokenizer

    try:
        path = course_file_or_path(args.data, "--data")
        data = load_instruction_data(path, required=(*PREFERENCE_KEYS, "output"))
    except InstructionDataError as err:
        raise SystemExit(f"error: {err}") from None
    device = setup_runtime(args)
    out_dir = args.out_dir
    resume_from, resumed = args._resumed or (None, None)  # read by parse_args
    if not args.resume:
        claim_out_dir(out_dir, RUN_OUTPUTS, args.overwrite, ", or --resume to continue it")
    reference, init_extra = load_init_model(args.init_from)
    if resumed is not None:
        if resumed["epochs"] >= args.epochs:
            raise SystemExit(
                f"error: --resume: {resume_from.name} has already trained {resumed['epochs']} epochs; "
                "raise --epochs to train more"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = resumed["run_id"] if resumed else f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    print(f"starting from {args.init_from} ({init_extra.get('source', 'unknown base model')})")

    tokenizer = get_gpt2_tokenizer()
    max_length = min(args.max_length, reference.cfg["context_length"])
    splits = split_instruction_data(data, seed=args.seed)
    if args.limit is not None:
        splits = tuple(split[: args.limit] for split in splits)
    train, val, test = (PreferenceDataset(split, tokenizer) for split in splits)
    if len(train) < args.batch_size or len(val) == 0 or len(test) == 0:
        raise SystemExit(
            f"error: too few pairs (train {len(train)}, validation {len(val)}, test {len(test)}) for batches "
            f"of {args.batch_size}; lower --batch-size or raise --limit"
        )
    print(
        f"pairs: train {len(train)}, validation {len(val)}, test {len(test)}; "
        f"beta {args.beta}, lr {args.lr:g}"
    )

    reference = reference.to(device).requires_grad_(False)
    start = time.time()
    ref_lp = {
        name: dataset_log_probs(reference, ds, max_length=max_length, device=device)
        for name, ds in (("train", train), ("val", val), ("test", test))
    }
    print(f"reference log-probabilities in {time.time() - start:.1f} s")
    policy = copy.deepcopy(reference).requires_grad_(True)
    set_seed(args.seed)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=args.lr, weight_decay=0.0)
    if resumed is not None:
        load_checkpoint(resume_from, policy, optimizer, map_location=device)
        before, history, epoch_seconds = resumed["before"], resumed["history"], resumed["epoch_seconds"]
        responses_before = resumed["responses_before"]
        print(f"resuming after epoch {resumed['epochs']} ({resume_from.name})")
    else:
        before = evaluate_preferences(
            policy, test, ref_lp["test"], args.beta, max_length=max_length, device=device
        )
        responses_before = generate_responses(
            reference, tokenizer, splits[2], args.max_new_tokens, progress=True
        )
        before["metrics"] = metric_means(responses_before)
        history, epoch_seconds = None, []
    settings = plain_args(args)
    clock = [time.time()]

    def on_epoch(epoch: int, hist: dict) -> None:
        """Time the epoch and save its checkpoint (everything --resume needs)."""
        epoch_seconds.append(round(time.time() - clock[0], 2))
        clock[0] = time.time()
        print(f"epoch {epoch}: {epoch_seconds[-1]:.0f} s; validation loss {hist['val_loss'][-1]:.4f}, "
              f"implicit-reward accuracy {hist['val_accuracy'][-1]:.3f}")  # fmt: skip
        save_checkpoint(
            out_dir / f"epoch-{epoch}.pth", policy, optimizer, epochs=epoch, history=hist, cfg=policy.cfg,
            args=settings, before=before, responses_before=responses_before, epoch_seconds=epoch_seconds,
            run_id=run_id, source=f"DPO from {args.init_from}",
        )  # fmt: skip

    history = train_dpo(
        policy, optimizer, train, ref_lp["train"], val, ref_lp["val"], beta=args.beta, epochs=args.epochs,
        batch_size=args.batch_size, eval_freq=args.eval_freq, seed=args.seed, max_length=max_length,
        device=device, start_epoch=resumed["epochs"] if resumed else 0, history=history, on_epoch=on_epoch,
    )  # fmt: skip
    after = evaluate_preferences(
        policy, test, ref_lp["test"], args.beta, max_length=max_length, device=device
    )
    responses = generate_responses(policy, tokenizer, splits[2], args.max_new_tokens, progress=True)
    after["metrics"] = metric_means(responses)
    save_checkpoint(
        out_dir / "model.pth", policy, None, epochs=args.epochs, history=history, cfg=policy.cfg,
        args=settings, run_id=run_id, source=f"DPO from {args.init_from}",
    )  # fmt: skip
    both = [
        {**entry, "response_before": old["model_response"], "run_id": run_id}
        for entry, old in zip(responses, responses_before)
    ]
    save_responses(both, out_dir / "responses.json")
    report = {
        "run_id": run_id,
        "init_from": str(args.init_from),
        "source": init_extra.get("source"),
        "pairs": {"train": len(train), "validation": len(val), "test": len(test)},
        "before": before,
        "after": after,
        "seconds_per_epoch": epoch_seconds,
        "history": history,
        "args": settings,
    }
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    print(
        f"test pairs: raw accuracy {before['raw_accuracy']:.3f} -> {after['raw_accuracy']:.3f}, "
        f"implicit-reward accuracy {before['reward_accuracy']:.3f} -> {after['reward_accuracy']:.3f}"
    )
    print(f"token F1 {before['metrics']['token_f1']:.3f} -> {after['metrics']['token_f1']:.3f}")
    print("saved", out_dir / "model.pth", "and report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
