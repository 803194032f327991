"""Chapter 7 scripts in process on a tiny books-format base model: finetune.py, then evaluate.py.

The judge is a stub Ollama/OpenAI-compatible server on 127.0.0.1 (from test_ch07_judge.py); no
real model server and no network are needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_ch07_judge import StubServer, free_port, ollama_reply, openai_reply

from gpt_from_scratch.ch04 import GPT_CONFIG_124M, GPTModel
from gpt_from_scratch.ch05 import load_checkpoint
from shared.runtime import REPO_ROOT, SHIPPED_BOOKS_MODEL

FINETUNE = REPO_ROOT / "ch07_instruction" / "finetune.py"
EVALUATE = REPO_ROOT / "ch07_instruction" / "evaluate.py"
TINY = {**GPT_CONFIG_124M, "context_length": 96, "emb_dim": 32, "n_heads": 2, "n_layers": 1, "drop_rate": 0.0}
NO_JUDGE_ENV = dict.fromkeys(
    ("COURSE_JUDGE_API", "COURSE_JUDGE_URL", "COURSE_JUDGE_MODEL", "COURSE_JUDGE_API_KEY")
)


def tiny_data(path: Path, n: int = 40) -> Path:
    """A small instruction file: n entries, some with an input."""
    entries = [
        {"instruction": f"Repeat the number {i}.", "input": "" if i % 3 else f"number {i}", "output": f"{i}."}
        for i in range(n)
    ]
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def evaluate(run_script, *args: str) -> tuple[int, str, str]:
    """evaluate.py's (exit code, stdout, stderr), without any judge set in the environment."""
    done = run_script(EVALUATE, *args, env=NO_JUDGE_ENV, check=False)
    return done.code, done.out, done.err


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, books_folder, run_script):
    """One finetuning run shared by the tests below: its output folder and its stdout + stderr."""
    tmp = tmp_path_factory.mktemp("ch07")
    books = tmp / "books"
    books_folder(books, TINY, tokens_seen=0, books=["none: a test model"])
    out = tmp / "run"
    data = tiny_data(tmp / "data.json")
    done = run_script(
        FINETUNE, "--data", str(data), "--weights", "books", "--books-dir", str(books),
        "--epochs", "2", "--batch-size", "4", "--eval-freq", "4", "--eval-iter", "1", "--max-new-tokens", "4",
        "--max-length", "64", "--base-responses", "--device", "cpu", "--threads", "1", "--out-dir", str(out),
        env={"COURSE_QUICK": "0"},  # the whole tiny file and two epochs, also where the tests run quick
    )  # fmt: skip
    return out, done.out + done.err


