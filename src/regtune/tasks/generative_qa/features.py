"""Training rows for generative QA: prompt then answer, with the loss on the answer tokens only."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from regtune.tasks.generative_qa.prompt import answer_text, build_prompt, token_ids
from regtune.tasks.qa.data import QAExample

logger = logging.getLogger(__name__)

#: Label of a position the loss ignores (prompt tokens and padding): PyTorch's cross-entropy default.
IGNORE = -100


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id used for padding: the tokenizer's pad token, else its EOS (common for causal LMs)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an end-of-sequence token")
    return int(pad)


def train_rows(
    examples: Sequence[QAExample], tokenizer: PreTrainedTokenizerBase, *, max_length: int
) -> tuple[dict[str, list], dict[str, int]]:
    """Columns ``input_ids``, ``labels`` (prompt tokens masked with -100), ``length``; and counts.

    The target is the first reference answer. Counts: ``truncated`` (prompts whose context was cut) and
    ``answer_cut`` (questions left out because the cut removed their answer; see :mod:`.prompt`).
    """
    columns: dict[str, list] = {"input_ids": [], "labels": [], "length": []}
    counts = {"truncated": 0, "answer_cut": 0}
    for example in examples:
        answer = example.answers[0]
        target = token_ids(tokenizer, answer_text(tokenizer, answer.text))
        budget = max_length - len(target)
        end = answer.start + len(answer.text)
        if budget <= 0 or end > len(example.context):
            counts["answer_cut"] += 1
            continue
        prompt = build_prompt(tokenizer, example.question, example.context, budget=budget)
        counts["truncated"] += prompt.truncated
        if end > prompt.context_chars:
            counts["answer_cut"] += 1
            continue
        columns["input_ids"].append(prompt.input_ids + target)
        columns["labels"].append([IGNORE] * len(prompt.input_ids) + target)
        columns["length"].append(len(prompt.input_ids) + len(target))
    if counts["answer_cut"]:
        logger.warning(
            "%d training question(s) left out: their answer lies beyond the context kept in %d tokens",
            counts["answer_cut"],
            max_length,
        )
    return columns, counts


@dataclass
class CausalCollator:
    """Rows -> right-padded ``input_ids``, ``attention_mask``, ``labels`` (-100 on padding), (B, L), plus
    what restricts the LM head to the answer: ``logits_to_keep`` and ``shift_labels``, (B, K).

    The loss needs logits only where the next token is an answer token: about 9 of ~220 positions on
    TyDi, while the head projects every position onto the 49k vocabulary (a fifth of the model's FLOPs
    and most of its activation memory). ``logits_to_keep[b]`` lists those positions of row ``b`` (padded
    with position 0) and ``shift_labels[b]`` their next tokens (-100 on the padding), which the HF loss
    uses as given; the Trainer counts the loss tokens from ``shift_labels`` too. The loss is the same
    mean over answer tokens as with full logits (``test_answer_only_logits_give_the_full_loss``).
    """

    tokenizer: PreTrainedTokenizerBase
    answer_logits_only: bool = True

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(row["input_ids"]) for row in rows)
        pad = pad_id(self.tokenizer)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            ids[i, :n] = torch.tensor(row["input_ids"])
            labels[i, :n] = torch.tensor(row["labels"])
            mask[i, :n] = 1
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if self.answer_logits_only:
            batch.update(answer_positions(labels))
        return batch


def answer_positions(labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, L) labels -> ``logits_to_keep`` (B, K) positions whose next token is labelled, and
    ``shift_labels`` (B, K) those next tokens; rows with fewer than K are padded with (0, -100)."""
    targets = labels[:, 1:] != IGNORE  # (B, L-1): position i predicts token i+1
    per_row = [torch.nonzero(row).flatten() for row in targets]
    width = max(1, max(len(p) for p in per_row))
    keep = torch.zeros((labels.shape[0], width), dtype=torch.long)
    shift = torch.full((labels.shape[0], width), IGNORE, dtype=torch.long)
    for i, positions in enumerate(per_row):
        keep[i, : len(positions)] = positions
        shift[i, : len(positions)] = labels[i, positions + 1]
    return {"logits_to_keep": keep, "shift_labels": shift}
