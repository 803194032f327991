"""Figure helpers: one style, figures shown as cell outputs and saved under ``images/chNN/``.

Every figure of the course is drawn by code and shown as the output of the cell that draws it
(``show_figure``), so it appears wherever the notebook is read: on GitHub, in JupyterLab, in Colab
and in exported HTML, even far from the repository. The PNG output carries the figure's alt text
as its plain-text form, which is what screen readers and text-only renderers show.

A copy of each figure is also saved: in full mode to the repository's ``images/`` folder, in quick
mode to the cache, so that a quick run never overwrites the course's figures.
"""

from __future__ import annotations

import base64
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

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


def show_figure(fig: Figure, chapter: str, name: str, alt: str) -> None:
    """Save ``fig`` (``save_figure``), close it, and show it as this cell's output, with alt text ``alt``."""
    from IPython.display import display

    if not alt.strip():
        raise ValueError("a figure needs alt text: one or two sentences saying what it shows")
    path = save_figure(fig, chapter, name)
    plt.close(fig)
    png = base64.b64encode(path.read_bytes()).decode("ascii")
    display({"image/png": png, "text/plain": f"[Figure: {alt}]"}, raw=True)


def new_figure(width: float = 6.0, height: float = 3.5) -> tuple[Figure, plt.Axes]:
    """A figure and axes in the course's style."""
    fig, ax = plt.subplots(figsize=(width, height))
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def new_diagram(width: float, height: float) -> tuple[Figure, plt.Axes]:
    """A figure for a box-and-arrow diagram: axes in data units 0..width, 0..height, no frame."""
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    return fig, ax


def box(
    ax: plt.Axes,
    x: float,
    y: float,
    w: float,
    h: float,
    text: str,
    color: str = "#dbe9f6",
    fontsize: float = 10,
) -> None:
    """A rounded box with its lower left corner at (x, y) and centred text."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", fc=color, ec="0.35"))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize)


def arrow(
    ax: plt.Axes, x0: float, y0: float, x1: float, y1: float, text: str = "", fontsize: float = 9
) -> None:
    """An arrow from (x0, y0) to (x1, y1), with an optional label beside its middle."""
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "->", "color": "0.3", "lw": 1.3})
    if text:
        ax.text(
            (x0 + x1) / 2 + 0.08, (y0 + y1) / 2, text, ha="left", va="center", fontsize=fontsize, color="0.25"
        )