@pytest.fixture(scope="module")
def responses(tmp_path_factory) -> Path:
    """A folder with responses-base.json and responses.json, 4 entries each, as finetune.py writes them."""
    folder = tmp_path_factory.mktemp("responses")
    entries = json.loads(tiny_data(folder / "data.json", n=4).read_text(encoding="utf-8"))
    base = [{**e, "model_response": "no idea"} for e in entries]
    tuned = [{**e, "model_response": e["output"] if i < 3 else "1."} for i, e in enumerate(entries)]
    for name, rows in (("responses-base.json", base), ("responses.json", tuned)):
        (folder / name).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return folder


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
    assert extra["args"]["out_dir"] == str(out)
    responses = json.loads((out / "responses.json").read_text(encoding="utf-8"))
    assert len(responses) == 4 and all(isinstance(r["model_response"], str) for r in responses)
    train_log = json.loads((out / "train_log.json").read_text(encoding="utf-8"))
    assert train_log["steps"] == 2 * (34 // 4) and len(train_log["val_losses"]) == 16 // 4  # every 4 steps


def test_finetune_prints_no_training_lines_of_its_own(finetuned):
    _, log = finetuned
    assert "Ep 1 (Step" not in log  # the training core is quiet (verbose=False); the bar shows the losses


def test_finetuned_weights_differ_from_epoch_one(finetuned):
    out, _ = finetuned
    first, last = GPTModel(TINY), GPTModel(TINY)
    load_checkpoint(out / "epoch-1.pth", first)
    load_checkpoint(out / "model.pth", last)
    assert not torch.equal(first.trf_blocks[0].att.W_query.weight, last.trf_blocks[0].att.W_query.weight)


def test_finetune_with_lora_saves_a_merged_model(tmp_path, books_folder, run_script):
    books = tmp_path / "books"
    books_folder(books, TINY, tokens_seen=0, books=["none: a test model"])
    data = tiny_data(tmp_path / "data.json", n=20)
    done = run_script(FINETUNE, "--data", str(data), "--weights", "books", "--books-dir", str(books),
                      "--epochs", "1", "--batch-size", "4", "--lora-rank", "2", "--no-responses",
                      "--device", "cpu", "--threads", "1", "--out-dir", str(tmp_path / "lora"),
                      env={"COURSE_QUICK": "0"})  # fmt: skip
    assert "LoRA rank 2:" in done.out
    merged, base = GPTModel(TINY), GPTModel(TINY)
    extra = load_checkpoint(tmp_path / "lora" / "model.pth", merged)  # plain GPTModel names: merged
    assert extra["args"]["lora_rank"] == 2
    from safetensors.torch import load_file

    base.load_state_dict(load_file(str(books / "model.safetensors")))
    assert torch.equal(merged.tok_emb.weight, base.tok_emb.weight)  # embeddings were frozen
    assert not torch.equal(merged.out_head.weight, base.out_head.weight)  # linear layers got the update


def test_default_folders_and_quick_mode(tmp_path, monkeypatch, script_module):
    monkeypatch.setenv("COURSE_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.delenv("COURSE_QUICK", raising=False)
    parse = script_module(FINETUNE).parse_args
    args = parse([])
    assert (args.out_dir, args.books_dir, args.weights, args.size) == (
        tmp_path / "ch07",
        SHIPPED_BOOKS_MODEL,  # the books model that ships with the course
        "auto",
        "355M",
    )
    assert (args.limit, args.epochs, args.max_new_tokens) == (None, 2, 64)
    args = parse(["--quick"])
    assert (args.out_dir, args.books_dir, args.weights) == (
        tmp_path / "ch07-quick",
        tmp_path / "books-quick",
        "books",
    )
    assert (args.limit, args.epochs, args.max_new_tokens) == (40, 1, 16)
    assert parse(["--quick", "--limit", "8", "--weights", "gpt2"]).limit == 8


def test_evaluate_metrics_only(responses, tmp_path, run_script):
    report_dir = tmp_path / "report"
    files = [str(responses / "responses-base.json"), str(responses / "responses.json")]
    code, out, _ = evaluate(run_script, *files, "--no-judge", "--out-dir", str(report_dir))
    assert code == 0 and "token_f1" in out
    summary = json.loads((report_dir / "summary.json").read_text(encoding="utf-8"))
    assert [row["file"] for row in summary] == ["responses-base.json", "responses.json"]
    assert [row["exact_match"] for row in summary] == [0.0, 0.75]  # the last tuned response is wrong
    assert all(0.0 <= row["rouge_l"] <= 1.0 for row in summary)
    report = (report_dir / "report.md").read_text(encoding="utf-8")
    assert "## Means per file" in report and "No LLM judge was used." in report
    assert (report_dir / "scores.csv").read_text(encoding="utf-8").count("\n") == 1 + 2 * 4


def test_evaluate_writes_next_to_the_first_file_by_default(responses, tmp_path, run_script):
    copy = tmp_path / "responses.json"
    copy.write_text((responses / "responses.json").read_text(encoding="utf-8"), encoding="utf-8")
    code, _, _ = evaluate(run_script, str(copy), "--no-judge")
    assert code == 0 and (tmp_path / "report.md").is_file() and (tmp_path / "scores.csv").is_file()


def test_evaluate_with_a_stub_judge(responses, tmp_path, run_script):
    server = StubServer([(200, {"data": [{"id": "stub"}]}, 0.0), openai_reply("Score: 40"),
                         openai_reply("no idea"), openai_reply("no idea"), openai_reply("90/100"),
                         openai_reply("70")])  # fmt: skip
    try:
        judge = ["--judge-api", "openai", "--judge-url", server.url + "/v1", "--judge-model", "stub"]
        code, stdout, _ = evaluate(run_script, str(responses / "responses.json"), "--no-metrics", *judge,
                                   "--retries", "1", "--out-dir", str(tmp_path))  # fmt: skip
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


def test_evaluate_without_a_judge_server(responses, tmp_path, run_script):
    url = f"http://127.0.0.1:{free_port()}"
    file = str(responses / "responses.json")
    code, stdout, _ = evaluate(run_script, file, "--judge-url", url, "--out-dir", str(tmp_path))
    assert code == 0 and stdout.count("No LLM judge") == 1 and "ollama serve" in stdout
    assert "Continuing with the offline metrics only." in stdout and (tmp_path / "report.md").is_file()
    code, stdout, _ = evaluate(run_script, file, "--no-metrics", "--judge-url", url)
    assert code == 2 and "No LLM judge" in stdout


def test_evaluate_ollama_judge_end_to_end(responses, tmp_path, run_script):
    server = StubServer([(200, {"models": [{"name": "llama3.2:latest"}]}, 0.0), ollama_reply("85")])
    try:
        code, _, _ = evaluate(run_script, str(responses / "responses.json"), "--judge-url", server.url,
                              "--out-dir", str(tmp_path))  # fmt: skip
    finally:
        server.close()
    assert code == 0
    (row,) = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert row["judge_mean"] == 85.0 and row["judge_scored"] == 4 and "rouge_l" in row
    assert server.requests[1]["json"]["model"] == "llama3.2"


def test_bad_input_files_fail_clearly(tmp_path, run_script):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"instruction": "a", "input": "", "output": "b",}]', encoding="utf-8")
    code, _, err = evaluate(run_script, str(broken), "--no-judge")
    assert code == 1 and "broken.json: malformed JSON at line 1, column 50" in err
    code, _, err = evaluate(run_script, str(tiny_data(tmp_path / "plain.json", n=3)), "--no-judge")
    assert code == 1 and "entry 0 has no key 'model_response'" in err
    code, _, err = evaluate(run_script, str(tmp_path / "missing.json"), "--no-judge")
    assert code == 1 and "no such file" in err
    done = run_script(FINETUNE, "--data", str(broken), "--out-dir", str(tmp_path / "x"), check=False)
    assert done.code == 1 and "malformed JSON" in done.err


