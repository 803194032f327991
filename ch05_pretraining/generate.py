"""Generate text with a GPT model: a checkpoint from train.py, or OpenAI's GPT-2 weights (chapter 5).

The model, the sampler and the weight loaders come from the course's package,
``gpt_from_scratch`` (generated from chapters 4 and 5's notebooks; ``pip install -e .``).

Examples (from the repository root):

    python ch05_pretraining/generate.py --checkpoint checkpoints/ch05/last.pth --prompt "Every effort"
    python ch05_pretraining/generate.py --gpt2 124M --temperature 1.0 --top-k 40 --seed 1
    python ch05_pretraining/generate.py --gpt2 124M --source hf   # the safetensors copy

``--temperature 0`` (the default) is greedy decoding; generation stops early at
``<|endoftext|>``. ``--gpt2`` downloads OpenAI's checkpoint (TensorFlow format, needs the
``tensorflow`` package) or, with ``--source hf``, the Hugging Face safetensors file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from gpt_from_scratch.ch04 import GPTModel
from gpt_from_scratch.ch05 import (
    generate,
    load_checkpoint,
    load_gpt2_model,
    text_to_token_ids,
    token_ids_to_text,
)
from shared.tokenizer import END_OF_TEXT_ID


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a last.pth written by train.py")
    src.add_argument("--gpt2", metavar="SIZE", help="OpenAI's GPT-2 weights: 124M, 355M, 774M or 1558M")
    p.add_argument(
        "--source", choices=("openai", "hf"), default="openai", help="where --gpt2 weights come from"
    )
    p.add_argument("--prompt", default="Every effort moves you")
    p.add_argument("--max-new-tokens", type=int, default=50)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    return p.parse_args(argv)


def model_from_checkpoint(path: str) -> torch.nn.Module:
    """A GPTModel rebuilt from the configuration stored in a train.py checkpoint."""
    if not Path(path).is_file():
        raise SystemExit(f"no checkpoint at {path}")
    extras = torch.load(path, map_location="cpu", weights_only=True)["extra"]
    if "cfg" not in extras:
        raise SystemExit(f"{path} has no model configuration: was it written by train.py?")
    model = GPTModel(extras["cfg"])
    load_checkpoint(path, model)
    return model


def model_from_gpt2(size: str, source: str) -> torch.nn.Module:
    """GPT-2 with OpenAI's weights, downloaded through the course's one download path."""
    from shared.data import fetch_gpt2_checkpoint, fetch_gpt2_safetensors

    path = fetch_gpt2_safetensors(size) if source == "hf" else fetch_gpt2_checkpoint(size)
    return load_gpt2_model(path, size)


def main(argv: list[str] | None = None) -> int:
    """Load a model, generate from the prompt, print the text; return the exit code."""
    args = parse_args(argv)
    from shared.runtime import get_device, set_seed
    from shared.tokenizer import get_gpt2_tokenizer

    device = get_device(args.device)
    from shared.data import DownloadError

    if args.checkpoint:
        model = model_from_checkpoint(args.checkpoint)
    else:
        try:
            model = model_from_gpt2(args.gpt2, args.source)
        except (DownloadError, ValueError, ImportError) as err:  # offline, bad size, no TensorFlow
            raise SystemExit(f"could not load GPT-2 {args.gpt2}: {err}") from None
    model.to(device).eval()
    tokenizer = get_gpt2_tokenizer()

    set_seed(args.seed)
    idx = text_to_token_ids(args.prompt, tokenizer).to(device)
    out = generate(
        model,
        idx,
        max_new_tokens=args.max_new_tokens,
        context_size=model.cfg["context_length"],
        temperature=args.temperature,
        top_k=args.top_k,
        eos_id=END_OF_TEXT_ID,
    )
    print(token_ids_to_text(out.cpu(), tokenizer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
