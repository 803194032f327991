"""Every notebook: a clean stored run, numbered sections, exercises with folded solutions, alt text.

nbval (run by `pytest` over every notebook) re-executes them and compares outputs; these
checks cover what nbval does not. Figures are checked in test_notebook_figures.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared.runtime import REPO_ROOT

ROOT = REPO_ROOT
NOTEBOOKS = sorted(p for p in ROOT.glob("ch*_*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)
MACHINE_PATH = re.compile(r"/(work|tmp|root|home|Users|content)/[A-Za-z0-9_.-]+")


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _src(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


@pytest.fixture(params=NOTEBOOKS, ids=[str(p.relative_to(ROOT)) for p in NOTEBOOKS])
def notebook(request):
    return request.param, _load(request.param)


def test_every_chapter_has_its_main_notebook():
    for chapter in sorted(ROOT.glob("ch*_*/")):
        assert (chapter / f"{chapter.name[:4]}.ipynb").is_file(), chapter


def test_stored_outputs_come_from_one_clean_run(notebook):
    path, nb = notebook
    counts = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        skipped = "nbval-skip" in cell.get("metadata", {}).get("tags", [])
        if skipped:
            assert not cell.get("outputs"), f"{path.name}: a skipped cell must be stored without output"
            continue
        assert cell.get("execution_count") is not None, f"{path.name}: a cell was not run:\n{_src(cell)[:80]}"
        counts.append(cell["execution_count"])
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"{path.name}: stored error output"
            text = json.dumps(
                {k: v for k, v in out.items() if k != "data"}
                | {"data": {k: v for k, v in out.get("data", {}).items() if not k.startswith("image/")}}
            )
            assert not MACHINE_PATH.search(text), f"{path.name}: machine path {MACHINE_PATH.search(text)[0]}"
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: execution counts not 1..N"


def test_title_numbered_sections_and_exercises(notebook):
    path, nb = notebook
    markdown = "\n".join(_src(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert markdown.lstrip().startswith("# "), f"{path.name}: starts with a title"
    if path.stem == path.parent.name[:4]:  # main chapter notebook
        n = int(path.parent.name[2:4])
        assert re.search(rf"^## {n}\.1 ", markdown, re.M), f"{path.name}: sections numbered {n}.1, ..."
    assert re.search(r"^## .*Exercises", markdown, re.M), f"{path.name}: has an Exercises section"
    # worked solutions: code that ran, after the Exercises heading
    start = next(
        i
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "markdown" and re.search(r"^## .*Exercises", _src(c), re.M)
    )
    solved = [c for c in nb["cells"][start:] if c["cell_type"] == "code" and c.get("outputs")]
    assert solved, f"{path.name}: exercises need worked solutions (code with output)"


def folding_problems(path: Path, nb: dict) -> list[str]:
    """What keeps a notebook's solutions (code and output) from being folded away (empty when they are)."""
    start = next(
        i
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "markdown" and re.search(r"^## .*Exercises", _src(c), re.M)
    )
    cells = nb["cells"][start:]
    problems = []
    for cell in cells:
        if cell["cell_type"] == "code":
            meta = cell.get("metadata", {})
            if "solution" not in meta.get("tags", []):
                problems.append(f"{path.name}: solution cell not tagged:\n{_src(cell)[:80]}")
            if not (meta.get("jupyter", {}).get("source_hidden") and meta.get("cellView") == "form"):
                problems.append(
                    f"{path.name}: solution code not collapsed (JupyterLab source_hidden, Colab cellView):\n"
                    f"{_src(cell)[:80]}"
                )
            if cell.get("outputs") and not meta.get("jupyter", {}).get("outputs_hidden"):
                # a result shown under a collapsed solution gives the answer away before it is opened
                problems.append(
                    f"{path.name}: solution output visible (store it without outputs, or folded with "
                    f"JupyterLab's jupyter.outputs_hidden):\n{_src(cell)[:80]}"
                )
    exercises = [
        c for c in cells if c["cell_type"] == "markdown" and re.search(r"\*\*Exercise|### Exercise", _src(c))
    ]
    if not exercises:
        problems.append(f"{path.name}: no exercises found")
    for cell in exercises:
        if not ("<details>" in _src(cell) and "</details>" in _src(cell)):
            problems.append(
                f"{path.name}: the solution's explanation belongs in a <details> block:\n{_src(cell)[:80]}"
            )
    return problems


def test_exercise_solutions_are_folded_away(notebook):
    # every notebook, with no list of exceptions: a new notebook is checked from its first commit
    path, nb = notebook
    assert folding_problems(path, nb) == []


def test_the_folding_check_catches_an_unfolded_solution():
    path = ROOT / "ch04_gpt_model" / "ch04.ipynb"
    nb = _load(path)
    assert folding_problems(path, nb) == []
    start = max(
        i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown" and "Exercises" in _src(c)
    )
    solution = next(c for c in nb["cells"][start:] if c["cell_type"] == "code")
    solution["metadata"].pop("cellView")
    solution["metadata"]["jupyter"].pop("outputs_hidden")
    assert solution.get("outputs"), "the check needs a solution that has output"
    exercise = next(c for c in nb["cells"][start:] if "<details>" in _src(c))
    exercise["source"] = _src(exercise).replace("<details>", "")
    problems = "\n".join(folding_problems(path, nb))
    assert "not collapsed" in problems and "<details> block" in problems and "output visible" in problems
    solution["outputs"] = []  # stored without output: nothing to see before running it
    assert "output visible" not in "\n".join(folding_problems(path, nb))


def test_images_have_alt_text_and_are_not_hotlinked(notebook):
    path, nb = notebook
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        for alt, target in re.findall(r"!\[([^\]]*)\]\(([^)\s]+)", _src(cell)):
            assert alt.strip(), f"{path.name}: image {target} needs alt text"
            assert not re.match(r"(?i)https?://", target), f"{path.name}: hotlinked image {target}"


def test_no_stray_stderr_in_stored_outputs(notebook):
    path, nb = notebook
    # no stderr at all, not even in cells whose output nbval ignores
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("name") == "stderr":
                text = "".join(out["text"]) if isinstance(out["text"], list) else out["text"]
                pytest.fail(f"{path.name}: stderr stored in a cell:\n{_src(cell)[:80]}\n---\n{text[:200]}")
