"""Figures show wherever a notebook is read: as cell outputs with alt text, never as Markdown file links.

A figure linked from Markdown (`![...](../images/...)`) vanishes in Colab and in HTML copied away
from the repository; a PNG stored as a cell output travels with the notebook. `show_figure`
(shared/plotting.py) stores each figure that way, with its alt text as the output's plain text.
"""

from __future__ import annotations

import json
import re

import pytest

from shared.runtime import REPO_ROOT

ROOT = REPO_ROOT
NOTEBOOKS = sorted(p for p in ROOT.glob("ch*_*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)
MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)")
SHOW = re.compile(r'show_figure\(\s*fig\w*,\s*"(ch\d\d)",\s*"(\w+)"')
# Figures the course promises (issue 14): drawn by repository code, shown in these chapters.
REQUIRED = {
    "ch01_llms/ch01.ipynb": {"stages", "transformer"},
    "ch02_text_data/ch02.ipynb": {"text_to_embeddings", "word_embedding_2d", "sliding_window"},
    "ch03_attention/ch03.ipynb": {"qkv_flow", "causal_mask", "head_split", "attention_heatmap_untrained"},
    "ch04_gpt_model/ch04.ipynb": {
        "gpt_model",
        "transformer_block",
        "layernorm_vs_batchnorm",
        "gelu_vs_relu",
        "shortcut_gradients",
        "kv_cache_recompute",
    },
    "ch05_pretraining/ch05.ipynb": {
        "training_loop",
        "loss_curves",
        "temperature_scaling",
        "lr_schedule",
        "train_model_run",
    },
    "ch06_classification/ch06.ipynb": {  # issue 20: at least 8 diagrams, curves with a point per evaluation
        "pipeline",
        "balance_split",
        "padding",
        "head_swap",
        "trainable_layers",
        "last_token_mask",
        "training_step",
        "loss_curves",
        "acc_curves",
        "confusion_matrix",
        "lora",
    },
    "ch07_instruction/ch07.ipynb": {
        "pipeline",
        "prompt_format",
        "split",
        "ignore_index",
        "collate_pad",
        "collate_shift",
        "collate_minus_100",
        "collate_prompt_masked",
        "respond",
        "judge_loop",
        "experiments",
        "prompt_masking",
        "lora_head",
    },
    "ch07_instruction/dpo.ipynb": {"dpo_vs_rlhf", "dpo_length_difference", "dpo_training"},  # issue 22
}


def _src(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else value


@pytest.fixture(params=NOTEBOOKS, ids=[str(p.relative_to(ROOT)) for p in NOTEBOOKS])
def notebook(request):
    return request.param, json.loads(request.param.read_text(encoding="utf-8"))


def test_markdown_links_no_image_files(notebook):
    path, nb = notebook
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        for target in MARKDOWN_IMAGE.findall(_src(cell)):
            assert target.startswith("attachment:"), (
                f"{path.name}: Markdown links the image {target}; show figures as cell outputs "
                "(shared.plotting.show_figure) so that they travel with the notebook"
            )
        assert "<img" not in _src(cell), f"{path.name}: use show_figure, not an <img> tag"


def test_every_figure_output_has_alt_text_and_shows_once(notebook):
    path, nb = notebook
    seen: dict[str, int] = {}
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png")
            if png is None:
                continue
            alt = _text(out["data"].get("text/plain", ""))
            assert alt.startswith("[Figure: ") and len(alt) > 40, (
                f"{path.name}, cell {index}: a figure without alt text ({alt[:40]!r}); use show_figure"
            )
            key = _text(png)
            assert key not in seen, (
                f"{path.name}: cell {index} shows the figure of cell {seen.get(key)} again"
            )
            seen[key] = index


def test_figures_are_stored_outputs_of_the_cells_that_draw_them(notebook):
    path, nb = notebook
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code" or "nbval-skip" in cell.get("metadata", {}).get("tags", []):
            continue
        calls = SHOW.findall(_src(cell))
        images = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        assert len(images) == len(calls), (
            f"{path.name}, cell {index}: {len(calls)} show_figure call(s) but {len(images)} stored image(s)"
        )


@pytest.mark.parametrize("relpath", sorted(REQUIRED))
def test_the_promised_figures_are_there(relpath):
    nb = json.loads((ROOT / relpath).read_text(encoding="utf-8"))
    shown = {
        name
        for cell in nb["cells"]
        if cell["cell_type"] == "code"
        and any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))
        for _, name in SHOW.findall(_src(cell))
    }
    missing = REQUIRED[relpath] - shown
    assert not missing, f"{relpath}: figures not shown: {sorted(missing)}"
