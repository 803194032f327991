"""GPT-2's tokenizer that also works offline.

tiktoken downloads GPT-2's ``encoder.json`` and ``vocab.bpe`` the first time it is
asked for the ``gpt2`` encoding. Without a network, this module builds the very same
encoding from the course's registered copies of those files (cache or mirror). tiktoken's
download has no time limit of its own (behind a proxy that never answers it would wait forever):
``get_gpt2_tokenizer`` waits at most ``TIKTOKEN_TIMEOUT_S`` seconds for it, then says so on stderr
and uses the course's copies.
"""

from __future__ import annotations

import functools
import sys
import threading

import tiktoken
import tiktoken.load
from tiktoken_ext import openai_public

from shared.data import fetch

END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256
TIKTOKEN_TIMEOUT_S = 20.0  # the longest wait for tiktoken's download before the course's copies


def gpt2_encoding_from_files() -> tiktoken.Encoding:
    """Build tiktoken's ``gpt2`` encoding from the registry's encoder.json and vocab.bpe."""
    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(fetch("vocab.bpe", quiet=True)),
        encoder_json_file=str(fetch("encoder.json", quiet=True)),
    )
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=openai_public.r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={END_OF_TEXT: END_OF_TEXT_ID},
        explicit_n_vocab=50257,
    )


@functools.cache
def get_gpt2_tokenizer(source: str = "auto") -> tiktoken.Encoding:
    """GPT-2's BPE tokenizer: ``"tiktoken"``, ``"files"``, or ``"auto"`` (tiktoken, else files)."""
    if source not in ("auto", "tiktoken", "files"):
        raise ValueError(f"source must be 'auto', 'tiktoken' or 'files', not {source!r}")
    if source == "files":
        return gpt2_encoding_from_files()
    result: dict[str, object] = {}

    def load() -> None:
        """tiktoken's encoding (its cache, else a download), or the error it raised."""
        try:
            result["encoding"] = tiktoken.get_encoding("gpt2")
        except Exception as exc:  # no network and no tiktoken cache: "could not download"
            result["error"] = exc

    worker = threading.Thread(target=load, name="tiktoken-gpt2", daemon=True)  # a hung download stays behind
    worker.start()
    worker.join(TIKTOKEN_TIMEOUT_S)
    if "encoding" in result:
        return result["encoding"]
    if worker.is_alive():
        error = TimeoutError(
            f"tiktoken's download of GPT-2's files did not finish in {TIKTOKEN_TIMEOUT_S:g} s"
        )
        if source != "tiktoken":
            print(f"{error}; using the course's copies of encoder.json and vocab.bpe", file=sys.stderr)
    else:
        error = result["error"]
    if source == "tiktoken":
        raise error
    return gpt2_encoding_from_files()
