"""Chapter 5 companion (base_model.ipynb): book cleaning, token files, splits, windows, baselines,
resumable pretraining, and the base-model loader that chapters 6 and 7 use.

Every checkpoint here is written by the test itself: tiny books-format folders, and GPT-2 files in
Hugging Face's layout written by chapter 5's ``write_hf_safetensors`` (OpenAI's weights cannot be
downloaded here).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import gpt_from_scratch.ch05 as ch05
from gpt_from_scratch.ch04 import GPTModel, gpt2_config
from gpt_from_scratch.ch05 import (
    BaseModelUnavailable,
    LoadedBaseModel,
    bigram_cross_entropy,
    calc_loss_batch,
    fixed_windows,
    load_base_model,
    load_hf_weights_into_gpt,
    pretrain_on_tokens,
    read_safetensors,
    read_token_file,
    sample_windows,
    split_books,
    strip_gutenberg,
    windows_loss,
    write_hf_safetensors,
    write_token_file,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLE = """The Project Gutenberg eBook of A Short Test

This eBook is for the use of anyone anywhere in the United States and
most other parts of the world at no cost and with almost no restrictions.

*** START OF THE PROJECT GUTENBERG EBOOK A SHORT TEST ***

A SHORT TEST

Chapter 1

It was a fine day.

*** END OF THE PROJECT GUTENBERG EBOOK A SHORT TEST ***

