"""The books model that ships with the course: committed, registered, found, and loaded as chapters load it.

``ch05_pretraining/books_model/`` holds bfloat16 weights and ``config.json`` (written by section 9 of
``base_model.ipynb``); ``shared.runtime.books_model_dir()`` points notebooks and scripts at it.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open

from gpt_from_scratch.ch04 import GPTModel
from gpt_from_scratch.ch05 import load_base_model, save_base_model
from shared.data import sha256_of
from shared.registry import BOOKS_MODEL_FILES, FILES
from shared.runtime import SHIPPED_BOOKS_MODEL, books_model_dir, checkpoint_dir

WEIGHTS = SHIPPED_BOOKS_MODEL / "model.safetensors"
MAX_BYTES = 32 * 10**6  # the limit: a clone stays small


@pytest.fixture
def full_mode(monkeypatch, tmp_path):
    """Full mode, checkpoints in a temporary folder, no weights chosen by the environment."""
    for name in ("COURSE_QUICK", "COURSE_BASE_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COURSE_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    return tmp_path


def test_the_committed_files_are_the_registered_ones():
    for part, sha256, size in BOOKS_MODEL_FILES:
        path = SHIPPED_BOOKS_MODEL / part
        assert path.is_file(), part
        entry = FILES[f"books_model/{part}"]
        assert (entry.sha256, entry.size) == (sha256, size)
        if sha256 is not None:
            assert sha256_of(path) == sha256, f"{part} differs from shared/registry.py"
        if size is not None:
            assert path.stat().st_size == size, part


def test_the_weights_are_bfloat16_and_small():
    assert WEIGHTS.stat().st_size <= MAX_BYTES
    with safe_open(str(WEIGHTS), framework="pt") as f:
        dtypes = {f.get_slice(name).get_dtype() for name in f.keys()}
    assert dtypes == {"BF16"}
    config = json.loads((SHIPPED_BOOKS_MODEL / "config.json").read_text(encoding="utf-8"))
    assert config["dtype"] == "bfloat16" and config["tokenizer"] == "gpt2"


def test_books_model_dir_in_each_mode(full_mode, monkeypatch):
    assert books_model_dir() == SHIPPED_BOOKS_MODEL
    assert books_model_dir(quick=True) == full_mode / "checkpoints" / "books-quick"  # a script's --quick
    monkeypatch.setenv("COURSE_QUICK", "1")
    assert books_model_dir() == books_model_dir(quick=True) == checkpoint_dir("books")  # books-quick


def test_load_base_model_finds_the_shipped_model_without_training(full_mode):
    base = load_base_model(weights="books", books_dir=books_model_dir())
    assert base.weights == "books" and base.description.startswith("the course's books model (books_model: ")
    config = json.loads((SHIPPED_BOOKS_MODEL / "config.json").read_text(encoding="utf-8"))
    assert f"held-out loss {config['val_loss']:.3f}" in base.description
    assert all(p.dtype == torch.float32 for p in base.model.parameters())  # loading casts back
    assert config["val_loss"] < 5.2  # the run's held-out loss; the bigram baseline is 5.45


def test_a_missing_copy_is_fetched_like_any_course_file(full_mode, monkeypatch):
    mirror = full_mode / "mirror" / "books_model"
    mirror.mkdir(parents=True)
    for part, _, _ in BOOKS_MODEL_FILES:
        shutil.copyfile(SHIPPED_BOOKS_MODEL / part, mirror / part)
    monkeypatch.setenv("COURSE_DATA_MIRROR", str(full_mode / "mirror"))
    monkeypatch.setenv("COURSE_DATA_DIR", str(full_mode / "cache"))
    monkeypatch.setattr("shared.runtime.SHIPPED_BOOKS_MODEL", full_mode / "not-cloned")
    folder = books_model_dir()
    assert folder == full_mode / "cache" / "books_model"
    assert sha256_of(folder / "model.safetensors") == sha256_of(WEIGHTS)
    assert load_base_model(weights="books", books_dir=folder).weights == "books"


def test_an_unreachable_copy_leaves_the_loader_to_say_what_is_missing(full_mode, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_MIRROR", str(full_mode / "empty-mirror"))
    monkeypatch.setenv("COURSE_DATA_DIR", str(full_mode / "cache"))
    monkeypatch.setattr("shared.data.FILES", {
        name: entry.__class__(entry.name, ("http://127.0.0.1:9/none",), entry.sha256, entry.size)
        for name, entry in FILES.items()
    })  # fmt: skip
    monkeypatch.setattr("shared.runtime.SHIPPED_BOOKS_MODEL", full_mode / "not-cloned")
    assert books_model_dir() == full_mode / "not-cloned"


def test_save_base_model_in_bfloat16_rounds_and_loads_back(tmp_path, tiny_cfg):
    torch.manual_seed(0)
    model = GPTModel(tiny_cfg()).eval()
    save_base_model(model, tmp_path / "bf16", dtype=torch.bfloat16, val_loss=1.0)
    save_base_model(model, tmp_path / "fp32", val_loss=1.0)
    small, big = ((tmp_path / d / "model.safetensors").stat().st_size for d in ("bf16", "fp32"))
    assert small < 0.55 * big
    loaded = load_base_model(weights="books", books_dir=tmp_path / "bf16").model
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a.to(torch.bfloat16).float(), rtol=0, atol=0, msg=name)
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    assert "dtype" not in json.loads((tmp_path / "fp32" / "config.json").read_text())
