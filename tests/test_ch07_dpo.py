import copy
import json
import math

import pytest
import torch

from gpt_from_scratch.ch04 import GPTModel
from gpt_from_scratch.ch07 import (
    dataset_log_probs,
    dpo_loss,
    evaluate_preferences,
    pair_log_probs,
    preference_accuracy,
    preference_collate,
    response_log_probs,
    train_dpo,
)
from shared.runtime import REPO_ROOT

SCRIPT = REPO_ROOT / "ch07_instruction" / "dpo.py"


def test_dpo_loss_hand_computed_toy_example():
    loss, chosen, rejected = dpo_loss(
        torch.tensor([-8.0]), torch.tensor([-11.0]), torch.tensor([-10.0]), torch.tensor([-10.0]), beta=0.5
    )
    assert chosen.item() == pytest.approx(1.0) and rejected.item() == pytest.approx(-0.5)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.5))), abs=1e-6)


def test_dpo_loss_is_ln2_when_policy_equals_reference():
    lp = torch.tensor([-3.0, -9.0, -1.5])
    loss, chosen, rejected = dpo_loss(lp, lp - 2, lp, lp - 2, beta=0.3)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert torch.all(chosen == 0) and torch.all(rejected == 0)


def test_dpo_loss_gradient_raises_chosen_and_lowers_rejected():
    chosen, rejected = torch.tensor([-5.0], requires_grad=True), torch.tensor([-5.0], requires_grad=True)
    loss, _, _ = dpo_loss(chosen, rejected, torch.tensor([-5.0]), torch.tensor([-5.0]), beta=0.1)
    loss.backward()
    assert chosen.grad.item() < 0 < rejected.grad.item()  # descent raises chosen, lowers rejected


def test_preference_collate_masks_prompt_and_padding():
    batch = preference_collate([([1, 2, 3], [4, 5], [6]), ([7], [8, 9, 10, 11], [12, 13])], pad_token_id=0)
    assert batch["chosen"].shape == batch["rejected_mask"].shape == (2, 6)
    assert batch["chosen"][0].tolist() == [1, 2, 3, 4, 5, 0]
    assert batch["chosen_mask"][0].tolist() == [False, False, False, True, True, True]
    assert batch["rejected_mask"][0].tolist() == [False, False, False, True, True, False]
    assert batch["chosen_mask"][1].tolist() == [False, True, True, True, True, True]
    with pytest.raises(ValueError):
        preference_collate([])


def test_response_log_probs_match_a_direct_computation(tiny_cfg):
    torch.manual_seed(0)
    model = GPTModel(tiny_cfg()).eval()
    batch = preference_collate([([1, 2, 3], [4, 5], [6]), ([7], [8, 9, 10, 11], [12, 13])], pad_token_id=0)
    with torch.no_grad():
        got = response_log_probs(model, batch["chosen"], batch["chosen_mask"])
        for row in range(2):
            ids, mask = batch["chosen"][row], batch["chosen_mask"][row]
            total = 0.0
            for j in range(1, len(ids)):
                if mask[j]:
                    logits = model(ids[:j].unsqueeze(0))[0, -1]
                    total += torch.log_softmax(logits, -1)[ids[j]].item()
            assert got[row].item() == pytest.approx(total, abs=1e-4)


def test_preference_accuracy_counts_ties_as_half():
    chosen, rejected = torch.tensor([1.0, 0.0, 2.0, -1.0]), torch.tensor([0.0, 1.0, 1.0, -1.0])
    assert preference_accuracy(chosen, rejected) == pytest.approx(2.5 / 4)  # win, loss, win, tie
    assert preference_accuracy(torch.zeros(7), torch.zeros(7)) == 0.5  # before training every pair ties


