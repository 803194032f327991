"""Chapter 5: losses, decoding, checkpoints, exact resuming and the learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gpt_from_scratch.ch04 import GPTModel, generate_text_simple
from gpt_from_scratch.ch05 import (
    EpochSampler,
    calc_loss_batch,
    calc_loss_loader,
    generate,
    load_checkpoint,
    lr_at_step,
    save_checkpoint,
    text_to_token_ids,
    token_ids_to_text,
    train_loop,
    train_model,
    train_model_simple,
)

VOCAB = 97


@pytest.fixture(scope="module")
def small_cfg(tiny_cfg):
    """The suite's tiny configuration with two heads (small vocabulary: each test takes under a second)."""
    cfg = tiny_cfg(n_heads=2)
    assert cfg["vocab_size"] == VOCAB
    return cfg


def tiny_model(cfg: dict, seed: int = 0, **overrides) -> nn.Module:
    """A fresh GPTModel of ``cfg`` (with ``overrides``), its weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return GPTModel({**cfg, **overrides})


class FixedLogits(nn.Module):
    """A fake model whose next-token logits are always the same vector."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        b, t = idx.shape
        return self.logits.expand(b, t, -1).clone()  # (b, T, V)


class Successor(nn.Module):
    """A fake model that always predicts ``(last token + 1) % vocab``, with certainty."""

    def __init__(self, vocab: int = 10):
        super().__init__()
        self.vocab = vocab

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return F.one_hot((idx + 1) % self.vocab, self.vocab).float() * 10.0  # (b, T, V)


def random_loader(n: int = 12, t: int = 16, batch_size: int = 2, shuffle: bool = True, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, VOCAB, (n, t + 1), generator=g)
    ds = TensorDataset(data[:, :-1], data[:, 1:])
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle)


# --- text <-> token IDs ---------------------------------------------------------------------


def test_text_token_round_trip(gpt2_tokenizer):
    ids = text_to_token_ids("Every effort moves you<|endoftext|>", gpt2_tokenizer)
    assert ids.shape == (1, 5) and ids[0, -1].item() == 50256
    assert token_ids_to_text(ids, gpt2_tokenizer) == "Every effort moves you<|endoftext|>"
    assert token_ids_to_text(ids[0], gpt2_tokenizer) == "Every effort moves you<|endoftext|>"
    with pytest.raises(ValueError):
        token_ids_to_text(ids.repeat(2, 1), gpt2_tokenizer)


# --- losses ----------------------------------------------------------------------------------


def test_loss_and_perplexity_equal_torch_cross_entropy(small_cfg):
    model = tiny_model(small_cfg).eval()
    x, y = torch.randint(0, VOCAB, (2, 2, 16))
    with torch.no_grad():
        loss = calc_loss_batch(x, y, model, torch.device("cpu"))
        logits = model(x)  # (2, 16, V)
    log_probs = torch.log_softmax(logits, dim=-1)
    by_hand = -log_probs.gather(-1, y.unsqueeze(-1)).mean()  # negative mean log-prob of the targets
    torch.testing.assert_close(loss, by_hand)
    torch.testing.assert_close(loss, F.cross_entropy(logits.flatten(0, 1), y.flatten()))
    assert math.exp(loss.item()) == pytest.approx(torch.exp(by_hand).item(), rel=1e-6)


def test_calc_loss_loader_averages_batches(small_cfg):
    model = tiny_model(small_cfg).eval()
    loader = random_loader(n=6, shuffle=False)  # 3 batches
    with torch.no_grad():
        losses = [calc_loss_batch(x, y, model, "cpu").item() for x, y in loader]
        assert calc_loss_loader(loader, model, "cpu") == pytest.approx(sum(losses) / 3)
        two = calc_loss_loader(loader, model, "cpu", num_batches=2)
        assert two == pytest.approx(sum(losses[:2]) / 2)
        assert calc_loss_loader(loader, model, "cpu", num_batches=99) == pytest.approx(sum(losses) / 3)


