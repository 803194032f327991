"""Chapter 5's train.py, in process: both modes train, checkpoint and resume exactly; its command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gpt_from_scratch.ch05 import load_base_model
from shared.runtime import REPO_ROOT

TRAIN = REPO_ROOT / "ch05_pretraining" / "train.py"
TEXT_TINY = [
    *("--text", "the-verdict.txt", "--model", "tiny", "--context-length", "32", "--epochs", "1"),
    *("--eval-freq", "2", "--eval-iter", "1", "--save-every", "2", "--threads", "1", "--device", "cpu"),
]
BOOKS_BASE = [
    *("--data", "books", "--books", "1513,844", "--val-books", "844", "--model", "tiny", "--context-length"),
    *("16", "--emb-dim", "16", "--n-layers", "1", "--n-heads", "2", "--batch-size", "2", "--eval-windows"),
    *("2", "--threads", "1", "--device", "cpu"),
]
BOOKS_TINY = [*BOOKS_BASE, "--steps", "6"]
LONG = [*BOOKS_BASE, "--steps", "120", "--eval-freq", "40", "--save-every", "2"]  # seconds: to interrupt
EVERY_2 = ["--eval-freq", "2", "--save-every", "2"]  # not stored in the checkpoint: given again on resume


def extras(folder: Path) -> dict:
    """The extras (step, history, random state, arguments) of a folder's last.pth."""
    return torch.load(folder / "last.pth", map_location="cpu", weights_only=True)["extra"]


def same_weights(a: Path, b: Path) -> bool:
    """Whether two folders' last.pth hold the very same weights."""
    wa, wb = (
        torch.load(d / "last.pth", map_location="cpu", weights_only=True)["model_state_dict"] for d in (a, b)
    )
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_text_mode_resumes_exactly(mirror, tmp_path, run_script):
    straight, split = tmp_path / "straight", tmp_path / "split"
    run_script(TRAIN, *TEXT_TINY, "--max-steps", "5", "--out-dir", str(straight), cwd=tmp_path)
    out = run_script(TRAIN, *TEXT_TINY, "--max-steps", "3", "--out-dir", str(split), cwd=tmp_path).out
    assert "training until step 3" in out and "not finished" in out
    assert len(extras(split)["history"]["batch_losses"]) == 3
    resume = ["--resume", "--max-steps", "5", "--eval-iter", "1", "--threads", "1", "--device", "cpu"]
    out = run_script(TRAIN, *resume, *EVERY_2, "--out-dir", str(split), cwd=tmp_path).out
    assert "resuming from step 3" in out and out.count("greedy sample: Every effort moves you") == 1

    a, b = extras(straight)["history"], extras(split)["history"]
    assert len(a["batch_losses"]) == 5 and a["steps"] == [0, 2, 4]
    for key in ("batch_losses", "val_losses", "train_losses", "tokens_seen", "lrs", "samples"):
        assert a[key] == b[key], key  # the resumed run continues exactly
    assert same_weights(straight, split)
    assert json.loads((split / "history.json").read_text())["batch_losses"] == b["batch_losses"]
    assert [s["step"] for s in a["samples"]] == [1, 3, 5]  # a sample after every evaluation


def test_books_mode_resumes_exactly_and_writes_a_base_model(mirror, tmp_path, run_script):
    straight, split = tmp_path / "straight", tmp_path / "split"
    out = run_script(TRAIN, *BOOKS_TINY, *EVERY_2, "--out-dir", str(straight), cwd=tmp_path).out
    assert "train: 1 book(s)" in out and "val: 1 book(s)" in out and "pg844" in out
    assert "held-out loss on pg844" in out and "books model written to straight" in out

    args = [*BOOKS_TINY, *EVERY_2, "--max-steps", "3", "--out-dir", str(split)]
    out = run_script(TRAIN, *args, cwd=tmp_path).out
    assert "not finished" in out and not (split / "model.safetensors").exists()
    out = run_script(
        TRAIN, "--data", "books", "--resume", *EVERY_2, "--out-dir", str(split), cwd=tmp_path
    ).out
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

    out = run_script(
        TRAIN, "--data", "books", "--resume", *EVERY_2, "--out-dir", str(straight), cwd=tmp_path
    ).out
    assert "nothing to do" in out
    assert json.loads((straight / "config.json").read_text()) == config  # the run's facts are kept


