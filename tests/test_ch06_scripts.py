"""Chapter 6 script: finetune.py trains from a books-format checkpoint (quick mode), saves, classifies."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpt_from_scratch.ch04 import GPT_CONFIG_124M
from gpt_from_scratch.ch06 import load_classifier
from shared.runtime import REPO_ROOT

ROOT = REPO_ROOT
FINETUNE = ROOT / "ch06_classification" / "finetune.py"


BOOKS_TINY = {"context_length": 32, "emb_dim": 16, "n_heads": 2, "n_layers": 1, "drop_rate": 0.0}
BOOKS_CFG = {**GPT_CONFIG_124M, **BOOKS_TINY}  # a tiny books model


def run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run finetune.py with this Python (environment inherited, COURSE_DATA_MIRROR included)."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        [sys.executable, str(FINETUNE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    if check:
        assert done.returncode == 0, f"finetune.py failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.parametrize("lora", [False, True])
def test_finetune_quick_end_to_end_then_classify(mirror, tmp_path, lora, books_folder):
    books = tmp_path / "books"
    books_folder(books, BOOKS_CFG, tokens_seen=0, val_loss=10.8, books=[])
    out = tmp_path / "out"
    # the LoRA run also trains with another seed on the default split
    extra = ["--lora", "--rank", "2", "--alpha", "4", "--seed", "5", "--split-seed", "123"] if lora else []
    common = ["--checkpoint-dir", str(out), "--device", "cpu"]
    weights = ["--weights", "books", "--books-dir", str(books)]
    log = run("--quick", *weights, *common, *extra, cwd=tmp_path).stdout
    assert "books" in log.splitlines()[0]  # the loader says which weights it used
    assert "cut to the model's context length, 32 tokens" in log
    assert "test accuracy:" in log and "precision" in log
    assert ("LoRA rank 2" in log) == lora
    assert f"split seed 123, seed {5 if lora else 123}" in log

    model, saved = load_classifier(out / "classifier.pth")  # a plain classifier, adapters merged
    assert saved["epoch"] == 1 and saved["max_length"] == 32 and saved["labels"] == ["ham", "spam"]
    assert model.out_head.out_features == 2

    messages = ["WINNER!! Claim your free prize now, call 0800 123", "Are we still on for lunch?"]
    first = run("--classify", *messages, *common, cwd=tmp_path).stdout.splitlines()
    assert len(first) == 2 and all(line.split("\t")[0] in ("ham", "spam") for line in first)
    assert [line.split("\t")[2] for line in first] == messages
    assert run("--classify", *messages, *common, cwd=tmp_path).stdout.splitlines() == first


def test_split_seed_fixes_the_data_and_seed_alone_does_not(mirror):
    spec = importlib.util.spec_from_file_location("ch06_finetune_script", FINETUNE)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    first, again, other = (script.spam_splits(seed, quick=True) for seed in (123, 123, 124))
    assert all(a.equals(b) for a, b in zip(first, again, strict=True))
    assert not all(a.equals(b) for a, b in zip(first, other, strict=True))  # another seed, another split
    assert script.parse_args(["--seed", "7"]).split_seed is None  # None: the split follows --seed
    assert script.parse_args(["--seed", "7", "--split-seed", "123"]).split_seed == 123


def test_classify_fails_clearly(tmp_path):
    done = run("--classify", "hello", "--checkpoint-dir", str(tmp_path / "none"), cwd=tmp_path, check=False)
    assert done.returncode != 0 and "no classifier" in done.stderr


def test_help(tmp_path):
    assert "--lora" in run("--help", cwd=tmp_path).stdout
