"""Featurization: sliding windows, answer labels, eval offsets, the collator and length-sorted batches.

Runs on the bundled MiniLM tokenizer (BERT uncased WordPiece) and, where it can be built offline, on a tiny
byte-level BPE tokenizer with RoBERTa's pair template (``<s> q </s></s> c </s>``, no token_type_ids).
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from conftest import require_module, skip_or_fail
from regtune.core.errors import ConfigError
from regtune.core.hub import load_tokenizer
from regtune.tasks.qa.data import Answer, QAExample
from regtune.tasks.qa.features import (
    DEFAULT_MAX_QUERY_LENGTH,
    NO_ANSWER_INDEX,
    QACollator,
    _answer_token_span,
    length_sorted_batches,
    prepare_eval_features,
    prepare_train_features,
    tokenize_windows,
)

WORDS = ["the", "river", "city", "north", "market", "stone", "bridge"]
WORDS += ["garden", "winter", "summer", "harbor", "mountain", "valley", "forest"]
CONTEXT = "Paris is the capital and most populous city of France, on the river Seine."
ANSWERS = {"start": "Paris", "middle": "most populous city", "end": "river Seine"}


@pytest.fixture(scope="module")
def bert() -> PreTrainedTokenizerBase:
    return load_tokenizer("minilm-l6")


@pytest.fixture(scope="module")
def roberta() -> PreTrainedTokenizerBase:
    try:
        from tokenizers import ByteLevelBPETokenizer, processors
        from transformers import PreTrainedTokenizerFast

        bpe = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
        bpe.train_from_iterator(
            [CONTEXT, " ".join(WORDS), "What is the capital of France? Which animal? purple elephant"] * 3,
            vocab_size=400,
            min_frequency=1,
            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
            show_progress=False,
        )
        bpe.post_processor = processors.RobertaProcessing(
            ("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")), trim_offsets=True
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=bpe._tokenizer,
            bos_token="<s>",
            eos_token="</s>",
            sep_token="</s>",
            cls_token="<s>",
            unk_token="<unk>",
            pad_token="<pad>",
            mask_token="<mask>",
            model_input_names=["input_ids", "attention_mask"],
            model_max_length=512,
        )
    except Exception as err:  # pragma: no cover - depends on the installed tokenizers
        skip_or_fail(f"cannot build a RoBERTa-style tokenizer offline ({type(err).__name__}: {err})")


@pytest.fixture(params=["bert", "roberta"])
def tokenizer(request: pytest.FixtureRequest) -> PreTrainedTokenizerBase:
    return request.getfixturevalue(request.param)


def example(context: str, answer: str | None, *, qid: str = "q0", question: str = "What is it?") -> QAExample:
    answers = () if answer is None else (Answer(text=answer, start=context.index(answer)),)
    return QAExample(id=qid, question=question, context=context, answers=answers)


def decoded(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    return tokenizer.decode(ids).strip()


def expected_text(tokenizer: PreTrainedTokenizerBase, answer: str) -> str:
    # WordPiece uncased lowercases; byte-level BPE round-trips the text exactly.
    return answer.lower() if getattr(tokenizer, "do_lower_case", False) else answer


def long_context(n_words: int = 300, answer_at: int = 150, answer: str = "purple elephant") -> str:
    words = [WORDS[i % len(WORDS)] for i in range(n_words)]
    words[answer_at : answer_at + 2] = answer.split()
    return " ".join(words)


# --- answer labels ------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", list(ANSWERS))
def test_labels_decode_to_the_answer(tokenizer: PreTrainedTokenizerBase, where: str) -> None:
    answer = ANSWERS[where]
    features = prepare_train_features([example(CONTEXT, answer)], tokenizer, max_length=128, doc_stride=32)
    assert len(features["input_ids"]) == 1
    start, end = features["start_positions"][0], features["end_positions"][0]
    assert 0 < start <= end < features["length"][0]
    assert decoded(tokenizer, features["input_ids"][0][start : end + 1]) == expected_text(tokenizer, answer)


def test_answer_token_span_hand_computed() -> None:
    # [CLS] q q [SEP] "ab" "cd" "ef" [SEP] over the context "ab cd ef"; None marks tokens off the context.
    offsets = [None, None, None, None, (0, 2), (3, 5), (6, 8), None]
    assert _answer_token_span(offsets, 0, 2) == (4, 4)
    assert _answer_token_span(offsets, 3, 8) == (5, 6)
    assert _answer_token_span(offsets, 4, 5) == (5, 5)  # inside one token
    assert _answer_token_span(offsets, 2, 4) == (4, 5)  # from the space between two tokens
    # Not fully in the window: starts before its first context token, or ends after its last.
    assert _answer_token_span([None, None, (3, 5), (6, 8), None], 0, 5) == (NO_ANSWER_INDEX,) * 2
    assert _answer_token_span(offsets[:6], 3, 8) == (NO_ANSWER_INDEX,) * 2
    assert _answer_token_span([None, None], 0, 1) == (NO_ANSWER_INDEX,) * 2


def test_unanswerable_example_is_labelled_cls(bert: PreTrainedTokenizerBase) -> None:
    features = prepare_train_features([example(CONTEXT, None)], bert, max_length=64, doc_stride=16)
    assert features["start_positions"] == features["end_positions"] == [NO_ANSWER_INDEX]


# --- sliding windows ----------------------------------------------------------------------------------


def test_long_context_gives_overlapping_windows(tokenizer: PreTrainedTokenizerBase) -> None:
    context = long_context()
    ex = example(context, "purple elephant")
    max_length, stride = 64, 16
    train = prepare_train_features([ex], tokenizer, max_length=max_length, doc_stride=stride)
    evals = prepare_eval_features([ex], tokenizer, max_length=max_length, doc_stride=stride)
    n = len(train["input_ids"])
    assert n > 3
    assert len(evals["input_ids"]) == n
    assert train["input_ids"] == evals["input_ids"]  # one tokenizer call serves both

    answer_start = context.index("purple elephant")
    answer_end = answer_start + len("purple elephant")
    found = 0
    for w in range(n):
        assert len(train["input_ids"][w]) <= max_length
        context_offsets = [o for o in evals["offset_mapping"][w] if o is not None]
        holds_answer = context_offsets[0][0] <= answer_start and answer_end <= context_offsets[-1][1]
        start, end = train["start_positions"][w], train["end_positions"][w]
        if holds_answer:
            found += 1
            assert decoded(tokenizer, train["input_ids"][w][start : end + 1]) == "purple elephant"
        else:
            assert (start, end) == (NO_ANSWER_INDEX, NO_ANSWER_INDEX)
    assert found >= 1

    # Consecutive windows share exactly `stride` context tokens, and together cover the whole context.
    windows = [[o for o in offsets if o is not None] for offsets in evals["offset_mapping"]]
    for left, right in itertools.pairwise(windows):
        assert left[-stride:] == right[:stride]
        assert left[-stride - 1] != right[0]
    assert windows[0][0][0] == 0
    assert windows[-1][-1][1] == len(context)


def test_question_is_left_stripped(bert: PreTrainedTokenizerBase) -> None:
    plain = tokenize_windows([example(CONTEXT, "Paris")], bert, max_length=64, doc_stride=16)
    padded = tokenize_windows(
        [example(CONTEXT, "Paris", question="  \t What is it?")], bert, max_length=64, doc_stride=16
    )
    assert plain["input_ids"] == padded["input_ids"]


@pytest.mark.parametrize(("max_length", "stride"), [(64, 16), (384, 128)])
def test_long_question_is_cut_and_context_still_fits(
    bert: PreTrainedTokenizerBase, max_length: int, stride: int
) -> None:
    question = " ".join(["which"] + WORDS * 20) + "?"
    ex = example(long_context(), "purple elephant", question=question)
    encoding = tokenize_windows([ex], bert, max_length=max_length, doc_stride=stride)
    specials = bert.num_special_tokens_to_add(pair=True)
    budget = min(DEFAULT_MAX_QUERY_LENGTH, max_length - specials - stride - 1)
    for w in range(len(encoding["input_ids"])):
        sequence_ids = encoding.sequence_ids(w)
        question_tokens = sequence_ids.count(0)
        assert 0 < question_tokens <= budget
        assert sequence_ids.count(1) > stride
    # Cut at a word boundary: the kept question is a whole-word prefix of the original.
    kept = bert.decode(
        [t for t, s in zip(encoding["input_ids"][0], encoding.sequence_ids(0), strict=True) if s == 0]
    )
    assert question.lower().startswith(kept)
    assert question[len(kept)] == " "
    train = prepare_train_features([ex], bert, max_length=max_length, doc_stride=stride)
    assert "purple elephant" in [
        decoded(bert, ids[s : e + 1])
        for ids, s, e in zip(
            train["input_ids"], train["start_positions"], train["end_positions"], strict=True
        )
    ]


@pytest.mark.parametrize(
    ("max_length", "stride"),
    [(64, 0), (64, -1), (64, 64), (64, 100), (10_000, 128), (8, 5)],
)
def test_bad_window_options_raise_config_error(
    bert: PreTrainedTokenizerBase, max_length: int, stride: int
) -> None:
    with pytest.raises(ConfigError):
        prepare_train_features([example(CONTEXT, "Paris")], bert, max_length=max_length, doc_stride=stride)


def test_bad_max_query_length_raises(bert: PreTrainedTokenizerBase) -> None:
    with pytest.raises(ConfigError):
        tokenize_windows([example(CONTEXT, "Paris")], bert, max_length=64, doc_stride=16, max_query_length=0)


def test_no_examples_give_empty_columns(bert: PreTrainedTokenizerBase) -> None:
    train = prepare_train_features([], bert, max_length=64, doc_stride=16)
    assert set(train) == {
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "start_positions",
        "end_positions",
        "length",
    }
    assert all(column == [] for column in train.values())
    evals = prepare_eval_features([], bert, max_length=64, doc_stride=16)
    assert evals["example_id"] == evals["offset_mapping"] == []


# --- columns, eval offsets, lengths -------------------------------------------------------------------


def test_token_type_ids_only_when_the_tokenizer_makes_them(tokenizer: PreTrainedTokenizerBase) -> None:
    features = prepare_eval_features([example(CONTEXT, "Paris")], tokenizer, max_length=64, doc_stride=16)
    has_types = "token_type_ids" in tokenizer.model_input_names
    assert ("token_type_ids" in features) == has_types
    if has_types:
        ids, types = features["input_ids"][0], features["token_type_ids"][0]
        first_context = ids.index(tokenizer.sep_token_id) + 1
        assert set(types[:first_context]) == {0}
        assert set(types[first_context:]) == {1}


def test_eval_offsets_are_none_exactly_off_context(tokenizer: PreTrainedTokenizerBase) -> None:
    ex = example(long_context(60), "purple elephant", question="Which animal is it?")
    features = prepare_eval_features([ex], tokenizer, max_length=48, doc_stride=8)
    encoding = tokenize_windows([ex], tokenizer, max_length=48, doc_stride=8)
    for w, offsets in enumerate(features["offset_mapping"]):
        sequence_ids = encoding.sequence_ids(w)
        assert len(offsets) == len(features["input_ids"][w])
        assert [o is None for o in offsets] == [s != 1 for s in sequence_ids]
        tokens = tokenizer.convert_ids_to_tokens(features["input_ids"][w])
        for token, offset in zip(tokens, offsets, strict=True):
            if offset is None:
                continue
            start, end = offset
            # A lone "Ġ" (a space before a character with no merge) has an empty span after trimming.
            assert 0 <= start <= end <= len(ex.context)
            text = ex.context[start:end]
            # WordPiece marks word pieces with "##"; byte-level BPE marks a leading space with "Ġ".
            assert token.removeprefix("##").removeprefix("Ġ") == expected_text(tokenizer, text)


def test_example_id_per_window(bert: PreTrainedTokenizerBase) -> None:
    examples = [
        example(long_context(), "purple elephant", qid="long"),
        example(CONTEXT, "Paris", qid="short"),
        example(long_context(120, 10), "purple elephant", qid="medium"),
    ]
    features = prepare_eval_features(examples, bert, max_length=64, doc_stride=16)
    encoding = tokenize_windows(examples, bert, max_length=64, doc_stride=16)
    ids = features["example_id"]
    assert ids == [examples[i].id for i in encoding["overflow_to_sample_mapping"]]
    assert ids[0] == "long"
    assert ids.count("short") == 1
    assert ids.count("medium") > 1
    # Windows of one question are contiguous and in order.
    assert ids == sorted(ids, key=["long", "short", "medium"].index)


@pytest.mark.parametrize("prepare", [prepare_train_features, prepare_eval_features])
def test_length_counts_real_tokens(bert: PreTrainedTokenizerBase, prepare: Any) -> None:
    examples = [example(long_context(), "purple elephant"), example(CONTEXT, "Paris", qid="q1")]
    unpadded = prepare(examples, bert, max_length=64, doc_stride=16)
    padded = prepare(examples, bert, max_length=64, doc_stride=16, padding="max_length")
    assert unpadded["length"] == [len(ids) for ids in unpadded["input_ids"]]
    assert padded["length"] == unpadded["length"]
    assert unpadded["length"][-1] < 64  # the short example's window is not full
    for ids, mask, length in zip(
        padded["input_ids"], padded["attention_mask"], padded["length"], strict=True
    ):
        assert len(ids) == 64
        assert sum(mask) == length
        assert ids[length:] == [bert.pad_token_id] * (64 - length)
    if prepare is prepare_train_features:
        # Right padding leaves every label where it was.
        assert padded["start_positions"] == unpadded["start_positions"]
        assert padded["end_positions"] == unpadded["end_positions"]


# --- collator -----------------------------------------------------------------------------------------


def rows(features: dict[str, list]) -> list[dict[str, Any]]:
    return [{name: column[i] for name, column in features.items()} for i in range(len(features["input_ids"]))]


def test_collator_pads_to_the_batch_max_and_masks_padding(tokenizer: PreTrainedTokenizerBase) -> None:
    examples = [example(long_context(), "purple elephant"), example(CONTEXT, "Paris", qid="q1")]
    features = prepare_eval_features(examples, tokenizer, max_length=64, doc_stride=16)
    batch_rows = rows(features)[-2:]  # the long example's last window and the short example's
    lengths = [row["length"] for row in batch_rows]
    assert lengths[0] != lengths[1]
    batch = QACollator(tokenizer)(batch_rows)

    expected_keys = {"input_ids", "attention_mask"} | (
        {"token_type_ids"} if "token_type_ids" in features else set()
    )
    assert set(batch) == expected_keys  # example_id, offset_mapping and length are dropped
    width = max(lengths)
    for name, tensor in batch.items():
        assert tensor.dtype == torch.long
        assert tensor.shape == (2, width), name
    for b, (row, length) in enumerate(zip(batch_rows, lengths, strict=True)):
        assert batch["input_ids"][b, :length].tolist() == row["input_ids"]
        assert (batch["input_ids"][b, length:] == tokenizer.pad_token_id).all()
        assert batch["attention_mask"][b].tolist() == [1] * length + [0] * (width - length)
        if "token_type_ids" in batch:
            assert batch["token_type_ids"][b, :length].tolist() == row["token_type_ids"]
            assert (batch["token_type_ids"][b, length:] == 0).all()


def test_collator_stacks_labels_and_pads_to_max_length(bert: PreTrainedTokenizerBase) -> None:
    features = prepare_train_features(
        [example(CONTEXT, "Paris"), example(CONTEXT, "river Seine", qid="q1")],
        bert,
        max_length=64,
        doc_stride=16,
    )
    batch = QACollator(bert, pad_to_max_length=True, max_length=64)(rows(features))
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 64)
    assert batch["attention_mask"].sum(dim=1).tolist() == features["length"]
    assert batch["start_positions"].tolist() == features["start_positions"]
    assert batch["end_positions"].tolist() == features["end_positions"]
    assert batch["start_positions"].dtype == batch["end_positions"].dtype == torch.long
    assert batch["start_positions"].shape == (2,)

    rounded = QACollator(bert, pad_to_multiple_of=8)(rows(features))
    assert rounded["input_ids"].shape[1] % 8 == 0
    assert max(features["length"]) <= rounded["input_ids"].shape[1] < max(features["length"]) + 8


def test_collator_reads_datasets_rows(bert: PreTrainedTokenizerBase) -> None:
    datasets = require_module("datasets")
    features = prepare_eval_features(
        [example(long_context(), "purple elephant"), example(CONTEXT, "Paris", qid="q1")],
        bert,
        max_length=64,
        doc_stride=16,
    )
    dataset = datasets.Dataset.from_dict(features)
    assert dataset[0]["offset_mapping"] == [list(o) if o else None for o in features["offset_mapping"][0]]
    batch = QACollator(bert)([dataset[i] for i in range(len(dataset))])
    assert batch["input_ids"].shape == (len(dataset), max(features["length"]))


def test_collator_rejects_bad_options(bert: PreTrainedTokenizerBase) -> None:
    with pytest.raises(ConfigError):
        QACollator(bert, pad_to_max_length=True)
    with pytest.raises(ConfigError):
        QACollator(bert, pad_to_multiple_of=0)
    features = prepare_eval_features(
        [example(long_context(), "purple elephant")], bert, max_length=64, doc_stride=16
    )
    with pytest.raises(ValueError, match="more than"):
        QACollator(bert, pad_to_max_length=True, max_length=32)(rows(features))


# --- length-sorted batches ----------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3, 8, 100])
def test_length_sorted_batches_cover_every_index_longest_first(batch_size: int) -> None:
    lengths = [random.Random(i).randint(5, 64) for i in range(37)]
    batches = length_sorted_batches(lengths, batch_size)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    ordered = [lengths[i] for i in flat]
    assert ordered == sorted(ordered, reverse=True)
    assert all(len(batch) == batch_size for batch in batches[:-1])
    assert 0 < len(batches[-1]) <= batch_size


def test_length_sorted_batches_hand_computed() -> None:
    assert length_sorted_batches([3, 9, 3, 7, 1], 2) == [[1, 3], [0, 2], [4]]  # ties keep index order
    assert length_sorted_batches([], 4) == []
    with pytest.raises(ConfigError):
        length_sorted_batches([1, 2], 0)


def test_one_word_question_longer_than_the_budget_is_cut_inside(tokenizer: PreTrainedTokenizerBase) -> None:
    question = "purpleelephant" * 6 + "?"
    encoding = tokenize_windows(
        [example(CONTEXT, "Paris", question=question)],
        tokenizer,
        max_length=40,
        doc_stride=8,
        max_query_length=6,
    )
    question_tokens = encoding.sequence_ids(0).count(0)
    assert 0 < question_tokens <= 6
