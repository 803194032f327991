"""Chapter 5 scripts: train.py trains, checkpoints and resumes exactly; generate.py samples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shared.runtime import REPO_ROOT

ROOT = REPO_ROOT
TRAIN = ROOT / "ch05_pretraining" / "train.py"
GENERATE = ROOT / "ch05_pretraining" / "generate.py"
TINY = [
    "--text",
    "the-verdict.txt",
    "--model",
    "tiny",
    "--context-length",
    "32",
    "--epochs",
    "1",
    "--eval-freq",
    "2",
    "--eval-iter",
    "1",
    "--save-every",
    "2",
    "--device",
    "cpu",
]


def run(script: Path, *args: str, cwd: Path) -> str:
    """Run a script with this Python (environment inherited, COURSE_DATA_MIRROR included)."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        [sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{script.name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def history(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["extra"]["history"]


def test_train_resume_and_generate(mirror, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    run(TRAIN, *TINY, "--max-steps", "5", "--checkpoint-dir", str(straight), cwd=tmp_path)

    out = run(TRAIN, *TINY, "--max-steps", "3", "--checkpoint-dir", str(split), cwd=tmp_path)
    assert "training until step 3" in out
    assert len(history(split / "last.pth")["batch_losses"]) == 3
    out = run(
        TRAIN,
        "--resume",
        "--max-steps",
        "5",
        "--checkpoint-dir",
        str(split),
        "--eval-freq",
        "2",
        "--eval-iter",
        "1",
        "--save-every",
        "2",
        "--device",
        "cpu",
        cwd=tmp_path,
    )
    assert "resuming from step 3" in out

    a, b = history(straight / "last.pth"), history(split / "last.pth")
    assert len(a["batch_losses"]) == 5
    assert a["batch_losses"] == b["batch_losses"]  # the resumed run continues exactly
    assert a["val_losses"] == b["val_losses"]

    text = run(
        GENERATE,
        "--checkpoint",
        str(split / "last.pth"),
        "--prompt",
        "Every effort",
        "--max-new-tokens",
        "5",
        "--temperature",
        "1.0",
        "--top-k",
        "10",
        "--seed",
        "1",
        "--device",
        "cpu",
        cwd=tmp_path,
    )
    assert text.startswith("Every effort") and len(text.strip()) > len("Every effort")
    again = run(
        GENERATE,
        "--checkpoint",
        str(split / "last.pth"),
        "--prompt",
        "Every effort",
        "--max-new-tokens",
        "5",
        "--temperature",
        "1.0",
        "--top-k",
        "10",
        "--seed",
        "1",
        "--device",
        "cpu",
        cwd=tmp_path,
    )
    assert again == text  # same seed, same text


def test_resume_without_checkpoint_fails_clearly(mirror, tmp_path):
    command = [sys.executable, str(TRAIN), "--resume", "--checkpoint-dir", str(tmp_path / "none")]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "no checkpoint" in done.stderr


@pytest.mark.parametrize("script", [TRAIN, GENERATE])
def test_scripts_have_help(script, tmp_path):
    assert "usage" in run(script, "--help", cwd=tmp_path)


BOOKS_TINY = [
    "--data",
    "books",
    "--books",
    "1513,844",
    "--val-books",
    "844",
    "--model",
    "tiny",
    "--context-length",
    "16",
    "--emb-dim",
    "16",
    "--n-layers",
    "1",
    "--n-heads",
    "2",
    "--batch-size",
    "2",
    "--steps",
    "6",
    "--eval-windows",
    "2",
    "--threads",
    "1",
    "--device",
    "cpu",
]
EVERY_2 = ["--eval-freq", "2", "--save-every", "2"]  # not stored in the checkpoint: given again on resume


def test_books_mode_resumes_exactly_and_writes_a_base_model(mirror, tmp_path):
    from safetensors.torch import load_file

    from gpt_from_scratch.ch05 import load_base_model

    straight, split = tmp_path / "straight", tmp_path / "split"
    out = run(TRAIN, *BOOKS_TINY, *EVERY_2, "--checkpoint-dir", str(straight), cwd=tmp_path)
    assert "train: 1 book(s)" in out and "val: 1 book(s)" in out and "pg844" in out
    assert "held-out loss on pg844" in out and "books model written to straight" in out

    out = run(TRAIN, *BOOKS_TINY, *EVERY_2, "--max-steps", "3", "--checkpoint-dir", str(split), cwd=tmp_path)
    assert "not finished" in out and not (split / "model.safetensors").exists()
    out = run(TRAIN, "--data", "books", "--resume", *EVERY_2, "--checkpoint-dir", str(split), cwd=tmp_path)
    assert "resuming from step 3" in out and "books model written" in out

    a, b = (json.loads((d / "history.json").read_text()) for d in (straight, split))
    assert a["steps"] == [2, 4, 6] and len(a["batch_losses"]) == 6
    for key in ("batch_losses", "val_losses", "train_losses", "tokens_seen", "lrs", "samples"):
        assert a[key] == b[key], key  # the resumed run continues exactly
    wa, wb = (load_file(str(d / "model.safetensors")) for d in (straight, split))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    config = json.loads((straight / "config.json").read_text())
    assert config["tokenizer"] == "gpt2" and config["model"]["emb_dim"] == 16
    assert config["books"] == ["pg1513"] and config["val_books"] == ["pg844"]
    assert config["tokens_seen"] == 6 * 2 * 16 and config["steps"] == 6
    base = load_base_model(weights="books", books_dir=straight)
    assert base.weights == "books" and base.description.startswith("the course's books model (straight: ")
    assert not base.model.training

    out = run(TRAIN, "--data", "books", "--resume", *EVERY_2, "--checkpoint-dir", str(straight), cwd=tmp_path)
    assert "nothing to do" in out
    assert json.loads((straight / "config.json").read_text()) == config  # the run's facts are kept