Updated editions will replace the previous one. The Project Gutenberg Literary Archive
Foundation ...
"""


# --- cleaning ---------------------------------------------------------------------------------------


def test_strip_gutenberg_keeps_only_the_book():
    assert strip_gutenberg(SAMPLE) == "A SHORT TEST\n\nChapter 1\n\nIt was a fine day."
    older = SAMPLE.replace("START OF THE", "START OF THIS").replace("***END", "*** END")
    assert strip_gutenberg(older) == strip_gutenberg(SAMPLE)


@pytest.mark.parametrize(
    "broken",
    [
        "no markers at all",
        SAMPLE.replace("*** END OF", "END OF"),
        SAMPLE.replace("*** START OF", "START OF"),
    ],
)
def test_strip_gutenberg_rejects_texts_without_markers(broken):
    with pytest.raises(ValueError, match="START OF"):
        strip_gutenberg(broken)


def test_strip_gutenberg_on_every_registered_book(mirror):
    from shared.data import read_text
    from shared.registry import GUTENBERG_BOOKS

    assert len(GUTENBERG_BOOKS) == 15
    for number in GUTENBERG_BOOKS:
        raw = read_text(f"gutenberg/pg{number}.txt")
        book = strip_gutenberg(raw)
        assert "*** START OF" not in book and "*** END OF" not in book, number
        assert "Literary Archive Foundation" not in book, number  # the licence is gone
        assert "This eBook is for the use of anyone" not in book, number  # the header too
        assert book == book.strip() and len(book) > 0.85 * len(raw) - 25_000, number
        assert book in raw  # nothing inside the book is changed


# --- token files, splits, windows --------------------------------------------------------------------


def test_token_file_round_trip(tmp_path, gpt2_tokenizer):
    books = {"first": "It was a fine day.", "second": "Café, naïve; 🙂 and <|endoftext|> as text?"}
    books["second"] = books["second"].replace("<|endoftext|>", "end")  # the separator is added by the writer
    path = tmp_path / "tokens" / "train.bin"
    counts = write_token_file(books, gpt2_tokenizer, path)
    tokens, spans = read_token_file(path)
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
    assert path.stat().st_size == 2 * len(tokens) == 2 * sum(counts.values())
    assert list(spans) == list(books) and spans["first"] == (0, counts["first"])
    for name, text in books.items():
        start, end = spans[name]
        assert gpt2_tokenizer.decode(tokens[start:end].tolist()) == text + "<|endoftext|>"
        assert tokens[end - 1] == 50256
    meta = json.loads(Path(f"{path}.json").read_text())
    assert meta["books"] == [{"name": n, "tokens": c} for n, c in counts.items()]


def test_read_token_file_notices_a_changed_file(tmp_path, gpt2_tokenizer):
    path = tmp_path / "t.bin"
    write_token_file({"a": "one two three"}, gpt2_tokenizer, path)
    with open(path, "ab") as fh:
        fh.write(b"\x00\x00")
    with pytest.raises(ValueError, match="delete it and its .json"):
        read_token_file(path)


def test_split_books_holds_out_whole_books():
    names = [f"pg{n}" for n in (84, 98, 175, 345)]
    train, val = split_books(names, ["pg98"])
    assert val == ["pg98"] and train == ["pg84", "pg175", "pg345"]
    assert not set(train) & set(val) and sorted(train + val) == sorted(names)
    with pytest.raises(ValueError, match="at least one"):
        split_books(names, [])
    with pytest.raises(ValueError, match="at least one"):
        split_books(names, names)
    with pytest.raises(ValueError, match="not among"):
        split_books(names, ["pg1"])


def test_sample_windows_stay_in_bounds():
    tokens = np.arange(50, dtype=np.uint16)  # token i at position i: a window's values are its positions
    gen = torch.Generator().manual_seed(0)
    seen_starts = set()
    for _ in range(200):
        x, y = sample_windows(tokens, batch_size=4, context_length=8, generator=gen)
        assert x.shape == y.shape == (4, 8) and x.dtype == torch.int64
        assert int(x.min()) >= 0 and int(y.max()) <= 49
        assert torch.equal(y, x + 1)  # consecutive tokens, targets shifted by one
        seen_starts.update(x[:, 0].tolist())
    assert seen_starts == set(range(50 - 8))  # every start, and only valid ones (last: 41)
    again = sample_windows(tokens, 4, 8, torch.Generator().manual_seed(0))
    first = sample_windows(tokens, 4, 8, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], first[0])  # the generator fixes the batch
    with pytest.raises(ValueError, match="too few"):
        sample_windows(tokens[:8], 1, 8, gen)


def test_fixed_windows_cover_the_tokens_without_overlap():
    tokens = np.arange(101, dtype=np.uint16)
    every = fixed_windows(tokens, 10)
    assert every.shape == (10, 11)
    assert torch.equal(every[:, 0], torch.arange(0, 100, 10))  # targets: each of tokens 1..100 once
    some = fixed_windows(tokens, 10, 4)
    assert some.shape == (4, 11) and int(some.max()) <= 100
    assert (some[1:, 0] - some[:-1, 0] >= 10).all()
    assert fixed_windows(tokens, 10, 1000).shape == (10, 11)
    with pytest.raises(ValueError, match="too few"):
        fixed_windows(tokens[:10], 10)


def test_windows_loss_matches_calc_loss_batch(tiny_cfg):
    torch.manual_seed(0)
    model = GPTModel(tiny_cfg())
    windows = torch.randint(0, 97, (5, 17))
    ref = calc_loss_batch(windows[:, :-1], windows[:, 1:], model, torch.device("cpu")).item()
    model.train()
    assert windows_loss(model, windows, "cpu", batch_size=2) == pytest.approx(ref, rel=1e-5)
    assert model.training  # the mode is restored


# --- baselines ---------------------------------------------------------------------------------------


def test_bigram_cross_entropy_equals_a_plain_python_count():
    rng = np.random.default_rng(0)
    vocab = 12
    train = rng.integers(0, vocab - 2, 400)  # the last two tokens never occur in training
    held = np.concatenate([rng.integers(0, vocab, 100), [vocab - 1, 3]])
    pairs, firsts, unigrams = Counter(zip(train[:-1], train[1:])), Counter(train[:-1]), Counter(train)
    total = 0.0
    for a, b in zip(held[:-1], held[1:]):
        p_uni = (unigrams[b] + 1) / (len(train) + vocab)
        p = 0.7 * pairs[(a, b)] / firsts[a] + 0.3 * p_uni if firsts[a] else p_uni
        total -= math.log(p)
    expected = total / (len(held) - 1)
    assert bigram_cross_entropy(train, held, vocab, weight=0.7) == pytest.approx(expected, rel=1e-12)
    cycle = np.tile(np.arange(10), 40)  # each token always followed by the next: pairs carry information
    assert bigram_cross_entropy(cycle, cycle, vocab, 0.9) < bigram_cross_entropy(cycle, cycle, vocab, 0.0) - 1


# --- pretraining --------------------------------------------------------------------------------------


def test_pretrain_on_tokens_resumes_exactly(tiny_cfg):
    tokens = np.random.default_rng(0).integers(0, 97, 3000).astype(np.uint16)
    train, val = tokens[:2500], tokens[2500:]
    schedule = dict(total_steps=6, batch_size=2, peak_lr=1e-3, min_lr=1e-4, warmup_steps=2, eval_every=2)

    def run(stops):
        torch.manual_seed(1)
        model = GPTModel(tiny_cfg(drop_rate=0.1))  # dropout on: its random state must be restored too
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        state = None
        for stop in stops:
            state = pretrain_on_tokens(
                model, opt, train, val, "cpu", **schedule, state=state, stop_at_step=stop
            )
            state = json.loads(json.dumps({k: v for k, v in state.items() if k != "rng_state"})) | {
                "rng_state": state["rng_state"]
            }  # what a checkpoint keeps
        return model, state

    (m1, s1), (m2, s2) = run([6]), run([3, 6])
    assert s1["step"] == s2["step"] == 6 and s1["tokens_seen"] == 6 * 2 * 16
    assert s1["history"] == s2["history"]
    assert s1["history"]["steps"] == [2, 4, 6] and len(s1["history"]["batch_losses"]) == 6
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    with pytest.raises(ValueError, match="cannot resume"):
        pretrain_on_tokens(m1, torch.optim.AdamW(m1.parameters()), train, val, "cpu",
                           **{**schedule, "total_steps": 7}, state=s1)  # fmt: skip


# --- the base-model loader ----------------------------------------------------------------------------


FACTS = {"tokens_seen": 1234, "val_loss": 5.0, "books": ["pg1"]}  # what a training run records


def tiny_gpt2_file(path: Path, cfg: dict, seed: int = 1) -> tuple[Path, GPTModel]:
    """A GPT-2 ``model.safetensors`` in Hugging Face's layout holding a tiny random model."""
    torch.manual_seed(seed)
    model = GPTModel({**cfg, "qkv_bias": True}).eval()
    model.out_head.weight = model.tok_emb.weight  # GPT-2 ties them; its files store no head
    return write_hf_safetensors(model, path), model


