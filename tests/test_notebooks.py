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


# Notebooks whose exercise solutions are folded away: explanation in <details>, code cell collapsed.
FOLDED = {
    "ch01_llms/ch01.ipynb",
    "ch02_text_data/ch02.ipynb",
    "ch02_text_data/bpe_from_scratch.ipynb",
    "ch03_attention/ch03.ipynb",
    "ch04_gpt_model/ch04.ipynb",
    "ch05_pretraining/base_model.ipynb",
    "ch05_pretraining/ch05.ipynb",
    "ch05_pretraining/speed.ipynb",
    "ch06_classification/ch06.ipynb",
    "ch06_classification/ch06_comparisons.ipynb",
    "ch07_instruction/ch07.ipynb",
}


def test_exercise_solutions_are_folded_away(notebook):
    path, nb = notebook
    if path.relative_to(ROOT).as_posix() not in FOLDED:
        pytest.skip("notebook not yet converted to folded solutions")
    start = next(
        i
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "markdown" and re.search(r"^## .*Exercises", _src(c), re.M)
    )
    cells = nb["cells"][start:]
    for cell in cells:
        if cell["cell_type"] == "code":
            meta = cell.get("metadata", {})
            assert "solution" in meta.get("tags", []), (
                f"{path.name}: solution cell not tagged:\n{_src(cell)[:80]}"
            )
            assert meta.get("jupyter", {}).get("source_hidden") and meta.get("cellView") == "form", (
                f"{path.name}: solution code not collapsed (JupyterLab source_hidden, Colab cellView):\n"
                f"{_src(cell)[:80]}"
            )
    exercises = [
        c for c in cells if c["cell_type"] == "markdown" and re.search(r"\*\*Exercise|### Exercise", _src(c))
    ]
    assert exercises, f"{path.name}: no exercises found"
    for cell in exercises:
        assert "<details>" in _src(cell) and "</details>" in _src(cell), (
            f"{path.name}: the solution's explanation belongs in a <details> block:\n{_src(cell)[:80]}"
        )


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
    # these notebooks: no stderr at all, not even in cells whose output nbval ignores
    strict = path.relative_to(ROOT).as_posix() in FOLDED
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        ignored = "nbval-ignore-output" in cell.get("metadata", {}).get("tags", [])
        for out in cell.get("outputs", []):
            if out.get("name") == "stderr" and (strict or not ignored):
                text = "".join(out["text"]) if isinstance(out["text"], list) else out["text"]
                pytest.fail(f"{path.name}: stderr stored in a cell:\n{_src(cell)[:80]}\n---\n{text[:200]}")
