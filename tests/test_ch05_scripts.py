"""Chapter 5 scripts: train.py trains, checkpoints and resumes exactly; generate.py samples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
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
