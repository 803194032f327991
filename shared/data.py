"""One way to get every data file: cache, then mirror, then the official URLs.

``fetch(name)`` returns the path of a verified local copy of a file from
``shared.registry.FILES``. It looks in the cache directory first, then in the folder
named by ``COURSE_DATA_MIRROR``, then downloads from each URL in turn (resuming a
partial download). Every copy is checked (sha256, or size where no checksum is
known) and written to a temporary file that is renamed into place only when good.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from shared.registry import FILES, GPT2_CKPT_FILES, GPT2_HF_REPOS, GPT2_SIZES, RemoteFile
from shared.runtime import REPO_ROOT

CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """A course file could not be obtained from any place; the message says what to do.

    Raised where it may be caught in the middle of another error (tiktoken's failed download, say),
    it hides that chained context: the course's own message is the one a learner needs to read.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.__suppress_context__ = True  # as `raise ... from None`, wherever it is raised

    def _render_traceback_(self) -> list[str]:
        """What Jupyter shows for this error: the message alone (``%tb`` still shows the frames)."""
        return [f"{type(self).__name__}: {self}"]


def cache_dir() -> Path:
    """The download cache: ``COURSE_DATA_DIR`` if set, else ``data/`` in the repository."""
    return Path(os.environ.get("COURSE_DATA_DIR") or REPO_ROOT / "data")


def mirror_dir() -> Path | None:
    """The offline mirror named by ``COURSE_DATA_MIRROR``, or None."""
    value = os.environ.get("COURSE_DATA_MIRROR")
    return Path(value).expanduser() if value else None


def sha256_of(path: Path) -> str:
    """The sha256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, entry: RemoteFile) -> str | None:
    """None when ``path`` is a good copy of ``entry``, else the reason it is not."""
    if not path.is_file():
        return "missing"
    if entry.size is not None and path.stat().st_size != entry.size:
        return f"size {path.stat().st_size} bytes, expected {entry.size}"
    if entry.sha256 is not None:
        got = sha256_of(path)
        return None if got == entry.sha256 else f"sha256 {got[:12]}..., expected {entry.sha256[:12]}..."
    if entry.zip_members:
        try:
            with zipfile.ZipFile(path) as zf:
                for member, want in entry.zip_members.items():
                    got = hashlib.sha256(zf.read(member)).hexdigest()
                    if got != want:
                        return f"member {member} has sha256 {got[:12]}..., expected {want[:12]}..."
        except (zipfile.BadZipFile, KeyError) as exc:
            return f"not a valid archive ({exc})"
    return None


def _mirror_candidates(entry: RemoteFile, mirror: Path) -> list[Path]:
    """Where a mirror may hold the file: its own name, or its base name if checkable."""
    places = [mirror / entry.name]
    if "/" in entry.name and (entry.sha256 or entry.zip_members):
        places.append(mirror / Path(entry.name).name)
    return places


def _download(url: str, part: Path, quiet: bool, timeout: float) -> None:
    """Download ``url`` into ``part``, resuming from its current length if it exists."""
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "gpt-from-scratch-course"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if start and response.status != 206:  # server ignored the range: start again
            start = 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length else None
        mode = "ab" if start else "wb"
        with (
            open(part, mode) as fh,
            tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                desc=part.name.removesuffix(".part"),
                disable=quiet,
            ) as bar,
        ):
            for block in iter(lambda: response.read(CHUNK), b""):
                fh.write(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size != total:
        raise OSError(f"connection closed after {part.stat().st_size} of {total} bytes")


def fetch(name: str, *, quiet: bool = False, timeout: float = 30.0) -> Path:
    """Return a verified local copy of the registered file ``name``, getting it if needed."""
    if name not in FILES:
        known = ", ".join(sorted(n for n in FILES if "/" not in n))
        raise KeyError(f"unknown course file {name!r}; registered files include: {known}")
    entry = FILES[name]
    target = cache_dir() / entry.name
    tried: list[str] = []

    problem = verify(target, entry)
    if problem is None:
        return target
    tried.append(f"cache {_shown(target)}: {problem}")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")

    mirror = mirror_dir()
    if mirror is None:
        tried.append("mirror: COURSE_DATA_MIRROR is not set")
    else:
        for candidate in _mirror_candidates(entry, mirror):
            problem = verify(candidate, entry)
            if problem is None:
                tmp = target.with_name(target.name + ".mirror-tmp")
                shutil.copyfile(candidate, tmp)
                os.replace(tmp, target)
                return target
            tried.append(f"mirror {_shown(candidate)}: {problem}")

    for url in entry.urls:
        try:
            _download(url, part, quiet, timeout)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            tried.append(f"{url}: {exc}")  # a partial .part file is kept for resuming
            continue
        problem = verify(part, entry)
        if problem is None:
            os.replace(part, target)  # atomic: a good file appears whole or not at all
            return target
        part.unlink(missing_ok=True)  # a complete but wrong file is useless for resuming
        tried.append(f"{url}: downloaded file is corrupt ({problem})")

    others = [n for n in _needed_with(name) if _local_copy(FILES[n]) is None]
    raise DownloadError(_failure_message(entry, target, tried, others))


def _shown(path: Path) -> str:
    """``path`` for a message: relative to the mirror, the cache set by the user or the repository."""
    data_dir = os.environ.get("COURSE_DATA_DIR")
    places = [
        ("$COURSE_DATA_MIRROR/", mirror_dir()),
        ("$COURSE_DATA_DIR/", Path(data_dir) if data_dir else None),
    ]
    for name, base in [*places, ("", REPO_ROOT)]:
        if base is not None and path.is_relative_to(base):
            return name + path.relative_to(base).as_posix()
    return str(path)


def _needed_with(name: str) -> list[str]:
    """Registered files that are only useful together with ``name`` (tokenizer pair, checkpoint parts)."""
    if name in ("encoder.json", "vocab.bpe"):
        return [n for n in ("encoder.json", "vocab.bpe") if n != name]
    if name.startswith("gpt2/") and name.count("/") == 2:
        size = name.split("/")[1]
        return [f"gpt2/{size}/{part}" for part in GPT2_CKPT_FILES if f"gpt2/{size}/{part}" != name]
    return []


def _local_copy(entry: RemoteFile) -> Path | None:
    """A good copy of ``entry`` in the cache or the mirror (nothing is downloaded), or None."""
    mirror = mirror_dir()
    places = [cache_dir() / entry.name, *(_mirror_candidates(entry, mirror) if mirror else [])]
    return next((p for p in places if verify(p, entry) is None), None)


def _failure_message(entry: RemoteFile, target: Path, tried: list[str], others: list[str]) -> str:
    """What went wrong for ``entry`` (and which companion files are missing too), and how to fix it."""
    places = "\n".join(f"  - {line}" for line in tried)
    names = [entry.name, *others]
    also = f" Also missing, and needed with it: {', '.join(repr(n) for n in others)}." if others else ""
    return (
        f"Could not get the course file {entry.name!r}.{also}\nPlaces tried for {entry.name!r}:\n{places}\n"
        "How to fix it:\n"
        "  - online: check the connection (a proxy is used if HTTPS_PROXY is set) and run the cell again;\n"
        f"  - offline: put {', '.join(repr(n) for n in names)} in a folder and set COURSE_DATA_MIRROR to it\n"
        "    BEFORE starting JupyterLab, or in the notebook with `%env COURSE_DATA_MIRROR=/path/to/folder`,\n"
        "    then run the cell again;\n"
        f"  - or download {entry.urls[0]} yourself and save it as {_shown(target)}."
    )


def read_text(name: str) -> str:
    """Fetch a registered text file and return its contents (UTF-8).

    A leading byte order mark is dropped and line ends become ``\\n``, so a file reads the same
    whether it came from the mirror or from a host that adds a BOM and CRLF (Project Gutenberg).
    """
    return fetch(name).read_text(encoding="utf-8-sig")  # text mode turns \r\n into \n


def _check_gpt2_size(size: str) -> None:
    if size not in GPT2_SIZES:
        raise ValueError(f"unknown GPT-2 size {size!r}; valid sizes: {', '.join(GPT2_SIZES)}")


def fetch_gpt2_checkpoint(size: str = "124M") -> Path:
    """Download OpenAI's GPT-2 TensorFlow checkpoint of ``size``; return its folder."""
    _check_gpt2_size(size)
    paths = [fetch(f"gpt2/{size}/{part}") for part in GPT2_CKPT_FILES]
    return paths[0].parent


def fetch_gpt2_safetensors(size: str = "124M") -> Path:
    """Download GPT-2 ``size`` as a Hugging Face safetensors file; return its path."""
    _check_gpt2_size(size)
    assert size in GPT2_HF_REPOS
    return fetch(f"gpt2-hf/{size}/model.safetensors")
