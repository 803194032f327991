"""Chapter 5's generate.py, in process: a train.py checkpoint or a base model, greedy or sampled."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gpt_from_scratch.ch04 import GPT_CONFIG_124M, GPTModel
from gpt_from_scratch.ch05 import generate, save_base_model, save_checkpoint, text_to_token_ids
from shared.runtime import REPO_ROOT
from shared.tokenizer import END_OF_TEXT_ID

GENERATE = REPO_ROOT / "ch05_pretraining" / "generate.py"
TINY = {**GPT_CONFIG_124M, "context_length": 32, "emb_dim": 16, "n_heads": 2, "n_layers": 1, "drop_rate": 0.0}
GREEDY = ["--prompt", "Every effort", "--max-new-tokens", "6", "--device", "cpu"]


def tiny_model(seed: int = 0) -> GPTModel:
    """A small randomly initialised GPTModel with GPT-2's vocabulary."""
    torch.manual_seed(seed)
    return GPTModel(TINY).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A train.py-style checkpoint (model state and its cfg) of a tiny model."""
    path = tmp_path_factory.mktemp("ch05") / "last.pth"
    save_checkpoint(path, tiny_model(), None, cfg=TINY)
    return path


def test_greedy_from_a_checkpoint_gives_the_lesson_decoders_tokens(checkpoint, run_script, gpt2_tokenizer):
    text = run_script(GENERATE, "--checkpoint", str(checkpoint), *GREEDY).out
    idx = text_to_token_ids("Every effort", gpt2_tokenizer)
    expected = generate(tiny_model(), idx, 6, TINY["context_length"], eos_id=END_OF_TEXT_ID)
    assert text == gpt2_tokenizer.decode(expected[0].tolist()) + "\n"


def test_sampling_repeats_with_its_seed(checkpoint, run_script):
    sample = ["--checkpoint", str(checkpoint), *GREEDY, "--temperature", "1.0", "--top-k", "10"]
    first = run_script(GENERATE, *sample, "--seed", "1").out
    assert first.startswith("Every effort") and len(first.strip()) > len("Every effort")
    assert run_script(GENERATE, *sample, "--seed", "1", "--threads", "1").out == first
    others = {run_script(GENERATE, *sample, "--seed", str(seed)).out for seed in (2, 3, 4)}
    assert others != {first}  # other seeds, other samples


def test_greedy_stops_after_end_of_text(tmp_path, run_script):
    model = tiny_model()
    with torch.no_grad():  # every position's output is the constant shift vector v: the logits are W v
        model.final_norm.scale.zero_()
        v = model.final_norm.shift.copy_(torch.ones(TINY["emb_dim"]))
        model.out_head.weight.zero_()
        model.out_head.weight[END_OF_TEXT_ID] = v  # <|endoftext|> wins every step
    path = tmp_path / "eos.pth"
    save_checkpoint(path, model, None, cfg=TINY)
    out = run_script(GENERATE, "--checkpoint", str(path), *GREEDY).out
    assert out == "Every effort<|endoftext|>\n"  # one end token, not six: decoding stopped there


def test_books_base_model(tmp_path, run_script):
    books = save_base_model(tiny_model(), tmp_path / "books", tokens_seen=0)
    done = run_script(GENERATE, "--weights", "books", "--books-dir", str(books), *GREEDY)
    assert "books model (books" in done.err  # which weights: on stderr, the text alone on stdout
    assert done.out.startswith("Every effort") and done.out.count("\n") >= 1


def test_failures_are_clear(tmp_path, run_script):
    done = run_script(GENERATE, "--weights", "books", "--books-dir", str(tmp_path / "none"), check=False)
    assert done.code == 1 and "no base model" in done.err and "train.py --data books" in done.err
    done = run_script(GENERATE, "--checkpoint", str(tmp_path / "none.pth"), check=False)
    assert done.code == 1 and "no checkpoint at" in done.err
    done = run_script(GENERATE, "--gpt2", "124M", check=False)  # renamed: --weights gpt2 --size 124M
    assert done.code == 2 and "unrecognized arguments: --gpt2" in done.err


def test_help_shows_the_examples(run_script):
    out = run_script(GENERATE, "--help").out
    assert out.startswith("usage: ch05_pretraining/generate.py")
    assert "python ch05_pretraining/generate.py --weights gpt2 --size 124M --temperature 1.0" in out
    for flag in ("--weights", "--size", "--books-dir", "--source", "--seed", "--device", "--threads"):
        assert flag in out
