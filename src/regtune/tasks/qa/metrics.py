"""SQuAD v1.1 exact match and F1, per question and in aggregate.

This is the official ``evaluate-v1.1.py`` logic (Rajpurkar et al., 2016, https://arxiv.org/abs/1606.05250),
rewritten with type hints. TyDi QA GoldP is scored with the same metric.

We keep our own small copy instead of using torchmetrics' ``SQuAD``: that one returns only the two
aggregates, and the paired bootstrap statistics we run later need the score of every single question.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from regtune.tasks.qa.data import QAExample

_PUNCTUATION = frozenset(string.punctuation)
# Whole-word articles only: "an" inside "and" or "the" inside "theory" must survive.
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Normalise an answer string exactly as the official SQuAD v1.1 script does.

    The steps, in the official order: lowercase, drop every ``string.punctuation`` character, replace the
    whole words ``a``/``an``/``the`` with a space, then collapse runs of whitespace to single spaces and
    strip the ends.

    Args:
        s: A predicted or reference answer.

    Returns:
        The normalised string; ``""`` when nothing but punctuation, articles and whitespace was left.
    """
    text = s.lower()
    # Punctuation goes before articles, so "the-cat" becomes "thecat" and keeps its "the", as officially.
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    """Return 1.0 when the two answers are equal after :func:`normalize_answer`, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token-level F1 between two answers, as in the official SQuAD v1.1 script.

    Tokens are the whitespace-separated words of the normalised strings; the overlap counts repeated
    tokens at most as often as they occur in both (a ``Counter`` intersection).

    Args:
        prediction: The predicted answer.
        ground_truth: One reference answer.

    Returns:
        F1 in [0, 1]; 0.0 when the two share no token, which includes either of them being empty after
        normalisation (v1.1 behaviour; SQuAD 2.0 would give 1.0 to two empty strings).
    """
    prediction_tokens = normalize_answer(prediction).split()
    truth_tokens = normalize_answer(ground_truth).split()
    num_same = sum((Counter(prediction_tokens) & Counter(truth_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def score_question(prediction: str, references: Sequence[str]) -> tuple[float, float]:
    """Score one prediction against all references of its question, taking the best of each metric.

    As in the official script, EM and F1 are maximised independently, so they may come from different
    references.

    Args:
        prediction: The predicted answer text.
        references: Every reference answer text of the question (SQuAD dev has up to five).

    Returns:
        ``(exact_match, f1)``, both in [0, 1].

    Raises:
        ValueError: If ``references`` is empty (the official script would crash on ``max([])``).
    """
    if isinstance(references, str):
        # A bare string is a Sequence[str] of characters; scoring against letters would be silently wrong.
        raise TypeError("references must be a sequence of answer strings, not a single string")
    if len(references) == 0:
        raise ValueError("cannot score a question that has no reference answers")
    exact = max(exact_match_score(prediction, ref) for ref in references)
    f1 = max(f1_score(prediction, ref) for ref in references)
    return exact, f1


@dataclass(frozen=True)
class SquadResult:
    """Aggregate and per-question SQuAD scores.

    Attributes:
        exact_match: Mean exact match over all reference questions, on 0-100.
        f1: Mean F1 over all reference questions, on 0-100.
        num_questions: Questions that have references; the denominator of both means.
        num_missing: Reference questions without a prediction; each scored 0 (official behaviour).
        num_extra: Predictions whose id has no reference; ignored.
        per_question: Question id -> ``(exact_match, f1)`` on 0-1, for every reference question, missing
            ones included as ``(0.0, 0.0)``; this is what paired bootstrap tests resample.
    """

    exact_match: float
    f1: float
    num_questions: int
    num_missing: int
    num_extra: int
    per_question: dict[str, tuple[float, float]] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the aggregates as a JSON-ready dict for ``metrics.json`` (no per-question scores)."""
        return {
            "exact_match": self.exact_match,
            "f1": self.f1,
            "num_questions": self.num_questions,
            "num_missing": self.num_missing,
            "num_extra": self.num_extra,
        }


def squad_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> SquadResult:
    """Score predictions against references the way the official SQuAD v1.1 script does.

    Every question in ``references`` counts in the denominator. One without a prediction scores 0 and is
    counted in ``num_missing``; predictions for ids not in ``references`` are ignored and counted in
    ``num_extra``.

    Args:
        predictions: Question id -> predicted answer text.
        references: Question id -> every reference answer text of that question.

    Returns:
        A :class:`SquadResult` with the means on 0-100 and per-question scores on 0-1.

    Raises:
        ValueError: If ``references`` is empty, or any question in it has no reference answer.
    """
    if not references:
        raise ValueError("no reference questions to score")
    per_question: dict[str, tuple[float, float]] = {}
    num_missing = 0
    for qid, refs in references.items():
        if qid in predictions:
            per_question[qid] = score_question(predictions[qid], refs)
        else:
            if len(refs) == 0:
                raise ValueError(f"question {qid!r} has no reference answers")
            per_question[qid] = (0.0, 0.0)
            num_missing += 1
    num_questions = len(per_question)
    total_exact = sum(exact for exact, _ in per_question.values())
    total_f1 = sum(f1 for _, f1 in per_question.values())
    return SquadResult(
        exact_match=100.0 * total_exact / num_questions,
        f1=100.0 * total_f1 / num_questions,
        num_questions=num_questions,
        num_missing=num_missing,
        num_extra=sum(1 for qid in predictions if qid not in references),
        per_question=per_question,
    )


def references_from_examples(examples: Iterable[QAExample]) -> dict[str, list[str]]:
    """Collect every reference answer text per question id, ready for :func:`squad_scores`."""
    return {example.id: [answer.text for answer in example.answers] for example in examples}
