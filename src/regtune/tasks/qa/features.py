"""Turn QA examples into sliding-window features, collate them, and batch them by length.

This is the recipe of HF ``run_qa.py`` (question first, context second, ``truncation="only_second"``,
overlapping windows of ``max_length`` tokens that share ``doc_stride`` context tokens, ``offset_mapping``
set to None outside the context), written as importable top-level functions. The tokenizer call lives in
one place, :func:`tokenize_windows`, which train and eval featurization both use.

Positions here are *text-token* indices. Registers are inserted inside the model after the embedding
layer, so ``max_length``, the answer labels and the offsets never count them; the register module shifts
labels and logits by ``num_registers`` itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import BatchEncoding, PreTrainedTokenizerBase

from regtune.core.batching import length_sorted_batches  # noqa: F401 (re-exported)
from regtune.core.errors import ConfigError
from regtune.tasks.qa.data import QAExample

logger = logging.getLogger(__name__)

#: Questions are cut to this many tokens (HF's old SQuAD ``max_query_length``), so a long question still
#: leaves room for context in every window.
DEFAULT_MAX_QUERY_LENGTH = 64

#: Where an answer that is not fully inside a window points (start and end): the first token, [CLS] for
#: BERT and <s> for RoBERTa. Features are always right-padded, so it is position 0 in every window.
NO_ANSWER_INDEX = 0

#: Columns the model consumes; the collator pads these and drops everything else but the labels.
MODEL_INPUT_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")
LABEL_COLUMNS = ("start_positions", "end_positions")

Padding = bool | Literal["longest", "max_length", "do_not_pad"]
Offset = tuple[int, int]

# Which sequence of a (question, context) pair holds the context, as reported by ``sequence_ids``.
_CONTEXT = 1


def _check_window_options(
    tokenizer: PreTrainedTokenizerBase, max_length: int, doc_stride: int, max_query_length: int
) -> int:
    """Validate the window options and return the question budget in tokens.

    The budget is ``max_query_length``, lowered where needed so every window keeps more than
    ``doc_stride`` context tokens; otherwise the tokenizer cannot slide (it panics in Rust).
    """
    if not 0 < doc_stride < max_length:
        raise ConfigError(f"doc_stride={doc_stride} must satisfy 0 < doc_stride < max_length={max_length}")
    if max_length > tokenizer.model_max_length:
        raise ConfigError(
            f"max_length={max_length} exceeds the tokenizer's model_max_length={tokenizer.model_max_length}; "
            "lower max_length"
        )
    if max_query_length < 1:
        raise ConfigError(f"max_query_length={max_query_length} must be at least 1")
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    budget = min(max_query_length, max_length - specials - doc_stride - 1)
    if budget < 1:
        raise ConfigError(
            f"max_length={max_length} leaves no room for a question: {specials} special tokens and more than "
            f"doc_stride={doc_stride} context tokens fill it; raise max_length or lower doc_stride"
        )
    return budget


def _cut_question(
    question: str, offsets: Sequence[Offset], word_ids: Sequence[int | None], budget: int
) -> str:
    """Cut ``question`` so that it keeps at most ``budget`` tokens (the caller re-checks the count).

    Cuts before the word that holds token ``budget`` (the first that does not fit), so no word is split and
    the kept words tokenize exactly as before; a single word longer than the budget is cut inside.
    """
    first = budget
    word = word_ids[first]
    while first > 0 and word is not None and word_ids[first - 1] == word:
        first -= 1
    cut = offsets[first][0] if first > 0 else offsets[budget - 1][1]
    # Always shorten, so the caller's re-check loop ends even on odd offsets (multi-byte characters).
    cut = min(cut, len(question) - 1)
    return question[:cut].rstrip()


def _clip_questions(questions: list[str], tokenizer: PreTrainedTokenizerBase, budget: int) -> list[str]:
    """Return ``questions`` with each cut to at most ``budget`` tokens (no special tokens counted)."""
    clipped = list(questions)
    pending = list(range(len(clipped)))
    while pending:
        encoded = tokenizer(
            [clipped[i] for i in pending], add_special_tokens=False, return_offsets_mapping=True
        )
        still_long = []
        for row, i in enumerate(pending):
            if len(encoded["input_ids"][row]) > budget:
                clipped[i] = _cut_question(
                    clipped[i], encoded["offset_mapping"][row], encoded.word_ids(row), budget
                )
                still_long.append(i)
        pending = still_long
    cut = sum(a != b for a, b in zip(questions, clipped, strict=True))
    if cut:
        logger.info("cut %d of %d questions to at most %d tokens", cut, len(questions), budget)
    return clipped


def tokenize_windows(
    examples: Sequence[QAExample],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    doc_stride: int,
    padding: Padding = False,
    max_query_length: int = DEFAULT_MAX_QUERY_LENGTH,
) -> BatchEncoding:
    """Tokenize (question, context) pairs into overlapping windows: the one tokenizer call of the pipeline.

    Each window is ``[CLS] question [SEP] context-slice [SEP]`` (or the RoBERTa form), at most ``max_length``
    text tokens; consecutive windows of one example share ``doc_stride`` context tokens. Questions are
    left-stripped (some TyDi questions start with whitespace that would waste tokens) and cut at a word
    boundary to at most ``max_query_length`` tokens, or fewer where ``max_length`` needs it so that every
    window holds more than ``doc_stride`` context tokens.

    Args:
        examples: The questions to featurize.
        tokenizer: A fast tokenizer (offsets need one).
        max_length: Most text tokens per window, specials included, registers not.
        doc_stride: Context tokens shared by consecutive windows of one example.
        padding: Passed to the tokenizer; padding is always on the right, so labels stay valid.
        max_query_length: Most question tokens kept.

    Returns:
        The tokenizer's encoding, with ``offset_mapping`` and ``overflow_to_sample_mapping`` (window →
        index into ``examples``); ``sequence_ids(i)`` tells question, context and special tokens apart.

    Raises:
        ConfigError: if ``doc_stride`` is not in ``(0, max_length)``, ``max_length`` exceeds the tokenizer's
            ``model_max_length``, or ``max_length`` leaves no room for a question.
    """
    budget = _check_window_options(tokenizer, max_length, doc_stride, max_query_length)
    if not examples:
        # The tokenizer cannot encode an empty batch; an empty encoding keeps callers uniform.
        columns = ["input_ids", "attention_mask"]
        if "token_type_ids" in tokenizer.model_input_names:
            columns.append("token_type_ids")
        return BatchEncoding({c: [] for c in [*columns, "offset_mapping", "overflow_to_sample_mapping"]})
    questions = _clip_questions([example.question.lstrip() for example in examples], tokenizer, budget)
    return tokenizer(
        questions,
        [example.context for example in examples],
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_attention_mask=True,
        padding=padding,
        padding_side="right",
    )


def _input_columns(encoding: BatchEncoding) -> dict[str, list]:
    """The model-input columns of ``encoding`` plus ``length``, the count of real (unpadded) tokens."""
    features = {c: list(encoding[c]) for c in MODEL_INPUT_COLUMNS if c in encoding}
    # group_by_length sampling and length_sorted_batches read this column.
    features["length"] = [sum(mask) for mask in encoding["attention_mask"]]
    return features


def _context_offsets(encoding: BatchEncoding, window: int, context: str) -> list[Offset | None]:
    """Per token of one window: its ``(start_char, end_char)`` in ``context``, or None off the context.

    Leading whitespace is trimmed from each span: byte-level BPE (RoBERTa-style) and SentencePiece
    tokenizers can include the space before a word in its offsets, e.g. on the first context token of an
    overflow window, and a predicted answer should not start with it.
    """
    offsets: list[Offset | None] = []
    for (start, end), sequence in zip(
        encoding["offset_mapping"][window], encoding.sequence_ids(window), strict=True
    ):
        if sequence != _CONTEXT:
            offsets.append(None)
            continue
        text = context[start:end]
        spaces = len(text) - len(text.lstrip())
        if spaces < len(text):  # a token of whitespace only keeps its span
            start += spaces
        offsets.append((start, end))
    return offsets


def _answer_token_span(offsets: Sequence[Offset | None], start_char: int, end_char: int) -> tuple[int, int]:
    """Token indices ``(start, end)``, inclusive, of the characters ``[start_char, end_char)`` in one window.

    Args:
        offsets: Per token, its context span, or None for tokens off the context (see ``_context_offsets``).
        start_char: First character of the answer in the context.
        end_char: One past the last character of the answer.

    Returns:
        The span, or ``(NO_ANSWER_INDEX, NO_ANSWER_INDEX)`` when the answer is not fully inside the window.
    """
    context = [(k, offset) for k, offset in enumerate(offsets) if offset is not None]
    if not context or context[0][1][0] > start_char or context[-1][1][1] < end_char:
        return NO_ANSWER_INDEX, NO_ANSWER_INDEX
    # Start: the last context token that starts at or before start_char; end: the first that ends at or
    # after end_char (HF's walk from either edge, as two scans).
    start = max(k for k, (first_char, _) in context if first_char <= start_char)
    end = min(k for k, (_, stop_char) in context if stop_char >= end_char)
    return start, end


def prepare_train_features(
    examples: Sequence[QAExample],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int = 384,
    doc_stride: int = 128,
    padding: Padding = False,
    max_query_length: int = DEFAULT_MAX_QUERY_LENGTH,
) -> dict[str, list]:
    """Featurize training examples into windows labelled with the first reference answer.

    Args:
        examples: Training questions; only ``answers[0]`` is used. An example with no answer is labelled
            ``NO_ANSWER_INDEX`` in every window.
        tokenizer: A fast tokenizer.
        max_length, doc_stride, padding, max_query_length: See :func:`tokenize_windows`.

    Returns:
        Columns, one entry per window: ``input_ids``, ``attention_mask``, ``token_type_ids`` (only when the
        tokenizer makes them; RoBERTa's does not), ``start_positions`` and ``end_positions`` (inclusive
        token indices of the answer; both ``NO_ANSWER_INDEX`` when the answer is not fully in the window),
        and ``length`` (real tokens, for ``group_by_length`` sampling).

    Raises:
        ConfigError: on bad window options; see :func:`tokenize_windows`.
    """
    encoding = tokenize_windows(
        examples,
        tokenizer,
        max_length=max_length,
        doc_stride=doc_stride,
        padding=padding,
        max_query_length=max_query_length,
    )
    features = _input_columns(encoding)
    starts: list[int] = []
    ends: list[int] = []
    for window, example_index in enumerate(encoding["overflow_to_sample_mapping"]):
        example = examples[example_index]
        if example.answers:
            answer = example.answers[0]
            offsets = _context_offsets(encoding, window, example.context)
            span = _answer_token_span(offsets, answer.start, answer.start + len(answer.text))
        else:
            span = (NO_ANSWER_INDEX, NO_ANSWER_INDEX)
        starts.append(span[0])
        ends.append(span[1])
    features["start_positions"] = starts
    features["end_positions"] = ends
    return features


def prepare_eval_features(
    examples: Sequence[QAExample],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int = 384,
    doc_stride: int = 128,
    padding: Padding = False,
    max_query_length: int = DEFAULT_MAX_QUERY_LENGTH,
) -> dict[str, list]:
    """Featurize evaluation examples into windows that post-processing can map back to context text.

    Args:
        examples: Evaluation questions.
        tokenizer: A fast tokenizer.
        max_length, doc_stride, padding, max_query_length: See :func:`tokenize_windows`.

    Returns:
        Columns, one entry per window: ``input_ids``, ``attention_mask``, ``token_type_ids`` (when the
        tokenizer makes them), ``example_id`` (the id of the window's question), ``offset_mapping`` (per
        token, ``(start_char, end_char)`` into the context, or None for question, special and padding tokens,
        which cannot bound an answer), and ``length`` (real tokens).

    Raises:
        ConfigError: on bad window options; see :func:`tokenize_windows`.
    """
    encoding = tokenize_windows(
        examples,
        tokenizer,
        max_length=max_length,
        doc_stride=doc_stride,
        padding=padding,
        max_query_length=max_query_length,
    )
    features = _input_columns(encoding)
    example_ids: list[str] = []
    offset_mapping: list[list[Offset | None]] = []
    for window, example_index in enumerate(encoding["overflow_to_sample_mapping"]):
        example = examples[example_index]
        example_ids.append(example.id)
        offset_mapping.append(_context_offsets(encoding, window, example.context))
    features["example_id"] = example_ids
    features["offset_mapping"] = offset_mapping
    return features


@dataclass
class QACollator:
    """Pad a list of feature rows into a batch of LongTensors for a QA model.

    Pads ``input_ids`` with the tokenizer's pad id and ``attention_mask``/``token_type_ids`` with 0, on the
    right, to the longest row (rounded up to ``pad_to_multiple_of``), or to ``max_length`` when
    ``pad_to_max_length`` (every window the same width, as the seed project's fixed-434 pipeline did).
    Stacks ``start_positions``/``end_positions`` when present; drops every other column (``example_id``,
    ``offset_mapping``, ``length``).

    Built on ``tokenizer.pad`` rather than ``DataCollatorWithPadding``, which hands every column to
    ``tokenizer.pad`` (it cannot tensorise string ids or None offsets) and pads on the tokenizer's
    ``padding_side``; left padding would move every token and break the position labels.

    Attributes:
        tokenizer: The tokenizer that made the features; gives the pad id.
        pad_to_multiple_of: Round the padded width up to a multiple of this (e.g. 8 for tensor cores).
        pad_to_max_length: Pad every batch to ``max_length`` instead of its longest row.
        max_length: The fixed width for ``pad_to_max_length``; rows longer than it are an error.
    """

    tokenizer: PreTrainedTokenizerBase
    pad_to_multiple_of: int | None = None
    pad_to_max_length: bool = False
    max_length: int | None = None

    def __post_init__(self) -> None:
        if self.pad_to_max_length and (self.max_length is None or self.max_length < 1):
            raise ConfigError(f"pad_to_max_length=True needs a positive max_length, got {self.max_length}")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ConfigError(f"pad_to_multiple_of={self.pad_to_multiple_of} must be at least 1")
        if self.tokenizer.pad_token_id is None:
            raise ConfigError("the tokenizer has no pad token; set tokenizer.pad_token before collating")

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Collate ``features`` (dicts, as a ``datasets.Dataset`` or a list yields) into a batch.

        Returns:
            ``input_ids``, ``attention_mask`` and (if present) ``token_type_ids`` of shape ``(B, T)``; and
            ``start_positions``/``end_positions`` of shape ``(B,)`` when the rows carry them.
        """
        rows = [{c: row[c] for c in MODEL_INPUT_COLUMNS if c in row} for row in features]
        if self.pad_to_max_length:
            longest = max(len(row["input_ids"]) for row in rows)
            if longest > self.max_length:  # type: ignore[operator]
                raise ValueError(
                    f"a row has {longest} tokens, more than pad_to_max_length's {self.max_length}"
                )
        batch = self.tokenizer.pad(
            rows,
            padding="max_length" if self.pad_to_max_length else "longest",
            max_length=self.max_length if self.pad_to_max_length else None,
            pad_to_multiple_of=self.pad_to_multiple_of,
            padding_side="right",
            return_attention_mask=True,
            return_tensors="pt",
        )
        collated = {name: tensor.long() for name, tensor in batch.items()}  # each (B, T)
        for column in LABEL_COLUMNS:
            if column in features[0]:
                collated[column] = torch.tensor([int(row[column]) for row in features], dtype=torch.long)
        return collated
