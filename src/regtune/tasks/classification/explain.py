"""Classification as explanations see it: the tokenised sentence (or pair), and the predicted class's logit.

Each example becomes one :class:`~regtune.tasks.inputs.ExplainInput`: ``[CLS] text [SEP]`` (or ``[CLS] a
[SEP] b [SEP]``) with kinds ``cls``, ``sep`` and ``text``. What is explained is the logit of the class the
model predicts (target ``class``). The head reads the final state of ``[CLS]``, so the explained
"span" is ``(0, 0)``: the attention-gradient row of ``[CLS]``, and the token outlined on the pages.
Faithfulness masks ``text`` tokens only, never ``[CLS]``, ``[SEP]`` or a register.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from regtune.tasks.classification.data import ClassificationExample
from regtune.tasks.inputs import ExplainInput, SourceSpan, TokenKind, structural_token_ids

#: What a classification attribution explains: the logit of the predicted class.
TARGETS: tuple[str, ...] = ("class",)
#: Where the head reads: the text position of [CLS].
CLS_SPAN = (0, 0)


def build_explain_inputs(
    examples: Sequence[ClassificationExample],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    labels: Sequence[str],
) -> list[ExplainInput]:
    """One input per example, truncated like training; ``gold_label`` is the gold label's id.

    With a fast tokenizer, text tokens get their character spans in ``example.texts`` (the pair's
    sequence id picks the text), which the pages show; a slow tokenizer has no offsets, and its pages
    show the token strings.
    """
    special_ids = structural_token_ids(tokenizer)
    index = {label: i for i, label in enumerate(labels)}
    inputs = []
    for example in examples:
        encoding = tokenizer(
            *example.texts, truncation=True, max_length=max_length, return_offsets_mapping=tokenizer.is_fast
        )
        ids = tuple(int(i) for i in encoding["input_ids"])
        kinds: list[TokenKind] = [
            ("cls" if position == 0 else "sep") if token in special_ids else "text"
            for position, token in enumerate(ids)
        ]
        spans: list[SourceSpan | None] = []
        if tokenizer.is_fast:
            for kind, sequence, (start, end) in zip(
                kinds, encoding.sequence_ids(), encoding["offset_mapping"], strict=True
            ):
                spans.append((sequence, start, end) if kind == "text" and sequence is not None else None)
        types = encoding.get("token_type_ids")
        inputs.append(
            ExplainInput(
                example=example,
                input_ids=ids,
                token_type_ids=None if types is None else tuple(int(t) for t in types),
                tokens=tuple(tokenizer.convert_ids_to_tokens(list(ids))),
                kinds=tuple(kinds),
                offsets=tuple(None for _ in ids),
                gold_span=None,
                gold_label=index.get(example.label) if example.label is not None else None,
                sources=tuple(example.texts),
                source_spans=tuple(spans),
            )
        )
    return inputs


@torch.no_grad()
def predicted_class(model: PreTrainedModel, item: ExplainInput) -> int:
    """The class the model predicts for ``item``."""
    device = next(model.parameters()).device
    return int(model(**item.batch(device)).logits[0].argmax())


def class_score(out: Any, label: int) -> torch.Tensor:
    """The logit of class ``label`` per row: (B, C) -> (B,)."""
    return out.logits.float()[:, label]


def class_probability(out: Any, label: int) -> torch.Tensor:
    """softmax(logits)[label] per row: (B, C) -> (B,)."""
    return out.logits.float().softmax(-1)[:, label]
