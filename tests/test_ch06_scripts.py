"""Chapter 6 script: finetune.py trains from a books-format checkpoint (quick mode), saves, classifies."""

from __future__ import annotations

import pytest

from gpt_from_scratch.ch04 import GPT_CONFIG_124M
from gpt_from_scratch.ch06 import load_classifier
from shared.runtime import REPO_ROOT, SHIPPED_BOOKS_MODEL

FINETUNE = REPO_ROOT / "ch06_classification" / "finetune.py"


BOOKS_TINY = {"context_length": 32, "emb_dim": 16, "n_heads": 2, "n_layers": 1, "drop_rate": 0.0}
BOOKS_CFG = {**GPT_CONFIG_124M, **BOOKS_TINY}  # a tiny books model


@pytest.mark.parametrize("lora", [False, True])
def test_finetune_quick_end_to_end_then_classify(mirror, tmp_path, lora, books_folder, run_script):
    books = tmp_path / "books"
    books_folder(books, BOOKS_CFG, tokens_seen=0, val_loss=10.8, books=[])
    out = tmp_path / "out"
    # the LoRA run also trains with another seed on the default split
    extra = ["--lora", "--rank", "2", "--alpha", "4", "--seed", "5", "--split-seed", "123"] if lora else []
    common = ["--out-dir", str(out), "--device", "cpu", "--threads", "1"]
    weights = ["--weights", "books", "--books-dir", str(books)]
    log = run_script(FINETUNE, "--quick", *weights, *common, *extra, cwd=tmp_path).out
    assert "books" in log.splitlines()[0]  # the loader says which weights it used
    assert "cut to the model's context length, 32 tokens" in log
    assert "test accuracy:" in log and "precision" in log
    assert ("LoRA rank 2" in log) == lora
    assert f"split seed 123, seed {5 if lora else 123}" in log

    model, saved = load_classifier(out / "classifier.pth")  # a plain classifier, adapters merged
    assert saved["epoch"] == 1 and saved["max_length"] == 32 and saved["labels"] == ["ham", "spam"]
    assert saved["args"]["out_dir"] == str(out) and saved["args"]["quick"] is True
    assert model.out_head.out_features == 2

    messages = ["WINNER!! Claim your free prize now, call 0800 123", "Are we still on for lunch?"]
    first = run_script(FINETUNE, "--classify", *messages, *common).out.splitlines()
    assert len(first) == 2 and all(line.split("\t")[0] in ("ham", "spam") for line in first)
    assert [line.split("\t")[2] for line in first] == messages
    assert run_script(FINETUNE, "--classify", *messages, *common).out.splitlines() == first


def test_split_seed_fixes_the_data_and_seed_alone_does_not(mirror, script_module):
    script = script_module(FINETUNE)
    first, again, other = (script.spam_splits(seed, quick=True) for seed in (123, 123, 124))
    assert all(a.equals(b) for a, b in zip(first, again, strict=True))
    assert not all(a.equals(b) for a, b in zip(first, other, strict=True))  # another seed, another split
    assert script.parse_args(["--seed", "7"]).split_seed is None  # None: the split follows --seed
    assert script.parse_args(["--seed", "7", "--split-seed", "123"]).split_seed == 123


def test_default_folders_go_through_checkpoint_dir(tmp_path, monkeypatch, script_module):
    monkeypatch.setenv("COURSE_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.delenv("COURSE_QUICK", raising=False)
    parse = script_module(FINETUNE).parse_args
    args = parse([])
    assert (args.out_dir, args.books_dir, args.weights, args.quick) == (
        tmp_path / "ch06",
        SHIPPED_BOOKS_MODEL,  # the books model that ships with the course
        "auto",
        False,
    )
    args = parse(["--quick"])
    assert (args.out_dir, args.books_dir) == (tmp_path / "ch06-quick", tmp_path / "books-quick")


def test_classify_fails_clearly(tmp_path, run_script):
    done = run_script(FINETUNE, "--classify", "hello", "--out-dir", str(tmp_path / "none"), check=False)
    assert done.code == 1 and "no classifier" in done.err


def test_renamed_flags_are_refused(tmp_path, run_script):
    done = run_script(FINETUNE, "--checkpoint-dir", str(tmp_path), check=False)  # now --out-dir
    assert done.code == 2 and "unrecognized arguments: --checkpoint-dir" in done.err


def test_help_shows_the_examples(run_script):
    out = run_script(FINETUNE, "--help").out
    assert out.startswith("usage: ch06_classification/finetune.py")
    assert "python ch06_classification/finetune.py --lora --rank 8 --alpha 16" in out
    assert "--lora" in out and "--out-dir" in out


def test_finetune_refuses_a_folder_with_another_run(tmp_path, run_script):
    """Issue 21: re-running into a folder with a classifier needs --overwrite."""
    (tmp_path / "classifier.pth").write_bytes(b"old")
    done = run_script(FINETUNE, "--out-dir", str(tmp_path), "--device", "cpu", check=False)
    assert done.code == 1 and "--overwrite" in done.err and "classifier.pth" in done.err
    assert (tmp_path / "classifier.pth").read_bytes() == b"old"


def test_the_default_epochs_follow_the_chapter(script_module):
    script = script_module(FINETUNE)
    assert script.chapter_epochs("gpt2") == 5  # the book's recipe
    assert script.chapter_epochs("books") == 2
    assert script.parse_args([]).epochs is None  # chosen once the base model is known