@pytest.fixture
def tiny_gpt2_builder(monkeypatch, tiny_cfg):
    """Make load_base_model build GPT-2 at the tiny size (the real 124M is checked in a slow test)."""

    def build(path, size="124M"):
        model = GPTModel(tiny_cfg(qkv_bias=True))
        load_hf_weights_into_gpt(model, read_safetensors(path))
        return model.eval()

    monkeypatch.setattr(ch05, "load_gpt2_model", build)
    monkeypatch.delenv("COURSE_BASE_WEIGHTS", raising=False)


def probe_logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.arange(12).reshape(2, 6) % 97)


def never(size):
    raise AssertionError("the GPT-2 download must not be tried")


def missing(size):
    from shared.data import DownloadError

    raise DownloadError(f"Could not get the course file 'gpt2-hf/{size}/model.safetensors' (no network)")


def test_save_then_load_gives_identical_logits(tmp_path, tiny_cfg, monkeypatch, books_folder):
    monkeypatch.delenv("COURSE_BASE_WEIGHTS", raising=False)
    model = books_folder(tmp_path / "books", tiny_cfg(), **FACTS)
    assert sorted(p.name for p in (tmp_path / "books").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "books" / "config.json").read_text())
    assert config["model"] == tiny_cfg() and config["tokenizer"] == "gpt2" and config["tokens_seen"] == 1234
    base = load_base_model(weights="books", books_dir=tmp_path / "books")
    assert isinstance(base, LoadedBaseModel) and base.weights == "books"
    assert not base.model.training and torch.equal(probe_logits(base.model), probe_logits(model))
    assert base.description == (
        "the course's books model (books: 0.0M parameters; emb_dim 32, 2 layers, context 16; "
        "1,234 training tokens; held-out loss 5.000)"
    )
    with pytest.raises(AttributeError):  # a record: frozen
        base.weights = "gpt2"
    with torch.no_grad():  # a planted change is caught
        model.trf_blocks[0].att.W_query.weight[0, 0] += 1e-3
    assert not torch.equal(probe_logits(base.model), probe_logits(model))


