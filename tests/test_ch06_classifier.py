"""Chapter 6 classifier: last position, loss and accuracy, freezing, training, classify_text, save/load."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gpt_from_scratch.ch04 import GPTModel
from gpt_from_scratch.ch06 import (
    add_classification_head,
    binary_metrics,
    calc_accuracy_loader,
    calc_cls_loss_batch,
    calc_cls_loss_loader,
    classify_text,
    load_classifier,
    parameter_counts,
    predict_loader,
    save_classifier,
    set_requires_grad,
    train_classifier,
)


@pytest.fixture(autouse=True)
def _threads(one_thread):
    """Tiny models run faster on one thread."""


class LastLogits(nn.Module):
    """A fake model: row ``last[i]`` of logits at the last position of an input whose first token is i,
    and the opposite logits at every other position (so reading the wrong position gives wrong answers)."""

    def __init__(self, last: torch.Tensor):
        super().__init__()
        self.last = last
        self.pos_emb = nn.Embedding(8, 1)  # classify_text reads the context length from here

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        rows = self.last[idx[:, 0].clamp(max=len(self.last) - 1)]  # (b, C)
        out = rows.flip(-1).unsqueeze(1).repeat(1, idx.shape[1], 1)  # (b, T, C): wrong before the end
        out[:, -1, :] = rows
        return out


def tiny_classifier(tiny_cfg, trainable: str = "last_block", seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    model = GPTModel(tiny_cfg(**overrides))
    return add_classification_head(model, num_classes=2, trainable=trainable)


def test_loss_and_accuracy_read_the_last_position():
    last = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [-1.0, 1.0]])  # predicts 0, 1, 0, 1
    model = LastLogits(last)
    x = torch.arange(4).unsqueeze(1).repeat(1, 5)  # (4, 5): the first token says which row of logits
    y = torch.tensor([0, 1, 1, 1])  # the third prediction is wrong
    expected = F.cross_entropy(last, y)
    torch.testing.assert_close(calc_cls_loss_batch(x, y, model, "cpu"), expected)
    loader = DataLoader(TensorDataset(x, y), batch_size=3)  # batches of 3 and 1
    assert calc_accuracy_loader(loader, model, "cpu") == 0.75
    assert calc_accuracy_loader(loader, model, "cpu", num_batches=1) == pytest.approx(2 / 3)
    by_batch = (F.cross_entropy(last[:3], y[:3]).item() + F.cross_entropy(last[3:], y[3:]).item()) / 2
    assert calc_cls_loss_loader(loader, model, "cpu") == pytest.approx(by_batch)
    targets, predictions = predict_loader(loader, model, "cpu")
    assert targets.tolist() == [0, 1, 1, 1] and predictions.tolist() == [0, 1, 0, 1]


def test_loader_functions_restore_the_mode_and_refuse_empty_loaders(tiny_cfg):
    model = tiny_classifier(tiny_cfg).train()
    zeros = torch.zeros(4, 6, dtype=torch.long)
    loader = DataLoader(TensorDataset(zeros, zeros[:, 0]), batch_size=2)
    calc_accuracy_loader(loader, model, "cpu")
    calc_cls_loss_loader(loader, model, "cpu")
    assert model.training
    empty = DataLoader(TensorDataset(torch.zeros(1, 6), torch.zeros(1)), batch_size=2, drop_last=True)
    with pytest.raises(ValueError, match="no batches"):
        calc_accuracy_loader(empty, model, "cpu")


def test_binary_metrics_known_answers():
    targets = torch.tensor([1, 1, 1, 0, 0, 0, 0, 1])
    predictions = torch.tensor([1, 1, 0, 0, 0, 1, 0, 1])
    m = binary_metrics(targets, predictions)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (3, 1, 1, 3)
    assert m["precision"] == 0.75 and m["recall"] == 0.75 and m["f1"] == 0.75 and m["accuracy"] == 0.75
    none = binary_metrics(targets, torch.zeros(8, dtype=torch.long))
    assert none["precision"] == 0.0 and none["recall"] == 0.0 and none["f1"] == 0.0


@pytest.mark.parametrize(
    ("trainable", "prefixes"),
    [
        ("head", ["out_head."]),
        ("last_block", ["out_head.", "trf_blocks.1.", "final_norm."]),
        ("all", [""]),
    ],
)
def test_freezing_leaves_exactly_the_expected_parameters_trainable(tiny_cfg, trainable, prefixes):
    model = tiny_classifier(tiny_cfg, trainable=trainable)
    assert model.out_head.out_features == 2 and model.out_head.bias is not None
    for name, param in model.named_parameters():
        assert param.requires_grad == name.startswith(tuple(prefixes)), name
    trainable_count, total = parameter_counts(model)
    expected = sum(p.numel() for n, p in model.named_parameters() if n.startswith(tuple(prefixes)))
    assert trainable_count == expected
    assert total == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="trainable must be"):
        add_classification_head(GPTModel(tiny_cfg()), trainable="last_two")


def test_parameter_counts_count_a_shared_tensor_once(tiny_cfg):
    model = GPTModel(tiny_cfg())
    model.out_head.weight = model.tok_emb.weight  # tied, as in GPT-2
    set_requires_grad(model, False)
    set_requires_grad(model.final_norm, True)
    trainable, total = parameter_counts(model)
    assert trainable == 2 * tiny_cfg()["emb_dim"]
    stored = sum(p.numel() for p in model.state_dict().values())  # lists the tied matrix twice
    assert total == sum(p.numel() for p in model.parameters()) < stored


def test_training_changes_only_trainable_parameters_and_learns(tiny_cfg):
    torch.manual_seed(0)
    x = torch.randint(1, 97, (32, 6))
    y = (x[:, -1] > 48).long()  # the label is visible in the last token
    train = DataLoader(
        TensorDataset(x, y),
        batch_size=8,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )
    val = DataLoader(TensorDataset(x, y), batch_size=8)
    model = tiny_classifier(tiny_cfg, trainable="last_block")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    steps = []
    history = train_classifier(
        model,
        train,
        val,
        optimizer,
        "cpu",
        num_epochs=6,
        eval_freq=4,
        eval_iter=2,
        verbose=False,
        on_step=steps.append,
    )
    assert len(steps) == 6 * 4 and steps[-1]["examples_seen"] == 6 * 32
    assert history["steps"] == list(range(0, 24, 4)) and history["examples_seen"][1] == 40
    assert len(history["train_accs"]) == 6 == len(history["elapsed"])
    for name, param in model.named_parameters():
        changed = not torch.equal(param, before[name])
        assert changed == param.requires_grad, name
    assert calc_cls_loss_loader(val, model, "cpu") < history["val_losses"][0]
    assert calc_accuracy_loader(val, model, "cpu") >= 0.75


def test_classify_text_reads_the_last_position_and_pads_like_training(gpt2_tokenizer):
    model = LastLogits(torch.tensor([[0.0, 2.0]]))  # spam at the last position, ham everywhere else
    label, proba = classify_text("Hello there", model, gpt2_tokenizer, "cpu")
    assert label == "spam" and proba == pytest.approx(torch.softmax(torch.tensor([0.0, 2.0]), 0)[1].item())

    seen = []
    recorder = LastLogits(torch.tensor([[1.0, 0.0]]))
    recorder.forward = lambda idx: (seen.append(idx), LastLogits.forward(recorder, idx))[1]
    classify_text("Hello there", recorder, gpt2_tokenizer, "cpu", max_length=6)
    classify_text("one two three four five six seven eight nine ten", recorder, gpt2_tokenizer, "cpu")
    assert seen[0].tolist() == [gpt2_tokenizer.encode("Hello there") + [50256] * 4]
    assert seen[1].shape == (1, 8)  # cut to the context length (pos_emb has 8 rows)


def test_classify_text_refuses_empty_messages_and_wrong_labels(gpt2_tokenizer):
    model = LastLogits(torch.tensor([[1.0, 0.0]]))
    for text in ("", "   \n"):
        with pytest.raises(ValueError, match="empty"):
            classify_text(text, model, gpt2_tokenizer, "cpu")
    with pytest.raises(ValueError, match="2 classes but 3 labels"):
        classify_text("hi", model, gpt2_tokenizer, "cpu", labels=("a", "b", "c"))


def test_save_then_load_gives_identical_predictions(tiny_cfg, tmp_path):
    model = tiny_classifier(tiny_cfg, seed=3).eval()
    path = tmp_path / "clf.pth"
    save_classifier(path, model, max_length=12, note="test")
    restored, extra = load_classifier(path)
    assert extra["labels"] == ["ham", "spam"] and extra["max_length"] == 12 and extra["note"] == "test"
    assert not restored.training
    x = torch.randint(0, 97, (5, 12))
    with torch.no_grad():
        assert torch.equal(model(x), restored(x))
    planted = tiny_classifier(tiny_cfg, seed=4).eval()  # a different model: the comparison can fail
    with torch.no_grad():
        assert not torch.equal(planted(x), restored(x))


def test_load_refuses_a_checkpoint_with_the_wrong_number_of_classes(tiny_cfg, tmp_path):
    torch.manual_seed(0)
    three = add_classification_head(GPTModel(tiny_cfg()), num_classes=3)
    save_classifier(tmp_path / "three.pth", three, labels=("ham", "spam", "phishing"))
    with pytest.raises(ValueError, match=r"head has 3 classes .* but 2 were expected"):
        load_classifier(tmp_path / "three.pth")
    model, _ = load_classifier(tmp_path / "three.pth", labels=("ham", "spam", "phishing"))
    assert model.out_head.out_features == 3
    with pytest.raises(ValueError, match="2 labels were given"):
        save_classifier(tmp_path / "x.pth", three)


def test_the_full_mode_banner_gives_a_cost_per_base_model(monkeypatch):
    from shared.runtime import mode_banner

    monkeypatch.setenv("COURSE_QUICK", "0")
    for notebook in ("ch06.ipynb", "ch06_comparisons.ipynb"):
        banner = mode_banner("ch06_classification", notebook)
        assert "with the books model" in banner and "with GPT-2 124M" in banner, notebook
