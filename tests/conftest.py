"""Shared fixtures: data files, the tokenizer, one tiny GPT configuration, and thread settings.

Tests import the course's code from the generated package (``from gpt_from_scratch.ch04 import
GPTModel``), installed editable by ``scripts/install.sh``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

TINY_CFG = {
    "vocab_size": 97,
    "context_length": 16,
    "emb_dim": 32,
    "n_heads": 4,
    "n_layers": 2,
    "drop_rate": 0.0,
    "qkv_bias": False,
}


@pytest.fixture(scope="session")
def tiny_cfg() -> Callable[..., dict]:
    """The one tiny GPT configuration of the test suite: ``tiny_cfg(**overrides)`` returns a fresh dict."""
    return lambda **overrides: {**TINY_CFG, **overrides}


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


@pytest.fixture(scope="session")
def books_folder(tiny_cfg) -> Callable[..., object]:
    """Write a small random books model as a base-model folder, through chapter 5's ``save_base_model``.

    ``books_folder(folder, cfg=None, seed=0, **facts)`` writes ``folder`` (model.safetensors and
    config.json, ``facts`` added to the config), and returns the saved ``GPTModel`` in eval mode.
    """
    import torch

    from gpt_from_scratch.ch04 import GPTModel
    from gpt_from_scratch.ch05 import save_base_model

    def write(folder: Path, cfg: dict | None = None, seed: int = 0, **facts) -> GPTModel:
        torch.manual_seed(seed)
        model = GPTModel(cfg or tiny_cfg()).eval()
        save_base_model(model, folder, **facts)
        return model

    return write
