"""Chapter 6 LoRA: equal to the base layer at first; merged equals adapted; only the adapters train."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gpt_from_scratch.ch04 import GPTModel
from gpt_from_scratch.ch06 import (
    LoRALinear,
    add_classification_head,
    apply_lora,
    merge_lora,
    parameter_counts,
)


@pytest.fixture(autouse=True)
def _threads(one_thread):
    """Tiny models run faster on one thread."""


def perturb_adapters(model: nn.Module, seed: int = 1) -> None:
    """Give every B a random value, as training would (B starts at zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.B.copy_(torch.randn(module.B.shape, generator=gen) * 0.1)


def test_lora_linear_starts_equal_to_the_base_layer():
    torch.manual_seed(0)
    base = nn.Linear(6, 4)
    lora = LoRALinear(base, rank=2, alpha=4)
    assert lora.A.shape == (2, 6) and lora.B.shape == (4, 2) and lora.scaling == 2.0
    assert torch.count_nonzero(lora.B) == 0 and torch.count_nonzero(lora.A) > 0
    x = torch.randn(3, 5, 6)
    assert torch.equal(lora(x), base(x))


def test_lora_linear_computes_the_low_rank_update():
    torch.manual_seed(0)
    base = nn.Linear(6, 4)
    lora = LoRALinear(base, rank=3, alpha=1.5)
    perturb_adapters(lora)
    x = torch.randn(2, 6)
    expected = x @ (base.weight + 0.5 * lora.B @ lora.A).T + base.bias  # alpha / rank = 0.5
    torch.testing.assert_close(lora(x), expected)
    assert not torch.allclose(lora(x), base(x))  # the update is not vacuous: B != 0 changes the output


def test_merged_layer_equals_the_adapted_one():
    torch.manual_seed(0)
    for bias in (True, False):
        lora = LoRALinear(nn.Linear(6, 4, bias=bias), rank=2, alpha=4)
        perturb_adapters(lora)
        merged = lora.merged_linear()
        assert type(merged) is nn.Linear and (merged.bias is None) == (not bias)
        x = torch.randn(3, 6)
        torch.testing.assert_close(merged(x), lora(x))
    planted = nn.Linear(6, 4)
    with torch.no_grad():  # a planted error: the update added with the wrong scale
        planted.weight.copy_(lora.linear.weight + lora.B @ lora.A)
        planted.bias = None
    assert not torch.allclose(planted(x), lora(x), atol=1e-5)


def test_lora_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(nn.Linear(3, 3), rank=0, alpha=1)
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(nn.Conv1d(3, 3, 1), rank=1, alpha=1)
    with pytest.raises(TypeError):
        apply_lora(nn.Linear(3, 3), rank=1, alpha=1)


def lora_classifier(tiny_cfg, seed: int = 0) -> nn.Module:
    """A tiny GPT classifier (last block trainable), the same for the same seed."""
    torch.manual_seed(seed)
    return add_classification_head(GPTModel(tiny_cfg()), num_classes=2)


def test_apply_lora_wraps_every_linear_and_freezes_everything_else(tiny_cfg):
    model = lora_classifier(tiny_cfg)
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    n_layers = tiny_cfg()["n_layers"]
    assert len(linears) == 6 * n_layers + 1  # W_query, W_key, W_value, out_proj, 2 feed-forward; the head
    x = torch.randint(0, 97, (2, 7))
    model.eval()
    with torch.no_grad():
        before = model(x)
    assert apply_lora(model, rank=4, alpha=8) is model
    wrapped = {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    assert sorted(wrapped) == sorted(linears)
    assert not any(isinstance(m.linear, LoRALinear) for m in wrapped.values())  # not wrapped twice
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{name}.{ab}" for name in linears for ab in ("A", "B")}
    assert parameter_counts(model)[0] == sum(
        4 * (m.linear.in_features + m.linear.out_features) for m in wrapped.values()
    )
    with torch.no_grad():
        assert torch.equal(model(x), before)  # B = 0: the adapted model starts as the base model
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model, rank=4, alpha=8)


def test_only_the_adapters_train(tiny_cfg):
    model = apply_lora(lora_classifier(tiny_cfg), rank=2, alpha=4)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x, y = torch.randint(0, 97, (4, 7)), torch.tensor([0, 1, 1, 0])
    for _ in range(2):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x)[:, -1, :], y)
        loss.backward()
        optimizer.step()
    for name, param in model.named_parameters():
        changed = not torch.equal(param, before[name])
        assert changed == name.endswith((".A", ".B")), name


def test_merge_lora_gives_plain_layers_with_the_adapted_output(tiny_cfg):
    model = apply_lora(lora_classifier(tiny_cfg), rank=4, alpha=8).eval()
    perturb_adapters(model)
    x = torch.randint(0, 97, (3, 9))
    with torch.no_grad():
        adapted = model(x)
        base = lora_classifier(tiny_cfg).eval()(x)
    assert not torch.allclose(adapted, base, atol=1e-4)  # the adapters do change the model
    assert merge_lora(model) is model
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert set(model.state_dict()) == set(lora_classifier(tiny_cfg).state_dict())  # a plain model again
    with torch.no_grad():
        torch.testing.assert_close(model(x), adapted, atol=1e-5, rtol=1e-5)
