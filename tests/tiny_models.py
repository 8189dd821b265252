"""Tiny random encoders of every supported architecture, for tests.

Each model is built from a config (no download): hidden 32, 2 layers, 4 heads, intermediate 64,
vocabulary 99, weight std 0.1. ELECTRA gets ``embedding_size=16`` so that its ``embeddings_project``
is exercised; RoBERTa and XLM-R get ``pad_token_id=1`` and room for their offset position ids.

Usage::

    from tiny_models import ARCHS, tiny_batch, tiny_model

    model = tiny_model("roberta", task="cls", attn="sdpa")
    batch = tiny_batch("roberta")
    logits = model(**batch).logits  # (2, 3)
"""

from __future__ import annotations

from typing import Literal

import torch
from transformers import (
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForQuestionAnswering,
    DistilBertForSequenceClassification,
    ElectraConfig,
    ElectraForQuestionAnswering,
    ElectraForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    RobertaConfig,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForQuestionAnswering,
    XLMRobertaForSequenceClassification,
)

Arch = Literal["bert", "roberta", "xlm-roberta", "electra", "distilbert"]
Task = Literal["qa", "cls"]
Attn = Literal["eager", "sdpa"]

#: Every architecture the register mechanism supports.
ARCHS: tuple[Arch, ...] = ("bert", "roberta", "xlm-roberta", "electra", "distilbert")

HIDDEN = 32
LAYERS = 2
HEADS = 4
INTERMEDIATE = 64
VOCAB = 99
MAX_POSITIONS = 128
NUM_LABELS = 3
#: Weight std. Larger than BERT's 0.02 so that attention is far from uniform: with 0.02 the registers
#: move QA logits by only ~1e-4, with 0.1 by ~0.05, while float noise stays ~1e-7.
INIT_RANGE = 0.1
#: ELECTRA's embedding width, deliberately different from HIDDEN.
ELECTRA_EMBEDDING = 16

#: (pad, cls, sep) ids per architecture: BERT-style vocabularies pad with 0, RoBERTa-style with 1.
_SPECIAL_IDS: dict[str, tuple[int, int, int]] = {
    "bert": (0, 2, 3),
    "electra": (0, 2, 3),
    "distilbert": (0, 2, 3),
    "roberta": (1, 0, 2),
    "xlm-roberta": (1, 0, 2),
}
#: Ids below this are reserved for special tokens; text ids are drawn from [FIRST_TEXT_ID, VOCAB).
FIRST_TEXT_ID = 5

_CLASSES: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel], type[PreTrainedModel]]] = {
    "bert": (BertConfig, BertForQuestionAnswering, BertForSequenceClassification),
    "roberta": (RobertaConfig, RobertaForQuestionAnswering, RobertaForSequenceClassification),
    "xlm-roberta": (XLMRobertaConfig, XLMRobertaForQuestionAnswering, XLMRobertaForSequenceClassification),
    "electra": (ElectraConfig, ElectraForQuestionAnswering, ElectraForSequenceClassification),
    "distilbert": (DistilBertConfig, DistilBertForQuestionAnswering, DistilBertForSequenceClassification),
}


def _check_arch(arch: str) -> None:
    if arch not in _CLASSES:
        raise ValueError(f"unknown arch {arch!r}; known: {list(ARCHS)}")


def pad_id(arch: Arch) -> int:
    """The padding id of ``arch``'s tiny config."""
    _check_arch(arch)
    return _SPECIAL_IDS[arch][0]


def tiny_config(arch: Arch, task: Task = "qa", attn: Attn = "eager") -> PretrainedConfig:
    """The config of :func:`tiny_model` (random weights are not part of it)."""
    _check_arch(arch)
    config_cls = _CLASSES[arch][0]
    pad, cls, sep = _SPECIAL_IDS[arch]
    common: dict = {
        "vocab_size": VOCAB,
        "max_position_embeddings": MAX_POSITIONS,
        "pad_token_id": pad,
        "attn_implementation": attn,
    }
    init = {"initializer_range": INIT_RANGE}
    if task == "cls":
        common["num_labels"] = NUM_LABELS
    if arch == "distilbert":
        config = config_cls(
            dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=INTERMEDIATE, **init, **common
        )
    else:
        extra: dict = {"type_vocab_size": 2}
        if arch == "electra":
            extra["embedding_size"] = ELECTRA_EMBEDDING
        if arch in ("roberta", "xlm-roberta"):
            extra.update(bos_token_id=cls, eos_token_id=sep)
        config = config_cls(
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            intermediate_size=INTERMEDIATE,
            **extra,
            **init,
            **common,
        )
    return config


def tiny_model(arch: Arch, task: Task = "qa", attn: Attn = "eager", seed: int = 0) -> PreTrainedModel:
    """A tiny random ``*ForQuestionAnswering`` (``task="qa"``) or ``*ForSequenceClassification``
    (``task="cls"``, 3 labels) of ``arch``, in eval mode; the same ``seed`` gives the same weights.
    """
    _check_arch(arch)
    if task not in ("qa", "cls"):
        raise ValueError(f"task must be 'qa' or 'cls', got {task!r}")
    if attn not in ("eager", "sdpa"):
        raise ValueError(f"attn must be 'eager' or 'sdpa', got {attn!r}")
    config = tiny_config(arch, task, attn)
    model_cls = _CLASSES[arch][1 if task == "qa" else 2]
    torch.manual_seed(seed)
    model = model_cls(config)
    assert model.config._attn_implementation == attn, model.config._attn_implementation
    return model.eval()


def tiny_batch(
    arch: Arch, batch: int = 2, length: int = 9, pad_last: int = 3, seed: int = 0
) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask``, each (batch, length).

    Every row is ``[CLS] text... [SEP]`` with text ids in ``[FIRST_TEXT_ID, VOCAB)`` (never a special
    id); the last row is right-padded with ``pad_last`` pad tokens (mask 0).
    """
    _check_arch(arch)
    if length - pad_last < 3:
        raise ValueError(f"length {length} leaves no room for text after {pad_last} pads")
    pad, cls, sep = _SPECIAL_IDS[arch]
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(FIRST_TEXT_ID, VOCAB, (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    input_ids[:, 0] = cls
    input_ids[:, -1] = sep
    if pad_last:
        real = length - pad_last
        input_ids[-1, real - 1] = sep
        input_ids[-1, real:] = pad
        attention_mask[-1, real:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}
