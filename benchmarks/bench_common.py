"""What the benchmark scripts share: the header (date, machine, versions), models, tables.

Not a benchmark itself; ``bench_training.py``, ``bench_generation.py`` and ``bench_loading.py``
import it (they run as ``python benchmarks/bench_x.py``, so this folder is on ``sys.path``).
"""

from __future__ import annotations

import datetime
import importlib
import importlib.metadata
import os
import platform
import statistics
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: models are built from configs
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

SEED = 123
BOOK_PACKAGE = "llms-from-scratch"
BOOK_MISSING = (
    f"book package `{BOOK_PACKAGE}` not installed: its rows are skipped "
    f"(install it with `.venv/bin/pip install --no-deps {BOOK_PACKAGE}`)"
)


def cpu_name() -> str:
    """The CPU's model name, as the operating system reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is missing)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def version_of(dist: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def optional_import(module: str):
    """The module, or None where it (or a package it needs) is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def set_threads(threads: int | None) -> None:
    """Use ``threads`` torch threads (None: torch's default)."""
    if threads:
        torch.set_num_threads(threads)


def header(title: str) -> str:
    """Date, machine, versions and threads, as Markdown lines."""
    flags = cpu_flags()
    wanted = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    shown = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in wanted)
    versions = [f"Python {platform.python_version()}", f"torch {torch.__version__}"]
    for dist in ("transformers", BOOK_PACKAGE):
        versions.append(f"{dist} {version_of(dist) or 'not installed'}")
    load = os.getloadavg()
    lines = [
        f"**{title}**  ",
        f"Date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}  ",
        f"Machine: {cpu_name()}, {os.cpu_count()} logical cores; {shown}  ",
        f"Versions: {', '.join(versions)}  ",
        f"Torch threads: {torch.get_num_threads()}; load average (1, 5, 15 min) before: "
        f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}  ",
    ]
    return "\n".join(lines)


def load_line() -> str:
    """The load average now, as one Markdown line."""
    load = os.getloadavg()
    return f"Load average (1, 5, 15 min) after: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}"


def gpt2_hf_config(n_layer: int = 12, n_embd: int = 768, n_head: int = 12, n_positions: int = 1024, **kw):
    """A Hugging Face ``GPT2Config`` (sdpa attention), built offline; dropout from ``kw`` (default 0)."""
    from transformers import GPT2Config

    p = kw.pop("pdrop", 0.0)
    return GPT2Config(
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_positions=n_positions,
        vocab_size=kw.pop("vocab_size", 50257),
        resid_pdrop=p,
        embd_pdrop=p,
        attn_pdrop=p,
        attn_implementation="sdpa",
        **kw,
    )


def build_hf_model(config, seed: int = SEED):
    """A randomly initialised (seeded) ``GPT2LMHeadModel`` with sdpa attention."""
    import transformers
    from transformers import GPT2LMHeadModel

    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    assert model.config._attn_implementation == "sdpa", model.config._attn_implementation
    return model


def hf_to_book_params(state: dict, n_layers: int) -> dict:
    """GPT-2 weights under Hugging Face's names as the NumPy dict the book's loader reads.

    The book's ``load_weights_into_gpt(gpt, params)`` takes the nested layout of its TensorFlow
    reader, which is chapter 5's (``nest_openai_variables``) except that the final norm's ``g`` and
    ``b`` sit at the top level. The names go through chapter 5's one GPT-2 mapping.
    """
    import numpy as np

    from gpt_from_scratch.ch05 import gpt2_names, nest_openai_variables, openai_variable_name

    s = {k.removeprefix("transformer."): v for k, v in state.items()}  # torch tensors or NumPy arrays
    variables = {openai_variable_name(name): np.asarray(s[name]) for name in gpt2_names(n_layers)}
    params = nest_openai_variables(variables, n_layers)
    params.update(params.pop("ln_f"))  # the book reads the final norm from params["g"] and params["b"]
    return params


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """``median (min–max)`` of ``values``."""
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def markdown_table(head: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A Markdown table; ``align`` is one character per column, ``l`` or ``r`` (default: l, then r)."""
    align = align or "l" + "r" * (len(head) - 1)
    marks = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def verdict(value: float, target: float) -> str:
    """'met' or 'missed' for a ratio and its target."""
    return "met" if value >= target else "missed"
