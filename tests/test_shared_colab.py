"""The Colab set-up (shared/colab.py): one address, generated links, and a notebook run as Colab runs it.

The end-to-end test copies one notebook alone into an empty folder, puts a stand-in `google.colab`
module in the kernel, points the clone at a local `file://` copy of the repository and executes the
notebook in quick mode, as a learner's "Open in Colab" and "Run all" would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from shared.colab import (
    BRANCH,
    CLONE_DIR,
    LINK_MARKER,
    REPO_ENV,
    REPO_URL,
    colab_link_cell,
    colab_url,
    github_slug,
    setup_cell,
    with_colab_links,
)
from shared.runtime import REPO_ROOT
from tools.export import chapter_dirs, chapter_notebooks

ROOT = REPO_ROOT
STAND_IN = 'import sys, types\nsys.modules["google.colab"] = types.ModuleType("google.colab")  # not Colab'


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_colab_address_comes_from_the_repository_url():
    assert github_slug("https://github.com/someone/a-fork.git") == "someone/a-fork"
    assert github_slug("https://github.com/someone/a-fork") == "someone/a-fork"
    url = colab_url("ch02_text_data/ch02.ipynb", "https://github.com/someone/a-fork.git", "dev")
    assert url == "https://colab.research.google.com/github/someone/a-fork/blob/dev/ch02_text_data/ch02.ipynb"
    with pytest.raises(ValueError, match="not a GitHub repository"):
        github_slug("https://example.org/course.git")


def test_with_colab_links_repoints_every_link_and_keeps_the_path():
    old = "[x](https://colab.research.google.com/github/old/name/blob/old-branch/ch01_llms/ch01.ipynb)"
    assert with_colab_links(old) == f"[x]({colab_url('ch01_llms/ch01.ipynb')})"
    assert with_colab_links("no links here") == "no links here"


def test_every_notebook_links_to_itself_in_colab_above_its_setup_cell():
    for chapter in chapter_dirs():
        for notebook in chapter_notebooks(chapter):
            cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
            first = next(i for i, c in enumerate(cells) if c["cell_type"] == "code")
            link = _source(cells[first - 1])
            assert link.startswith(LINK_MARKER), notebook
            assert link == colab_link_cell(notebook.relative_to(ROOT).as_posix()), notebook
            assert "%env COURSE_QUICK=1" in link, "the first cells say how to switch modes"


def test_readme_links_every_chapter_notebook_to_colab_from_the_one_address():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"https://colab\.research\.google\.com/github/[^)\s]+", readme)
    prefix = colab_url("")
    assert links and all(link.startswith(prefix) for link in links), "run `python -m tools.export`"
    for chapter in ("ch01_llms", "ch02_text_data", "ch03_attention", "ch04_gpt_model", "ch05_pretraining"):
        main = f"{chapter}/{chapter[:4]}.ipynb"
        assert colab_url(main) in links, f"README has no Colab link for {main}"
        assert (ROOT / main).is_file()


def test_the_address_is_configured_once_and_overridable():
    cell = setup_cell("ch01_llms", "ch01.ipynb")
    assert cell.count(REPO_URL) == 1 and f'os.environ.get("{REPO_ENV}", "{REPO_URL}")' in cell
    assert len(cell.splitlines()) <= 30, "a learner's first cell should stay short"
    assert BRANCH and CLONE_DIR


def test_full_mode_cost_is_per_notebook_where_one_is_given(monkeypatch):
    from shared.runtime import FULL_MODE_COST, mode_banner

    monkeypatch.setenv("COURSE_QUICK", "0")
    own = FULL_MODE_COST["ch05_pretraining/base_model.ipynb"]
    assert own in mode_banner("ch05_pretraining", "base_model.ipynb")
    assert FULL_MODE_COST["ch05_pretraining"] in mode_banner("ch05_pretraining", "ch05.ipynb")  # the folder's
    assert own not in mode_banner("ch05_pretraining", "ch05.ipynb")
    assert FULL_MODE_COST["ch05_pretraining"] in mode_banner("ch05_pretraining")
    for name in FULL_MODE_COST:  # every entry names a real folder or notebook
        assert (REPO_ROOT / name).exists(), name
    assert "minutes of training" in mode_banner("no_such_chapter")


def _repository_copy(tmp_path: Path) -> str:
    """A git repository with the working tree's tracked files, as a file:// address."""
    copy = tmp_path / "origin"
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]
    subprocess.run([*git, "init", "-q"], cwd=copy, check=True)
    subprocess.run([*git, "add", "-A"], cwd=copy, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "copy"], cwd=copy, check=True)
    return copy.as_uri()


def _run(nb: nbformat.NotebookNode, folder: Path, env: dict[str, str], allow_errors: bool = False):
    """Execute ``nb`` in a kernel whose working directory is ``folder``, with extra environment ``env``."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(
            nb,
            timeout=600,
            kernel_name="python3",
            allow_errors=allow_errors,
            resources={"metadata": {"path": str(folder)}},
        ).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def _errors(nb: nbformat.NotebookNode) -> list[dict]:
    return [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
    ]


def _course_files_available() -> bool:
    from shared.data import DownloadError, fetch

    try:
        for name in ("the-verdict.txt", "encoder.json", "vocab.bpe"):
            fetch(name, quiet=True, timeout=5)
    except DownloadError:
        return False
    return True


def test_a_notebook_alone_in_colab_clones_the_course_and_runs(tmp_path):
    if not _course_files_available():
        pytest.skip("the course's data files cannot be had here (no cache, mirror or network)")
    work = tmp_path / "content"  # Colab's working directory, with nothing but the notebook
    work.mkdir()
    shutil.copy(ROOT / "ch01_llms" / "ch01.ipynb", work / "ch01.ipynb")
    nb = nbformat.read(work / "ch01.ipynb", as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(STAND_IN))
    env = {REPO_ENV: _repository_copy(tmp_path), "COURSE_QUICK": "1", "MPLBACKEND": "Agg"}
    env["COURSE_DATA_DIR"] = os.environ.get("COURSE_DATA_DIR") or str(ROOT / "data")  # no new downloads
    _run(nb, work, env)
    assert not _errors(nb)
    setup = next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith("#| setup"))
    printed = "".join(o.get("text", "") for o in setup.outputs)
    assert "QUICK mode" in printed and "%env COURSE_QUICK=0" in printed
    assert (work / CLONE_DIR / "shared" / "colab.py").is_file(), "the course was cloned next to the notebook"


def test_a_failed_clone_says_so_in_one_line(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(STAND_IN),
        nbformat.v4.new_code_cell(setup_cell("ch01_llms", "ch01.ipynb")),
    ]
    _run(nb, tmp_path, {REPO_ENV: (tmp_path / "no-such-repo").as_uri()}, allow_errors=True)
    (error,) = _errors(nb)
    assert error.ename == "CourseNotFound"
    assert "could not clone" in error.evalue and f"%env {REPO_ENV}" in error.evalue
    assert len(error.traceback) == 1, "one message, not a traceback"


def test_a_notebook_outside_the_course_says_what_to_do(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(setup_cell("ch01_llms", "ch01.ipynb"))]
    _run(nb, tmp_path, {}, allow_errors=True)
    (error,) = _errors(nb)
    assert error.ename == "CourseNotFound" and "not inside a chapter folder" in error.evalue
    assert len(error.traceback) == 1