def test_books_config_with_unknown_facts_still_loads(tmp_path, tiny_cfg, monkeypatch, books_folder):
    monkeypatch.delenv("COURSE_BASE_WEIGHTS", raising=False)
    model = books_folder(tmp_path / "books", tiny_cfg(), **FACTS)
    config_file = tmp_path / "books" / "config.json"
    config = json.loads(config_file.read_text())
    config["val_loss"] = None  # a run that never evaluated writes null
    config.pop("tokens_seen")
    config_file.write_text(json.dumps(config))
    base = load_base_model(weights="books", books_dir=tmp_path / "books")
    assert torch.equal(probe_logits(base.model), probe_logits(model))
    assert base.description == (
        "the course's books model (books: 0.0M parameters; emb_dim 32, 2 layers, context 16)"
    )


def test_gpt2_comes_first_when_present(tmp_path, tiny_cfg, tiny_gpt2_builder, books_folder):
    books_folder(tmp_path / "books", tiny_cfg())
    path, gpt2 = tiny_gpt2_file(tmp_path / "hf" / "model.safetensors", tiny_cfg())
    base = load_base_model("124M", books_dir=tmp_path / "books", gpt2_download=lambda size: path)
    assert base.weights == "gpt2" and base.description == "OpenAI's GPT-2 124M weights (model.safetensors)"
    assert torch.equal(probe_logits(base.model), probe_logits(gpt2))


def test_books_model_when_gpt2_is_missing(tmp_path, tiny_cfg, tiny_gpt2_builder, books_folder):
    books = books_folder(tmp_path / "books", tiny_cfg())
    base = load_base_model("124M", books_dir=tmp_path / "books", gpt2_download=missing)
    assert base.weights == "books" and torch.equal(probe_logits(base.model), probe_logits(books))
    base = load_base_model("124M", books_dir=tmp_path / "books")  # no download function at all
    assert base.weights == "books"


def test_error_when_nothing_is_there_names_both_ways(tmp_path, tiny_gpt2_builder):
    with pytest.raises(BaseModelUnavailable) as info:
        load_base_model("355M", books_dir=tmp_path / "none", gpt2_download=missing)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "GPT-2 355M: DownloadError" in message and "no model.safetensors" in message  # what was tried
    assert "https://huggingface.co/openai-community/gpt2-medium/resolve/main/model.safetensors" in message
    assert "1.5 GB" in message  # the download's size
    assert "python ch05_pretraining/train.py --data books" in message and "60 minutes" in message


