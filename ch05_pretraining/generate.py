"""Generate text with a GPT model: a checkpoint from train.py, or a base model (GPT-2 or the books model).

The model, the decoders and the weight loaders come from the course's package,
``gpt_from_scratch`` (generated from chapters 4 and 5's notebooks; ``pip install -e .``).

Examples (from the repository root):

    python ch05_pretraining/generate.py --checkpoint checkpoints/ch05/last.pth --prompt "Every effort"
    python ch05_pretraining/generate.py --weights gpt2 --size 124M --temperature 1.0 --top-k 40 --seed 1
    python ch05_pretraining/generate.py --weights gpt2 --source openai   # OpenAI's TensorFlow files
    python ch05_pretraining/generate.py --weights books --prompt "It was late in the evening when"

Without ``--checkpoint`` the model is a base model from ``load_base_model`` (chapter 5): GPT-2 if
its weights can be loaded (``--source hf``, the default, downloads Hugging Face's safetensors copy;
``--source openai`` OpenAI's TensorFlow checkpoint, which needs the ``tensorflow`` package), else
the course's books model; which one is printed to stderr. ``--temperature 0`` (the default) decodes
greedily with ``generate_text_fast`` (cached, the tokens of ``generate_text_simple``); a temperature
above 0 samples with ``generate``. Generation stops early at ``<|endoftext|>``.

What can go wrong: a damaged or foreign ``--checkpoint`` (one line naming it: delete it and re-run
train.py); no base model (the message says how to get one). Every file is written whole or not at
all (a temporary file, then a rename): an interrupted run never leaves half a file. An unreadable
file, a failed download or Ctrl-C gives one line and exit code 1 (130 for Ctrl-C); ``--debug`` shows
the traceback. A bad value is refused before any work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from gpt_from_scratch.ch04 import GPTModel
from gpt_from_scratch.ch05 import (
    CourseFileError,
    generate,
    generate_text_fast,
    load_base_model,
    load_checkpoint,
    read_checkpoint,
    text_to_token_ids,
    token_ids_to_text,
)
from shared.cli import load_base, nonneg_float, positive_int, script_main, script_parser, setup_runtime
from shared.tokenizer import END_OF_TEXT_ID


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = script_parser(__doc__, __file__, device=True, seed=123, threads=True, base_model="124M")
    p.add_argument(
        "--checkpoint", metavar="PATH", help="a last.pth written by train.py (instead of a base model)"
    )
    p.add_argument(
        "--source",
        choices=("hf", "openai"),
        default="hf",
        help="where GPT-2's weights come from: Hugging Face's safetensors file, or OpenAI's TensorFlow "
        "checkpoint (needs tensorflow)",
    )
    p.add_argument("--prompt", default="Every effort moves you", help="the text to continue")
    p.add_argument("--max-new-tokens", type=positive_int, default=50, help="most tokens to add to the prompt")
    p.add_argument(
        "--temperature",
        type=nonneg_float,
        default=0.0,
        help="0: greedy decoding; above 0: sample, flatter as it rises",
    )
    p.add_argument(
        "--top-k",
        type=positive_int,
        default=None,
        help="sample from the K likeliest tokens only (default: all)",
    )
    return p.parse_args(argv)


def model_from_checkpoint(path: Path) -> torch.nn.Module:
    """A GPTModel rebuilt from the configuration stored in a train.py checkpoint."""
    if not path.is_file():
        raise SystemExit(f"error: no checkpoint at {path}")
    extras = read_checkpoint(path)["extra"]  # a CourseFileError names an unreadable file
    if "cfg" not in extras:
        raise SystemExit(f"error: {path} has no model configuration: was it written by train.py?")
    model = GPTModel(extras["cfg"])
    load_checkpoint(path, model)
    return model


def base_model(args: argparse.Namespace) -> torch.nn.Module:
    """The base model of ``--weights``/``--size``/``--books-dir``; says which on stderr."""
    from shared.data import fetch_gpt2_checkpoint, fetch_gpt2_safetensors

    download = fetch_gpt2_safetensors if args.source == "hf" else fetch_gpt2_checkpoint
    base = load_base(args, load_base_model, download=download)
    print(base.description, file=sys.stderr)
    return base.model


def continue_text(
    model: torch.nn.Module, idx: torch.Tensor, max_new_tokens: int, temperature: float, top_k: int | None
) -> torch.Tensor:
    """``idx`` (1, T) and its continuation, up to and with the first ``<|endoftext|>``."""
    context = model.cfg["context_length"]
    if temperature > 0:
        return generate(model, idx, max_new_tokens, context, temperature, top_k, eos_id=END_OF_TEXT_ID)
    out = generate_text_fast(model, idx, max_new_tokens, context)  # (1, T + max_new_tokens)
    new = out[0, idx.shape[1] :].tolist()
    if END_OF_TEXT_ID in new:  # stop where generate(..., eos_id=...) stops: after the first one
        out = out[:, : idx.shape[1] + new.index(END_OF_TEXT_ID) + 1]
    return out


@script_main(CourseFileError)
def main(argv: list[str] | None = None) -> int:
    """Load a model, generate from the prompt, print the text; return the exit code."""
    args = parse_args(argv)
    from shared.tokenizer import get_gpt2_tokenizer

    model = model_from_checkpoint(Path(args.checkpoint)) if args.checkpoint else base_model(args)
    device = setup_runtime(args)  # seeded after the model is built: the seed alone fixes the samples
    model.to(device).eval()
    tokenizer = get_gpt2_tokenizer()
    idx = text_to_token_ids(args.prompt, tokenizer).to(device)  # (1, T)
    out = continue_text(model, idx, args.max_new_tokens, args.temperature, args.top_k)
    print(token_ids_to_text(out.cpu(), tokenizer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
