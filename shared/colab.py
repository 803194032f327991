"""The Colab bootstrap: the repository's location, configured here and only here.

Every notebook starts with a setup cell generated from ``setup_cell()`` by
``python -m tools.export``. Locally it only makes ``shared/`` importable; in Colab
it first clones the course and installs the packages Colab lacks.
"""

from __future__ import annotations

REPO_URL = "https://github.com/gpt-from-scratch/gpt-from-scratch.git"
COLAB_DIR = "/content/gpt-from-scratch"
COLAB_PACKAGES = ("tiktoken>=0.7", "safetensors>=0.4")
SETUP_MARKER = "#| setup"


def setup_cell(chapter: str) -> str:
    """Source of the first code cell of every notebook in folder ``chapter``."""
    packages = ", ".join(f'"{p}"' for p in COLAB_PACKAGES)
    return f'''{SETUP_MARKER}: written by `python -m tools.export` from shared/colab.py; do not edit
# Makes the course's `shared/` helpers importable. In Colab it first clones the course.
import os
import subprocess
import sys
from pathlib import Path

COURSE_REPO = "{REPO_URL}"
if "google.colab" in sys.modules and not Path("../shared").is_dir():
    if not Path("{COLAB_DIR}").is_dir():
        subprocess.run(["git", "clone", "--depth=1", COURSE_REPO, "{COLAB_DIR}"], check=True)
        pip = [sys.executable, "-m", "pip", "install", "-q"]
        subprocess.run([*pip, {packages}], check=True)
    os.chdir("{COLAB_DIR}/{chapter}")
sys.path[:0] = [str(Path.cwd()), str(Path.cwd().parent)]  # this chapter, then the course root

from shared.runtime import mode_banner  # noqa: E402

print(mode_banner())'''
