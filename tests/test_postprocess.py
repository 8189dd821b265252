"""QA post-processing: hand-set logits on tiny windows, and the vectorised search against a double loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from regtune.core.errors import ConfigError
from regtune.tasks.qa.data import Answer, QAExample
from regtune.tasks.qa.metrics import squad_scores
from regtune.tasks.qa.postprocess import (
    Prediction,
    best_spans,
    postprocess_qa_predictions,
    predictions_to_text,
)

CONTEXT = "Paris is the capital of France."
# Window layout: [CLS] q q [SEP] Paris is the capital of France . [SEP]
#       index:     0   1 2   3     4    5  6     7     8    9    10  11
CONTEXT_OFFSETS: list[tuple[int, int]] = [(0, 5), (6, 8), (9, 12), (13, 20), (21, 23), (24, 30), (30, 31)]
OFFSETS: list[tuple[int, int] | None] = [None, None, None, None, *CONTEXT_OFFSETS, None]
WIDTH = len(OFFSETS)


def _example(qid: str = "q1", context: str = CONTEXT) -> QAExample:
    return QAExample(id=qid, question="What is the capital?", context=context, answers=(Answer("Paris", 0),))


def _logits(peaks: dict[int, float], width: int = WIDTH) -> np.ndarray:
    """Zeros except the given token positions."""
    row = np.zeros(width)
    for index, value in peaks.items():
        row[index] = value
    return row


def _predict_one(start: np.ndarray, end: np.ndarray, **kwargs: int) -> Prediction:
    preds = postprocess_qa_predictions([_example()], ["q1"], [OFFSETS], [start], [end], **kwargs)
    assert list(preds) == ["q1"]
    return preds["q1"]


def test_best_span_picked() -> None:
    pred = _predict_one(_logits({9: 5.0, 4: 1.0}), _logits({9: 4.0, 5: 2.0}))
    assert pred == Prediction(text="France", score=9.0, start_char=24, end_char=30)


def test_multi_token_span_text_comes_from_context() -> None:
    pred = _predict_one(_logits({6: 3.0}), _logits({7: 3.0}))
    assert pred.text == "the capital"
    assert CONTEXT[pred.start_char : pred.end_char] == pred.text
    assert pred.score == 6.0


@pytest.mark.parametrize("n_best_size", [1, 2, 20])
def test_tokens_outside_context_never_chosen(n_best_size: int) -> None:
    # The question tokens, [CLS] and [SEP] carry by far the highest logits; offset None must rule them out
    # even when n_best_size=1 (impossible tokens are dropped before the top-n selection).
    start = _logits({0: 100.0, 1: 90.0, 2: 80.0, 11: 70.0, 8: 2.0})
    end = _logits({0: 100.0, 2: 90.0, 3: 80.0, 11: 70.0, 9: 3.0})
    pred = _predict_one(start, end, n_best_size=n_best_size)
    assert pred.text == "of France"
    assert pred.score == 5.0


def test_end_before_start_excluded() -> None:
    # Best start is "of" (8), best end is "is" (5): the pair (8, 5) would score 20 but runs backwards.
    # Remaining pairs: (8, 8)=10+4, (5, 5)=5+10, (5, 8)=5+4 -> (5, 5) "is" with 15.
    start = _logits({8: 10.0, 5: 5.0})
    end = _logits({5: 10.0, 8: 4.0})
    pred = _predict_one(start, end)
    assert (pred.text, pred.score) == ("is", 15.0)


@pytest.mark.parametrize(
    ("max_answer_length", "text", "score"),
    [
        (30, "Paris is the capital of France.", 20.5),  # (4, 10): 7 tokens
        (7, "Paris is the capital of France.", 20.5),  # exactly at the limit
        (6, "of France.", 16.5),  # (4, 10) too long; (8, 10)=6+10.5 beats (4, 6)=10+5
        (1, ".", 10.5),  # single tokens only: (10, 10)=0+10.5 beats (4, 4)=10+0
    ],
)
def test_max_answer_length_respected(max_answer_length: int, text: str, score: float) -> None:
    start = _logits({4: 10.0, 8: 6.0})
    end = _logits({10: 10.5, 6: 5.0})
    pred = _predict_one(start, end, max_answer_length=max_answer_length)
    assert (pred.text, pred.score) == (text, score)


def test_best_across_two_windows_of_one_question() -> None:
    # Window 1 sees context tokens 0-3 ("Paris is the capital"), window 2 tokens 2-6 ("the ... France.");
    # both map into the same context, as sliding windows with a doc stride do.
    win1 = [None, None, None, None, *CONTEXT_OFFSETS[:4], None]
    win2 = [None, None, None, None, *CONTEXT_OFFSETS[2:], None]
    start1, end1 = _logits({4: 3.0}, len(win1)), _logits({4: 3.0}, len(win1))  # "Paris": 6
    start2, end2 = _logits({7: 4.0}, len(win2)), _logits({7: 4.0}, len(win2))  # token 7 = "France": 8
    other = _example("q2")
    preds = postprocess_qa_predictions(
        [_example(), other],
        ["q1", "q1", "q2"],
        [win1, win2, OFFSETS],
        [start1, start2, _logits({4: 1.0})],
        [end1, end2, _logits({4: 1.0})],
    )
    assert preds["q1"] == Prediction(text="France", score=8.0, start_char=24, end_char=30)
    assert preds["q2"].text == "Paris"

    # Lower the second window's peak below the first's: now the first window wins.
    weak2 = _logits({7: 1.0}, len(win2))
    preds = postprocess_qa_predictions(
        [_example()], ["q1", "q1"], [win1, win2], [start1, weak2], [end1, weak2]
    )
    assert preds["q1"] == Prediction(text="Paris", score=6.0, start_char=0, end_char=5)


def test_tie_across_windows_goes_to_the_earliest() -> None:
    first = [None, *CONTEXT_OFFSETS[:2]]
    second = [None, *CONTEXT_OFFSETS[5:]]
    logits = [np.array([0.0, 1.0, 0.0]), np.array([0.0, 1.0, 0.0])]
    preds = postprocess_qa_predictions([_example()], ["q1", "q1"], [first, second], logits, logits)
    assert preds["q1"].text == "Paris"


def test_ragged_and_right_padded_give_identical_results() -> None:
    rng = np.random.default_rng(0)
    contexts = [CONTEXT, "Berlin is big.", "x"]
    examples = [_example(f"q{i}", ctx) for i, ctx in enumerate(contexts)]
    offsets = [
        [None, None, *CONTEXT_OFFSETS, None],
        [None, *CONTEXT_OFFSETS[:3], None],
        [None, None, (0, 6), (7, 9), (10, 13), (13, 14), None],
        [None, (0, 1), None],
    ]
    ids = ["q0", "q0", "q1", "q2"]
    starts = [rng.normal(size=len(o)) for o in offsets]
    ends = [rng.normal(size=len(o)) for o in offsets]
    width = max(len(o) for o in offsets) + 3
    # Padding holds values that would win if they were read: huge, +inf and NaN.
    padded_start = np.full((len(offsets), width), 1e9)
    padded_end = np.full((len(offsets), width), np.nan)
    padded_end[:, -1] = np.inf
    for w, (s, e) in enumerate(zip(starts, ends, strict=True)):
        padded_start[w, : len(s)] = s
        padded_end[w, : len(e)] = e

    ragged = postprocess_qa_predictions(examples, ids, offsets, starts, ends, n_best_size=3)
    padded = postprocess_qa_predictions(examples, ids, offsets, padded_start, padded_end, n_best_size=3)
    assert ragged == padded
    assert all(np.isfinite(p.score) for p in ragged.values())
    assert ragged["q2"].text == "x"


def test_no_valid_span_predicts_empty() -> None:
    # Every token lies outside the context, and q2 has no window at all.
    preds = postprocess_qa_predictions(
        [_example("q1"), _example("q2")], ["q1"], [[None, None, None]], [np.ones(3)], [np.ones(3)]
    )
    for qid in ("q1", "q2"):
        assert preds[qid].text == ""
        assert preds[qid].score == -math.inf
        assert (preds[qid].start_char, preds[qid].end_char) == (0, 0)
    assert predictions_to_text(preds) == {"q1": "", "q2": ""}


def test_logits_outside_context_may_be_non_finite() -> None:
    start = _logits({9: 1.0})
    start[:4] = [np.nan, np.inf, -np.inf, np.nan]
    pred = _predict_one(start, _logits({9: 1.0}))
    assert (pred.text, pred.score) == ("France", 2.0)


def test_non_finite_logit_in_context_raises() -> None:
    start = _logits({9: np.nan})
    with pytest.raises(ValueError, match="finite"):
        _predict_one(start, _logits({}))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "20", None])
@pytest.mark.parametrize("name", ["n_best_size", "max_answer_length"])
def test_invalid_options_raise_config_error(name: str, bad: object) -> None:
    with pytest.raises(ConfigError, match=name):
        _predict_one(_logits({}), _logits({}), **{name: bad})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=name):
        best_spans(np.zeros((1, 3)), np.zeros((1, 3)), np.ones((1, 3), bool), **{name: bad})  # type: ignore[arg-type]


def test_numpy_integer_options_accepted() -> None:
    pred = _predict_one(_logits({9: 1.0}), _logits({9: 1.0}), n_best_size=np.int64(5))  # type: ignore[arg-type]
    assert pred.text == "France"


def test_mismatched_inputs_raise() -> None:
    ex = [_example()]
    one = [np.zeros(WIDTH)]
    with pytest.raises(ValueError, match="example_ids"):
        postprocess_qa_predictions(ex, ["q1", "q1"], [OFFSETS], one, one)
    with pytest.raises(ValueError, match="not in examples"):
        postprocess_qa_predictions(ex, ["nope"], [OFFSETS], one, one)
    with pytest.raises(ValueError, match="at least"):
        postprocess_qa_predictions(ex, ["q1"], [OFFSETS], [np.zeros(WIDTH - 1)], one)
    with pytest.raises(ValueError, match="columns"):
        postprocess_qa_predictions(ex, ["q1"], [OFFSETS], np.zeros((1, WIDTH - 1)), one)
    with pytest.raises(ValueError, match="windows"):
        postprocess_qa_predictions(ex, ["q1"], [OFFSETS], [*one, *one], one)
    with pytest.raises(ValueError, match="repeat"):
        postprocess_qa_predictions([*ex, *ex], ["q1"], [OFFSETS], one, one)
    with pytest.raises(ValueError, match="2-D"):
        best_spans(np.zeros(3), np.zeros(3), np.ones(3, bool))


def test_best_spans_shapes_and_empty_windows() -> None:
    start, end, score = best_spans(np.zeros((4, 5)), np.zeros((4, 5)), np.zeros((4, 5), bool))
    assert start.shape == end.shape == score.shape == (4,)
    assert (start == -1).all() and (end == -1).all() and np.isneginf(score).all()
    start, end, score = best_spans(np.zeros((0, 5)), np.zeros((0, 5)), np.zeros((0, 5), bool))
    assert start.shape == (0,)


def test_feeds_squad_scores() -> None:
    pred = _predict_one(_logits({4: 5.0}), _logits({4: 5.0}))
    result = squad_scores(predictions_to_text({"q1": pred}), {"q1": ["Paris"]})
    assert result.exact_match == 100.0


# --- cross-check against a plain double loop ---------------------------------------------------------


def _reference_window(
    start: np.ndarray, end: np.ndarray, valid: np.ndarray, n_best: int, max_len: int
) -> tuple[int, int, float]:
    """utils_qa-style loop, with impossible tokens dropped before the top-n pick (the documented rule)."""
    candidates = [i for i in range(len(valid)) if valid[i]]
    top_starts = sorted(candidates, key=lambda i: -start[i])[:n_best]  # sorted is stable: low index first
    top_ends = sorted(candidates, key=lambda i: -end[i])[:n_best]
    best = (-1, -1, -math.inf)
    for s in top_starts:
        for e in top_ends:
            if e < s or e - s + 1 > max_len:
                continue
            score = float(start[s] + end[e])
            if score > best[2]:
                best = (s, e, score)
    return best


def _exhaustive_window(start: np.ndarray, end: np.ndarray, valid: np.ndarray, max_len: int) -> float:
    scores = [
        float(start[s] + end[e])
        for s in range(len(valid))
        for e in range(s, min(len(valid), s + max_len))
        if valid[s] and valid[e]
    ]
    return max(scores, default=-math.inf)


def _hf_window(start: np.ndarray, end: np.ndarray, valid: np.ndarray, n_best: int, max_len: int) -> float:
    """utils_qa as published: top-n over *all* tokens, invalid ones filtered only afterwards."""
    best = -math.inf
    for s in np.argsort(start)[-1 : -n_best - 1 : -1]:
        for e in np.argsort(end)[-1 : -n_best - 1 : -1]:
            if valid[s] and valid[e] and s <= e and e - s + 1 <= max_len:
                best = max(best, float(start[s] + end[e]))
    return best


def _random_batch(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    windows = int(rng.integers(1, 5))
    width = int(rng.integers(1, 40))
    start = rng.normal(scale=3.0, size=(windows, width))
    end = rng.normal(scale=3.0, size=(windows, width))
    valid = rng.random((windows, width)) < rng.uniform(0.0, 1.0)
    return start, end, valid


@pytest.mark.parametrize("seed", range(400))
def test_vectorised_search_matches_double_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    start, end, valid = _random_batch(rng)
    n_best = int(rng.integers(1, 12))
    max_len = int(rng.integers(1, 12))
    got_start, got_end, got_score = best_spans(
        start, end, valid, n_best_size=n_best, max_answer_length=max_len
    )
    for w in range(start.shape[0]):
        want = _reference_window(start[w], end[w], valid[w], n_best, max_len)
        assert (int(got_start[w]), int(got_end[w]), float(got_score[w])) == want
        # The n-best search never beats the exhaustive optimum, and reaches it when n covers every token.
        optimum = _exhaustive_window(start[w], end[w], valid[w], max_len)
        assert got_score[w] <= optimum
        if n_best >= start.shape[1]:
            assert got_score[w] == optimum
        # Dropping impossible tokens before the top-n pick can only help relative to utils_qa.
        assert got_score[w] >= _hf_window(start[w], end[w], valid[w], n_best, max_len)


@pytest.mark.parametrize("seed", range(50))
def test_postprocess_matches_loop_over_windows(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    num_questions = int(rng.integers(1, 4))
    examples = [_example(f"q{i}") for i in range(num_questions)]
    ids: list[str] = []
    offsets: list[list[tuple[int, int] | None]] = []
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    for _ in range(int(rng.integers(1, 7))):
        ids.append(f"q{int(rng.integers(num_questions))}")
        first = int(rng.integers(0, len(CONTEXT_OFFSETS)))
        window: list[tuple[int, int] | None] = [None] * int(rng.integers(0, 3))
        window += CONTEXT_OFFSETS[first : first + int(rng.integers(0, 5))]
        window += [None] * int(rng.integers(0, 2))
        offsets.append(window)
        starts.append(rng.normal(size=len(window)))
        ends.append(rng.normal(size=len(window)))

    preds = postprocess_qa_predictions(
        examples, ids, offsets, starts, ends, n_best_size=3, max_answer_length=2
    )

    for example in examples:
        best_score, best_text = -math.inf, ""
        for w, qid in enumerate(ids):
            if qid != example.id:
                continue
            valid = np.array([o is not None for o in offsets[w]], dtype=bool)
            s, e, score = _reference_window(starts[w], ends[w], valid, 3, 2)
            if s >= 0 and score > best_score:
                best_score = score
                best_text = CONTEXT[offsets[w][s][0] : offsets[w][e][1]]  # type: ignore[index]
        assert preds[example.id].score == best_score
        assert preds[example.id].text == best_text


def test_ranked_answers_first_is_the_prediction_and_spans_are_distinct() -> None:
    from regtune.tasks.qa.data import QAExample
    from regtune.tasks.qa.postprocess import postprocess_qa_predictions, ranked_answers

    rng = np.random.default_rng(0)
    context = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    words = [
        (m, m + len(w))
        for w, m in zip(context.split(), [context.index(w) for w in context.split()], strict=True)
    ]
    examples = [QAExample(id="q", question="?", context=context, answers=())]
    # Two overlapping windows over the same words (tokens 0-1 are question/special tokens: no offset).
    offsets = [[None, None, *words[0:7]], [None, None, *words[3:10]]]
    starts = [rng.normal(size=9), rng.normal(size=9)]
    ends = [rng.normal(size=9), rng.normal(size=9)]
    best = postprocess_qa_predictions(
        examples, ["q", "q"], offsets, starts, ends, n_best_size=5, max_answer_length=4
    )
    ranked = ranked_answers(
        examples, ["q", "q"], offsets, starts, ends, k=6, n_best_size=5, max_answer_length=4
    )["q"]
    assert ranked[0] == best["q"]
    assert len(ranked) == 6 and [p.score for p in ranked] == sorted((p.score for p in ranked), reverse=True)
    assert len({(p.start_char, p.end_char) for p in ranked}) == 6  # a span seen in both windows counts once
    assert all(p.text == context[p.start_char : p.end_char] and len(p.text.split()) <= 4 for p in ranked)
