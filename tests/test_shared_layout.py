"""``shared/`` is the course's plumbing (downloads, runtime, tokenizer, figures): it depends on no lesson.

A learner's notebook imports ``shared`` next to its ``previous_chapters.py``; if ``shared`` imported the
package (``gpt_from_scratch``) or a ``previous_chapters`` file, the lessons' code would load twice, in
two versions, and ``shared`` could not be used before the package is built.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from shared.runtime import REPO_ROOT

SHARED = REPO_ROOT / "shared"
LESSON_MODULES = ("gpt_from_scratch", "previous_chapters")


def lesson_imports(path: Path) -> list[str]:
    """The lesson modules a Python file imports (anywhere in it, also inside functions)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        found += [f"{path.name}: {name}" for name in names if name.split(".")[0] in LESSON_MODULES]
    return found


@pytest.mark.parametrize("path", sorted(SHARED.glob("*.py")), ids=lambda p: p.name)
def test_no_shared_module_imports_lesson_code(path):
    assert lesson_imports(path) == []


def test_the_check_sees_a_lesson_import(tmp_path):
    """The check above can fail: a planted import is found, also inside a function."""
    planted = tmp_path / "planted.py"
    source = "def f():\n    from gpt_from_scratch.ch04 import GPTModel\n\nimport previous_chapters\n"
    planted.write_text(source)
    expected = ["planted.py: gpt_from_scratch.ch04", "planted.py: previous_chapters"]
    assert sorted(lesson_imports(planted)) == expected


def test_importing_shared_loads_no_lesson_module():
    """Every module of shared/, imported in a fresh interpreter, leaves the lesson modules unloaded."""
    modules = [f"shared.{p.stem}" for p in sorted(SHARED.glob("*.py")) if p.stem != "__init__"]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {LESSON_MODULES!r}))\n"
    )
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_registry_sizes_are_chapter_4s():
    """shared.registry writes GPT-2's sizes out itself; they must be chapter 4's GPT2_PRESETS."""
    from gpt_from_scratch.ch04 import GPT2_PRESETS
    from shared.registry import GPT2_HF_REPOS, GPT2_SIZES

    assert GPT2_SIZES == tuple(GPT2_PRESETS)
    assert tuple(GPT2_HF_REPOS) == GPT2_SIZES
