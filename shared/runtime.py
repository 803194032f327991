"""Quick mode, seeding and device choice.

Quick mode (``COURSE_QUICK=1``) shrinks data, models and step counts so that every
notebook runs in CI in minutes. It changes sizes only: the code path is the same.
"""

from __future__ import annotations

import os
import platform
import random
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parent.parent


def is_quick() -> bool:
    """True when the course runs in quick mode (``COURSE_QUICK=1``)."""
    return os.environ.get("COURSE_QUICK", "0").strip().lower() in ("1", "true", "yes")


def pick(full: T, quick: T) -> T:
    """``full`` in the real course, ``quick`` in quick mode."""
    return quick if is_quick() else full


NEEDS_BASE_MODEL = "it needs a base model (GPT-2, or the books model of ch05_pretraining/base_model.ipynb)"
# What full mode costs on a laptop CPU (the stored outputs come from full mode), per chapter folder;
# a "folder/notebook.ipynb" entry overrides its folder's for one notebook.
FULL_MODE_COST = {
    "ch01_llms": "seconds; nothing in this chapter depends on the mode",
    "ch02_text_data": "seconds; nothing in this chapter depends on the mode",
    "ch02_text_data/bpe_from_scratch.ipynb": (
        "seconds; quick mode checks the tokenizer on the first 100,000 characters of a Gutenberg book"
        " instead of the whole book"
    ),
    "ch03_attention": "seconds; nothing in this chapter depends on the mode",
    "ch04_gpt_model": "about a minute; nothing in this chapter depends on the mode",
    "ch05_pretraining": (
        "about 10 minutes of training on a laptop CPU (more on a slow or busy one), a few GB of memory"
        " and about 2 GB of disk for checkpoints"
    ),
    "ch05_pretraining/base_model.ipynb": (
        "about an hour of pretraining on 2 CPU cores (the notebook resumes a run made beforehand with"
        " train.py), 15 minutes for the size comparison and about 1 GB of disk"
    ),
    "ch06_classification": (
        "with the books model, about 10 minutes of finetuning on a laptop CPU; with GPT-2 124M, about"
        " 30 minutes (5 epochs in 6.7, every layer in 6.9.3; estimated from the book's 6 minutes for 6.7)"
        f" after a 550 MB download; {NEEDS_BASE_MODEL}"
    ),
    "ch06_classification/ch06_comparisons.ipynb": (
        "with the books model, about 25 minutes of finetuning on a laptop CPU; with GPT-2 124M, roughly"
        " 3 hours (9 runs of 5 epochs each, one padded to 1,024 tokens; an estimate, a GPU takes minutes)"
        f" after a 550 MB download; {NEEDS_BASE_MODEL}"
    ),
    "ch07_instruction": (
        "with the course's books model about 15 minutes of finetuning and generation on a laptop CPU;"
        " with GPT-2 355M (a 1.5 GB download) more than an hour on a laptop CPU, minutes on a GPU;"
        f" {NEEDS_BASE_MODEL}"
    ),
    "ch07_instruction/dpo.ipynb": (
        "with chapter 7's finetuned books model about 10 minutes on 2 CPU cores (DPO itself, responses"
        " before and after, two short trial runs), plus a short finetuning first if chapter 7's checkpoint"
        f" is missing; with GPT-2 355M more than an hour on a laptop CPU; {NEEDS_BASE_MODEL}"
    ),
}
SWITCH_HINT = (
    "To switch, run `%env COURSE_QUICK={value}` in a cell, then the notebook again from the top"
    " (or set COURSE_QUICK before starting JupyterLab)."
)


def mode_banner(chapter: str | None = None, notebook: str | None = None) -> str:
    """Which mode this run is in, what full mode costs for ``chapter``/``notebook``, and how to switch."""
    if is_quick():
        return (
            "QUICK mode (COURSE_QUICK=1): small data, models and step counts; numbers will differ from the"
            " text.\n" + SWITCH_HINT.format(value=0) + " Full mode is the real course."
        )
    cost = FULL_MODE_COST.get(f"{chapter}/{notebook}") or FULL_MODE_COST.get(
        chapter or "", "minutes of training and some disk for checkpoints"
    )
    return (
        f"FULL mode: the real course (real data, book-sized runs). Cost of a full run: {cost}.\n"
        + SWITCH_HINT.format(value=1)
        + " Quick mode shrinks data, models and steps to run in minutes."
    )


def checkpoint_dir(name: str) -> Path:
    """Where the course keeps checkpoint ``name``: ``checkpoints/<name>`` (``<name>-quick`` in quick mode).

    ``COURSE_CHECKPOINT_DIR`` moves the ``checkpoints/`` folder elsewhere. Quick runs get their own
    folder so that they never overwrite a full run's weights.
    """
    root = Path(os.environ.get("COURSE_CHECKPOINT_DIR") or REPO_ROOT / "checkpoints")
    return root / (f"{name}-quick" if is_quick() else name)


def course_dir(name: str, quick: bool = False) -> Path:
    """``checkpoint_dir(name)``; for a quick run (a script's ``--quick``) the folder ``<name>-quick``."""
    return checkpoint_dir(f"{name}-quick" if quick and not is_quick() else name)


# The books model that ships with the course (bf16 weights and config.json, written by section 9 of
# ch05_pretraining/base_model.ipynb from the run of train.py --data books; see README "The books model").
SHIPPED_BOOKS_MODEL = REPO_ROOT / "ch05_pretraining" / "books_model"


def books_model_dir(quick: bool = False) -> Path:
    """The books model's folder: the copy that ships with the course; in quick mode the tiny model's folder.

    Quick mode (``COURSE_QUICK=1``, or ``quick`` for a script's ``--quick``) uses the tiny model that
    quick runs of ``base_model.ipynb`` and ``train.py`` write, ``checkpoints/books-quick``. Where the
    shipped weights are missing (a notebook copied without the repository), they are fetched like
    any course file; if that fails too, the shipped path is returned and the loader says what is missing.
    """
    if quick or is_quick():
        return course_dir("books", quick=True)
    if not (SHIPPED_BOOKS_MODEL / "model.safetensors").is_file():
        from shared.data import DownloadError, fetch

        try:
            for part in ("config.json", "model.safetensors"):
                folder = fetch(f"books_model/{part}", quiet=True).parent
        except DownloadError:
            return SHIPPED_BOOKS_MODEL
        return folder
    return SHIPPED_BOOKS_MODEL


def set_seed(seed: int = 123) -> None:
    """Seed Python's, NumPy's and PyTorch's random number generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def mps_is_reliable() -> bool:
    """True where Apple's MPS backend is available and recent enough to trust (torch >= 2.4)."""
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 4) and torch.backends.mps.is_available()


def get_device(prefer: str | None = None) -> torch.device:
    """The device to use: ``prefer`` or ``COURSE_DEVICE`` if given, else CUDA, else MPS, else CPU."""
    choice = prefer or os.environ.get("COURSE_DEVICE")
    if choice:
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if mps_is_reliable():
        return torch.device("mps")
    return torch.device("cpu")


def describe_environment() -> dict[str, str]:
    """Versions and hardware that matter for reproducing the course's outputs."""
    import tiktoken

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "tiktoken": tiktoken.__version__,
        "numpy": np.__version__,
        "device": str(get_device()),
        "mode": "quick" if is_quick() else "full",
    }