def test_calc_loss_loader_on_empty_loader_errors_clearly(small_cfg):
    nothing = torch.zeros(0, 16, dtype=torch.long)
    empty = DataLoader(TensorDataset(nothing, nothing))
    with pytest.raises(ValueError, match="no batches"):
        calc_loss_loader(empty, tiny_model(small_cfg), "cpu")


def test_one_adamw_step_lowers_the_loss(small_cfg):
    model = tiny_model(small_cfg)
    x, y = torch.randint(0, VOCAB, (2, 2, 16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    before = calc_loss_batch(x, y, model, "cpu")
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = calc_loss_batch(x, y, model, "cpu")
    assert after.item() < before.item() - 1e-3


def test_train_model_simple_logs_and_learns(small_cfg, gpt2_tokenizer, capsys):
    torch.manual_seed(0)
    model = GPTModel({**small_cfg, "vocab_size": 50257})
    data = torch.randint(0, 200, (8, 17))
    loader = DataLoader(TensorDataset(data[:, :-1], data[:, 1:]), batch_size=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train, val, seen = train_model_simple(
        model,
        loader,
        loader,
        optimizer,
        "cpu",
        num_epochs=2,
        eval_freq=2,
        eval_iter=1,
        start_context="Hello",
        tokenizer=gpt2_tokenizer,
    )
    assert len(train) == len(val) == len(seen) == 4  # steps 0, 2, 4, 6 of 8
    assert seen == [32, 96, 160, 224]
    assert train[-1] < train[0]
    out = capsys.readouterr().out
    assert "Ep 1 (Step 000000)" in out and out.count("Hello") == 2  # one sample per epoch


# --- decoding --------------------------------------------------------------------------------


def test_temperature_zero_equals_greedy_and_generate_text_simple(small_cfg):
    model = tiny_model(small_cfg).eval()
    idx = torch.randint(0, VOCAB, (3, 5))
    simple = generate_text_simple(model, idx, max_new_tokens=8, context_size=16)
    assert torch.equal(generate(model, idx, 8, 16), simple)
    assert torch.equal(generate(model, idx, 8, 16, temperature=0.0, top_k=4), simple)
    torch.manual_seed(1)
    assert torch.equal(generate(model, idx, 8, 16, temperature=1.0, top_k=1), simple)


def test_temperature_towards_zero_approaches_greedy():
    logits = torch.linspace(-2.0, 2.0, 20)[torch.randperm(20, generator=torch.Generator().manual_seed(0))]
    model = FixedLogits(logits)
    idx = torch.zeros(500, 1, dtype=torch.long)
    best = logits.argmax().item()
    torch.manual_seed(0)
    cold = generate(model, idx, 1, 4, temperature=1e-3)[:, -1]
    assert (cold == best).all()
    hot = generate(model, idx, 1, 4, temperature=5.0)[:, -1]
    assert len(hot.unique()) > 10  # a high temperature spreads the samples


def test_top_k_never_samples_outside_the_k_best():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, generator=g)
    model = FixedLogits(logits)
    allowed = set(torch.topk(logits, 5).indices.tolist())
    torch.manual_seed(0)
    out = generate(model, torch.zeros(4000, 1, dtype=torch.long), 1, 4, temperature=10.0, top_k=5)
    sampled = set(out[:, -1].tolist())
    assert sampled <= allowed
    assert sampled == allowed  # at a high temperature all five occur in 4000 draws


def test_generation_stops_at_end_of_text():
    model = Successor(vocab=10)
    idx = torch.tensor([[2]])
    out = generate(model, idx, max_new_tokens=20, context_size=4, eos_id=5)
    assert out.tolist() == [[2, 3, 4, 5]]  # stops right after producing eos, which is kept
    assert generate(model, idx, max_new_tokens=20, context_size=4).shape == (1, 21)


def test_generation_in_a_batch_stops_when_every_row_finished():
    model = Successor(vocab=10)
    out = generate(model, torch.tensor([[3], [0]]), max_new_tokens=20, context_size=4, eos_id=5)
    # row 0 reaches 5 after 2 tokens and is then padded with eos; row 1 needs 5 tokens
    assert out.tolist() == [[3, 4, 5, 5, 5, 5], [0, 1, 2, 3, 4, 5]]


def test_generate_rejects_bad_arguments():
    model = Successor()
    with pytest.raises(ValueError):
        generate(model, torch.tensor([1, 2]), 1, 4)
    with pytest.raises(ValueError):
        generate(model, torch.tensor([[1]]), 1, 4, temperature=-1.0)
    with pytest.raises(ValueError):
        generate(model, torch.tensor([[1]]), 1, 4, top_k=0)


# --- checkpoints -----------------------------------------------------------------------------


def test_save_load_gives_identical_logits_and_optimizer_state(small_cfg, tmp_path):
    model = tiny_model(small_cfg, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randint(0, VOCAB, (2, 2, 16))
    calc_loss_batch(x, y, model, "cpu").backward()
    optimizer.step()
    path = tmp_path / "sub" / "ckpt.pth"
    save_checkpoint(path, model, optimizer, step=7, note="hello")

    restored = tiny_model(small_cfg, seed=1)  # different initial weights
    restored_opt = torch.optim.AdamW(restored.parameters(), lr=1e-3)
    extras = load_checkpoint(path, restored, restored_opt)
    assert extras == {"step": 7, "note": "hello"}
    model.eval()
    restored.eval()
    with torch.no_grad():
        assert torch.equal(model(x), restored(x))
    saved, loaded = optimizer.state_dict()["state"], restored_opt.state_dict()["state"]
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k]["exp_avg"], loaded[k]["exp_avg"]) for k in saved)

    save_checkpoint(tmp_path / "model-only.pth", model, None)
    with pytest.raises(ValueError, match="no optimizer state"):
        load_checkpoint(tmp_path / "model-only.pth", restored, restored_opt)


