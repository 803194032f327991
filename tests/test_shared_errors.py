"""Download errors as a learner meets them offline: the course's message alone, every missing file at once."""

from __future__ import annotations

import traceback
import urllib.error

import pytest

import shared.data as data
from shared.data import DownloadError, fetch, fetch_gpt2_checkpoint


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty cache, no mirror and no network."""
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("COURSE_DATA_MIRROR", raising=False)

    def no_network(url, part, quiet, timeout):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(data, "_download", no_network)
    return tmp_path


def test_the_message_names_every_file_needed_together_and_how_to_set_the_mirror(offline):
    with pytest.raises(DownloadError) as caught:
        fetch("vocab.bpe")
    message = str(caught.value)
    assert "'vocab.bpe'" in message and "Also missing, and needed with it: 'encoder.json'" in message
    assert "BEFORE starting JupyterLab" in message and "%env COURSE_DATA_MIRROR=" in message
    assert str(offline) not in message, "paths are shown relative to $COURSE_DATA_DIR, not absolute"
    assert "$COURSE_DATA_DIR/vocab.bpe" in message


def test_a_checkpoint_lists_all_its_missing_parts(offline):
    with pytest.raises(DownloadError) as caught:
        fetch_gpt2_checkpoint("124M")
    for part in ("hparams.json", "model.ckpt.index", "model.ckpt.data-00000-of-00001"):
        assert f"gpt2/124M/{part}" in str(caught.value)


def test_the_error_hides_the_chain_it_was_raised_in(offline):
    try:
        try:
            raise OSError("tiktoken could not download its files")  # what a failed first attempt leaves
        except OSError:
            fetch("encoder.json")
    except DownloadError as err:
        shown = "".join(traceback.format_exception(err))
        rendered = err._render_traceback_()
    assert "tiktoken could not download" not in shown, "no chained traceback above the course's message"
    assert len(rendered) == 1 and rendered[0].startswith("DownloadError: Could not get the course file")