def test_finetune_without_base_model_fails_clearly(tmp_path, run_script):
    done = run_script(FINETUNE, "--data", str(tiny_data(tmp_path / "d.json")), "--weights", "books",
                      "--books-dir", str(tmp_path / "nothing"), "--out-dir", str(tmp_path / "x"),
                      "--device", "cpu", check=False)  # fmt: skip
    assert done.code == 1 and "no base model" in done.err


@pytest.mark.parametrize("script", [FINETUNE, EVALUATE])
def test_help_shows_the_examples(script, run_script):
    out = run_script(script, "--help").out
    assert out.startswith(f"usage: ch07_instruction/{script.name}")
    assert (
        f"    python ch07_instruction/{script.name} " in out
    )  # the docstring's examples, indented as written


def test_finetune_refuses_a_folder_with_another_run(tmp_path, run_script):
    """Issue 21: an old responses.json never stays beside a new model.pth."""
    out = tmp_path / "x"
    out.mkdir()
    (out / "responses.json").write_text("[]\n")
    data = ["--data", str(tiny_data(tmp_path / "d.json")), "--out-dir", str(out)]
    nothing = ["--weights", "books", "--books-dir", str(tmp_path / "nothing"), "--device", "cpu"]
    done = run_script(FINETUNE, *data, *nothing, check=False)
    assert done.code == 1 and "--overwrite" in done.err and "responses.json" in done.err
    assert len(done.err.strip().splitlines()) == 1
    done = run_script(FINETUNE, *data, *nothing, "--overwrite", check=False)
    assert "no base model" in done.err and not (out / "responses.json").exists()  # removed before the work


