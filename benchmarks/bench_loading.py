"""Loading GPT-2 124M on CPU: wall time and peak memory of construct + load, for several loaders.

Run by hand from the repository root (not a test; a few minutes):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_loading.py [--repeats 5]

The script first writes a GPT-2 124M checkpoint with random (seeded) weights in Hugging Face's
format to a temporary folder: ``model.safetensors`` (GPT-2's tensor names and Conv1D layouts, no
output head: GPT-2 ties it to the token embeddings; written by chapter 5's ``write_hf_safetensors``) and
the ``config.json`` of a ``GPT2Config``. Then each loader runs in its own fresh Python process
(``python bench_loading.py --child METHOD``), which imports what it needs, then resets the
kernel's peak-resident-memory mark to its current resident size (the baseline: Linux's
``/proc/self/clear_refs``; ``resource.getrusage(...).ru_maxrss`` cannot be reset and, on Linux,
carries the parent's peak across the ``vfork`` + ``exec`` that starts the child, so it is only the
fallback elsewhere), constructs and loads the model and reads every parameter once (timed; the
read makes weights that a loader maps from the file lazily count as loaded), checks the token
embeddings against the file, and reports its peak resident memory (VmHWM) above the baseline.
Loaders, where installed:

- course ``load_gpt2_model(path)`` (chapter 5): builds ``GPTModel`` and copies the weights in;
- ``load_gpt2_model_lowmem(path)`` of chapter 5's speed notebook: ``GPTModelFast`` built on the meta
  device, the file read tensor by tensor without a memory map, ``load_state_dict(assign=True)``;
- Hugging Face ``GPT2LMHeadModel.from_pretrained(folder)``;
- the book's package: its ``GPTModel`` and ``load_weights_into_gpt(gpt, params)``, with ``params``
  the NumPy dict its loader expects, read here from the same file with ``safetensors.numpy``.

Peak memory is given in MB and as a multiple of the weight bytes: the bytes of the tensors in the
file (124.4 M float32 numbers, 498 MB) and the bytes of the loaded model's own parameters (more
when the model keeps a separate, untied output head). The methods run interleaved, ``--repeats``
rounds; the file is read once beforehand so that it is in the page cache for every method.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_common as bc

METHODS = {  # method key -> row name
    "course": "course `load_gpt2_model` (chapter 5)",
    "fast": "course `load_gpt2_model_lowmem` (meta device, `GPTModelFast`, tied head)",
    "hf": "Hugging Face `GPT2LMHeadModel.from_pretrained`",
    "book": "book package `GPTModel` + `load_weights_into_gpt` (params from safetensors.numpy)",
}
TARGET = 1.2  # peak memory above baseline, as a multiple of the weight bytes


def find_fast_loader():
    """``load_gpt2_model_lowmem`` of chapter 5's speed notebook (None where the package lacks it)."""
    import gpt_from_scratch.ch05 as ch05

    return getattr(ch05, "load_gpt2_model_lowmem", None)


