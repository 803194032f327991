"""Figure helpers: one style, and figures saved under ``images/chNN/``.

In full mode figures go to the repository's ``images/`` folder, where the notebooks'
Markdown links to them. In quick mode they go to the cache instead, so a quick run
never overwrites the course's figures.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from shared.data import REPO_ROOT, cache_dir
from shared.runtime import is_quick


def figure_dir(chapter: str) -> Path:
    """Where figures of ``chapter`` (e.g. ``"ch03"``) are written in the current mode."""
    base = cache_dir() / "quick-figures" if is_quick() else REPO_ROOT / "images"
    path = base / chapter
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig: Figure, chapter: str, name: str) -> Path:
    """Save ``fig`` as ``<figure_dir>/<name>.png`` (reproducible bytes) and return the path."""
    path = figure_dir(chapter) / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    return path


def new_figure(width: float = 6.0, height: float = 3.5) -> tuple[Figure, plt.Axes]:
    """A figure and axes in the course's style."""
    fig, ax = plt.subplots(figsize=(width, height))
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax
