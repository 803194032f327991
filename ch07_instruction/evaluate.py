"""Score saved instruction responses: offline metrics and/or an LLM judge; write a report (chapter 7).

Reads one or more JSON files as written by ``finetune.py`` (or the chapter's notebook): lists of
entries with ``instruction``, ``input``, ``output`` and the model's response (``--key``). Examples
(from the repository root):

    python ch07_instruction/evaluate.py checkpoints/ch07/responses.json --no-judge
    python ch07_instruction/evaluate.py checkpoints/ch07/responses-base.json checkpoints/ch07/responses.json
    python ch07_instruction/evaluate.py checkpoints/ch07/responses.json --no-metrics --judge-model llama3.1
    python ch07_instruction/evaluate.py checkpoints/ch07/responses.json --judge-api openai \\
        --judge-url http://localhost:8080/v1 --judge-model my-model

Offline metrics (exact match, token F1, ROUGE-L) always work. The judge is Ollama's REST API
(default ``http://localhost:11434``) or any OpenAI-compatible chat endpoint (``--judge-api openai``
with the base URL ending in ``/v1``); ``--api-key`` or ``COURSE_JUDGE_API_KEY`` is sent as a Bearer
token. If no judge answers, one message says how to start one and only the metrics are reported
(exit code 0), unless the judge was the only thing asked for (exit code 2). A reply without a score
is recorded as missing, never as 0.

Written to ``--out-dir`` (default: the folder of the first file, e.g. ``checkpoints/ch07``, where
``finetune.py`` writes): ``report.md`` (means per file and the per-entry table), ``scores.csv`` (per
entry) and ``summary.json`` (means).

What can go wrong: responses whose run id differs from the ``train_log.json`` beside them (a
finetune stopped before it wrote new responses) are refused as stale; ``--allow-mixed-runs`` scores
them with a warning. Every file is written whole or not at all (a temporary file, then a rename): an
interrupted run never leaves half a file. An unreadable file, a failed download or Ctrl-C gives one
line and exit code 1 (130 for Ctrl-C); ``--debug`` shows the traceback. A bad value is refused
before any work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

from gpt_from_scratch.ch05 import CourseFileError, atomic_write, atomic_write_text
from gpt_from_scratch.ch07 import (
    INSTRUCTION_KEYS,
    OFFLINE_METRICS,
    InstructionDataError,
    JudgeUnavailable,
    LLMJudge,
    judge_responses,
    load_instruction_data,
    score_responses,
)
from shared.cli import add_out_dir, nonneg_int, positive_float, script_main, script_parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = script_parser(__doc__, __file__)
    add_out_dir(
        p, None, "report.md, scores.csv and summary.json", default_help="the folder of the first file"
    )
    p.add_argument("responses", nargs="+", help="JSON file(s) of entries with responses")
    p.add_argument("--key", default="model_response", help="the entries' key that holds the response")
    p.add_argument(
        "--metrics",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="offline metrics: exact match, token F1, ROUGE-L (default: on)",
    )
    p.add_argument(
        "--judge",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ask an LLM judge for 0-100 scores when one answers (default: on)",
    )
    p.add_argument(
        "--judge-api",
        default=os.environ.get("COURSE_JUDGE_API") or "ollama",
        choices=["ollama", "openai"],
        help="the judge's API: Ollama's REST API, or an OpenAI-compatible chat endpoint "
        "(default: $COURSE_JUDGE_API, else ollama)",
    )
    p.add_argument(
        "--judge-url",
        default=os.environ.get("COURSE_JUDGE_URL") or None,
        help="the judge's base URL (default: $COURSE_JUDGE_URL, else http://localhost:11434 for ollama, "
        "http://localhost:8080/v1 for openai)",
    )
    p.add_argument(
        "--judge-model",
        default=os.environ.get("COURSE_JUDGE_MODEL") or "llama3.2",
        help="the judge model's name on the server (default: $COURSE_JUDGE_MODEL, else llama3.2)",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("COURSE_JUDGE_API_KEY") or None,
        help="sent as a Bearer token (default: $COURSE_JUDGE_API_KEY, else none)",
    )
    p.add_argument("--timeout", type=positive_float, default=120.0, help="seconds per judge request")
    p.add_argument("--retries", type=nonneg_int, default=2, help="extra attempts per judge request")
    p.add_argument(
        "--allow-mixed-runs",
        action="store_true",
        help="score responses even when their run id differs from the model's (train_log.json) beside them",
    )
    return p.parse_args(argv)


def markdown_table(df: pd.DataFrame) -> str:
    """A DataFrame as a GitHub Markdown table (no extra packages)."""

    def cell(value) -> str:
        if isinstance(value, float):
            return "" if pd.isna(value) else f"{value:.3f}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def check_same_run(path: Path, entries: list[dict], allow: bool) -> None:
    """Refuse responses whose run id differs from the run in their folder's train_log.json (finetune.py's)."""
    log_file = path.parent / "train_log.json"
    ids = {entry.get("run_id") for entry in entries}
    if not log_file.is_file() or ids == {None}:
        return  # not written by finetune.py (or before run ids): nothing to compare
    try:
        model_run = json.loads(log_file.read_text(encoding="utf-8")).get("run_id")
    except ValueError:
        model_run = None
    if ids == {model_run}:
        return
    message = (
        f"{path} holds responses of run {', '.join(sorted(map(str, ids)))}, but the model in {path.parent} "
        f"is from run {model_run} (train_log.json): the responses are stale"
    )
    if not allow:
        raise SystemExit(f"error: {message}; re-run finetune.py, or pass --allow-mixed-runs")
    print(f"WARNING: {message}; scoring them anyway (--allow-mixed-runs)", file=sys.stderr)


@script_main(CourseFileError)
def main(argv: list[str] | None = None) -> int:
    """Score the files, write the report; return the exit code."""
    args = parse_args(argv)
    if not args.metrics and not args.judge:
        raise SystemExit("error: nothing to do: --no-metrics and --no-judge together")
    files = [Path(f) for f in args.responses]
    results = {}
    for path in files:
        if not path.is_file():
            raise SystemExit(f"error: no such file: {path}")
        try:
            results[path] = load_instruction_data(path, required=(*INSTRUCTION_KEYS, args.key))
        except InstructionDataError as err:
            raise SystemExit(f"error: {err}") from None
        check_same_run(path, results[path], args.allow_mixed_runs)

    judge = None
    if args.judge:
        judge = LLMJudge(
            model=args.judge_model,
            api=args.judge_api,
            base_url=args.judge_url,
            api_key=args.api_key,
            timeout=args.timeout,
            retries=args.retries,
        )
        try:
            judge.check()
            print(f"LLM judge: {judge.model} via the {judge.api} API at {judge.base_url}")
        except JudgeUnavailable as err:
            print(f"No LLM judge: {err}")
            if not args.metrics:
                return 2
            print("Continuing with the offline metrics only.")
            judge = None

    tables, summary = [], []
    for path, entries in results.items():
        df = score_responses(entries, args.key)
        if not args.metrics:
            df = df.drop(columns=list(OFFLINE_METRICS))
        row = {"file": path.name, "entries": len(entries)}
        if args.metrics:
            row.update(df[list(OFFLINE_METRICS)].mean().round(4).to_dict())
        if judge is not None:
            try:
                judged = judge_responses(judge, entries, args.key, progress=True)
            except JudgeUnavailable as err:  # the server went away during the run
                print(f"No LLM judge: {err}")
                judge = None
            else:
                df = pd.concat([df, judged], axis=1)
                scored = int(judged["judge_score"].notna().sum())
                mean = judged["judge_score"].mean()
                row["judge_mean"] = None if pd.isna(mean) else round(float(mean), 2)
                row["judge_scored"], row["judge_missing"] = scored, len(judged) - scored
        df.insert(0, "file", path.name)
        tables.append(df)
        summary.append(row)

    out_dir = args.out_dir or files[0].parent
    out_dir.mkdir(parents=True, exist_ok=True)
    scores = pd.concat(tables, ignore_index=True)
    atomic_write(out_dir / "scores.csv", lambda tmp: scores.to_csv(tmp, index=False))
    means = pd.DataFrame(summary)
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    shown = [c for c in scores.columns if c not in ("judge_reply", "judge_error")]
    report = [
        "# Instruction-following evaluation",
        "",
        "Offline metrics compare each response with the reference output (words lower-cased, punctuation "
        "removed): exact match, token F1 and ROUGE-L (longest common subsequence F1). "
        + (
            f"The LLM judge ({judge.model}, {judge.api} API) scored each response from 0 to 100; replies "
            "without a score are counted as missing, not as 0."
            if judge is not None
            else "No LLM judge was used."
        ),
        "",
        "## Means per file",
        "",
        markdown_table(means),
        "",
        "## Per entry",
        "",
        markdown_table(scores[shown]),
        "",
    ]
    atomic_write_text(out_dir / "report.md", "\n".join(report))
    print(means.to_string(index=False))
    print("wrote", out_dir / "report.md", "and", out_dir / "scores.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
