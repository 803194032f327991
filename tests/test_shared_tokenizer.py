"""GPT-2's tokenizer gives the same ids from tiktoken's download and from the course's files."""

from __future__ import annotations

import tiktoken

from shared import tokenizer as tok

# Known ids for this sentence (from the data mirror's MANIFEST, checked against tiktoken).
SENTENCE = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
IDS = [
    15496,
    11,
    466,
    345,
    588,
    8887,
    30,
    220,
    50256,
    554,
    262,
    4252,
    18250,
    8812,
    2114,
    286,
    617,
    34680,
    27271,
    13,
]


def _check(enc: tiktoken.Encoding) -> None:
    assert enc.n_vocab == 50257
    ids = enc.encode(SENTENCE, allowed_special={"<|endoftext|>"})
    assert ids == IDS
    assert enc.decode(ids) == SENTENCE


def test_encoding_built_from_registry_files(mirror):
    _check(tok.gpt2_encoding_from_files())


def test_tiktoken_download_path_gives_the_same_ids(mirror, monkeypatch):
    # tiktoken's own path, fed from its cache folder in the mirror instead of the network
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(mirror / "tiktoken_cache"))
    _check(tiktoken.get_encoding("gpt2"))
    _check(tok.get_gpt2_tokenizer.__wrapped__("tiktoken"))


def test_auto_falls_back_to_files_when_tiktoken_cannot_download(mirror, monkeypatch):
    def offline(name):
        raise ConnectionError("no network")

    monkeypatch.setattr(tok.tiktoken, "get_encoding", offline)
    _check(tok.get_gpt2_tokenizer.__wrapped__("auto"))


def test_bad_source_is_rejected():
    import pytest

    with pytest.raises(ValueError, match="source must be"):
        tok.get_gpt2_tokenizer.__wrapped__("web")


def test_a_download_that_never_answers_falls_back_in_bounded_time(tmp_path, monkeypatch, capsys):
    """Issue 21: behind a proxy that accepts connections and never answers, the files are used."""
    import socket
    import time

    import tiktoken.registry

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts (the kernel does), never answers
    proxy = f"http://127.0.0.1:{silent.getsockname()[1]}"
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # as in a fresh process
    monkeypatch.setattr(tok, "TIKTOKEN_TIMEOUT_S", 1.0)
    try:
        start = time.monotonic()
        enc = tok.get_gpt2_tokenizer.__wrapped__("auto")
        assert time.monotonic() - start < 10
        _check(enc)
        assert "did not finish in 1 s" in capsys.readouterr().err
    finally:
        silent.close()  # the waiting download fails now, and its thread ends