def test_pair_log_probs_is_response_log_probs_of_each_side(tiny_cfg):
    torch.manual_seed(0)
    model = GPTModel(tiny_cfg()).eval()
    batch = preference_collate([([1, 2, 3], [4, 5], [6]), ([7], [8, 9, 10, 11], [12, 13])], pad_token_id=0)
    with torch.no_grad():
        chosen, rejected = pair_log_probs(model, batch)
        assert torch.allclose(
            chosen, response_log_probs(model, batch["chosen"], batch["chosen_mask"]), atol=1e-5
        )
        assert torch.allclose(
            rejected, response_log_probs(model, batch["rejected"], batch["rejected_mask"]), atol=1e-5
        )


def test_tiny_dpo_run_raises_held_out_preference_accuracy(tiny_cfg):
    torch.manual_seed(123)
    # chosen answers end in token 5, rejected in token 9: a rule the policy can learn and carry over
    pairs = [([int(t) for t in torch.randint(10, 40, (4,))], [11, 5], [11, 9]) for _ in range(48)]
    train, held_out = pairs[:32], pairs[32:]
    policy = GPTModel(tiny_cfg(vocab_size=50257))  # the helpers pad with GPT-2's end-of-text id
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    train_ref, held_ref = dataset_log_probs(reference, train), dataset_log_probs(reference, held_out)
    before = evaluate_preferences(policy, held_out, held_ref, beta=0.5)
    assert before["loss"] == pytest.approx(math.log(2), abs=1e-5) and before["reward_accuracy"] == 0.5
    optimizer = torch.optim.AdamW(policy.parameters(), lr=5e-3)
    history = train_dpo(
        policy,
        optimizer,
        train,
        train_ref,
        held_out,
        held_ref,
        beta=0.5,
        epochs=8,
        batch_size=8,
        eval_freq=100,
    )
    after = evaluate_preferences(policy, held_out, held_ref, beta=0.5)
    assert after["reward_accuracy"] >= 0.9 and after["raw_accuracy"] > 0.5 and after["loss"] < before["loss"]
    assert (
        len(history["val_loss"]) == 8 and history["step"][-1] == 32
    )  # one evaluation per epoch, 4 steps each


def test_train_dpo_refuses_too_few_pairs(tiny_cfg):
    policy = GPTModel(tiny_cfg())
    with pytest.raises(ValueError, match="no batch"):
        one = [([1], [2], [3])]
        train_dpo(policy, torch.optim.SGD(policy.parameters(), lr=0.1), one, (torch.zeros(1),) * 2, one,
                  (torch.zeros(1),) * 2, batch_size=2)  # fmt: skip


# The script: a tiny model with GPT-2's vocabulary stands in for chapter 7's checkpoint


@pytest.fixture
def init_checkpoint(tmp_path, tiny_cfg):
    from gpt_from_scratch.ch05 import save_checkpoint

    torch.manual_seed(0)
    cfg = tiny_cfg(vocab_size=50257, context_length=128, n_layers=1)
    path = tmp_path / "ch07" / "model.pth"
    save_checkpoint(path, GPTModel(cfg), None, cfg=cfg, source="a tiny test model")
    return path


def test_script_quick_run_resume_and_refusals(tmp_path, init_checkpoint, run_script, mirror):
    out = tmp_path / "dpo"
    common = ("--quick", "--init-from", str(init_checkpoint), "--out-dir", str(out), "--limit", "8")
    done = run_script(SCRIPT, *common, "--max-new-tokens", "4")
    assert {p.name for p in out.iterdir()} == {"epoch-1.pth", "model.pth", "report.json", "responses.json"}
    report = json.loads((out / "report.json").read_text())
    assert report["before"]["reward_accuracy"] == 0.5 and report["pairs"] == {
        "train": 8,
        "validation": 8,
        "test": 8,
    }
    assert set(report["after"]["metrics"]) == {"exact_match", "token_f1", "rouge_l"}
    assert len(report["seconds_per_epoch"]) == 1 and "implicit-reward accuracy" in done.out
    responses = json.loads((out / "responses.json").read_text())
    assert len(responses) == 8 and {"model_response", "response_before"} <= set(responses[0])

    again = run_script(SCRIPT, *common, check=False)  # a run is there: refused, nothing removed
    assert again.code == 1 and "--overwrite" in again.err and (out / "model.pth").is_file()
    changed = run_script(SCRIPT, *common, "--resume", "--epochs", "2", "--beta", "0.5", check=False)
    assert changed.code == 1 and len(changed.err.strip().splitlines()) == 1 and "--beta" in changed.err
    resumed = run_script(SCRIPT, *common, "--resume", "--epochs", "2", "--max-new-tokens", "4")
    assert "resuming after epoch 1" in resumed.out and (out / "epoch-2.pth").is_file()
    report = json.loads((out / "report.json").read_text())
    assert len(report["seconds_per_epoch"]) == 2 and report["history"]["step"][-1] == 4  # 2 epochs of 2 steps