# --- learning-rate schedule and train_model ----------------------------------------------------


def test_lr_at_step_warmup_and_cosine_endpoints():
    lr = lr_at_step
    total, warmup, peak, low = 50, 10, 1e-3, 1e-5
    assert lr(0, total, warmup, peak, low) == pytest.approx(peak / warmup)
    assert lr(warmup - 1, total, warmup, peak, low) == pytest.approx(peak)
    assert lr(warmup, total, warmup, peak, low) == pytest.approx(peak)
    assert lr(total - 1, total, warmup, peak, low) == pytest.approx(low)
    assert lr(total + 5, total, warmup, peak, low) == pytest.approx(low)
    mid = warmup + (total - 1 - warmup) / 2
    assert lr(int(mid), total, warmup, peak, low) == pytest.approx((peak + low) / 2, rel=0.05)
    values = [lr(s, total, warmup, peak, low) for s in range(total)]
    assert all(a < b for a, b in zip(values[: warmup - 1], values[1:warmup]))
    assert all(a >= b for a, b in zip(values[warmup:-1], values[warmup + 1 :]))
    assert lr(0, total, 0, peak, low) == pytest.approx(peak)  # no warmup
    with pytest.raises(ValueError):
        lr(0, 10, 11, peak, low)


def test_epoch_sampler_order_depends_only_on_seed_and_epoch():
    sampler = EpochSampler(10, seed=5)
    sampler.set_epoch(2)
    first = list(sampler)
    torch.manual_seed(999)  # the global RNG must not matter
    assert list(sampler) == first and sorted(first) == list(range(10))
    # the order chapter 5 has always used: a randperm seeded by (seed, epoch)
    assert first == torch.randperm(10, generator=torch.Generator().manual_seed(5 * 100_003 + 2)).tolist()
    sampler.set_epoch(3)
    assert list(sampler) != first
    sampler.set_epoch(2, skip=4)  # a resumed epoch: the same order, without what was trained on
    assert list(sampler) == first[4:] and len(sampler) == 6
    in_order = EpochSampler(10, seed=5, shuffle=False)
    assert list(in_order) == list(range(10))
    loader = DataLoader(TensorDataset(torch.arange(10)), batch_size=3, sampler=in_order)
    assert len(list(loader)) == 4  # drop_last=False keeps the short last batch