def test_forced_choices(tmp_path, tiny_cfg, tiny_gpt2_builder, monkeypatch, books_folder):
    books_folder(tmp_path / "books", tiny_cfg())
    path, _ = tiny_gpt2_file(tmp_path / "hf" / "model.safetensors", tiny_cfg())
    base = load_base_model(weights="books", books_dir=tmp_path / "books", gpt2_download=never)
    assert base.weights == "books"
    with pytest.raises(BaseModelUnavailable, match="weights='gpt2'"):  # no fallback to the books model
        load_base_model(weights="gpt2", books_dir=tmp_path / "books", gpt2_download=missing)
    with pytest.raises(BaseModelUnavailable, match="weights='books'"):  # no fallback to GPT-2
        load_base_model(weights="books", books_dir=tmp_path / "none", gpt2_download=lambda size: path)
    base = load_base_model(weights="gpt2", books_dir=tmp_path / "books", gpt2_download=lambda size: path)
    assert base.weights == "gpt2"
    with pytest.raises(ValueError, match="'gpt2' or 'books'"):
        load_base_model(weights="gpt-2")
    with pytest.raises(ValueError, match="unknown GPT-2 size"):
        load_base_model("125M")


def test_environment_variable_forces_a_choice(
    tmp_path, tiny_cfg, tiny_gpt2_builder, monkeypatch, books_folder
):
    books_folder(tmp_path / "books", tiny_cfg())
    path, _ = tiny_gpt2_file(tmp_path / "hf" / "model.safetensors", tiny_cfg())
    monkeypatch.setenv("COURSE_BASE_WEIGHTS", "books")
    assert load_base_model(books_dir=tmp_path / "books", gpt2_download=never).weights == "books"
    base = load_base_model(weights="gpt2", books_dir=tmp_path / "books", gpt2_download=lambda s: path)
    assert base.weights == "gpt2"  # an explicit argument wins over the variable
    monkeypatch.setenv("COURSE_BASE_WEIGHTS", "gpt2")
    with pytest.raises(BaseModelUnavailable):
        load_base_model(books_dir=tmp_path / "books", gpt2_download=missing)
    monkeypatch.setenv("COURSE_BASE_WEIGHTS", "nonsense")
    with pytest.raises(ValueError, match="COURSE_BASE_WEIGHTS"):
        load_base_model(books_dir=tmp_path / "books")


def test_incomplete_books_folder(tmp_path, tiny_cfg, monkeypatch, books_folder):
    monkeypatch.delenv("COURSE_BASE_WEIGHTS", raising=False)
    books_folder(tmp_path / "books", tiny_cfg())
    (tmp_path / "books" / "model.safetensors").unlink()
    with pytest.raises(BaseModelUnavailable, match="no model.safetensors"):
        load_base_model(weights="books", books_dir=tmp_path / "books")
    books_folder(tmp_path / "other", tiny_cfg(emb_dim=16))
    config = json.loads((tmp_path / "other" / "config.json").read_text())
    config["model"]["emb_dim"] = 32  # weights of another shape than the config says
    (tmp_path / "other" / "config.json").write_text(json.dumps(config))
    with pytest.raises(BaseModelUnavailable, match="size mismatch"):
        load_base_model(weights="books", books_dir=tmp_path / "other")


@pytest.mark.slow
def test_real_gpt2_124m_layout_loads(tmp_path, monkeypatch):
    """A random model with GPT-2 124M's shapes, in Hugging Face's file layout, through the real builder."""
    monkeypatch.delenv("COURSE_BASE_WEIGHTS", raising=False)
    torch.manual_seed(0)
    gpt2 = GPTModel(gpt2_config("124M", qkv_bias=True, drop_rate=0.0)).eval()
    gpt2.out_head.weight = gpt2.tok_emb.weight
    path = write_hf_safetensors(gpt2, tmp_path / "model.safetensors")
    base = load_base_model("124M", gpt2_download=lambda size: path)
    assert base.weights == "gpt2" and base.description == "OpenAI's GPT-2 124M weights (model.safetensors)"
    assert torch.equal(probe_logits(base.model), probe_logits(gpt2))
