"""Shared fixtures: the course's exported code, and the data files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.export import load_exports  # noqa: E402


@pytest.fixture(scope="session")
def course():
    """Every export cell of every chapter, imported as one module."""
    return load_exports()


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The offline data mirror; tests that need real data are skipped without it."""
    value = os.environ.get("COURSE_DATA_MIRROR")
    if not value or not Path(value).is_dir():
        pytest.skip("COURSE_DATA_MIRROR is not set to a folder")
    return Path(value)


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    """GPT-2's tokenizer (tiktoken, or built from the registry's files offline)."""
    from shared.tokenizer import get_gpt2_tokenizer

    return get_gpt2_tokenizer()


@pytest.fixture(scope="session")
def verdict_text() -> str:
    """The text of "The Verdict", the course's small training text."""
    from shared.data import read_text

    return read_text("the-verdict.txt")


@pytest.fixture(scope="module")
def one_thread():
    """Run a test module's tiny models on one thread: faster, and far faster on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
