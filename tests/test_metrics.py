"""SQuAD v1.1 metric: hand-computed normalisation, EM, F1 and aggregates."""

from __future__ import annotations

import json

import pytest

from conftest import require_module
from regtune.tasks.qa.data import Answer, QAExample
from regtune.tasks.qa.metrics import (
    SquadResult,
    exact_match_score,
    f1_score,
    normalize_answer,
    references_from_examples,
    score_question,
    squad_scores,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The Cat", "cat"),  # case and a leading article
        ("An apple, a day.", "apple day"),  # punctuation and articles mid-string
        ("  Paris \t is\n\nnice  ", "paris is nice"),  # whitespace runs and ends
        ("theory and another anthem", "theory and another anthem"),  # articles only as whole words
        ("the-cat", "thecat"),  # punctuation goes first, so the joined word keeps its "the"
        ("a the an", ""),  # nothing but articles
        ("'(1990)'!", "1990"),
        ("Café’s", "café’s"),  # ’ is not in string.punctuation: the official script keeps it
        ("", ""),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_exact_match_after_normalisation() -> None:
    assert exact_match_score("The Eiffel Tower.", "eiffel   tower") == 1.0
    assert exact_match_score("Eiffel", "Eiffel Tower") == 0.0
    # Both sides normalise to "": equal, so EM is 1 even though F1 (below) is 0 — official v1.1 quirk.
    assert exact_match_score("the", "a") == 1.0


def test_f1_partial_overlap_by_hand() -> None:
    # "cat sat" vs "cat sat down": 2 common tokens, precision 2/2, recall 2/3 -> F1 = 2*1*(2/3)/(1+2/3) = 0.8.
    assert f1_score("the cat sat", "a cat sat down") == pytest.approx(0.8)
    # Symmetric: swapping the roles swaps precision and recall.
    assert f1_score("a cat sat down", "the cat sat") == pytest.approx(0.8)


def test_f1_counts_repeated_tokens_once_per_match() -> None:
    # Counter overlap: "cat" x3 vs "cat" x1 shares 1 token; precision 1/3, recall 1/2 -> F1 = 0.4.
    assert f1_score("cat cat cat", "cat dog") == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("prediction", "truth"),
    [("dog", "cat"), ("", "cat"), ("cat", ""), ("the", "a"), ("", "")],
)
def test_f1_zero_without_overlap(prediction: str, truth: str) -> None:
    assert f1_score(prediction, truth) == 0.0


def test_f1_identical_is_one() -> None:
    assert f1_score("The Big Apple", "big apple!") == 1.0


def test_score_question_takes_max_over_references() -> None:
    # vs "dog": 0; vs "the cat" ("cat"): P 1/2, R 1 -> 2/3; vs "cat sat down": 0.8.
    exact, f1 = score_question("cat sat", ["dog", "the cat", "cat sat down"])
    assert exact == 0.0
    assert f1 == pytest.approx(0.8)
    assert score_question("cat", ["cat sat", "Cat."]) == (1.0, 1.0)


def test_score_question_empty_prediction() -> None:
    assert score_question("", ["Paris", "the city of Paris"]) == (0.0, 0.0)


def test_score_question_rejects_bad_references() -> None:
    with pytest.raises(ValueError, match="no reference"):
        score_question("cat", [])
    with pytest.raises(TypeError, match="single string"):
        score_question("cat", "cat")  # type: ignore[arg-type]


def test_squad_scores_aggregate_missing_and_extra() -> None:
    references = {"q1": ["a cat sat down"], "q2": ["Paris", "paris, France"], "q3": ["1990"]}
    predictions = {"q1": "the cat sat", "q2": "PARIS", "q4": "stray"}
    result = squad_scores(predictions, references)
    assert isinstance(result, SquadResult)
    assert result.per_question["q1"] == (0.0, pytest.approx(0.8))
    assert result.per_question["q2"] == (1.0, 1.0)
    assert result.per_question["q3"] == (0.0, 0.0)  # missing counts as 0, as officially
    assert "q4" not in result.per_question
    # EM: (0 + 1 + 0) / 3; F1: (0.8 + 1 + 0) / 3, both on 0-100.
    assert result.exact_match == pytest.approx(100 / 3)
    assert result.f1 == pytest.approx(60.0)
    assert (result.num_questions, result.num_missing, result.num_extra) == (3, 1, 1)


def test_squad_scores_perfect_and_to_dict() -> None:
    result = squad_scores({"a": "x y", "b": "z"}, {"a": ["X Y."], "b": ["z", "w"]})
    assert (result.exact_match, result.f1) == (100.0, 100.0)
    payload = result.to_dict()
    assert payload == {
        "exact_match": 100.0,
        "f1": 100.0,
        "num_questions": 2,
        "num_missing": 0,
        "num_extra": 0,
    }
    assert "per_question" not in payload
    json.dumps(payload)  # metrics.json must serialise


def test_squad_scores_rejects_empty_inputs() -> None:
    with pytest.raises(ValueError, match="no reference questions"):
        squad_scores({"a": "x"}, {})
    with pytest.raises(ValueError, match="no reference answers"):
        squad_scores({}, {"a": []})


def test_references_from_examples_keeps_every_answer() -> None:
    example = QAExample(
        id="q1",
        question="Where?",
        context="In Paris, France.",
        answers=(Answer("Paris", 3), Answer("Paris, France", 3)),
    )
    assert references_from_examples([example]) == {"q1": ["Paris", "Paris, France"]}


def test_matches_torchmetrics_when_available() -> None:
    squad_metric = require_module("torchmetrics.text").SQuAD
    references = {"q1": ["a cat sat down"], "q2": ["Paris", "paris, France"], "q3": ["the 1990s"]}
    predictions = {"q1": "the cat sat", "q2": "France", "q3": "1990s"}
    preds = [{"id": qid, "prediction_text": text} for qid, text in predictions.items()]
    target = [
        {"id": qid, "answers": {"text": list(refs), "answer_start": [0] * len(refs)}}
        for qid, refs in references.items()
    ]
    theirs = squad_metric()(preds, target)
    ours = squad_scores(predictions, references)
    assert float(theirs["exact_match"]) == pytest.approx(ours.exact_match, abs=1e-4)
    assert float(theirs["f1"]) == pytest.approx(ours.f1, abs=1e-4)