def _train(small_cfg, loader, **kwargs):
    model = tiny_model(small_cfg, seed=0, drop_rate=0.1)  # dropout on: the RNG state matters
    optimizer = torch.optim.AdamW(model.parameters(), weight_decay=0.1)
    args = dict(
        num_epochs=3,
        eval_freq=3,
        eval_iter=2,
        peak_lr=2e-3,
        min_lr=1e-4,
        warmup_steps=3,
        seed=7,
        verbose=False,
    )
    return model, optimizer, {**args, **kwargs}


def test_train_model_follows_the_schedule_and_clips(small_cfg):
    loader = random_loader(n=10)
    model, optimizer, args = _train(small_cfg, loader)
    state = train_model(model, loader, loader, optimizer, "cpu", **args)
    total = 3 * 5
    assert state["step"] == total and len(state["history"]["batch_losses"]) == total
    assert state["history"]["lrs"] == [lr_at_step(s, total, 3, 2e-3, 1e-4) for s in range(total)]
    assert state["history"]["steps"] == [0, 3, 6, 9, 12]
    assert state["tokens_seen"] == total * 2 * 16


def test_resume_from_checkpoint_continues_exactly(small_cfg, tmp_path):
    loader = random_loader(n=10)
    model_a, opt_a, args = _train(small_cfg, loader)
    torch.manual_seed(42)
    full = train_model(model_a, loader, loader, opt_a, "cpu", **args)

    model_b, opt_b, _ = _train(small_cfg, loader)
    torch.manual_seed(42)
    first = train_model(model_b, loader, loader, opt_b, "cpu", stop_at_step=7, **args)
    assert first["step"] == 7  # stopped in the middle of epoch 2
    save_checkpoint(tmp_path / "resume.pth", model_b, opt_b, **first)
    del model_b, opt_b

    torch.manual_seed(12345)  # anything may happen to the RNG between the runs
    model_c, opt_c, _ = _train(small_cfg, loader)
    state = load_checkpoint(tmp_path / "resume.pth", model_c, opt_c)
    rest = train_model(model_c, loader, loader, opt_c, "cpu", state=state, **args)

    assert rest["history"]["batch_losses"] == full["history"]["batch_losses"]  # bitwise equal
    assert rest["history"]["val_losses"] == full["history"]["val_losses"]
    assert rest["history"]["train_losses"] == full["history"]["train_losses"]
    assert rest["tokens_seen"] == full["tokens_seen"]
    for a, c in zip(model_a.parameters(), model_c.parameters()):
        assert torch.equal(a, c)


def test_resume_with_a_different_run_length_is_refused(small_cfg):
    loader = random_loader(n=10)
    model, optimizer, args = _train(small_cfg, loader)
    state = train_model(model, loader, loader, optimizer, "cpu", stop_at_step=2, **args)
    with pytest.raises(ValueError, match="cannot resume"):
        train_model(model, loader, loader, optimizer, "cpu", state=state, **{**args, "num_epochs": 4})


# --- train_model iterates its DataLoader; progress through on_step --------------------------------


def indexed_loader(n: int = 10, t: int = 16, collate_fn=None, **kwargs) -> DataLoader:
    """A loader whose row i is filled with token i: a batch shows which rows it holds."""
    rows = torch.arange(n).repeat_interleave(t + 1).view(n, t + 1)  # (n, T + 1)
    ds = TensorDataset(rows[:, :-1], rows[:, 1:])
    return DataLoader(ds, batch_size=2, shuffle=True, drop_last=True, collate_fn=collate_fn, **kwargs)


