"""Chapter 7 data: loading and checking, prompt format, split, dataset, collate, loaders, responses."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from gpt_from_scratch.ch04 import GPT_CONFIG_124M, GPTModel
from gpt_from_scratch.ch05 import generate, generate_text_fast
from gpt_from_scratch.ch07 import (
    ALPACA_INTRO,
    InstructionDataError,
    InstructionDataset,
    create_instruction_loader,
    extract_response,
    format_instruction_prompt,
    generate_responses,
    instruction_collate,
    load_instruction_data,
    respond,
    save_responses,
    split_instruction_data,
)

EOT = 50256
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster on a busy machine
ENTRY = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
NO_INPUT = {"instruction": "Name a color.", "input": "", "output": "Blue."}


# ---- prompt format -------------------------------------------------------------------------------------


def test_prompt_with_input():
    expected = (
        f"{ALPACA_INTRO}\n\n### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n"
    )
    assert format_instruction_prompt(ENTRY) == expected


def test_prompt_without_input_has_no_input_section():
    prompt = format_instruction_prompt(NO_INPUT)
    assert prompt == f"{ALPACA_INTRO}\n\n### Instruction:\nName a color.\n\n### Response:\n"
    assert "### Input" not in format_instruction_prompt({**NO_INPUT, "input": "   "})  # blank = no input


# ---- loading and checking ------------------------------------------------------------------------------


def write(tmp_path, text: str, name: str = "data.json"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_good_file_loads(tmp_path):
    assert load_instruction_data(write(tmp_path, json.dumps([ENTRY, NO_INPUT]))) == [ENTRY, NO_INPUT]


def test_malformed_json_names_file_line_and_column(tmp_path):
    path = write(tmp_path, '[\n  {"instruction": "a", "input": "" "output": "b"}\n]', "broken.json")
    with pytest.raises(InstructionDataError) as err:
        load_instruction_data(path)
    message = str(err.value)
    assert str(path) in message and "line 2, column 36" in message and "delimiter" in message


def test_missing_key_names_entry_and_key(tmp_path):
    path = write(tmp_path, json.dumps([ENTRY, NO_INPUT, {"instruction": "x", "output": "y"}]))
    with pytest.raises(InstructionDataError, match=r"entry 2 has no key 'input'"):
        load_instruction_data(path)


def test_empty_instruction_is_an_error(tmp_path):
    path = write(tmp_path, json.dumps([ENTRY, {**NO_INPUT, "instruction": " \n"}]))
    with pytest.raises(InstructionDataError, match=r"entry 1 has an empty instruction"):
        load_instruction_data(path)


@pytest.mark.parametrize(
    "payload, message",
    [({"a": 1}, "expected a list"), ([ENTRY, "text"], "entry 1 is a str"),
     ([{**ENTRY, "output": 5}], "entry 0, key 'output': expected a string")],
)  # fmt: skip
def test_other_bad_shapes(tmp_path, payload, message):
    with pytest.raises(InstructionDataError, match=message):
        load_instruction_data(write(tmp_path, json.dumps(payload)))


def test_required_keys_are_configurable(tmp_path):
    path = write(tmp_path, json.dumps([ENTRY]))
    with pytest.raises(InstructionDataError, match="no key 'model_response'"):
        load_instruction_data(path, required=("instruction", "input", "output", "model_response"))


def test_the_course_data(mirror):
    from shared.data import fetch

    data = load_instruction_data(fetch("instruction-data.json", quiet=True))
    assert len(data) == 1100
    train, val, test = split_instruction_data(data, seed=123)
    assert (len(train), len(val), len(test)) == (935, 55, 110)  # 85 / 5 / 10 percent, as in the book
    ids = [id(e) for e in train + val + test]
    assert len(set(ids)) == 1100  # a partition: nothing lost, nothing twice


def test_split_is_seeded():
    entries = [{"instruction": str(i), "input": "", "output": ""} for i in range(100)]
    a, b = split_instruction_data(entries, seed=1), split_instruction_data(entries, seed=1)
    c = split_instruction_data(entries, seed=2)
    assert a == b and a != c
    assert [len(part) for part in a] == [85, 5, 10]


# ---- dataset and collate -------------------------------------------------------------------------------


def test_dataset_encodes_prompt_then_response_and_counts_truncation(gpt2_tokenizer):
    ds = InstructionDataset([ENTRY, NO_INPUT], gpt2_tokenizer, max_length=40)
    ids, prompt_len = ds[0]
    assert ids[:prompt_len] == gpt2_tokenizer.encode(format_instruction_prompt(ENTRY))
    assert gpt2_tokenizer.decode(ids[prompt_len:]) == "5"
    n0, n1 = len(ds[0][0]), len(ds[1][0])
    assert n0 > n1  # the entry with an input is the longer one

    def truncated(max_length):
        return InstructionDataset([ENTRY, NO_INPUT], gpt2_tokenizer, max_length=max_length).truncated

    assert truncated(n0) == [] and truncated(None) == []
    assert truncated(n0 - 1) == [0]
    assert truncated(n1 - 1) == [0, 1]


def test_dataset_checks_its_entries(gpt2_tokenizer):
    with pytest.raises(InstructionDataError, match="entry 0 has no key 'output'"):
        InstructionDataset([{"instruction": "a", "input": ""}], gpt2_tokenizer)


BATCH = [([0, 1, 2, 3, 4], 2), ([5, 6], 1), ([7, 8, 9], 2)]


def test_collate_pads_shifts_and_ignores_padding():
    inputs, targets = instruction_collate(BATCH)
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, EOT, EOT, EOT], [7, 8, 9, EOT, EOT]]
    assert targets.tolist() == [[1, 2, 3, 4, EOT], [6, EOT, -100, -100, -100], [8, 9, EOT, -100, -100]]
    assert inputs.dtype == targets.dtype == torch.long


def test_collate_masks_the_prompt():
    _, targets = instruction_collate(BATCH, mask_prompt=True)
    # prompt lengths 2, 1, 2: the first 1, 0 and 1 targets are prompt tokens
    assert targets.tolist() == [[-100, 2, 3, 4, EOT], [6, EOT, -100, -100, -100], [-100, 9, EOT, -100, -100]]


def test_collate_truncates_and_uses_custom_ids():
    inputs, targets = instruction_collate(BATCH, max_length=3, pad_token_id=99, ignore_index=-1)
    assert inputs.tolist() == [[0, 1, 2], [5, 6, 99], [7, 8, 9]]
    assert targets.tolist() == [[1, 2, 3], [6, 99, -1], [8, 9, 99]]  # row 0 lost its end-of-text


def reference_collate(batch, pad=EOT):
    """An independent version: build each row's targets explicitly, token by token."""
    width = max(len(ids) for ids, _ in batch)
    rows_x, rows_y = [], []
    for ids, _ in batch:
        seq = ids + [pad]
        x = [seq[j] if j < len(seq) - 1 else pad for j in range(width)]
        y = [seq[j + 1] if j + 1 < len(seq) else -100 for j in range(width)]
        rows_x.append(x)
        rows_y.append(y)
    return torch.tensor(rows_x), torch.tensor(rows_y)