def test_script_resume_restores_the_runs_settings(tmp_path, init_checkpoint, run_script, mirror):
    """--resume means what it means in train.py and finetune.py: omitted settings come from the run."""
    out = tmp_path / "dpo"
    where = ("--init-from", str(init_checkpoint), "--out-dir", str(out))
    run_script(
        SCRIPT, "--quick", *where, "--limit", "8", "--beta", "0.5", "--epochs", "2", "--max-new-tokens", "3"
    )
    first = json.loads((out / "report.json").read_text())
    for name in ("epoch-2.pth", "model.pth", "report.json", "responses.json"):  # as if killed in epoch 2
        (out / name).unlink()
    both = run_script(SCRIPT, *where, "--resume", "--overwrite", check=False)
    assert both.code == 1 and "choose one" in both.err and (out / "epoch-1.pth").is_file()
    resumed = run_script(SCRIPT, *where, "--resume")  # no --quick, --beta, --limit or --epochs given
    assert "resuming after epoch 1" in resumed.out and (out / "epoch-2.pth").is_file()
    report = json.loads((out / "report.json").read_text())
    assert {k: report["args"][k] for k in ("beta", "epochs", "limit", "quick", "max_new_tokens")} == {
        "beta": 0.5,
        "epochs": 2,
        "limit": 8,
        "quick": True,
        "max_new_tokens": 3,
    }
    assert report["run_id"] == first["run_id"] and len(report["seconds_per_epoch"]) == 2
    assert report["history"]["step"] == first["history"]["step"]
    finished = run_script(SCRIPT, *where, "--resume", check=False)  # nothing left to train
    assert finished.code == 1 and "raise --epochs" in finished.err
    empty = run_script(SCRIPT, "--resume", "--out-dir", str(tmp_path / "none"), check=False)
    assert empty.code == 1 and "no epoch-<k>.pth" in empty.err


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--beta", "0"),
        ("--lr", "-1"),
        ("--epochs", "0"),
        ("--batch-size", "0"),
        ("--limit", "-1"),
        ("--lr", "nan"),
    ],
)
def test_script_refuses_bad_values_in_one_line(flag, value, run_script, tmp_path):
    done = run_script(SCRIPT, f"{flag}={value}", "--out-dir", str(tmp_path / "o"), check=False)
    lines = done.err.strip().splitlines()
    assert done.code == 2 and len(lines) == 1 and flag in lines[0] and "expected" in lines[0], done.err
    assert not (tmp_path / "o").exists()


def test_script_names_a_missing_or_damaged_init_checkpoint(tmp_path, run_script, mirror):
    missing = tmp_path / "nowhere" / "model.pth"
    done = run_script(SCRIPT, "--init-from", str(missing), "--out-dir", str(tmp_path / "o"), check=False)
    assert done.code == 1 and len(done.err.strip().splitlines()) == 1
    assert str(missing) in done.err and "finetune.py" in done.err
    damaged = tmp_path / "model.pth"
    damaged.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    done = run_script(SCRIPT, "--init-from", str(damaged), "--out-dir", str(tmp_path / "o"), check=False)
    lines = done.err.strip().splitlines()
    assert done.code == 1 and len(lines) == 1 and str(damaged) in lines[0] and "Traceback" not in done.err
