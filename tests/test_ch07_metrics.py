"""Chapter 7 offline metrics: exact match, token F1 and ROUGE-L on pairs with known values."""

from __future__ import annotations

import itertools
import random

import pytest

from gpt_from_scratch.ch07 import (
    OFFLINE_METRICS,
    answer_words,
    exact_match,
    rouge_l,
    score_responses,
    token_f1,
)


def test_answer_words_ignores_case_and_punctuation():
    assert answer_words("The capital, of FRANCE is Paris!") == [
        "the",
        "capital",
        "of",
        "france",
        "is",
        "paris",
    ]
    assert answer_words("  «Hello» — world…  ") == ["hello", "world"]
    assert answer_words("") == []


@pytest.mark.parametrize(
    "response, reference, em, f1, rl",
    [
        ("The capital of France is Paris.", "the capital of france is paris", 1.0, 1.0, 1.0),
        ("Paris", "The capital of France is Paris.", 0.0, 2 * (1 * 1 / 6) / (1 + 1 / 6), 2 / 7),
        ("is Paris the capital", "Paris is the capital", 0.0, 1.0, 0.75),
        ("the cat sat", "the cat sat on the mat", 0.0, 2 / 3, 2 / 3),
        ("sat the cat", "the cat sat on the mat", 0.0, 2 / 3, 4 / 9),
        (
            "the the the",
            "the cat",
            0.0,
            2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2),
            2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2),
        ),
        ("dog", "cat", 0.0, 0.0, 0.0),
        ("", "", 1.0, 1.0, 1.0),
        ("", "Paris", 0.0, 0.0, 0.0),
        ("Paris", "", 0.0, 0.0, 0.0),
        ("...", "!", 1.0, 1.0, 1.0),  # punctuation only: both empty after normalising
    ],
)
def test_known_values(response, reference, em, f1, rl):
    assert exact_match(response, reference) == em
    assert token_f1(response, reference) == pytest.approx(f1)
    assert rouge_l(response, reference) == pytest.approx(rl)


def brute_force_lcs(a: list[str], b: list[str]) -> int:
    """The longest common subsequence by trying every subsequence of ``a`` (small inputs only)."""
    for size in range(len(a), 0, -1):
        for picked in itertools.combinations(a, size):
            it = iter(b)
            if all(word in it for word in picked):  # `in` on an iterator consumes it: an ordered match
                return size
    return 0


def test_rouge_l_equals_a_brute_force_lcs_and_catches_a_planted_error():
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.choice("abcd") for _ in range(rng.randint(1, 7))]
        b = [rng.choice("abcd") for _ in range(rng.randint(1, 7))]
        lcs = brute_force_lcs(a, b)
        expected = 0.0 if lcs == 0 else 2 * (lcs / len(a)) * (lcs / len(b)) / (lcs / len(a) + lcs / len(b))
        assert rouge_l(" ".join(a), " ".join(b)) == pytest.approx(expected)
    # the check notices a wrong answer: an unordered overlap (token F1) is not the LCS
    assert rouge_l("b a", "a b") != pytest.approx(token_f1("b a", "a b"))


def test_metrics_are_symmetric_where_they_should_be():
    pairs = [("a b c", "c b a d"), ("x y", "y"), ("one two two", "two one")]
    for a, b in pairs:
        assert token_f1(a, b) == pytest.approx(token_f1(b, a))
        assert rouge_l(a, b) == pytest.approx(rouge_l(b, a))


def test_score_responses_table():
    entries = [
        {"instruction": "Capital?", "input": "", "output": "Paris.", "model_response": "paris"},
        {"instruction": "Color?", "input": "", "output": "Blue.", "model_response": ""},
        {"instruction": "Sum?", "input": "2+3", "output": "5", "answer": "The sum is 5"},
    ]
    df = score_responses(entries[:2])
    assert list(df.columns) == ["instruction", "reference", "response", *OFFLINE_METRICS]
    assert df["exact_match"].tolist() == [1.0, 0.0]
    assert df[list(OFFLINE_METRICS)].mean().tolist() == [0.5, 0.5, 0.5]
    other = score_responses(entries[2:], key="answer")
    assert other.loc[0, "token_f1"] == pytest.approx(2 * (1 / 4) * 1 / (1 / 4 + 1))


def test_the_books_published_responses_as_a_reference_point(mirror):
    """The book's GPT-2 355M responses to its test set, scored by the course's metrics (ch07, 7.8.4)."""
    from gpt_from_scratch.ch07 import load_instruction_data
    from shared.data import fetch
    from shared.registry import FILES

    entry = FILES["instruction-data-with-response.json"]
    assert entry.sha256 and entry.size == 29279
    keys = ("instruction", "input", "output", "model_response")
    reference = load_instruction_data(fetch("instruction-data-with-response.json", quiet=True), required=keys)
    assert len(reference) == 110
    means = score_responses(reference)[list(OFFLINE_METRICS)].mean().round(3).to_dict()
    assert means == {"exact_match": 0.155, "token_f1": 0.593, "rouge_l": 0.581}