def test_collate_equals_reference_and_the_check_catches_a_planted_error():
    g = torch.Generator().manual_seed(0)
    batch = [(torch.randint(0, 1000, (int(n),), generator=g).tolist(), 1) for n in (7, 1, 4, 7, 3)]
    got, want = instruction_collate(batch), reference_collate(batch)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    planted = want[1].clone()
    planted[1, 1] = EOT  # a second end-of-text target in the padding of row 1 would be learned
    assert not torch.equal(got[1], planted)


def test_collate_moves_to_device_and_refuses_an_empty_batch():
    inputs, targets = instruction_collate(BATCH, device="meta")
    assert inputs.device.type == targets.device.type == "meta"
    with pytest.raises(ValueError, match="empty batch"):
        instruction_collate([])


def tiny_model(seed: int = 0, **cfg) -> GPTModel:
    torch.manual_seed(seed)
    config = {**GPT_CONFIG_124M, "context_length": 64, "emb_dim": 32, "n_heads": 2, "n_layers": 2,
              "drop_rate": 0.0, **cfg}  # fmt: skip
    return GPTModel(config).eval()


def test_padding_does_not_change_the_loss():
    """The padded batch's loss equals the token-weighted mean of each example's loss alone."""
    model = tiny_model()
    inputs, targets = instruction_collate(BATCH)
    with torch.no_grad():
        batch_loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
        total, count = 0.0, 0
        for item in BATCH:
            x, y = instruction_collate([item])
            total += F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum").item()
            count += int((y != -100).sum())
    assert batch_loss.item() == pytest.approx(total / count, rel=1e-5)


def test_loader_batches_have_their_own_width(gpt2_tokenizer):
    entries = [ENTRY, NO_INPUT, {**NO_INPUT, "output": "A long answer " * 20}, ENTRY]
    ds = InstructionDataset(entries, gpt2_tokenizer, max_length=60)
    loader = create_instruction_loader(ds, batch_size=2, shuffle=False)
    shapes = [tuple(x.shape) for x, _ in loader]
    lengths = [len(ids) for ids, _ in ds.encoded]
    assert shapes[0] == (2, max(lengths[:2]))
    assert shapes[1] == (2, 60)  # the long example is truncated to max_length
    assert ds.truncated == [2]