def test_train_model_iterates_its_loader_with_its_collate_fn(small_cfg):
    seen = []

    def collate(pairs):  # records the rows of each batch, and sets every target to token 0
        inputs = torch.stack([p[0] for p in pairs])
        if torch.is_grad_enabled():  # a training batch (evaluations read the loader under no_grad)
            seen.append(inputs[:, 0].tolist())
        return inputs, torch.zeros_like(inputs)

    loader = indexed_loader(collate_fn=collate)
    model, optimizer, args = _train(small_cfg, loader)
    args.update(eval_freq=1000, eval_iter=1, peak_lr=1e-2, min_lr=1e-2, warmup_steps=0)
    state = train_model(model, loader, indexed_loader(), optimizer, "cpu", **args)
    assert state["step"] == 15
    orders = []
    for epoch in range(3):  # the batches are EpochSampler's, epoch after epoch
        sampler = EpochSampler(10, seed=7)
        sampler.set_epoch(epoch)
        order = list(sampler)
        orders += [order[i : i + 2] for i in range(0, 10, 2)]
    assert seen == orders
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(torch.randint(0, VOCAB, (2, 16))), dim=-1)  # (2, 16, V)
    assert probs[..., 0].mean() > 0.9  # it learned the collate_fn's targets


def test_train_model_refuses_a_loader_whose_order_it_cannot_replay(small_cfg):
    ds = indexed_loader().dataset
    model, optimizer, args = _train(small_cfg, None)
    for loader in (
        DataLoader(ds, batch_size=2, sampler=[3, 1, 2]),
        DataLoader(ds, batch_sampler=[[0, 1], [2, 3]]),
        DataLoader(ds, batch_size=2, sampler=torch.utils.data.RandomSampler(ds, replacement=True)),
    ):
        with pytest.raises(ValueError, match="resumed run"):
            train_model(model, loader, loader, optimizer, "cpu", **args)


def test_train_model_with_workers_gives_the_same_run(small_cfg):
    runs = []
    for workers in (0, 1):
        loader = indexed_loader(num_workers=workers)
        model, optimizer, args = _train(small_cfg, loader)
        torch.manual_seed(3)
        runs.append(train_model(model, loader, loader, optimizer, "cpu", stop_at_step=6, **args))
    assert runs[0]["history"] == runs[1]["history"]


def test_train_model_progress_goes_through_on_step(small_cfg, capsys):
    loader = random_loader(n=10)
    model, optimizer, args = _train(small_cfg, loader)
    steps = []
    train_model(
        model,
        loader,
        loader,
        optimizer,
        "cpu",
        stop_at_step=7,
        on_step=lambda s: steps.append(s["step"]),
        **args,
    )
    assert steps == list(range(1, 8)) and capsys.readouterr().out == ""  # verbose=False: silent
    args["verbose"] = True
    train_model(model, loader, loader, optimizer, "cpu", stop_at_step=4, **args)
    lines = capsys.readouterr().out.splitlines()
    assert (
        len(lines) == 2
        and lines[0].startswith("Ep 1 (Step 000000): lr ")
        and "Ep 1 (Step 000003)" in lines[1]
    )


def test_train_loop_takes_any_batch_source(small_cfg):
    model = tiny_model(small_cfg)
    optimizer = torch.optim.AdamW(model.parameters())
    batch = torch.randint(0, VOCAB, (2, 17))

    def batches(start: int):
        for _ in range(start, 100):
            yield batch[:, :-1], batch[:, 1:]

    evaluate = lambda step: (step, 0.0, 1.0) if step % 2 else None
    state = train_loop(model, optimizer, batches, "cpu", 5, peak_lr=1e-3, evaluate=evaluate, stop_at_step=3)
    state = train_loop(model, optimizer, batches, "cpu", 5, peak_lr=1e-3, evaluate=evaluate, state=state)
    assert state["step"] == 5 and state["history"]["steps"] == [1, 3] and state["tokens_seen"] == 5 * 32
    assert state["history"]["batch_losses"][-1] < state["history"]["batch_losses"][0]
