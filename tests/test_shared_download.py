"""The one download path: cache, mirror, URLs; checksums; atomic writes; resume; errors."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import zipfile

import pytest

from shared import data, registry
from shared.data import DownloadError, fetch, verify
from shared.registry import RemoteFile

GOOD = b"The quick brown fox jumps over the lazy dog.\n" * 2000  # about 90 KB
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


class _Server:
    """A loopback HTTP server with Range support; can cut the first response short."""

    def __init__(self, payload: bytes, cut_first_at: int | None = None, honour_range: bool = True):
        self.payload = payload
        self.cut_first_at = cut_first_at
        self.honour_range = honour_range
        self.requests: list[str | None] = []  # the Range header of each request
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                rng = self.headers.get("Range")
                outer.requests.append(rng)
                rng = rng if outer.honour_range else None
                start = int(rng.split("=")[1].rstrip("-")) if rng else 0
                body = outer.payload[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut_first_at is not None and len(outer.requests) == 1:
                    self.wfile.write(body[: outer.cut_first_at])  # then drop the connection
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/file.txt"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/nothing-listens-here.txt"


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """An empty cache, no mirror, and a test entry 'test/file.txt' in the registry."""
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("COURSE_DATA_MIRROR", raising=False)

    def register(urls, sha256=GOOD_SHA, size=None, **kw):
        entry = RemoteFile("test/file.txt", tuple(urls), sha256, size, **kw)
        monkeypatch.setitem(data.FILES, entry.name, entry)
        return entry

    return register


def test_unknown_file_name_lists_known_files():
    with pytest.raises(KeyError, match="unknown course file 'nope.txt'.*the-verdict.txt"):
        fetch("nope.txt")


def test_download_verifies_and_writes_atomically(sandbox, tmp_path):
    server = _Server(GOOD)
    try:
        sandbox([server.url])
        path = fetch("test/file.txt", quiet=True)
    finally:
        server.close()
    assert path == tmp_path / "cache" / "test" / "file.txt"
    assert path.read_bytes() == GOOD
    assert not list(path.parent.glob("*.part"))


def test_cached_good_copy_is_used_without_network(sandbox, tmp_path):
    target = tmp_path / "cache" / "test" / "file.txt"
    target.parent.mkdir(parents=True)
    target.write_bytes(GOOD)
    sandbox([_closed_port_url()])
    assert fetch("test/file.txt", quiet=True).read_bytes() == GOOD


def test_checksum_mismatch_never_replaces_the_existing_file(sandbox, tmp_path):
    target = tmp_path / "cache" / "test" / "file.txt"
    target.parent.mkdir(parents=True)
    old = b"an older copy that a person may still want\n"
    target.write_bytes(old)
    server = _Server(GOOD[:-1] + b"!")  # right length, wrong bytes
    try:
        sandbox([server.url])
        with pytest.raises(DownloadError, match="corrupt"):
            fetch("test/file.txt", quiet=True)
    finally:
        server.close()
    assert target.read_bytes() == old
    assert not list(target.parent.glob("*.part")), "a corrupt download must not be kept"


def test_corrupt_mirror_copy_is_rejected_and_good_backup_url_used(sandbox, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror" / "test"
    mirror.mkdir(parents=True)
    (mirror / "file.txt").write_bytes(b"corrupt")
    monkeypatch.setenv("COURSE_DATA_MIRROR", str(tmp_path / "mirror"))
    server = _Server(GOOD)
    try:
        sandbox([_closed_port_url(), server.url])
        assert fetch("test/file.txt", quiet=True).read_bytes() == GOOD
    finally:
        server.close()


def test_mirror_is_used_before_the_network(sandbox, tmp_path, monkeypatch):
    (tmp_path / "mirror" / "test").mkdir(parents=True)
    (tmp_path / "mirror" / "test" / "file.txt").write_bytes(GOOD)
    monkeypatch.setenv("COURSE_DATA_MIRROR", str(tmp_path / "mirror"))
    sandbox([_closed_port_url()])
    assert fetch("test/file.txt", quiet=True).read_bytes() == GOOD


def test_interrupted_download_resumes(sandbox, tmp_path):
    half = len(GOOD) // 2
    server = _Server(GOOD, cut_first_at=half)
    try:
        sandbox([server.url])
        with pytest.raises(DownloadError):
            fetch("test/file.txt", quiet=True)
        part = tmp_path / "cache" / "test" / "file.txt.part"
        assert part.stat().st_size == half, "the partial download is kept for resuming"
        assert not (tmp_path / "cache" / "test" / "file.txt").exists()
        path = fetch("test/file.txt", quiet=True)
    finally:
        server.close()
    assert path.read_bytes() == GOOD
    assert server.requests == [None, f"bytes={half}-"]


def test_resume_restarts_when_the_server_ignores_ranges(sandbox, tmp_path):
    server = _Server(GOOD, cut_first_at=len(GOOD) // 3, honour_range=False)
    try:
        sandbox([server.url])
        with pytest.raises(DownloadError):
            fetch("test/file.txt", quiet=True)
        assert fetch("test/file.txt", quiet=True).read_bytes() == GOOD  # not the part twice
    finally:
        server.close()


def test_no_network_and_no_mirror_gives_an_actionable_error(sandbox):
    url = _closed_port_url()
    sandbox([url])
    with pytest.raises(DownloadError) as info:
        fetch("test/file.txt", quiet=True)
    message = str(info.value)
    assert "'test/file.txt'" in message
    assert "cache" in message and "COURSE_DATA_MIRROR is not set" in message and url in message
    assert "set COURSE_DATA_MIRROR" in message and "HTTPS_PROXY" in message


def test_zip_verified_by_its_members(tmp_path):
    member = b"ham\tHello\n"
    entry = RemoteFile("x.zip", ("http://unused",), zip_members={"data": hashlib.sha256(member).hexdigest()})
    good, bad = tmp_path / "good.zip", tmp_path / "bad.zip"
    for path, content in [(good, member), (bad, b"spam\tBuy\n")]:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("data", content)
    assert verify(good, entry) is None
    assert "member data" in verify(bad, entry)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    assert "not a valid archive" in verify(tmp_path / "junk.zip", entry)


def test_every_mirrored_registry_file_verifies(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    # GPT-2's weights are not in the mirror; the books model ships in the repository (test_books_model.py)
    names = [n for n in registry.FILES if not n.startswith(("gpt2/", "gpt2-hf/", "books_model/"))]
    for name in names:
        assert fetch(name, quiet=True).is_file(), name
    # the tokenizer files inside the GPT-2 checkpoint folders are found by their base name
    assert fetch("gpt2/355M/vocab.bpe", quiet=True).stat().st_size == 456318


def test_gpt2_size_is_validated():
    with pytest.raises(ValueError, match="valid sizes: 124M, 355M, 774M, 1558M"):
        data.fetch_gpt2_checkpoint("125M")
    with pytest.raises(ValueError, match="valid sizes"):
        data.fetch_gpt2_safetensors("small")


def test_registry_urls_are_https_and_names_unique():
    entries = registry._entries()
    for entry in entries:
        assert entry.urls and all(u.startswith("https://") for u in entry.urls), entry.name
    assert len(registry.FILES) == len(entries), "a name is registered twice"
    with pytest.raises(ValueError, match="more than once: the-verdict.txt"):
        registry._index([entries[0], entries[1], entries[0]])


def test_gutenberg_books_are_registered_and_read_like_the_mirror(tmp_path, monkeypatch):
    """Gutenberg serves a BOM and CRLF line ends; read_text gives the same text as the mirror's LF copy."""
    assert len(registry.GUTENBERG_BOOKS) == 15
    entry = registry.FILES["gutenberg/pg84.txt"]
    assert entry.urls == ("https://www.gutenberg.org/cache/epub/84/pg84.txt",)
    text = "The Project Gutenberg eBook of Frankenstein\n\nLetter 1\n"
    mirror = tmp_path / "mirror"
    (mirror / "gutenberg").mkdir(parents=True)
    (mirror / "gutenberg" / "pg84.txt").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    monkeypatch.setenv("COURSE_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "cache"))
    assert data.read_text("gutenberg/pg84.txt") == text
    assert (tmp_path / "cache" / "gutenberg" / "pg84.txt").is_file()
