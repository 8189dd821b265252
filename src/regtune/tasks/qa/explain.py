"""QA as explanations see it: one fixed window per question, the predicted span, and the scores explained.

For each question one window is fixed *independently of the model*: the first window that contains the
whole first gold answer (or, without one, the question's first window). Token kinds (``cls``, ``sep``,
``question``, ``context``) and the gold span come from the tokenizer, so the same
:class:`~regtune.tasks.inputs.ExplainInput` serves a τ=0 and a τ=8 model of the same base.

What is explained is a logit of the model's own predicted span in the window: its start logit, its end
logit, or their sum (``span``, the score post-processing ranks answers by).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from regtune.tasks.inputs import ExplainInput, SourceSpan, TokenKind, structural_token_ids
from regtune.tasks.qa.data import QAExample
from regtune.tasks.qa.features import prepare_eval_features
from regtune.tasks.qa.postprocess import Offset, best_spans

#: What a QA attribution can explain: the start logit, the end logit, or their sum.
TARGETS: tuple[str, ...] = ("start", "end", "span")


def token_span(offsets: Sequence[Offset], start_char: int, end_char: int) -> tuple[int, int] | None:
    """Inclusive token indices covering ``[start_char, end_char)``, or None if the window cuts it."""
    inside = [i for i, o in enumerate(offsets) if o is not None and o[0] < end_char and o[1] > start_char]
    if not inside:
        return None
    first, last = inside[0], inside[-1]
    covered = offsets[first][0] <= start_char and offsets[last][1] >= end_char  # type: ignore[index]
    return (first, last) if covered else None


def question_spans(
    question: str, window_ids: Sequence[int], tokenizer: PreTrainedTokenizerBase
) -> list[SourceSpan | None]:
    """Spans ``(0, start, end)`` into ``question`` of a window's question tokens ``window_ids``.

    The window holds the question left-stripped and possibly cut at a word boundary, and its offsets
    are into that string; tokenising the stripped question alone gives the same ids as a prefix, and
    the strip is added back. Where it does not (a tokenizer whose pieces depend on the pair), the
    tokens get no spans and the pages fall back to the token strings.
    """
    stripped = question.lstrip()
    lead = len(question) - len(stripped)
    encoded = tokenizer(stripped, add_special_tokens=False, return_offsets_mapping=True)
    if list(encoded["input_ids"][: len(window_ids)]) != list(window_ids):
        return [None] * len(window_ids)
    return [(0, start + lead, end + lead) for start, end in encoded["offset_mapping"][: len(window_ids)]]


def build_explain_inputs(
    examples: Sequence[QAExample],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int = 384,
    doc_stride: int = 128,
) -> list[ExplainInput]:
    """One :class:`ExplainInput` per question, in the order of ``examples`` (see the module docstring)."""
    features = prepare_eval_features(examples, tokenizer, max_length=max_length, doc_stride=doc_stride)
    by_id = {example.id: example for example in examples}
    chosen: dict[str, tuple[int, tuple[int, int] | None]] = {}
    for window, qid in enumerate(features["example_id"]):
        if qid in chosen and chosen[qid][1] is not None:
            continue
        example = by_id[qid]
        span = None
        if example.answers:
            answer = example.answers[0]
            span = token_span(
                features["offset_mapping"][window], answer.start, answer.start + len(answer.text)
            )
        if qid not in chosen or span is not None:
            chosen[qid] = (window, span)
    # Structural tokens only: [UNK] (common for TyDi text under an English vocabulary) is question text.
    special_ids = structural_token_ids(tokenizer)
    inputs = []
    for example in examples:
        window, span = chosen[example.id]
        ids = tuple(int(i) for i in features["input_ids"][window])
        offsets = tuple(features["offset_mapping"][window])
        kinds: list[TokenKind] = []
        for position, (token_id, offset) in enumerate(zip(ids, offsets, strict=True)):
            if offset is not None:
                kinds.append("context")
            elif token_id in special_ids:
                kinds.append("cls" if position == 0 else "sep")
            else:  # off the context and not special: the question
                kinds.append("question")
        types = features.get("token_type_ids")
        asked = [i for i, kind in enumerate(kinds) if kind == "question"]
        spans: list[SourceSpan | None] = [None if o is None else (1, o[0], o[1]) for o in offsets]
        asked_spans = question_spans(example.question, [ids[i] for i in asked], tokenizer)
        for i, asked_span in zip(asked, asked_spans, strict=True):
            spans[i] = asked_span
        inputs.append(
            ExplainInput(
                example=example,
                input_ids=ids,
                token_type_ids=None if types is None else tuple(int(t) for t in types[window]),
                tokens=tuple(tokenizer.convert_ids_to_tokens(list(ids))),
                kinds=tuple(kinds),
                offsets=offsets,
                gold_span=span,
                sources=(example.question, example.context),
                source_spans=tuple(spans),
            )
        )
    return inputs


@torch.no_grad()
def text_logits(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end logits over text tokens, each (B, N), in float32."""
    out = model(**batch)
    return out.start_logits.float(), out.end_logits.float()


def predicted_span(
    model: PreTrainedModel, inputs: ExplainInput, *, n_best: int = 20, max_answer_length: int = 30
) -> tuple[int, int]:
    """The model's best context span in this window, as inclusive text-token indices."""
    device = next(model.parameters()).device
    start, end = text_logits(model, inputs.batch(device))
    valid = inputs.context_mask()[None, :]
    s, e, _ = best_spans(
        start.cpu().numpy(), end.cpu().numpy(), valid, n_best_size=n_best, max_answer_length=max_answer_length
    )
    return int(s[0]), int(e[0])


def target_score(start: torch.Tensor, end: torch.Tensor, span: tuple[int, int], target: str) -> torch.Tensor:
    """The explained output per row: start (B, N) and end (B, N) logits -> (B,)."""
    if target == "start":
        return start[:, span[0]]
    if target == "end":
        return end[:, span[1]]
    return start[:, span[0]] + end[:, span[1]]


def span_probability(start: torch.Tensor, end: torch.Tensor, span: tuple[int, int]) -> torch.Tensor:
    """p(span) = softmax(start)[s] · softmax(end)[e] over the window, per row: (B, N) x 2 -> (B,)."""
    return start.float().softmax(-1)[:, span[0]] * end.float().softmax(-1)[:, span[1]]
