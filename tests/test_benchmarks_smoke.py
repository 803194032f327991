"""Smoke test of the benchmark scripts: they run end to end on a tiny model and print their tables.

Nothing here is timed or compared with a speed: the scripts' numbers are for benchmarks/README.md.
"""

import sys

import pytest

from shared.runtime import REPO_ROOT

pytest.importorskip("transformers")  # the reference of every benchmark

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))  # the scripts import their shared helpers by name

import bench_generation  # noqa: E402
import bench_training  # noqa: E402


def run_script(module, monkeypatch, capsys, *args: str) -> str:
    """Run a benchmark script's ``main`` with these command-line arguments; return what it printed."""
    monkeypatch.setattr(sys, "argv", [module.__file__, *args])
    module.main()
    return capsys.readouterr().out


def test_training_benchmark_runs_on_a_tiny_model(monkeypatch, capsys):
    out = run_script(bench_training, monkeypatch, capsys, "--tiny", "--repeats", "1", "--steps", "1")
    assert "| method | tokens/s, median (min–max)" in out
    assert bench_training.HF_FP32 in out and "course `GPTModel` (chapter 4), fp32" in out
    assert "Torch threads:" in out and "Load average" in out


def test_generation_benchmark_runs_on_a_tiny_model_and_checks_tokens(monkeypatch, capsys):
    out = run_script(bench_generation, monkeypatch, capsys, "--tiny", "--repeats", "1", "--new-tokens", "4")
    assert "**4 new tokens**" in out
    course_row = next(line for line in out.splitlines() if "`generate_text_cached`" in line)
    assert course_row.endswith("| yes |")  # the same tokens as Hugging Face's generate
