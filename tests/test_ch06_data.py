"""Chapter 6 data: reading the SMS Spam Collection, balancing, splitting, padding and truncation."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from gpt_from_scratch.ch06 import SPAM_LABELS, SpamDataset, balance_classes, read_sms_spam, split_data_frame


class CharTokenizer:
    """A stand-in tokenizer: one token per character (its code point), so lengths are obvious."""

    def encode_ordinary(self, text: str) -> list[int]:
        return [ord(c) for c in text]


def write_tsv(path, lines: list[str]):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def toy_frame(n_ham: int, n_spam: int) -> pd.DataFrame:
    rows = [("ham", f"hello number {i}") for i in range(n_ham)]
    rows += [("spam", f"WIN {i}!") for i in range(n_spam)]
    return pd.DataFrame(rows, columns=["Label", "Text"])


def test_read_keeps_every_line_including_quotes(tmp_path):
    lines = ["ham\tSee you at 8", 'spam\t"FREE" prize', 'ham\tHe said "ok', 'ham\tfine"', "spam\tWIN"]
    df = read_sms_spam(write_tsv(tmp_path / "SMSSpamCollection", lines))
    assert len(df) == 5  # pandas' default quoting would merge the lines with unbalanced quotes
    assert df["Text"].tolist()[2] == 'He said "ok'
    assert df["Label"].tolist() == ["ham", "spam", "ham", "ham", "spam"]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["ham\tok", "spma\tWIN now"], "line 2: label 'spma'"),
        (["ham\tok", "ham\tfine", "no tab here"], "line 3: expected 'label<TAB>message'"),
        (["ham\tok", "spam\t   "], "line 2: the spam message is empty"),
        (["ham\tok", "", "ham\tfine"], "line 2"),  # a blank line in the middle is not silently skipped
    ],
)
def test_read_names_the_bad_line(tmp_path, lines, message):
    with pytest.raises(ValueError, match=message):
        read_sms_spam(write_tsv(tmp_path / "bad", lines))


def test_real_collection(mirror):
    from shared.data import fetch

    df = read_sms_spam(fetch("sms+spam+collection.zip", quiet=True))
    assert len(df) == 5574  # as the data set's readme says
    assert df["Label"].value_counts().to_dict() == {"ham": 4827, "spam": 747}
    unique = df.drop_duplicates("Text")
    assert unique["Label"].value_counts().to_dict() == {"ham": 4518, "spam": 653}


def test_balance_classes_undersamples_the_majority():
    df = toy_frame(30, 7)
    balanced = balance_classes(df, seed=1)
    assert balanced["Label"].value_counts().to_dict() == {"ham": 7, "spam": 7}
    spam = set(df.loc[df["Label"] == "spam", "Text"])
    assert set(balanced.loc[balanced["Label"] == "spam", "Text"]) == spam  # the minority is kept whole
    assert balanced.equals(balance_classes(df, seed=1))  # seeded: the same rows again
    assert not balanced.equals(balance_classes(df, seed=2))
    subset = balance_classes(df, seed=1, n_per_class=3)
    assert subset["Label"].value_counts().to_dict() == {"ham": 3, "spam": 3}
    with pytest.raises(ValueError, match="n_per_class"):
        balance_classes(df, n_per_class=8)


def test_split_sizes_and_no_message_in_two_splits():
    df = balance_classes(toy_frame(300, 150), seed=123)
    train, val, test = split_data_frame(df, train_frac=0.7, val_frac=0.1, seed=123)
    assert (len(train), len(val), len(test)) == (210, 30, 60)
    texts = [set(part["Text"]) for part in (train, val, test)]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    assert set().union(*texts) == set(df["Text"])  # nothing lost
    again = split_data_frame(df, train_frac=0.7, val_frac=0.1, seed=123)
    assert all(a.equals(b) for a, b in zip((train, val, test), again))


def test_split_refuses_repeated_messages():
    df = pd.concat([toy_frame(10, 10), toy_frame(1, 0)])  # "hello number 0" twice
    with pytest.raises(ValueError, match="1 messages appear more than once"):
        split_data_frame(df)
    with pytest.raises(ValueError, match="sum below 1"):
        split_data_frame(toy_frame(10, 10), train_frac=0.9, val_frac=0.1)


def test_padding_to_the_longest_message():
    frame = pd.DataFrame({"Text": ["abc", "a", "abcde"], "Label": [0, 1, 1]})
    ds = SpamDataset(frame, CharTokenizer(), pad_token_id=0)
    assert ds.max_length == ds.longest == 5 and ds.num_truncated == 0
    assert ds.input_ids.tolist() == [[97, 98, 99, 0, 0], [97, 0, 0, 0, 0], [97, 98, 99, 100, 101]]
    x, y = ds[1]
    assert x.tolist() == [97, 0, 0, 0, 0] and y.item() == 1 and len(ds) == 3
    batch_x, batch_y = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert tuple(batch_x.shape) == (3, 5) and batch_y.tolist() == [0, 1, 1]


def test_truncation_to_a_fixed_length():
    frame = pd.DataFrame({"Text": ["abc", "a", "abcde"], "Label": [0, 1, 1]})
    ds = SpamDataset(frame, CharTokenizer(), max_length=4, pad_token_id=0)
    assert ds.input_ids.tolist() == [[97, 98, 99, 0], [97, 0, 0, 0], [97, 98, 99, 100]]
    assert ds.num_truncated == 1 and ds.longest == 5
    wide = SpamDataset(frame, CharTokenizer(), max_length=7, pad_token_id=50256)  # fixed length: pad further
    assert wide.input_ids.tolist()[1] == [97] + [50256] * 6


def test_dataset_reads_csv_and_uses_gpt2_end_of_text(tmp_path, gpt2_tokenizer):
    frame = pd.DataFrame({"Text": ["Call me later", "NA", "Free entry! Text WIN now"], "Label": [0, 0, 1]})
    frame.to_csv(tmp_path / "train.csv", index=False)
    ds = SpamDataset(tmp_path / "train.csv", gpt2_tokenizer)
    assert ds.input_ids[1, 0].item() == gpt2_tokenizer.encode("NA")[0]  # "NA" stays text, not a missing value
    assert ds.input_ids[0].tolist()[-2:] == [50256, 50256]
    special = SpamDataset(pd.DataFrame({"Text": ["a <|endoftext|>"], "Label": [1]}), gpt2_tokenizer)
    assert 50256 not in special.input_ids[0].tolist()  # special-token text in a message is plain text


@pytest.mark.parametrize(
    ("texts", "labels", "message"),
    [
        (["ok", ""], [0, 1], "row 1: the message is empty"),
        (["ok", " \t"], [0, 1], "row 1: the message is empty"),
        (["ok", "fine"], [0, 2], "row 1: label 2"),
        (["ok", "fine"], [0, "spam"], "row 1: label 'spam'"),
        ([], [], "no messages"),
    ],
)
def test_dataset_rejects_bad_rows(texts, labels, message):
    with pytest.raises(ValueError, match=message):
        SpamDataset(pd.DataFrame({"Text": texts, "Label": labels}), CharTokenizer())


def test_labels_order():
    assert SPAM_LABELS == ("ham", "spam")


def test_read_handles_windows_line_ends(tmp_path):
    """Issue 21: a CRLF file gives the same messages, without a trailing carriage return."""
    path = tmp_path / "crlf"
    path.write_bytes(b"ham\tsee you\r\nspam\tWIN now\r\n")
    df = read_sms_spam(path)
    assert df["Text"].tolist() == ["see you", "WIN now"] and df["Label"].tolist() == ["ham", "spam"]


def test_an_empty_file_and_a_single_label_are_refused_in_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="holds no messages"):
        read_sms_spam(empty)
    with pytest.raises(ValueError, match="at least two labels") as info:
        balance_classes(toy_frame(5, 0))
    assert "\n" not in str(info.value)
