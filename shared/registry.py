"""The course's downloadable files: official URLs, backups and sha256 checksums.

Checksums and URLs follow the data mirror's MANIFEST.md. A file whose bytes differ
between hosts (the SMS zip) is verified by the checksums of its members instead. Files with
no checksum (GPT-2 weights, Gutenberg books) are checked only against the server's length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.colab import BRANCH, github_slug

RAW_BOOK = "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main"
OPENAI_GPT2 = "https://openaipublic.blob.core.windows.net/gpt-2"
BACKUP_GPT2 = "https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2"
HF_HUB = "https://huggingface.co/openai-community"
GUTENBERG = "https://www.gutenberg.org"


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file: where it comes from and how to check it."""

    name: str  # path under the cache directory and under the mirror
    urls: tuple[str, ...]  # official URL first, then backups
    sha256: str | None = None  # checksum of the whole file
    size: int | None = None  # bytes, when known
    zip_members: dict[str, str] = field(default_factory=dict)  # member -> sha256
    note: str = ""


def _entries() -> list[RemoteFile]:
    """Every file the course downloads, in the order they are listed."""
    files = [
        RemoteFile(
            "the-verdict.txt",
            (f"{RAW_BOOK}/ch02/01_main-chapter-code/the-verdict.txt",),
            "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
            20479,
        ),
        RemoteFile(
            "encoder.json",
            (
                f"{OPENAI_GPT2}/encodings/main/encoder.json",
                f"{OPENAI_GPT2}/models/124M/encoder.json",
                f"{BACKUP_GPT2}/124M/encoder.json",
            ),
            "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
            1042301,
        ),
        RemoteFile(
            "vocab.bpe",
            (
                f"{OPENAI_GPT2}/encodings/main/vocab.bpe",
                f"{OPENAI_GPT2}/models/124M/vocab.bpe",
                f"{BACKUP_GPT2}/124M/vocab.bpe",
            ),
            "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
            456318,
        ),
        RemoteFile(
            "sms+spam+collection.zip",
            (
                "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
                "https://f001.backblazeb2.com/file/LLMs-from-scratch/sms%2Bspam%2Bcollection.zip",
            ),
            zip_members={
                "SMSSpamCollection": "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
            },
            note="hosts serve different zip bytes with the same members",
        ),
        RemoteFile(
            "instruction-data.json",
            (f"{RAW_BOOK}/ch07/01_main-chapter-code/instruction-data.json",),
            "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
            203524,
        ),
        RemoteFile(
            "instruction-data-with-response.json",
            (f"{RAW_BOOK}/ch07/01_main-chapter-code/instruction-data-with-response.json",),
            "aced320504c77c98d957316eb9f3460945256226c36b5e9752bf7d49585eb943",
            29279,
            note="the book's test set with its GPT-2 355M responses (key model_response)",
        ),
        RemoteFile(
            "instruction-data-with-preference.json",
            (f"{RAW_BOOK}/ch07/04_preference-tuning-with-dpo/instruction-data-with-preference.json",),
            "305315abf14f65fa42c01a0877572f832606571c2a7d49f152ac1d758b16756e",
            386968,
        ),
    ]
    # OpenAI's GPT-2 TensorFlow checkpoints. No checksums could be recorded for them
    # (the files were not obtainable where this course was built), so only the size
    # reported by the server is checked; see README "Data".
    # The tokenizer files inside every size's folder equal the ones above.
    known = {"encoder.json": files[1], "vocab.bpe": files[2]}
    for size in GPT2_SIZES:
        for part in GPT2_CKPT_FILES:
            same = known.get(part)
            files.append(
                RemoteFile(
                    f"gpt2/{size}/{part}",
                    (f"{OPENAI_GPT2}/models/{size}/{part}", f"{BACKUP_GPT2}/{size}/{part}"),
                    sha256=same.sha256 if same else None,
                    size=same.size if same else None,
                    note="" if same else "no published checksum",
                )
            )
    # The same weights as Hugging Face safetensors files.
    for size, repo in GPT2_HF_REPOS.items():
        files.append(
            RemoteFile(
                f"gpt2-hf/{size}/model.safetensors",
                (f"{HF_HUB}/{repo}/resolve/main/model.safetensors",),
                note="no published checksum",
            )
        )
    # Project Gutenberg books for the BPE companion notebook and for exercises. Gutenberg
    # revises its files now and then (and serves them with a BOM and CRLF line ends, unlike the
    # mirror's copies), so no checksum is recorded; read_text() removes the BOM and CRLF.
    for number in GUTENBERG_BOOKS:
        files.append(
            RemoteFile(
                f"gutenberg/pg{number}.txt",
                (f"{GUTENBERG}/cache/epub/{number}/pg{number}.txt",),
                note="revised by Project Gutenberg from time to time: no checksum",
            )
        )
    # The course's own books model (section 9 of ch05_pretraining/base_model.ipynb): committed in
    # ch05_pretraining/books_model/, and fetched from the course's repository where a notebook runs
    # without it (shared.runtime.books_model_dir). A test checks the committed files against these.
    for part, sha256, size in BOOKS_MODEL_FILES:
        files.append(
            RemoteFile(
                f"books_model/{part}",
                (
                    f"https://raw.githubusercontent.com/{github_slug()}/{BRANCH}/ch05_pretraining/books_model/{part}",
                ),
                sha256,
                size,
                note="the course's books model, bfloat16 weights (README: The books model)",
            )
        )
    return files


def _index(entries: list[RemoteFile]) -> dict[str, RemoteFile]:
    """Entries by name; a name listed twice is an error (a dict would keep only the last)."""
    names = [e.name for e in entries]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"course files registered more than once: {', '.join(twice)}")
    return {e.name: e for e in entries}


# eBook numbers: Frankenstein, A Tale of Two Cities, The Phantom of the Opera, Dracula, Little
# Women, The Importance of Being Earnest, The Count of Monte Cristo, Pride and Prejudice, Great
# Expectations, Romeo and Juliet, Moby Dick, Benjamin Franklin's autobiography, The Scarlet
# Letter, The Brothers Karamazov, The Great Gatsby.
GUTENBERG_BOOKS = (84, 98, 175, 345, 514, 844, 1184, 1342, 1400, 1513, 2701, 20203, 25344, 28054, 64317)
# GPT-2's published sizes, smallest first: the keys of chapter 4's GPT2_PRESETS (a test checks they agree;
# shared/ imports no lesson code).
GPT2_SIZES = ("124M", "355M", "774M", "1558M")
# The shipped books model's files: name, sha256, bytes.
BOOKS_MODEL_FILES = (
    ("model.safetensors", "3c6c8486c5c159e5535d0507f7b049f5f48d02cfef4220dd3fbba212e8845238", 28974616),
    ("config.json", "2bc4aaa71f8fa8d91e52d4786f541548b0b5394c7138812619b14575692be057", 877),
)
GPT2_CKPT_FILES = (
    "checkpoint",
    "encoder.json",
    "hparams.json",
    "model.ckpt.data-00000-of-00001",
    "model.ckpt.index",
    "model.ckpt.meta",
    "vocab.bpe",
)
# Hugging Face repositories of the same sizes, smallest first.
GPT2_HF_REPOS = dict(zip(GPT2_SIZES, ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"), strict=True))

FILES: dict[str, RemoteFile] = _index(_entries())
