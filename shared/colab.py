"""Running a notebook anywhere: the repository's address (configured here and only here) and set-up.

Every notebook starts with a short setup cell generated from ``setup_cell()`` by
``python -m tools.export``. The cell has to work before anything of the course can be imported,
so it holds only the bootstrap: find the course next to the notebook, or, in Colab, clone it
(from ``REPO_URL``, or from the address in the environment variable ``COURSE_REPO_URL``). Then it
calls ``setup_course``, which does the rest: it installs the packages Colab lacks, makes the
chapter's folder the working directory and prints the run mode.

Publishing a fork: change ``REPO_URL`` (and ``BRANCH``) below and run ``python -m tools.export``;
it rewrites every setup cell, the "Open in Colab" links at the top of the notebooks and those in
the README. A learner can also point one session at another copy without editing anything:
``%env COURSE_REPO_URL=https://github.com/someone/fork.git`` before the setup cell.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

REPO_URL = "https://github.com/gpt-from-scratch/gpt-from-scratch.git"
BRANCH = "main"
REPO_ENV = "COURSE_REPO_URL"  # overrides REPO_URL at run time, for the clone only
CLONE_DIR = "gpt-from-scratch"  # the clone's folder, under Colab's working directory (/content)
COLAB_PACKAGES = {"tiktoken": "tiktoken>=0.7", "safetensors": "safetensors>=0.4"}  # module: pip spec
SETUP_MARKER = "#| setup"
LINK_MARKER = "<!-- colab-link: written by `python -m tools.export` from shared/colab.py; do not edit -->"
COLAB_PREFIX = re.compile(r"https://colab\.research\.google\.com/github/[^/\s)]+/[^/\s)]+/blob/[^/\s)]+/")


def github_slug(repo_url: str = REPO_URL) -> str:
    """``owner/name`` of a GitHub address (``https://github.com/owner/name.git``)."""
    match = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)(?:\.git)?/?", repo_url)
    if not match:
        raise ValueError(f"not a GitHub repository address: {repo_url!r}")
    return f"{match[1]}/{match[2]}"


def colab_url(notebook: str, repo_url: str = REPO_URL, branch: str = BRANCH) -> str:
    """The "Open in Colab" address of ``notebook`` (a path inside the repository, e.g. ch02_x/ch02.ipynb)."""
    return f"https://colab.research.google.com/github/{github_slug(repo_url)}/blob/{branch}/{notebook}"


def with_colab_links(text: str) -> str:
    """``text`` with every Colab link re-pointed at ``REPO_URL`` and ``BRANCH`` (the path is kept)."""
    return COLAB_PREFIX.sub(colab_url(""), text)


def colab_link_cell(notebook: str) -> str:
    """Source of the Markdown cell just above the setup cell: where to run the notebook, and its modes."""
    return f"""{LINK_MARKER}
**Run it:** in JupyterLab from a copy of the course (see the README), or
[open this notebook in Colab]({colab_url(notebook)}). The next cell sets the course up
and prints the **mode** and what a full run costs: *full* is the real course; *quick*
(`%env COURSE_QUICK=1` in a new cell, then run the notebook from the top) shrinks data, models and
training steps so that the notebook runs in a few minutes (where a chapter depends on the mode, its
numbers then differ from the text)."""


def setup_cell(chapter: str, notebook: str) -> str:
    """Source of the first code cell of ``notebook`` (a file name) in folder ``chapter``."""
    return f'''{SETUP_MARKER}: written by `python -m tools.export` from shared/colab.py; do not edit
# Set up the course: find its files (in Colab, clone them first), then print the run mode.
import os
import subprocess
import sys
from pathlib import Path

repo = os.environ.get("{REPO_ENV}", "{REPO_URL}")
places = (Path.cwd().parent, Path.cwd() / "{CLONE_DIR}")  # the course around this notebook, or a clone
root = next((p for p in places if (p / "shared").is_dir()), None)
why = "this notebook is not inside a chapter folder of the course"
if root is None and "google.colab" in sys.modules:
    root = Path.cwd() / "{CLONE_DIR}"
    git = subprocess.run(["git", "clone", "-q", "--depth=1", repo, str(root)], capture_output=True, text=True)
    if git.returncode != 0:
        root, why = None, f"could not clone {{repo}} ({{git.stderr.strip()}})"
if root is None:
    class CourseNotFound(Exception):
        def _render_traceback_(self):  # Jupyter shows this one line instead of a traceback
            return [f"CourseNotFound: {{self}}"]

    raise CourseNotFound(f"{{why}}. Open the notebook from a copy of the course (see its README) or in"
                         " Colab; to clone another copy, run %env {REPO_ENV}=<address> first.")
sys.path.insert(0, str(root))
from shared.colab import setup_course  # noqa: E402

setup_course("{chapter}", "{notebook}")'''


def _missing_packages() -> list[str]:
    """pip specifications of the Colab packages that cannot be imported here."""
    return [spec for module, spec in COLAB_PACKAGES.items() if importlib.util.find_spec(module) is None]


def setup_course(chapter: str, notebook: str | None = None) -> None:
    """Install what Colab lacks, work in (and import from) ``chapter``'s folder, print the mode."""
    from shared.runtime import REPO_ROOT as root  # the course's folder, wherever it was cloned
    from shared.runtime import mode_banner

    folder = root / chapter
    missing = _missing_packages()
    if missing:  # Colab has torch, numpy and matplotlib, but not these
        pip = [sys.executable, "-m", "pip", "install", "-q", *missing]
        done = subprocess.run(pip, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"Could not install {', '.join(missing)}: {done.stderr.strip()[-500:]}")
    if Path.cwd().resolve() != folder:
        os.chdir(folder)  # relative paths (checkpoints/, previous_chapters.py) are the chapter's own
    for path in (str(root), str(folder)):
        if path not in sys.path:
            sys.path.insert(0, path)
    print(mode_banner(chapter, notebook))