def _status_mb(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status (Linux), in MB; None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e6  # the kernel reports kB (KiB)
    except OSError:
        pass
    return None


def start_peak() -> float:
    """Reset this process's peak resident memory to its current value; return that value in MB.

    On Linux, writing 5 to /proc/self/clear_refs resets the high-water mark (VmHWM) to the current
    resident size. ``ru_maxrss`` cannot be reset, and on Linux it also carries the parent's peak
    over ``vfork`` + ``exec`` (how Python starts subprocesses), so elsewhere it is the fallback only.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        now = _status_mb("VmRSS")
        if now is not None:
            return now
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # KiB on Linux


def peak_mb() -> float:
    """This process's peak resident memory since ``start_peak``, in MB."""
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def param_bytes(model) -> int:
    """Bytes of the model's parameters, each storage counted once (tied weights once)."""
    seen, total = set(), 0
    for p in model.parameters():
        key = p.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += p.untyped_storage().nbytes()
    return total


def child(method: str, folder: Path) -> None:
    """Construct and load the model with ``method`` in this (fresh) process; print one JSON line."""
    import torch

    path = folder / "model.safetensors"
    if method == "course":
        from gpt_from_scratch.ch05 import load_gpt2_model

        def load():
            return load_gpt2_model(path, "124M")
    elif method == "fast":
        loader = find_fast_loader()

        def load():
            return loader(path, "124M")
    elif method == "hf":
        from transformers import GPT2LMHeadModel

        def load():
            return GPT2LMHeadModel.from_pretrained(folder, attn_implementation="sdpa").eval()
    elif method == "book":
        from llms_from_scratch.ch04 import GPTModel
        from llms_from_scratch.ch05 import load_weights_into_gpt
        from safetensors.numpy import load_file

        from gpt_from_scratch.ch04 import gpt2_config

        def load():
            cfg = gpt2_config("124M", qkv_bias=True, drop_rate=0.0)
            gpt = GPTModel(cfg)
            state = load_file(str(path))  # NumPy arrays, Hugging Face's names
            params = bc.hf_to_book_params(state, cfg["n_layers"])  # chapter 5's one GPT-2 mapping
            load_weights_into_gpt(gpt, params)
            del state, params
            return gpt.eval()
    else:
        raise SystemExit(f"unknown method {method!r}")

    baseline = start_peak()
    start = time.perf_counter()
    model = load()
    with torch.no_grad():  # read every weight once: lazily mapped weights then count as loaded
        for p in model.parameters():
            p.sum()
    seconds = time.perf_counter() - start
    peak = peak_mb()
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:  # a spot check that the weights were loaded
        wte = f.get_tensor("wte.weight")
    got = model.transformer.wte.weight if method == "hf" else model.tok_emb.weight
    if not torch.equal(got.detach().float(), wte):
        raise SystemExit(f"{method}: the token embeddings differ from the file's")
    print(
        json.dumps(
            {
                "seconds": seconds,
                "baseline_mb": baseline,
                "peak_above_mb": peak - baseline,
                "param_mb": param_bytes(model) / 1e6,
            }
        )
    )


def write_checkpoint(folder: Path) -> tuple[Path, float]:
    """A GPT-2 124M checkpoint with random weights in Hugging Face's format; its tensor MB."""
    import torch
    from safetensors import safe_open

    from gpt_from_scratch.ch04 import GPTModel, gpt2_config
    from gpt_from_scratch.ch05 import write_hf_safetensors

    cfg = gpt2_config("124M", qkv_bias=True, drop_rate=0.0)
    torch.manual_seed(bc.SEED)
    model = GPTModel(cfg)
    model.out_head.weight = model.tok_emb.weight  # GPT-2's files store no output head (tied)
    path = write_hf_safetensors(model, folder / "model.safetensors")
    config = bc.gpt2_hf_config(
        n_layer=cfg["n_layers"], n_embd=cfg["emb_dim"], n_head=cfg["n_heads"], vocab_size=cfg["vocab_size"]
    )
    config.save_pretrained(folder)
    with safe_open(str(path), framework="pt") as f:
        nbytes = sum(f.get_tensor(k).nbytes for k in f.keys())
    return path, nbytes / 1e6


def available(notes: list[str]) -> list[str]:
    """The methods whose packages are installed; a note for each one skipped."""
    keys = ["course"]
    if find_fast_loader() is None:
        notes.append("the low-memory loader is not in gpt_from_scratch.ch05 yet: its row is skipped")
    else:
        keys.append("fast")
    if bc.optional_import("transformers") is None:
        notes.append("transformers not installed: the Hugging Face row is skipped")
    else:
        keys.append("hf")
    if bc.optional_import("llms_from_scratch.ch05") is None:
        notes.append(bc.BOOK_MISSING)
    else:
        keys.append("book")
    return keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds, one process per load")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.child:
        bc.set_threads(args.threads)
        child(args.child, Path(args.folder))
        return
    bc.set_threads(args.threads)

    notes: list[str] = []
    keys = available(notes)
    with tempfile.TemporaryDirectory(prefix="bench_loading_") as tmp:
        folder = Path(tmp)
        path, file_mb = write_checkpoint(folder)
        path.read_bytes()  # into the page cache, so that no method pays for the first read
        print(bc.header("Construct + load GPT-2 124M from a Hugging Face safetensors file"))
        print(
            f"Checkpoint: GPT-2 124M, random weights, "
            f"{file_mb:.1f} MB of float32 tensors; each load in a fresh process; {args.repeats} "
            "interleaved rounds  "
        )
        for note in notes:
            print(f"Note: {note}  ")
        print(flush=True)
        results: dict[str, list[dict]] = {k: [] for k in keys}
        for _ in range(args.repeats):
            for key in keys:
                cmd = [sys.executable, __file__, "--child", key, "--folder", str(folder)]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"{key} failed:\n{done.stderr[-3000:]}")
                results[key].append(json.loads(done.stdout.strip().splitlines()[-1]))

    rows = []
    verdicts = []
    for key in keys:
        res = results[key]
        model_mb = res[0]["param_mb"]
        peaks = [r["peak_above_mb"] for r in res]
        rows.append(
            [
                METHODS[key],
                bc.spread([r["seconds"] for r in res]),
                bc.spread(peaks, "{:.0f}"),
                bc.spread([p / file_mb for p in peaks]) + "x",
                f"{model_mb:.0f}",
                bc.spread([p / model_mb for p in peaks]) + "x",
            ]
        )
        med = statistics.median(peaks) / file_mb
        line = f"- {METHODS[key]}: {med:.2f}x the file's weight bytes"
        if key == "fast":  # the target is the low-memory loader's
            line += f", target <= {TARGET}x: {'met' if med <= TARGET else 'missed'}"
        verdicts.append(line)
    head = [
        "method",
        "seconds, median (min–max)",
        "peak MB above baseline",
        "÷ file's weight bytes",
        "model's parameter MB",
        "÷ model's parameter bytes",
    ]
    print(bc.markdown_table(head, rows))
    print()
    print("\n".join(verdicts))
    print(f"\n{bc.load_line()}", flush=True)


if __name__ == "__main__":
    main()
