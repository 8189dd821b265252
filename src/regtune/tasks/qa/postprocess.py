"""Turn per-window start/end logits into one answer span per question (numpy only).

This follows Hugging Face's ``utils_qa.postprocess_qa_predictions`` (SQuAD v1.1, no null answer): in each
window take the ``n_best_size`` best start and end tokens, pair them, drop impossible pairs, and keep the
highest ``start_logit + end_logit`` across all windows of the question. Unlike ``utils_qa``, the pairing is
one broadcast over an ``(n, n)`` grid per window, and whole batches of windows are searched at once.

One deliberate difference: tokens that cannot bound an answer (offset ``None``: question, special tokens,
padding; or positions past a window's end) are excluded *before* the top-``n`` selection, not after. So an
n-best slot is never spent on an impossible token, a window whose highest logits all sit in the question
still yields its best context span, and right-padded logits give exactly the ragged result whatever the
padding holds. Whenever ``utils_qa`` finds a span, ours scores at least as high.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from regtune.core.errors import ConfigError
from regtune.tasks.qa.data import QAExample

Offset = tuple[int, int] | None
Logits = Sequence[np.ndarray] | np.ndarray

# Windows searched per broadcast; bounds the (chunk, n, n) score grid to a few MiB at n_best_size=20.
_CHUNK = 1024


@dataclass(frozen=True)
class Prediction:
    """The chosen answer of one question.

    Attributes:
        text: ``context[start_char:end_char]``; ``""`` when no window had a valid span.
        score: ``start_logit + end_logit`` of the span; ``-inf`` when there is none.
        start_char: Character offset of the answer start in the context (0 when there is no span).
        end_char: Character offset one past the answer end (0 when there is no span).
    """

    text: str
    score: float
    start_char: int
    end_char: int


def _check_positive_int(name: str, value: object) -> int:
    # bool is an int subclass; n_best_size=True is a bug, not 1.
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def best_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    valid: np.ndarray,
    *,
    n_best_size: int = 20,
    max_answer_length: int = 30,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Find the best answer span of each window with one vectorised n-best search.

    Per window, the ``n_best_size`` valid tokens with the highest start logits and those with the highest
    end logits form an ``(n, n)`` grid of candidate spans; pairs with ``end < start`` or longer than
    ``max_answer_length`` tokens are masked and the highest ``start + end`` logit sum wins. Ties go to the
    token with the lower index, in both the top-``n`` selection and the final pick.

    Args:
        start_logits: Start logits, shape ``(W, L)``, one row per window.
        end_logits: End logits, shape ``(W, L)``.
        valid: Boolean, shape ``(W, L)``; True where a token may start or end an answer (it lies in the
            context and inside the window). Logits where it is False are never read, so they may hold
            padding, ``-inf`` or NaN.
        n_best_size: How many start and how many end candidates to pair per window.
        max_answer_length: Longest answer allowed, in tokens (``end - start + 1``).

    Returns:
        ``(start, end, score)``, each of shape ``(W,)``: token indices (inclusive) of the best span and its
        logit sum, or ``-1, -1, -inf`` for a window without any valid span.

    Raises:
        ConfigError: If ``n_best_size`` or ``max_answer_length`` is not a positive integer.
        ValueError: If the arrays are not 2-D of one shape, or a valid position holds a non-finite logit.
    """
    n_best_size = _check_positive_int("n_best_size", n_best_size)
    max_answer_length = _check_positive_int("max_answer_length", max_answer_length)
    start_logits = np.asarray(start_logits, dtype=np.float64)
    end_logits = np.asarray(end_logits, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    if start_logits.ndim != 2 or start_logits.shape != end_logits.shape or valid.shape != start_logits.shape:
        raise ValueError(
            "start_logits, end_logits and valid must be 2-D of one shape (windows, tokens), got "
            f"{start_logits.shape}, {end_logits.shape} and {valid.shape}"
        )
    num_windows, width = start_logits.shape
    if num_windows == 0 or width == 0:
        return np.full(num_windows, -1), np.full(num_windows, -1), np.full(num_windows, -np.inf)
    if not (np.isfinite(start_logits[valid]).all() and np.isfinite(end_logits[valid]).all()):
        raise ValueError("start/end logits must be finite at context positions (NaN or inf found)")

    # Invalid tokens get -inf so they sort last; valid logits are finite, so -inf marks invalid exactly.
    start_key = np.where(valid, start_logits, -np.inf)  # (W, L)
    end_key = np.where(valid, end_logits, -np.inf)  # (W, L)
    n = min(n_best_size, width)
    # Stable sort of the negation: descending logits, lower index first among ties.
    start_idx = np.argsort(-start_key, axis=1, kind="stable")[:, :n]  # (W, n)
    end_idx = np.argsort(-end_key, axis=1, kind="stable")[:, :n]  # (W, n)
    start_top = np.take_along_axis(start_key, start_idx, axis=1)  # (W, n)
    end_top = np.take_along_axis(end_key, end_idx, axis=1)  # (W, n)

    length = end_idx[:, None, :] - start_idx[:, :, None] + 1  # (W, n, n): rows are starts, columns ends
    ok = (
        np.isfinite(start_top)[:, :, None]
        & np.isfinite(end_top)[:, None, :]
        & (length >= 1)
        & (length <= max_answer_length)
    )
    scores = np.where(ok, start_top[:, :, None] + end_top[:, None, :], -np.inf).reshape(num_windows, n * n)
    flat = np.argmax(scores, axis=1)  # (W,); first maximum in (start rank, end rank) order
    rows = np.arange(num_windows)
    best_score = scores[rows, flat]
    found = np.isfinite(best_score)
    best_start = np.where(found, start_idx[rows, flat // n], -1)
    best_end = np.where(found, end_idx[rows, flat % n], -1)
    return best_start, best_end, best_score


def _pad(logits: Logits, lengths: Sequence[int], name: str) -> np.ndarray:
    """Stack per-window logits into one right-padded ``(W, max(lengths))`` array, checking coverage."""
    num_windows = len(lengths)
    width = max(lengths, default=0)
    if isinstance(logits, np.ndarray) and logits.ndim == 2:
        if logits.shape[0] != num_windows:
            raise ValueError(f"{name} has {logits.shape[0]} rows but there are {num_windows} windows")
        if logits.shape[1] < width:
            raise ValueError(f"{name} has {logits.shape[1]} columns but a window has {width} tokens")
        return np.asarray(logits[:, :width], dtype=np.float64)
    if len(logits) != num_windows:
        raise ValueError(f"{name} has {len(logits)} windows but offset_mapping has {num_windows}")
    out = np.zeros((num_windows, width), dtype=np.float64)
    for w, (row, n_tokens) in enumerate(zip(logits, lengths, strict=True)):
        row = np.asarray(row, dtype=np.float64)
        if row.ndim != 1 or row.shape[0] < n_tokens:
            raise ValueError(
                f"{name}[{w}] must be 1-D with at least {n_tokens} entries (one per offset), got {row.shape}"
            )
        out[w, :n_tokens] = row[:n_tokens]
    return out


def _context_mask(offset_mapping: Sequence[Sequence[Offset]], width: int) -> np.ndarray:
    """Boolean ``(W, width)``: True where a token has a context offset; False for None and past the end."""
    mask = np.zeros((len(offset_mapping), width), dtype=bool)
    for w, offsets in enumerate(offset_mapping):
        mask[w, : len(offsets)] = [offset is not None for offset in offsets]
    return mask


def postprocess_qa_predictions(
    examples: Sequence[QAExample],
    example_ids: Sequence[str],
    offset_mapping: Sequence[Sequence[Offset]],
    start_logits: Logits,
    end_logits: Logits,
    *,
    n_best_size: int = 20,
    max_answer_length: int = 30,
) -> dict[str, Prediction]:
    """Pick one answer span per question from the logits of all its windows.

    Args:
        examples: The questions; every one gets a prediction, in this order.
        example_ids: Per window, the id of the question it belongs to.
        offset_mapping: Per window, per token, ``(start_char, end_char)`` into that question's context, or
            None for a token outside the context (question, special tokens, padding).
        start_logits: Per window start logits over text tokens (no register positions): a list of 1-D
            arrays, lengths may differ, or one 2-D array padded on the right. Positions past a window's
            offset list are ignored.
        end_logits: End logits, in the same layout as ``start_logits``.
        n_best_size: Start and end candidates paired per window (see :func:`best_spans`).
        max_answer_length: Longest answer allowed, in tokens.

    Returns:
        Question id -> :class:`Prediction`, the highest-scoring span over the question's windows (the
        earliest window wins a tie). A question without any valid span gets ``Prediction("", -inf, 0, 0)``.

    Raises:
        ConfigError: If ``n_best_size`` or ``max_answer_length`` is not a positive integer.
        ValueError: If the per-window inputs disagree in length, a window names an unknown question, or
            ``examples`` repeats an id.
    """
    n_best_size = _check_positive_int("n_best_size", n_best_size)
    max_answer_length = _check_positive_int("max_answer_length", max_answer_length)
    by_id = _index_questions(examples, example_ids, offset_mapping)
    lengths = [len(offsets) for offsets in offset_mapping]
    starts = _pad(start_logits, lengths, "start_logits")  # (windows, longest window)
    ends = _pad(end_logits, lengths, "end_logits")
    valid = _context_mask(offset_mapping, starts.shape[1])
    best = _best_window_per_question(example_ids, starts, ends, valid, n_best_size, max_answer_length)
    predictions: dict[str, Prediction] = {}
    for qid, example in by_id.items():
        if qid not in best:
            predictions[qid] = Prediction(text="", score=float("-inf"), start_char=0, end_char=0)
            continue
        score, window, s, e = best[qid]
        # best_spans only returns tokens whose offset is not None.
        start_char = offset_mapping[window][s][0]  # type: ignore[index]
        end_char = offset_mapping[window][e][1]  # type: ignore[index]
        predictions[qid] = Prediction(
            text=example.context[start_char:end_char],
            score=float(score),
            start_char=int(start_char),
            end_char=int(end_char),
        )
    return predictions


def _index_questions(
    examples: Sequence[QAExample], example_ids: Sequence[str], offset_mapping: Sequence[Sequence[Offset]]
) -> dict[str, QAExample]:
    """Question id -> question, after checking that every window names a known question."""
    by_id: dict[str, QAExample] = {}
    for example in examples:
        if example.id in by_id:
            raise ValueError(f"examples repeat the question id {example.id!r}")
        by_id[example.id] = example
    if len(example_ids) != len(offset_mapping):
        raise ValueError(f"{len(example_ids)} example_ids but {len(offset_mapping)} offset_mapping windows")
    unknown = sorted({qid for qid in example_ids if qid not in by_id})
    if unknown:
        raise ValueError(f"{len(unknown)} window(s) name questions not in examples, e.g. {unknown[0]!r}")
    return by_id


def _best_window_per_question(
    example_ids: Sequence[str],
    starts: np.ndarray,
    ends: np.ndarray,
    valid: np.ndarray,
    n_best_size: int,
    max_answer_length: int,
) -> dict[str, tuple[float, int, int, int]]:
    """Question id -> (score, window, start token, end token) of its best span over all its windows.

    ``starts``, ``ends`` and ``valid`` are (windows, tokens); windows are scored ``_CHUNK`` at a time so
    the (chunk, n_best, n_best) candidate scores stay small.
    """
    best: dict[str, tuple[float, int, int, int]] = {}
    for lo in range(0, len(example_ids), _CHUNK):
        hi = lo + _CHUNK
        span_start, span_end, span_score = best_spans(
            starts[lo:hi],
            ends[lo:hi],
            valid[lo:hi],
            n_best_size=n_best_size,
            max_answer_length=max_answer_length,
        )
        spans = zip(span_score.tolist(), span_start.tolist(), span_end.tolist(), strict=True)
        for i, (score, s, e) in enumerate(spans):
            qid = example_ids[lo + i]
            # Strict ">" keeps the earliest window on ties, as utils_qa's stable sort does.
            if s >= 0 and (qid not in best or score > best[qid][0]):
                best[qid] = (score, lo + i, s, e)
    return best


def predictions_to_text(predictions: Mapping[str, Prediction]) -> dict[str, str]:
    """Map question id -> answer text, the form :func:`regtune.tasks.qa.metrics.squad_scores` takes."""
    return {qid: prediction.text for qid, prediction in predictions.items()}


def ranked_answers(
    examples: Sequence[QAExample],
    example_ids: Sequence[str],
    offset_mapping: Sequence[Sequence[Offset]],
    start_logits: Logits,
    end_logits: Logits,
    *,
    k: int,
    n_best_size: int = 20,
    max_answer_length: int = 30,
) -> dict[str, list[Prediction]]:
    """The ``k`` best distinct answers of every question, best first, over all its windows.

    Candidates are :func:`best_spans`' n-best grid of every window; the same text span found in two
    overlapping windows counts once (its best score). Ties are broken as in
    :func:`postprocess_qa_predictions` (earlier window, then start rank, then end rank), so the first
    answer is always that function's prediction. A question without a valid span gets an empty list.
    """
    k = _check_positive_int("k", k)
    n_best_size = _check_positive_int("n_best_size", n_best_size)
    max_answer_length = _check_positive_int("max_answer_length", max_answer_length)
    lengths = [len(offsets) for offsets in offset_mapping]
    starts = _pad(start_logits, lengths, "start_logits")
    ends = _pad(end_logits, lengths, "end_logits")
    valid = _context_mask(offset_mapping, starts.shape[1])
    n = min(n_best_size, starts.shape[1])
    candidates: dict[str, list[tuple[float, int, int, int, int, int]]] = {e.id: [] for e in examples}
    for w, qid in enumerate(example_ids):
        start_key = np.where(valid[w], starts[w], -np.inf)
        end_key = np.where(valid[w], ends[w], -np.inf)
        start_idx = np.argsort(-start_key, kind="stable")[:n]
        end_idx = np.argsort(-end_key, kind="stable")[:n]
        for i, s in enumerate(start_idx):
            for j, e in enumerate(end_idx):
                score = start_key[s] + end_key[e]
                if np.isfinite(score) and 1 <= e - s + 1 <= max_answer_length:
                    candidates[qid].append((-float(score), w, i, j, int(s), int(e)))
    by_id = {example.id: example for example in examples}
    ranked: dict[str, list[Prediction]] = {}
    for qid, found in candidates.items():
        answers: list[Prediction] = []
        seen: set[tuple[int, int]] = set()
        for neg_score, w, _i, _j, s, e in sorted(found):
            span = (offset_mapping[w][s][0], offset_mapping[w][e][1])  # type: ignore[index]
            if span in seen:
                continue
            seen.add(span)
            answers.append(Prediction(by_id[qid].context[span[0] : span[1]], -neg_score, *map(int, span)))
            if len(answers) == k:
                break
        ranked[qid] = answers
    return ranked
