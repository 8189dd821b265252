"""A task's input as the analysis layer sees it: one fixed token sequence per example, with token kinds.

Explanations compare models token by token, so every model must see exactly the same tokens. Each task
builds these from its own examples (:meth:`regtune.tasks.base.Task.explain_inputs`): QA fixes one
window per question (:mod:`regtune.tasks.qa.explain`), classification tokenises the sentence or pair
(:mod:`regtune.tasks.classification.explain`). Attributions then align by text-token index across
models of one base with different τ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

TokenKind = Literal["cls", "sep", "question", "context", "text"]
#: The kinds faithfulness may mask: what the prediction is about, never special tokens or the question.
MASKABLE_KINDS: tuple[str, ...] = ("context", "text")
Offset = tuple[int, int]
#: (source index, start_char, end_char): a token's characters in one of an input's source texts.
SourceSpan = tuple[int, int, int]


@dataclass(frozen=True)
class ExplainInput:
    """One example's explained input; every per-token list has the input's N text tokens.

    Attributes:
        example: The task's example (QA: question, context and references; classification: text(s)
            and label).
        input_ids: Token ids, length N (no padding, no registers).
        token_type_ids: Segment ids, or None for tokenizers without them.
        tokens: The tokenizer's token strings.
        kinds: ``cls`` for the first special token, ``sep`` for the other special tokens, else
            ``question`` or ``context`` (QA) or ``text`` (classification).
        offsets: ``(start_char, end_char)`` into the context for context tokens, else None.
        gold_span: Token indices (inclusive) of the first reference answer, or None if it is not in the
            window (then plausibility is undefined for this question; always None for classification).
        gold_label: The gold class id (classification), or None.
        sources: The texts the tokens were cut from (QA: question and context; classification: the
            text or the pair; generative QA: the whole prompt). Display only.
        source_spans: Per token, ``(source, start_char, end_char)`` from the tokenizer's offset mapping,
            or None for special tokens; empty when the input was built without them. The pages show
            each token's own characters from these, so subword pieces of any script read as words
            (:mod:`regtune.explain.words`). Unlike ``offsets``, question tokens have them too.
    """

    example: Any
    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...] | None
    tokens: tuple[str, ...]
    kinds: tuple[TokenKind, ...]
    offsets: tuple[Offset | None, ...]
    gold_span: tuple[int, int] | None
    gold_label: int | None = None
    sources: tuple[str, ...] = ()
    source_spans: tuple[SourceSpan | None, ...] = ()

    def __post_init__(self) -> None:
        # A span outside its text is a builder's bug; caught here, it cannot surface as a wrong page.
        if not self.source_spans:
            return
        if len(self.source_spans) != len(self.input_ids):
            raise ValueError(
                f"{self.example.id}: {len(self.source_spans)} source spans for {len(self)} tokens"
            )
        for span in self.source_spans:
            if span is not None and not (
                0 <= span[0] < len(self.sources) and 0 <= span[1] <= span[2] <= len(self.sources[span[0]])
            ):
                raise ValueError(f"{self.example.id}: source span {span} is outside its source text")

    @property
    def question_id(self) -> str:
        """The example's id (named for QA, where explanations started)."""
        return self.example.id

    def __len__(self) -> int:
        return len(self.input_ids)

    def context_mask(self) -> np.ndarray:
        """(N,) booleans, True on context tokens: the only ones a QA answer can use."""
        return np.array([k == "context" for k in self.kinds])

    def maskable(self) -> np.ndarray:
        """(N,) booleans, True on the tokens faithfulness may replace: the context (QA) or the sentence
        text (classification); never [CLS], [SEP], the question or a register."""
        return np.array([k in MASKABLE_KINDS for k in self.kinds])

    def batch(self, device: torch.device | str = "cpu", repeat: int = 1) -> dict[str, torch.Tensor]:
        """Model inputs of shape (repeat, N)."""
        ids = torch.tensor([self.input_ids] * repeat, dtype=torch.long, device=device)
        out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if self.token_type_ids is not None:
            out["token_type_ids"] = torch.tensor(
                [self.token_type_ids] * repeat, dtype=torch.long, device=device
            )
        return out


def structural_token_ids(tokenizer: Any) -> set[int]:
    """Ids of [CLS]/[SEP] (or <s>/</s>): the tokens an input's ``cls``/``sep`` kinds mark. [UNK] and [PAD]
    are not among them: [UNK] stands for text (common for TyDi text under an English vocabulary)."""
    ids = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    return {i for i in ids if i is not None}