def test_evaluate_refuses_responses_of_another_run(tmp_path, run_script):
    """Issue 21: a finetune killed while generating left the old responses.json beside a new model."""
    entries = [
        {"instruction": "Say hi.", "input": "", "output": "hi", "model_response": "hi", "run_id": "old"}
    ]
    responses = tmp_path / "responses.json"
    responses.write_text(json.dumps(entries), encoding="utf-8")
    (tmp_path / "train_log.json").write_text(json.dumps({"run_id": "new"}), encoding="utf-8")
    code, _, err = evaluate(run_script, str(responses), "--no-judge")
    assert code == 1 and "stale" in err and "--allow-mixed-runs" in err
    assert not (tmp_path / "report.md").exists()
    code, _, err = evaluate(run_script, str(responses), "--no-judge", "--allow-mixed-runs")
    assert code == 0 and "WARNING" in err and (tmp_path / "report.md").is_file()
    (tmp_path / "train_log.json").write_text(json.dumps({"run_id": "old"}), encoding="utf-8")
    code, _, err = evaluate(run_script, str(responses), "--no-judge")
    assert code == 0 and "WARNING" not in err


def test_a_finetune_run_id_is_carried_by_its_files(finetuned):
    out = finetuned[0]
    run_id = json.loads((out / "train_log.json").read_text())["run_id"]
    for name in ("responses.json", "responses-base.json"):
        assert {e["run_id"] for e in json.loads((out / name).read_text())} == {run_id}
    assert load_checkpoint(out / "model.pth", GPTModel(TINY))["run_id"] == run_id


def test_mask_prompt_with_a_max_length_shorter_than_the_prompts_is_refused(
    tmp_path, run_script, books_folder
):
    """Issue 21: --mask-prompt --max-length 20 trained on NaN losses and exited 0."""
    books_folder(tmp_path / "books", TINY)
    data = str(tiny_data(tmp_path / "d.json"))
    args = ["--data", data, "--mask-prompt", "--max-length", "20", "--weights", "books"]
    args += ["--books-dir", str(tmp_path / "books"), "--out-dir", str(tmp_path / "x"), "--device", "cpu"]
    done = run_script(FINETUNE, *args, check=False)
    assert done.code == 1 and "--max-length 20 cuts" in done.err
    assert not (tmp_path / "x" / "model.pth").exists()


def test_resume_after_a_kill_in_epoch_two_ends_as_the_uninterrupted_run(finetuned, tmp_path, run_script):
    """Issue 21: chapter 7's finetune gets --resume; it continues from the last epoch checkpoint."""
    import shutil

    whole, _ = finetuned
    out = tmp_path / "killed"
    shutil.copytree(whole, out)
    for name in ("epoch-2.pth", "model.pth", "responses.json", "train_log.json"):
        (out / name).unlink()  # killed during the second epoch
    args = ["--resume", "--out-dir", str(out), "--max-new-tokens", "4", "--base-responses", "--device", "cpu"]
    done = run_script(FINETUNE, *args, "--threads", "1", env={"COURSE_QUICK": "0"})
    assert "resuming from epoch-1.pth: 1 of 2 epoch(s) done" in done.out
    resumed, uninterrupted = GPTModel(TINY), GPTModel(TINY)
    extra = load_checkpoint(out / "model.pth", resumed)
    load_checkpoint(whole / "model.pth", uninterrupted)
    for (name, a), b in zip(resumed.state_dict().items(), uninterrupted.state_dict().values()):
        assert torch.equal(a, b), name
    logs = [json.loads((folder / "train_log.json").read_text()) for folder in (out, whole)]
    assert logs[0]["val_losses"] == logs[1]["val_losses"] and logs[0]["run_id"] == logs[1]["run_id"]
    assert extra["run_id"] == logs[1]["run_id"]  # the same run: evaluate.py accepts its responses
    assert (out / "responses-base.json").read_bytes() == (whole / "responses-base.json").read_bytes()


def test_resume_refuses_other_settings_and_a_folder_without_a_run(finetuned, tmp_path, run_script):
    whole, _ = finetuned
    done = run_script(FINETUNE, "--resume", "--out-dir", str(whole), "--lr", "1e-3", check=False)
    assert done.code == 1 and "--lr 0.001 (the run's: 0.0002)" in done.err
    assert len(done.err.strip().splitlines()) == 1
    done = run_script(FINETUNE, "--resume", "--out-dir", str(tmp_path / "empty"), check=False)
    assert done.code == 1 and "no epoch-<k>.pth" in done.err
    done = run_script(FINETUNE, "--resume", "--overwrite", "--out-dir", str(whole), check=False)
    assert done.code == 1 and "choose one" in done.err
