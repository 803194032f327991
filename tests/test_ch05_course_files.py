"""Files the course writes and reads (issue 21): one atomic writer, one error type for unreadable files.

A write that fails half-way (a full disk, here a file-size limit) must leave the previous file as it
was; a truncated or random checkpoint, weights or token file must give one ``CourseFileError`` that
names the file and the fix, never a suggestion to load with ``weights_only=False``.
"""

from __future__ import annotations

import contextlib
import re
import resource
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import SafetensorError

from gpt_from_scratch.ch04 import GPTModel
from gpt_from_scratch.ch05 import (
    BaseModelUnavailable,
    CourseFileError,
    atomic_write,
    atomic_write_text,
    load_base_model,
    load_checkpoint,
    read_safetensors,
    read_token_file,
    save_base_model,
    save_checkpoint,
    write_token_file,
)
from gpt_from_scratch.ch06 import load_classifier, save_classifier
from gpt_from_scratch.ch07 import save_responses

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def file_size_limit(n_bytes: int):
    """Writes beyond ``n_bytes`` fail with OSError (EFBIG), as on a full disk."""
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)


needs_rlimit = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE behaviour is Linux's")


@needs_rlimit
def test_save_responses_keeps_the_previous_file_when_a_write_fails(tmp_path):
    path = tmp_path / "responses.json"
    save_responses([{"instruction": "a", "response": "b"}], path)
    before = path.read_bytes()
    big = [{"instruction": "x" * 1000, "response": "y" * 1000}] * 50
    with pytest.raises(OSError), file_size_limit(4096):
        save_responses(big, path)
    assert path.read_bytes() == before  # the old code left truncated JSON here
    assert sorted(p.name for p in tmp_path.iterdir()) == ["responses.json"]  # no temporary file left


@needs_rlimit
def test_save_checkpoint_and_base_model_keep_the_previous_files_when_a_write_fails(tmp_path, tiny_cfg):
    model = GPTModel(tiny_cfg())
    save_checkpoint(tmp_path / "last.pth", model, None, step=1)
    save_base_model(model, tmp_path / "books")
    books = tmp_path / "books"
    files = [tmp_path / "last.pth", books / "model.safetensors", books / "config.json"]
    before = [p.read_bytes() for p in files]
    write_errors = (OSError, RuntimeError, SafetensorError)  # how torch and safetensors report EFBIG
    with pytest.raises(write_errors), file_size_limit(2048):
        save_checkpoint(tmp_path / "last.pth", model, None, step=2)
    with pytest.raises(write_errors), file_size_limit(2048):
        save_base_model(model, tmp_path / "books")
    assert [p.read_bytes() for p in files] == before
    assert load_checkpoint(tmp_path / "last.pth", GPTModel(tiny_cfg()))["step"] == 1


def test_atomic_write_removes_its_temporary_file_on_any_error(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_every_file_the_course_writes_goes_through_the_atomic_writer():
    """No direct write_text/torch.save/to_csv/save_file/open(.., "w") of a final path (library, scripts)."""
    sources = sorted((ROOT / "gpt_from_scratch").glob("ch*.py")) + sorted(ROOT.glob("ch*_*/*.py"))
    writer = re.compile(
        r"\.write_text\(|\.write_bytes\(|torch\.save\(|\.to_csv\(|save_file\(|\.tofile\(|open\([^)]*['\"][wa]b?['\"]"
    )
    bad = []
    for source in sources:
        if source.name == "previous_chapters.py":
            continue  # generated from the same cells as gpt_from_scratch/
        for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            if writer.search(line) and "tmp" not in line and "fh" not in line:
                bad.append(f"{source.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not bad, "write through atomic_write / atomic_write_text:\n" + "\n".join(bad)


def one_line_error(exc: BaseException, path: Path) -> str:
    message = str(exc)
    assert isinstance(exc, CourseFileError) and isinstance(exc, ValueError)
    assert "\n" not in message and str(path) in message
    assert "weights_only" not in message
    assert "delete" in message or "re-run" in message
    return message


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_load_checkpoint_names_an_unreadable_file(tmp_path, tiny_cfg, damage):
    path = tmp_path / "last.pth"
    save_checkpoint(path, GPTModel(tiny_cfg()), None)
    data = path.read_bytes()
    damaged = {"truncated": data[: len(data) // 2], "random": np.random.bytes(4096), "empty": b""}
    path.write_bytes(damaged[damage])
    with pytest.raises(CourseFileError) as info:
        load_checkpoint(path, GPTModel(tiny_cfg()))
    one_line_error(info.value, path)
    with pytest.raises(CourseFileError) as info:
        load_classifier(path)
    one_line_error(info.value, path)


def test_load_checkpoint_of_another_model_size_is_one_line(tmp_path, tiny_cfg):
    path = tmp_path / "last.pth"
    save_checkpoint(path, GPTModel(tiny_cfg()), None)
    with pytest.raises(CourseFileError) as info:
        load_checkpoint(path, GPTModel(tiny_cfg(emb_dim=64)))
    assert "another size" in one_line_error(info.value, path)


def test_load_checkpoint_of_a_plain_tensor_file(tmp_path, tiny_cfg):
    path = tmp_path / "other.pth"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CourseFileError) as info:
        load_checkpoint(path, GPTModel(tiny_cfg()))
    one_line_error(info.value, path)


def test_classifier_roundtrip_still_works(tmp_path, tiny_cfg):
    model = GPTModel(tiny_cfg())
    model.out_head = torch.nn.Linear(model.cfg["emb_dim"], 2)
    save_classifier(tmp_path / "classifier.pth", model)
    loaded, _ = load_classifier(tmp_path / "classifier.pth")
    assert torch.equal(loaded.out_head.weight, model.out_head.weight)


@pytest.mark.parametrize(
    "content",
    [
        b"\x10\x00",  # shorter than the 8-byte length
        (10**15).to_bytes(8, "little") + b"{}",  # an absurd header length (MemoryError before)
        (20).to_bytes(8, "little") + b"{not json at all....",  # a header that is not JSON
        (2).to_bytes(8, "little") + b"[]",  # JSON, but not an object
    ],
)
def test_read_safetensors_refuses_a_bad_header_in_one_line(tmp_path, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(CourseFileError) as info:
        read_safetensors(path)
    one_line_error(info.value, path)


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_load_base_model_books_names_a_damaged_model_safetensors(tmp_path, books_folder, damage):
    folder = tmp_path / "books"
    books_folder(folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else np.random.bytes(len(data)))
    with pytest.raises(BaseModelUnavailable) as info:
        load_base_model(weights="books", books_dir=folder)
    assert "CourseFileError" in str(info.value) and str(weights) in str(info.value)


def test_read_token_file_names_an_empty_or_truncated_file(tmp_path, gpt2_tokenizer):
    path = tmp_path / "val.bin"
    write_token_file({"a": "one two three"}, gpt2_tokenizer, path)
    path.write_bytes(b"")
    with pytest.raises(CourseFileError) as info:
        read_token_file(path)
    one_line_error(info.value, path)
    write_token_file({"a": "one two three"}, gpt2_tokenizer, path)
    meta = Path(f"{path}.json")
    meta.write_text(meta.read_text()[:10])
    with pytest.raises(CourseFileError) as info:
        read_token_file(path)
    one_line_error(info.value, path)
