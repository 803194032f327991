"""Chapter 7 scripts end to end on a tiny books-format base model: finetune.py, then evaluate.py.

The judge is a stub Ollama/OpenAI-compatible server on 127.0.0.1 (from test_ch07_judge.py); no
real model server and no network are needed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_ch07_judge import StubServer, free_port, ollama_reply, openai_reply

from gpt_from_scratch.ch04 import GPT_CONFIG_124M, GPTModel
from gpt_from_scratch.ch05 import load_checkpoint
from shared.runtime import REPO_ROOT

ROOT = REPO_ROOT
FINETUNE = ROOT / "ch07_instruction" / "finetune.py"
EVALUATE = ROOT / "ch07_instruction" / "evaluate.py"
TINY = {**GPT_CONFIG_124M, "context_length": 96, "emb_dim": 32, "n_heads": 2, "n_layers": 1, "drop_rate": 0.0}


def run(script: Path, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a script with this Python (environment inherited, COURSE_DATA_MIRROR included)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURSE_JUDGE")}  # no judge set-up
    env.update(PYTHONHASHSEED="0", OMP_NUM_THREADS="1")  # tiny models: one thread is faster on a busy machine
    done = subprocess.run(
        [sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    if check:
        assert done.returncode == 0, f"{script.name} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture
def evaluate(monkeypatch, capsys):
    """Run evaluate.py's main() in this process (faster than a new Python): (exit code, stdout)."""
    spec = importlib.util.spec_from_file_location("ch07_evaluate", EVALUATE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("COURSE_JUDGE_API", "COURSE_JUDGE_URL", "COURSE_JUDGE_MODEL", "COURSE_JUDGE_API_KEY"):
        monkeypatch.delenv(name, raising=False)

    def call(*args: str) -> tuple[int | str, str]:
        capsys.readouterr()
        try:
            code = module.main(list(args))
        except SystemExit as exc:  # argument and input errors: the message is the exit "code"
            code = exc.code
        return code, capsys.readouterr().out

    return call


def tiny_data(path: Path, n: int = 40) -> Path:
    """A small instruction file: n entries, some with an input."""
    entries = [
        {"instruction": f"Repeat the number {i}.", "input": "" if i % 3 else f"number {i}", "output": f"{i}."}
        for i in range(n)
    ]
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, books_folder):
    """One finetuning run shared by the tests below: its output folder."""
    tmp = tmp_path_factory.mktemp("ch07")
    books = tmp / "books"
    books_folder(books, TINY, tokens_seen=0, books=["none: a test model"])
    out = tmp / "run"
    data = tiny_data(tmp / "data.json")
    done = run(
        FINETUNE, "--data", str(data), "--weights", "books", "--books-dir", str(books),
        "--epochs", "2", "--batch-size", "4", "--eval-freq", "4", "--eval-iter", "1", "--max-new-tokens", "4",
        "--max-length", "64", "--base-responses", "--device", "cpu", "--out-dir", str(out), cwd=tmp,
    )  # fmt: skip
    return out, done.stdout + done.stderr