@pytest.fixture(scope="module")
def uninterrupted(mirror, tmp_path_factory, run_script) -> Path:
    """The folder of the LONG run, never interrupted."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    run_script(TRAIN, *LONG, "--out-dir", str(folder), cwd=folder)
    return folder


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_books_mode_resumes_exactly_after_an_interruption(uninterrupted, tmp_path, run_script, sig):
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}  # this checkout's package and shared/
    process = subprocess.Popen(
        [sys.executable, str(TRAIN), *LONG, "--out-dir", str(killed)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 120
    while not (killed / "last.pth").is_file() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(sig)  # in the middle of the run: during a step, or while saving
    process.wait(timeout=60)
    stopped_at = extras(killed)["step"]
    assert 0 < stopped_at < 120, "the run ended before it was interrupted: nothing was tested"
    resume = ["--data", "books", "--resume", "--eval-freq", "40", "--threads", "1", "--device", "cpu"]
    out = run_script(TRAIN, *resume, "--out-dir", str(killed)).out
    assert f"resuming from step {stopped_at}" in out
    a, b = extras(uninterrupted)["history"], extras(killed)["history"]
    for key in ("batch_losses", "val_losses", "train_losses", "lrs", "samples"):
        assert a[key] == b[key], key
    assert same_weights(uninterrupted, killed)


def test_resume_without_checkpoint_fails_clearly(tmp_path, run_script):
    done = run_script(TRAIN, "--resume", "--out-dir", str(tmp_path / "none"), check=False)
    assert done.code != 0 and "no checkpoint" in done.err


def test_every_flag_has_help_and_the_help_shows_the_examples(run_script, script_module):
    parser = script_module(TRAIN).build_parser()
    flags = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(flags) > 30 and all(a.help and len(a.help) > 10 for a in flags), [
        a.option_strings for a in flags if not a.help
    ]
    text = run_script(TRAIN, "--help").out
    for example in ("--data books --minutes 60", "--data books --resume", "torchrun --standalone"):
        assert example in text
    assert "--out-dir" in text and "--checkpoint-dir" not in text  # one name in every script


def test_default_folders_go_through_checkpoint_dir(script_module, monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.delenv("COURSE_QUICK", raising=False)
    parser = script_module(TRAIN).build_parser()
    assert parser.parse_args([]).out_dir == tmp_path / "ch05"
    assert parser.parse_args(["--data", "books"]).out_dir == tmp_path / "books"  # train.py --data books
    assert parser.parse_args(["--out-dir", "x"]).out_dir == Path("x")


def test_train_py_stays_short():
    assert len(TRAIN.read_text().splitlines()) < 450  # issue 19


def test_resume_refuses_flags_it_would_ignore(tmp_path, run_script, tiny_cfg):
    from gpt_from_scratch.ch04 import GPTModel
    from gpt_from_scratch.ch05 import save_checkpoint

    saved = {"data": "text", "lr": 0.0004, "steps": 10, "batch_size": 2, "model": "tiny"}
    save_checkpoint(tmp_path / "last.pth", GPTModel(tiny_cfg()), None, args=saved)
    done = run_script(TRAIN, "--resume", "--lr", "0.5", "--out-dir", str(tmp_path), check=False)
    assert done.code == 1 and "--lr 0.5 (the run's: 0.0004)" in done.err
    assert len(done.err.strip().splitlines()) == 1


def test_a_new_run_refuses_a_folder_with_a_run(tmp_path, run_script):
    """Issue 21: epoch files of two runs never mix; --resume continues, --overwrite replaces."""
    (tmp_path / "last.pth").write_bytes(b"old")
    done = run_script(TRAIN, "--out-dir", str(tmp_path), check=False)
    assert done.code == 1 and "--overwrite" in done.err and "--resume" in done.err
    assert (tmp_path / "last.pth").read_bytes() == b"old"


def test_n_heads_that_do_not_divide_the_width_are_refused(tmp_path, run_script):
    done = run_script(
        TRAIN, "--model", "tiny", "--n-heads", "3", "--out-dir", str(tmp_path / "r"), check=False
    )
    assert done.code == 1 and "--n-heads 3 must divide the width (--emb-dim 64)" in done.err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("flag", "value"), [("--books", "99999"), ("--val-books", "84,x")])
def test_unknown_books_are_refused_before_any_work(tmp_path, run_script, flag, value):
    books = ("--data", "books", "--model", "tiny", flag, value)
    done = run_script(TRAIN, *books, "--out-dir", str(tmp_path / "r"), check=False)
    lines = done.err.strip().splitlines()
    assert done.code == 1 and len(lines) == 1 and lines[0].startswith(flag), done.err
    assert done.out == "" and not (tmp_path / "r").exists()  # nothing printed, loaded or written
