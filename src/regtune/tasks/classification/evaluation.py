"""Inference and scoring for sentence classification: texts -> class probabilities -> accuracy, macro-F1."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from regtune.core.batching import length_sorted_batches
from regtune.core.precision import autocast_context, check_precision
from regtune.tasks.base import Evaluation
from regtune.tasks.classification.data import ClassificationExample
from regtune.tasks.classification.features import ClassificationCollator, tokenize_examples

if TYPE_CHECKING:
    from regtune.training.config import TrainConfig

#: Key in the saved model config holding the settings inference must reproduce.
SETTINGS_KEY = "regtune_classification"


@dataclass
class ClassificationSettings:
    """Tokenisation, columns and precision; travel with the saved model."""

    max_length: int = 128
    text_columns: tuple[str, ...] = ("sentence",)
    label_column: str | None = "label"  # None: texts only (prediction)
    #: 'auto', 'bf16' or 'fp32' (see regtune.core.precision); resolved on the device that runs inference.
    precision: str = "auto"

    def __post_init__(self) -> None:
        check_precision(self.precision)
        self.text_columns = tuple(self.text_columns)

    @classmethod
    def from_train_config(cls, config: TrainConfig) -> ClassificationSettings:
        return cls(
            max_length=config.max_length,
            text_columns=tuple(config.text_columns),
            label_column=config.label_column,
            precision=config.precision,
        )

    @classmethod
    def from_model(cls, model: PreTrainedModel) -> ClassificationSettings:
        return cls(**(getattr(model.config, SETTINGS_KEY, None) or {}))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["text_columns"] = list(self.text_columns)
        return data


def model_labels(model: PreTrainedModel) -> list[str]:
    """The model's labels in id order (``config.id2label``)."""
    id2label = model.config.id2label
    return [str(id2label[i]) for i in range(len(id2label))]


@torch.no_grad()
def predict_probabilities(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[ClassificationExample],
    settings: ClassificationSettings,
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> np.ndarray:
    """Class probabilities ``(n_examples, n_labels)`` in float32, in the order of ``examples``.

    Sequences are batched by sorted length so that padding stays small.
    """
    model.eval()
    device = next(model.parameters()).device
    features = tokenize_examples(examples, tokenizer, max_length=settings.max_length)
    collator = ClassificationCollator(tokenizer)
    columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in features]
    probs = np.zeros((len(examples), model.config.num_labels), dtype=np.float32)
    batches = length_sorted_batches(features["length"], batch_size)
    for indices in tqdm(batches, desc="predict", unit="batch", disable=not progress, leave=False):
        batch = collator([{c: features[c][i] for c in columns} for i in indices])
        with autocast_context(device, settings.precision):
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits  # (B, n_labels)
        probs[indices] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return probs


def macro_f1(gold: Sequence[int], predicted: Sequence[int], num_labels: int) -> float:
    """Mean over labels of each label's F1 (0..1); a label never gold nor predicted is left out.

    Eight lines, so no scikit-learn dependency for it.
    """
    gold_a, pred_a = np.asarray(gold), np.asarray(predicted)
    scores = []
    for label in range(num_labels):
        tp = int(np.sum((gold_a == label) & (pred_a == label)))
        fp = int(np.sum((gold_a != label) & (pred_a == label)))
        fn = int(np.sum((gold_a == label) & (pred_a != label)))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def evaluate_classification(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[ClassificationExample],
    settings: ClassificationSettings,
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> Evaluation:
    """Accuracy and macro-F1 (0..100) of ``model`` on labelled ``examples``; accuracy per example (0/1)."""
    began = time.perf_counter()
    labels = model_labels(model)
    index = {label: i for i, label in enumerate(labels)}
    probs = predict_probabilities(
        model, tokenizer, examples, settings, batch_size=batch_size, progress=progress
    )
    predicted = probs.argmax(axis=1)
    gold = [index[e.label] for e in examples]  # type: ignore[index]
    correct = predicted == np.asarray(gold)
    metrics = {
        "accuracy": 100.0 * float(correct.mean()) if len(examples) else 0.0,
        "macro_f1": 100.0 * macro_f1(gold, predicted.tolist(), len(labels)),
        "num_examples": len(examples),
        "eval_seconds": round(time.perf_counter() - began, 3),
    }
    per_example = {e.id: {"accuracy": float(ok)} for e, ok in zip(examples, correct, strict=True)}
    predictions = {e.id: labels[p] for e, p in zip(examples, predicted, strict=True)}
    return Evaluation(metrics=metrics, per_example=per_example, predictions=predictions)