# ---- responses -----------------------------------------------------------------------------------------


def test_extract_response(gpt2_tokenizer):
    prompt = gpt2_tokenizer.encode("### Response:\n")
    answer = gpt2_tokenizer.encode("Blue.")
    after = gpt2_tokenizer.encode("### Instruction")
    assert extract_response(prompt + answer + [EOT] + after, len(prompt), gpt2_tokenizer) == "Blue."
    assert extract_response(torch.tensor([prompt + answer + [EOT]]), len(prompt), gpt2_tokenizer) == "Blue."
    assert extract_response(prompt + [EOT, EOT], len(prompt), gpt2_tokenizer) == ""  # empty response
    assert extract_response(prompt, len(prompt), gpt2_tokenizer) == ""  # nothing generated
    assert extract_response(prompt + answer, len(prompt), gpt2_tokenizer) == "Blue."  # no end-of-text
    assert (
        extract_response(prompt + gpt2_tokenizer.encode("  Blue. \n"), len(prompt), gpt2_tokenizer) == "Blue."
    )


def test_respond_equals_generate_then_cut(gpt2_tokenizer):
    model = tiny_model(1)
    idx = torch.tensor([gpt2_tokenizer.encode(format_instruction_prompt(NO_INPUT))])
    out = generate(model, idx, max_new_tokens=6, context_size=64, eos_id=EOT)
    expected = gpt2_tokenizer.decode(out[0, idx.shape[1] :].tolist()).strip()
    assert respond(model, gpt2_tokenizer, NO_INPUT, max_new_tokens=6) == expected
    # a string is an instruction without input
    assert respond(model, gpt2_tokenizer, "Name a color.", max_new_tokens=6) == expected


@pytest.mark.parametrize("seed", range(3))
def test_cached_greedy_equals_generate(seed):
    """The library decoder, as ``respond`` calls it, gives chapter 5's greedy tokens and the same stop."""
    model = tiny_model(seed, vocab_size=50, context_length=24)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 50, (1, 1 + seed), generator=g)
    for eos in (None, 7, int(generate(model, idx, 1, context_size=24)[0, -1])):  # the last: stops at once
        for n in (0, 1, 5, 24 - idx.shape[1], 26):  # 26 does not fit: generate's sliding window
            want = generate(model, idx, n, context_size=24, eos_id=eos)
            assert torch.equal(generate_text_fast(model, idx, n, eos_id=eos), want), (eos, n)


def test_respond_stops_at_end_of_text(gpt2_tokenizer):
    model = tiny_model(2)
    with torch.no_grad():
        model.out_head.weight.zero_()
        model.out_head.weight[EOT] = 1.0  # a planted preference: end-of-text always wins
        model.final_norm.shift.fill_(1.0)
        model.final_norm.scale.zero_()
    assert respond(model, gpt2_tokenizer, ENTRY, max_new_tokens=5) == ""


def test_generate_and_save_responses(gpt2_tokenizer, tmp_path):
    model = tiny_model(3)
    results = generate_responses(model, gpt2_tokenizer, [ENTRY, NO_INPUT], max_new_tokens=3)
    assert [{k: v for k, v in r.items() if k != "model_response"} for r in results] == [ENTRY, NO_INPUT]
    assert all(isinstance(r["model_response"], str) for r in results)
    path = save_responses(results, tmp_path / "out" / "responses.json")
    keys = ("instruction", "input", "output", "model_response")
    assert load_instruction_data(path, required=keys) == results


def test_extract_response_refuses_a_batch(gpt2_tokenizer):
    """Issue 21: two rows were merged into one string; now one sequence at a time."""
    with pytest.raises(ValueError, match=r"one sequence.*\(2, 3\)"):
        extract_response(torch.tensor([[1, 2, 3], [4, 5, 6]]), 1, gpt2_tokenizer)


def test_end_of_text_in_an_entry_is_plain_text_as_in_chapter_6(gpt2_tokenizer):
    """Issue 21: InstructionDataset, like SpamDataset, reads a written <|endoftext|> as plain text."""
    entry = {"instruction": "Repeat: <|endoftext|>", "input": "", "output": "<|endoftext|>"}
    ids, prompt_len = InstructionDataset([entry], gpt2_tokenizer)[0]
    assert EOT not in ids
    assert gpt2_tokenizer.decode(ids[prompt_len:]) == "<|endoftext|>"
