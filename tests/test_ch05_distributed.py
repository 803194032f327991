"""Chapter 5's train.py under torchrun (two CPU processes, gloo) and its precision flags.

Tolerances: two processes compute every batch loss as the mean of two half-batch means and sum
their gradients in another order than one process does, so losses and weights agree with a
one-process run up to float32 rounding: batch and validation losses within 1e-5 relative, weights
within 1e-5 absolute (measured: 1e-7 and 3e-8; an AdamW step moves a weight by up to about the
learning rate, 4e-4 to 2e-3 here, so a wrong gradient shows far above that). A resumed run with
the same number of processes repeats the same operations, so it must match the uninterrupted run
exactly. bf16 autocast rounds every matrix product's inputs to 8 significant bits: its first loss
is within 1e-3 of fp32's (relative; measured 2e-5 on the tiny model), and must differ from it
(else autocast did nothing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt_from_scratch.ch04 import GPTModel
from gpt_from_scratch.ch05 import (
    GPTModelFast,
    bf16_supported,
    load_checkpoint,
    pretrain_on_tokens,
    train_model,
)
from shared.runtime import REPO_ROOT

TRAIN = REPO_ROOT / "ch05_pretraining" / "train.py"
TEXT = [
    "--text",
    "the-verdict.txt",
    "--model",
    "tiny",
    "--context-length",
    "16",
    "--emb-dim",
    "32",
    "--n-layers",
    "1",
    "--n-heads",
    "2",
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "--threads",
    "1",
    "--device",
    "cpu",
    "--no-fast",
    "--precision",
    "fp32",
]
EVERY_2 = ["--eval-freq", "2", "--eval-iter", "1", "--save-every", "2"]  # given again on resume
BOOKS = [
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
    "4",
    "--steps",
    "6",
    "--eval-windows",
    "2",
    "--threads",
    "1",
    "--device",
    "cpu",
    "--no-fast",
    "--precision",
    "fp32",
]
RTOL = 1e-5  # losses: one process against two
WEIGHT_ATOL = 1e-5  # weights: one process against two


def train(*args: str, cwd: Path, processes: int = 1, stderr: bool = False) -> str:
    """Run train.py in one process, or in ``processes`` CPU processes (torchrun); stdout (and stderr)."""
    script = [str(TRAIN), *args]
    if processes > 1:  # --standalone: a rendezvous on a free local port
        script = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *script]
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, *script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"train.py failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + (done.stderr if stderr else "")


def extras(folder: Path) -> dict:
    """The extras (step, history, random states, arguments) of a checkpoint folder's last.pth."""
    return torch.load(folder / "last.pth", map_location="cpu", weights_only=True)["extra"]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """The model's state dict in a checkpoint folder's last.pth."""
    return torch.load(folder / "last.pth", map_location="cpu", weights_only=True)["model_state_dict"]


def assert_same_run(a: dict, b: dict, rtol: float) -> None:
    """Two histories with the same steps, and the same losses within ``rtol`` (0: exactly)."""
    assert a["steps"] == b["steps"] and len(a["batch_losses"]) == len(b["batch_losses"])
    assert a["lrs"] == b["lrs"] and a["tokens_seen"] == b["tokens_seen"]
    for key in ("batch_losses", "train_losses", "val_losses"):
        if rtol == 0:
            assert a[key] == b[key], key
        else:
            np.testing.assert_allclose(b[key], a[key], rtol=rtol, atol=0, err_msg=key)


def assert_close_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    """The same parameter names, and every weight within ``atol`` (0: exactly)."""
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=atol), (name, (a[name] - b[name]).abs().max())


