import copy
import math

import pytest
import torch

from gpt_from_scratch.ch04 import GPTModel
from gpt_from_scratch.ch07 import dpo_loss, preference_accuracy, preference_collate, response_log_probs


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


def test_preference_accuracy():
    assert (
        preference_accuracy(torch.tensor([1.0, 0.0, 2.0, -1.0]), torch.tensor([0.0, 1.0, 1.0, -1.0])) == 0.5
    )


def test_tiny_dpo_run_raises_held_out_preference_accuracy(tiny_cfg):
    torch.manual_seed(123)
    # chosen answers end in token 5, rejected in token 9: a rule the policy can learn and carry over
    pairs = [([int(t) for t in torch.randint(10, 40, (4,))], [11, 5], [11, 9]) for _ in range(48)]
    train, held_out = (
        preference_collate(pairs[:32], pad_token_id=0),
        preference_collate(pairs[32:], pad_token_id=0),
    )
    policy = GPTModel(tiny_cfg())
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=5e-3)

    def step(batch, train_mode):
        logps = [response_log_probs(m, batch[k], batch[k + "_mask"]) for m in (policy, reference)
                 for k in ("chosen", "rejected")]  # fmt: skip
        return dpo_loss(*logps, beta=0.5)

    policy.eval()
    with torch.no_grad():
        _, c, r = step(held_out, False)
    before = preference_accuracy(c, r)
    policy.train()
    for _ in range(30):
        loss, _, _ = step(train, True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    policy.eval()
    with torch.no_grad():
        _, c, r = step(held_out, False)
    assert before <= 0.5 < preference_accuracy(c, r) >= 0.9
