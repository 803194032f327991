"""Shared fixtures: data files, the tokenizer, one tiny GPT configuration, thread settings, a script runner.

Tests import the course's code from the generated package (``from gpt_from_scratch.ch04 import
GPTModel``), installed editable by ``scripts/install.sh``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

TINY_CFG = {
    "vocab_size": 97,
    "context_length": 16,
    "emb_dim": 32,
    "n_heads": 4,
    "n_layers": 2,
    "drop_rate": 0.0,
    "qkv_bias": False,
}


@pytest.fixture(scope="session")
def tiny_cfg() -> Callable[..., dict]:
    """The one tiny GPT configuration of the test suite: ``tiny_cfg(**overrides)`` returns a fresh dict."""
    return lambda **overrides: {**TINY_CFG, **overrides}


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The offline data mirror; tests that need real data are skipped without it."""
    value = os.environ.get("COURSE_DATA_MIRROR")
    if not value or not Path(value).is_dir():
        pytest.skip("COURSE_DATA_MIRROR is not set to a folder")
    return Path(value)


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    """GPT-2's tokenizer (tiktoken, or built from the registry's files offline)."""
    from shared.tokenizer import get_gpt2_tokenizer

    return get_gpt2_tokenizer()


@pytest.fixture(scope="session")
def verdict_text() -> str:
    """The text of "The Verdict", the course's small training text."""
    from shared.data import read_text

    return read_text("the-verdict.txt")


@pytest.fixture(scope="module")
def one_thread():
    """Run a test module's tiny models on one thread: faster, and far faster on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def books_folder(tiny_cfg) -> Callable[..., object]:
    """Write a small random books model as a base-model folder, through chapter 5's ``save_base_model``.

    ``books_folder(folder, cfg=None, seed=0, **facts)`` writes ``folder`` (model.safetensors and
    config.json, ``facts`` added to the config), and returns the saved ``GPTModel`` in eval mode.
    """
    import torch

    from gpt_from_scratch.ch04 import GPTModel
    from gpt_from_scratch.ch05 import save_base_model

    def write(folder: Path, cfg: dict | None = None, seed: int = 0, **facts) -> GPTModel:
        torch.manual_seed(seed)
        model = GPTModel(cfg or tiny_cfg()).eval()
        save_base_model(model, folder, **facts)
        return model

    return write


@dataclass
class ScriptRun:
    """What one call of a script's ``main(argv)`` did: its exit code, stdout and stderr."""

    code: int
    out: str
    err: str


_SCRIPTS: dict[Path, ModuleType] = {}


def load_script(path: str | os.PathLike) -> ModuleType:
    """A script (e.g. ``ch06_classification/finetune.py``) imported as a module, once per test session."""
    path = Path(path).resolve()
    if path not in _SCRIPTS:
        spec = importlib.util.spec_from_file_location(f"script_{path.parent.name}_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _SCRIPTS[path] = module
    return _SCRIPTS[path]


def _set_env(name: str, value: str | None) -> None:
    """Set an environment variable, or remove it (None)."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def run_script_main(
    path: str | os.PathLike,
    *args: str,
    cwd: str | os.PathLike | None = None,
    env: dict[str, str | None] | None = None,
    check: bool = True,
) -> ScriptRun:
    """Call a script's ``main(list(args))`` in this process, as ``python path *args`` would run it.

    stdout and stderr are captured; a ``SystemExit`` gives the exit code (a message: printed to
    stderr, code 1, as Python does). ``cwd`` and ``env`` (None removes a variable) hold during the
    call only, and so does PyTorch's number of threads. ``check`` asserts exit code 0.
    """
    import torch

    main = load_script(path).main
    out, err = io.StringIO(), io.StringIO()
    saved_env = {name: os.environ.get(name) for name in env or {}}
    saved_cwd, threads = os.getcwd(), torch.get_num_threads()
    try:
        for name, value in (env or {}).items():
            _set_env(name, value)
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:
                if isinstance(exc.code, str):
                    print(exc.code, file=err)
                    code = 1
                else:
                    code = exc.code or 0
    finally:
        os.chdir(saved_cwd)
        torch.set_num_threads(threads)
        for name, value in saved_env.items():
            _set_env(name, value)
    done = ScriptRun(code=code, out=out.getvalue(), err=err.getvalue())
    if check:
        assert done.code == 0, f"{Path(path).name} exited with {done.code}:\n{done.out}\n{done.err}"
    return done


@pytest.fixture(scope="session")
def run_script() -> Callable[..., ScriptRun]:
    """The in-process script runner: ``run_script(path, *args, cwd=..., env=..., check=True)``."""
    return run_script_main


@pytest.fixture(scope="session")
def script_module() -> Callable[[str | os.PathLike], ModuleType]:
    """``script_module(path)``: a script imported as a module (to call its functions in a test)."""
    return load_script