def test_text_two_processes_follow_one_process(mirror, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    common = [*TEXT, *EVERY_2, "--drop-rate", "0", "--max-steps", "4"]  # no dropout: the same numbers
    train(*common, "--out-dir", str(one), cwd=tmp_path)
    out = train(*common, "--out-dir", str(two), cwd=tmp_path, processes=2)

    assert "torchrun: 2 processes (gloo), each trains on 2 rows of a batch" in out
    assert out.count("model tiny:") == 1 and out.count("greedy sample:") == 1  # only rank 0 prints
    a, b = extras(one), extras(two)
    assert len(b["history"]["batch_losses"]) == 4 and b["history"]["steps"] == [0, 2]
    assert_same_run(a["history"], b["history"], RTOL)
    assert_close_weights(weights(one), weights(two), WEIGHT_ATOL)
    # only rank 0 writes, rank 0's random state and rank 1's (which draws from another seed)
    assert sorted(os.listdir(two)) == ["history.json", "last.pth"]
    ranks = b["rank_rng_states"]
    assert len(ranks) == 2 and not torch.equal(ranks[0]["rng_state"], ranks[1]["rng_state"])
    assert torch.equal(b["rng_state"], ranks[0]["rng_state"])
    assert "rank_rng_states" not in a  # a one-process checkpoint is unchanged


def test_text_two_processes_resume_exactly(mirror, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = [*TEXT, *EVERY_2, "--drop-rate", "0.1"]  # dropout: each process's random state matters
    train(*common, "--max-steps", "4", "--out-dir", str(straight), cwd=tmp_path, processes=2)
    train(*common, "--max-steps", "2", "--out-dir", str(split), cwd=tmp_path, processes=2)
    planted = tmp_path / "planted"  # the same checkpoint without the other process's random state
    shutil.copytree(split, planted)
    checkpoint = torch.load(planted / "last.pth", map_location="cpu", weights_only=True)
    del checkpoint["extra"]["rank_rng_states"]
    torch.save(checkpoint, planted / "last.pth")

    resume = ["--resume", "--max-steps", "4", *EVERY_2, "--threads", "1", "--device", "cpu"]
    out = train(*resume, "--out-dir", str(split), cwd=tmp_path, processes=2)
    assert out.count("resuming from step 2") == 1
    assert_same_run(extras(straight)["history"], extras(split)["history"], rtol=0)
    assert_close_weights(weights(straight), weights(split), atol=0)

    out = train(*resume, "--out-dir", str(planted), cwd=tmp_path, processes=2, stderr=True)
    assert "dropout masks (if any) are not those of an uninterrupted run" in out
    losses = extras(planted)["history"]["batch_losses"]
    assert losses[:2] == extras(straight)["history"]["batch_losses"][:2]
    assert losses[2:] != extras(straight)["history"]["batch_losses"][2:]  # the check would catch it


def test_books_two_processes_resume_like_one_process(mirror, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    every_2 = ["--eval-freq", "2", "--save-every", "2"]
    train(*BOOKS, *every_2, "--out-dir", str(one), cwd=tmp_path)
    train(*BOOKS, *every_2, "--max-steps", "3", "--out-dir", str(two), cwd=tmp_path, processes=2)
    resume = ["--data", "books", "--resume", *every_2, "--out-dir", str(two)]
    out = train(*resume, cwd=tmp_path, processes=2)
    assert out.count("resuming from step 3") == 1 and out.count("books model written to two") == 1

    a, b = (json.loads((d / "history.json").read_text()) for d in (one, two))
    assert a["steps"] == [2, 4, 6] and len(b["samples"]) == 3
    assert_same_run(a, b, RTOL)
    assert_close_weights(weights(one), weights(two), WEIGHT_ATOL)
    config = json.loads((two / "config.json").read_text())
    assert config["steps"] == 6 and config["tokens_seen"] == 6 * 4 * 16  # the global batch counted
    assert (config["processes"], config["precision"], config["model_class"]) == (2, "fp32", "GPTModel")
    assert sorted(os.listdir(two)) == sorted(os.listdir(one))  # no stray files from rank 1


def tiny_tokens(n: int = 4000) -> np.ndarray:
    """A random token array for the tiny model's vocabulary."""
    return np.random.default_rng(0).integers(0, 97, n).astype(np.uint16)


@pytest.mark.parametrize("loop", ["pretrain_on_tokens", "train_model"])
def test_bf16_first_step_loss_is_close_to_fp32(tiny_cfg, one_thread, loop):
    from torch.utils.data import DataLoader, TensorDataset

    tokens = torch.from_numpy(tiny_tokens().astype(np.int64))

    def first_loss(precision: str) -> float:
        torch.manual_seed(0)
        model = GPTModel(tiny_cfg())
        optimizer = torch.optim.AdamW(model.parameters())
        if loop == "pretrain_on_tokens":
            state = pretrain_on_tokens(
                model, optimizer, tiny_tokens(), tiny_tokens(200), "cpu", total_steps=1, batch_size=4,
                peak_lr=1e-3, eval_windows=1, precision=precision,
            )  # fmt: skip
        else:
            rows = tokens[: 8 * 17].view(8, 17)  # (8, T + 1)
            data = DataLoader(TensorDataset(rows[:, :-1], rows[:, 1:]), batch_size=4, drop_last=True)
            state = train_model(
                model, data, data, optimizer, "cpu", num_epochs=1, eval_freq=1, eval_iter=1, peak_lr=1e-3,
                stop_at_step=1, verbose=False, precision=precision,
            )  # fmt: skip
        return state["history"]["batch_losses"][0]

    fp32, bf16 = first_loss("fp32"), first_loss("bf16")
    assert bf16 != fp32  # autocast ran
    assert abs(bf16 - fp32) <= 1e-3 * fp32
    with pytest.raises(ValueError, match="precision"):
        first_loss("fp16")


def test_bf16_supported_answers_for_each_device():
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    assert bf16_supported("cpu") == ("avx512_bf16" in flags or "amx_bf16" in flags)
    assert bf16_supported("meta") is False  # devices without a check: fp32
    if torch.cuda.is_available():
        assert bf16_supported("cuda") == torch.cuda.is_bf16_supported(including_emulation=False)


def test_precision_auto_prints_its_choice_and_keeps_it(mirror, tmp_path):
    args = [a for a in TEXT if a not in ("--precision", "fp32", "--no-fast")]  # the defaults, in 2 processes
    out = train(
        *args, "--precision", "auto", "--max-steps", "1", "--out-dir", "run", cwd=tmp_path, processes=2
    )
    choice = "bf16" if bf16_supported("cpu") else "fp32"
    assert out.count(f"model class GPTModelFast, precision {choice} (auto:") == 1
    state = extras(tmp_path / "run")
    assert state["args"]["precision"] == choice and state["args"]["fast"]  # what --resume uses
    assert np.isfinite(state["history"]["batch_losses"]).all()


def test_fast_by_default_and_checkpoints_load_into_both_classes(mirror, tmp_path):
    args = [a for a in TEXT if a != "--no-fast"]
    out = train(*args, "--max-steps", "1", "--out-dir", "fast", cwd=tmp_path)
    assert "model class GPTModelFast" in out
    fast = tmp_path / "fast" / "last.pth"
    cfg = extras(tmp_path / "fast")["cfg"]
    for cls in (GPTModel, GPTModelFast):  # the same parameter names and shapes
        load_checkpoint(fast, cls(cfg))
