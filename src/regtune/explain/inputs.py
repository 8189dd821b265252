"""The window each explanation looks at, and the predicted span it explains.

Explanations compare models token by token, so every model must see exactly the same tokens. For each
question we therefore fix one window *independently of the model*: the first window that contains the
whole first gold answer (or, without one, the question's first window). Token kinds (``cls``, ``sep``,
``question``, ``context``) and the gold span come from the tokenizer, so the same :class:`ExplainInput`
serves a τ=0 and a τ=8 model of the same base, and attributions align by text-token index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from regtune.tasks.qa.data import QAExample
from regtune.tasks.qa.features import prepare_eval_features
from regtune.tasks.qa.postprocess import Offset, best_spans

TokenKind = Literal["cls", "sep", "question", "context"]


@dataclass(frozen=True)
class ExplainInput:
    """One question's explained window; every per-token list has the window's N text tokens.

    Attributes:
        example: The question, its context and its reference answers.
        input_ids: Token ids, length N (no padding, no registers).
        token_type_ids: Segment ids, or None for tokenizers without them.
        tokens: The tokenizer's token strings.
        kinds: ``cls`` for the first special token, ``sep`` for the other special tokens, else
            ``question`` or ``context``.
        offsets: ``(start_char, end_char)`` into the context for context tokens, else None.
        gold_span: Token indices (inclusive) of the first reference answer, or None if it is not in the
            window (then plausibility is undefined for this question).
    """

    example: QAExample
    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...] | None
    tokens: tuple[str, ...]
    kinds: tuple[TokenKind, ...]
    offsets: tuple[Offset, ...]
    gold_span: tuple[int, int] | None

    @property
    def question_id(self) -> str:
        return self.example.id

    def __len__(self) -> int:
        return len(self.input_ids)

    def context_mask(self) -> np.ndarray:
        """(N,) booleans, True on context tokens: the only ones an answer can use or faithfulness masks."""
        return np.array([k == "context" for k in self.kinds])

    def batch(self, device: torch.device | str = "cpu", repeat: int = 1) -> dict[str, torch.Tensor]:
        """Model inputs of shape (repeat, N)."""
        ids = torch.tensor([self.input_ids] * repeat, dtype=torch.long, device=device)
        out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if self.token_type_ids is not None:
            out["token_type_ids"] = torch.tensor(
                [self.token_type_ids] * repeat, dtype=torch.long, device=device
            )
        return out


def _token_span(offsets: Sequence[Offset], start_char: int, end_char: int) -> tuple[int, int] | None:
    """Inclusive token indices covering ``[start_char, end_char)``, or None if the window cuts it."""
    inside = [i for i, o in enumerate(offsets) if o is not None and o[0] < end_char and o[1] > start_char]
    if not inside:
        return None
    first, last = inside[0], inside[-1]
    covered = offsets[first][0] <= start_char and offsets[last][1] >= end_char  # type: ignore[index]
    return (first, last) if covered else None


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
            span = _token_span(
                features["offset_mapping"][window], answer.start, answer.start + len(answer.text)
            )
        if qid not in chosen or span is not None:
            chosen[qid] = (window, span)
    # Structural tokens only: [UNK] (common for TyDi text under an English vocabulary) is question text.
    special_ids = {
        i
        for i in (
            tokenizer.cls_token_id,
            tokenizer.sep_token_id,
            tokenizer.bos_token_id,
            tokenizer.eos_token_id,
        )
        if i is not None
    }
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
        inputs.append(
            ExplainInput(
                example=example,
                input_ids=ids,
                token_type_ids=None if types is None else tuple(int(t) for t in types[window]),
                tokens=tuple(tokenizer.convert_ids_to_tokens(list(ids))),
                kinds=tuple(kinds),
                offsets=offsets,
                gold_span=span,
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