def test_finetune_writes_checkpoints_responses_and_log(finetuned):
    out, log = finetuned
    assert "base model:" in log and "books" in log
    assert "train: 34 entries" in log and "validation: 2 entries" in log and "test: 4 entries" in log
    assert "finetuning" in log  # the progress bar
    for name in ("epoch-1.pth", "epoch-2.pth", "model.pth", "responses.json", "responses-base.json"):
        assert (out / name).is_file(), name
    model = GPTModel(TINY)
    extra = load_checkpoint(out / "model.pth", model)
    assert extra["cfg"] == TINY and extra["epochs"] == 2 and len(extra["history"]["val_losses"]) >= 2
    responses = json.loads((out / "responses.json").read_text(encoding="utf-8"))
    assert len(responses) == 4 and all(isinstance(r["model_response"], str) for r in responses)
    train_log = json.loads((out / "train_log.json").read_text(encoding="utf-8"))
    assert train_log["steps"] == 2 * (34 // 4)


def test_finetuned_weights_differ_from_epoch_one(finetuned):
    out, _ = finetuned
    first, last = GPTModel(TINY), GPTModel(TINY)
    load_checkpoint(out / "epoch-1.pth", first)
    load_checkpoint(out / "model.pth", last)
    assert not torch.equal(first.trf_blocks[0].att.W_query.weight, last.trf_blocks[0].att.W_query.weight)


def test_finetune_with_lora_saves_a_merged_model(tmp_path, books_folder):
    books = tmp_path / "books"
    books_folder(books, TINY, tokens_seen=0, books=["none: a test model"])
    data = tiny_data(tmp_path / "data.json", n=20)
    done = run(FINETUNE, "--data", str(data), "--weights", "books", "--books-dir", str(books),
               "--epochs", "1", "--batch-size", "4", "--lora-rank", "2", "--no-responses", "--device", "cpu",
               "--out-dir", str(tmp_path / "lora"), cwd=tmp_path)  # fmt: skip
    assert "LoRA rank 2:" in done.stdout
    merged, base = GPTModel(TINY), GPTModel(TINY)
    extra = load_checkpoint(tmp_path / "lora" / "model.pth", merged)  # plain GPTModel names: merged
    assert extra["args"]["lora_rank"] == 2
    from safetensors.torch import load_file

    base.load_state_dict(load_file(str(books / "model.safetensors")))
    assert torch.equal(merged.tok_emb.weight, base.tok_emb.weight)  # embeddings were frozen
    assert not torch.equal(merged.out_head.weight, base.out_head.weight)  # linear layers got the update


def test_evaluate_metrics_only(finetuned, tmp_path):
    out, _ = finetuned
    report_dir = tmp_path / "report"
    done = run(EVALUATE, str(out / "responses-base.json"), str(out / "responses.json"), "--no-judge",
               "--out-dir", str(report_dir), cwd=tmp_path)  # fmt: skip
    assert "token_f1" in done.stdout
    summary = json.loads((report_dir / "summary.json").read_text(encoding="utf-8"))
    assert [row["file"] for row in summary] == ["responses-base.json", "responses.json"]
    assert all(0.0 <= row["rouge_l"] <= 1.0 for row in summary)
    report = (report_dir / "report.md").read_text(encoding="utf-8")
    assert "## Means per file" in report and "No LLM judge was used." in report
    assert (report_dir / "scores.csv").read_text(encoding="utf-8").count("\n") == 1 + 2 * 4


def test_evaluate_with_a_stub_judge(finetuned, tmp_path, evaluate):
    out, _ = finetuned
    server = StubServer([(200, {"data": [{"id": "stub"}]}, 0.0), openai_reply("Score: 40"),
                         openai_reply("no idea"), openai_reply("no idea"), openai_reply("90/100"),
                         openai_reply("70")])  # fmt: skip
    try:
        code, stdout = evaluate(str(out / "responses.json"), "--no-metrics", "--judge-api", "openai",
                                "--judge-url", server.url + "/v1", "--judge-model", "stub", "--retries", "1",
                                "--out-dir", str(tmp_path))  # fmt: skip
    finally:
        server.close()
    assert code == 0 and "LLM judge: stub" in stdout
    (row,) = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    # 4 entries: 40, missing (two replies without a score), 90, 70; the missing one is not a 0
    assert (row["judge_scored"], row["judge_missing"], row["judge_mean"]) == (
        3,
        1,
        round((40 + 90 + 70) / 3, 2),
    )
    assert "exact_match" not in row
    assert [r["path"] for r in server.requests].count("/v1/chat/completions") == 5


def test_evaluate_without_a_judge_server(finetuned, tmp_path, evaluate):
    out, _ = finetuned
    url = f"http://127.0.0.1:{free_port()}"
    code, stdout = evaluate(str(out / "responses.json"), "--judge-url", url, "--out-dir", str(tmp_path))
    assert code == 0 and stdout.count("No LLM judge") == 1 and "ollama serve" in stdout
    assert "Continuing with the offline metrics only." in stdout and (tmp_path / "report.md").is_file()
    code, stdout = evaluate(str(out / "responses.json"), "--no-metrics", "--judge-url", url)
    assert code == 2 and "No LLM judge" in stdout


def test_evaluate_ollama_judge_end_to_end(finetuned, tmp_path, evaluate):
    out, _ = finetuned
    server = StubServer([(200, {"models": [{"name": "llama3.2:latest"}]}, 0.0), ollama_reply("85")])
    try:
        code, _ = evaluate(str(out / "responses.json"), "--judge-url", server.url, "--out-dir", str(tmp_path))
    finally:
        server.close()
    assert code == 0
    (row,) = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert row["judge_mean"] == 85.0 and row["judge_scored"] == 4 and "rouge_l" in row
    assert server.requests[1]["json"]["model"] == "llama3.2"


def test_bad_input_files_fail_clearly(tmp_path, evaluate):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"instruction": "a", "input": "", "output": "b",}]', encoding="utf-8")
    code, _ = evaluate(str(broken), "--no-judge")
    assert "broken.json: malformed JSON at line 1, column 50" in code
    code, _ = evaluate(str(tiny_data(tmp_path / "plain.json", n=3)), "--no-judge")
    assert "entry 0 has no key 'model_response'" in code
    code, _ = evaluate(str(tmp_path / "missing.json"), "--no-judge")
    assert "no such file" in code
    done = run(FINETUNE, "--data", str(broken), "--out-dir", str(tmp_path / "x"), cwd=tmp_path, check=False)
    assert done.returncode != 0 and "malformed JSON" in done.stderr


def test_finetune_without_base_model_fails_clearly(tmp_path):
    done = run(FINETUNE, "--data", str(tiny_data(tmp_path / "d.json")), "--weights", "books",
               "--books-dir", str(tmp_path / "nothing"), "--out-dir", str(tmp_path / "x"), cwd=tmp_path,
               check=False)  # fmt: skip
    assert done.returncode != 0 and "no base model" in done.stderr


@pytest.mark.parametrize("script", [FINETUNE, EVALUATE])
def test_scripts_have_help(script, tmp_path):
    assert "usage" in run(script, "--help", cwd=tmp_path).stdout
