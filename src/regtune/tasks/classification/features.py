"""Tokenise sentences (or sentence pairs) for a sequence classifier, and collate them into batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from regtune.tasks.classification.data import ClassificationExample

MODEL_INPUT_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


def tokenize_examples(
    examples: Sequence[ClassificationExample],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    label_ids: Mapping[str, int] | None = None,
) -> dict[str, list]:
    """Token ids of every example, truncated to ``max_length`` text tokens (registers come on top).

    Pairs are truncated longest-first, as GLUE baselines do. Returns columns ``input_ids``,
    ``attention_mask`` (and ``token_type_ids`` where the tokenizer makes them), ``length`` (real tokens,
    for length-grouped batches), ``example_id``, and ``labels`` when ``label_ids`` is given.
    """
    firsts = [e.texts[0] for e in examples]
    seconds = [e.texts[1] for e in examples] if examples and len(examples[0].texts) == 2 else None
    encoding = tokenizer(
        firsts,
        seconds,
        truncation="longest_first" if seconds else True,
        max_length=max_length,
        padding=False,
    )
    columns: dict[str, list] = {c: list(encoding[c]) for c in MODEL_INPUT_COLUMNS if c in encoding}
    columns["length"] = [len(ids) for ids in columns["input_ids"]]
    columns["example_id"] = [e.id for e in examples]
    if label_ids is not None:
        columns["labels"] = [label_ids[e.label] for e in examples]  # type: ignore[index]
    return columns


@dataclass
class ClassificationCollator:
    """Pad rows on the right into ``(B, T)`` LongTensors, plus ``labels`` ``(B,)`` when the rows have them.

    HF's ``DataCollatorWithPadding`` does the padding; this wrapper only keeps the model's columns (the
    rows also carry ``length`` and ``example_id``, which ``tokenizer.pad`` cannot tensorise) and pins the
    padding side, since a left-padding tokenizer would move [CLS] away from the first text position.
    """

    tokenizer: PreTrainedTokenizerBase
    pad_to_max_length: bool = False
    max_length: int | None = None

    def __post_init__(self) -> None:
        self._pad = DataCollatorWithPadding(
            self.tokenizer,
            padding="max_length" if self.pad_to_max_length else "longest",
            max_length=self.max_length if self.pad_to_max_length else None,
        )

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        kept = [{c: row[c] for c in (*MODEL_INPUT_COLUMNS, "labels") if c in row} for row in rows]
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "right"
        try:
            batch = self._pad(kept)
        finally:
            self.tokenizer.padding_side = side
        return {name: tensor.long() for name, tensor in batch.items()}
