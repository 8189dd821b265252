"""Inference and scoring for extractive QA: windows -> logits -> spans -> EM/F1."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from regtune.core.precision import autocast_context, check_precision
from regtune.tasks.qa.data import QAExample
from regtune.tasks.qa.features import QACollator, length_sorted_batches, prepare_eval_features
from regtune.tasks.qa.metrics import squad_scores
from regtune.tasks.qa.postprocess import Prediction, postprocess_qa_predictions, ranked_answers

if TYPE_CHECKING:
    from regtune.training.config import TrainConfig

#: Key in the saved model config holding the featurization and decoding settings used in training,
#: so that ``regtune evaluate`` reproduces the training run's scores by default.
QA_SETTINGS_KEY = "regtune_qa"


@dataclass
class QASettings:
    """Featurization, span-decoding and precision settings; travel with the saved model."""

    max_length: int = 384
    doc_stride: int = 128
    n_best: int = 20
    max_answer_length: int = 30
    #: 'auto', 'bf16' or 'fp32' (see regtune.core.precision); resolved on the device that runs inference.
    precision: str = "auto"

    def __post_init__(self) -> None:
        check_precision(self.precision)

    @classmethod
    def from_train_config(cls, config: TrainConfig) -> QASettings:
        """The settings a training run uses for its windows and its final evaluation."""
        return cls(
            max_length=config.max_length,
            doc_stride=config.doc_stride,
            n_best=config.n_best,
            max_answer_length=config.max_answer_length,
            precision=config.precision,
        )

    @classmethod
    def from_model(cls, model: PreTrainedModel) -> QASettings:
        return cls(**(getattr(model.config, QA_SETTINGS_KEY, None) or {}))


@dataclass
class QAEvaluation:
    """Scores and predictions of one model on one set of questions."""

    metrics: dict[str, Any]
    predictions: dict[str, Prediction]
    per_question: dict[str, tuple[float, float]] = field(repr=False)

    def prediction_texts(self) -> dict[str, str]:
        return {qid: p.text for qid, p in self.predictions.items()}


@torch.no_grad()
def predict_logits(
    model: PreTrainedModel,
    features: dict[str, list],
    collator: QACollator,
    *,
    batch_size: int = 64,
    progress: bool = True,
    precision: str = "auto",
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start and end logits for every window, each cut to the window's real length.

    Windows are batched by sorted length so that padding stays small; results come back in the
    original window order.

    Returns:
        ``(start_logits, end_logits)``: lists of (L_i,) float32 arrays, one per window.
    """
    model.eval()
    device = next(model.parameters()).device
    lengths = features["length"]
    columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in features]
    starts: list[np.ndarray] = [np.empty(0, np.float32)] * len(lengths)
    ends: list[np.ndarray] = [np.empty(0, np.float32)] * len(lengths)
    batches = length_sorted_batches(lengths, batch_size)
    for batch_indices in tqdm(batches, desc="evaluate", unit="batch", disable=not progress, leave=False):
        rows = [{c: features[c][i] for c in columns} for i in batch_indices]
        batch = {k: v.to(device) for k, v in collator(rows).items()}
        with autocast_context(device, precision):
            out = model(**batch)
        start = out.start_logits.float().cpu().numpy()  # (B, N) text tokens only
        end = out.end_logits.float().cpu().numpy()
        for j, i in enumerate(batch_indices):
            starts[i] = start[j, : lengths[i]]
            ends[i] = end[j, : lengths[i]]
    return starts, ends


def predict_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[QAExample],
    settings: QASettings,
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[dict[str, Prediction], int]:
    """The best answer span for every question; also returns the number of windows scored."""
    features, starts, ends = _window_logits(model, tokenizer, examples, settings, batch_size, progress)
    predictions = postprocess_qa_predictions(
        examples,
        features["example_id"],
        features["offset_mapping"],
        starts,
        ends,
        n_best_size=settings.n_best,
        max_answer_length=settings.max_answer_length,
    )
    return predictions, len(features["length"])


def evaluate_qa(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[QAExample],
    settings: QASettings,
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> QAEvaluation:
    """Score ``model`` on ``examples`` with the SQuAD v1.1 metric (max over all references)."""
    began = time.perf_counter()
    predictions, num_windows = predict_answers(
        model, tokenizer, examples, settings, batch_size=batch_size, progress=progress
    )
    result = squad_scores(
        {qid: p.text for qid, p in predictions.items()},
        {ex.id: [a.text for a in ex.answers] for ex in examples},
    )
    metrics = {
        **result.to_dict(),
        "num_windows": num_windows,
        "eval_seconds": round(time.perf_counter() - began, 3),
    }
    return QAEvaluation(metrics=metrics, predictions=predictions, per_question=result.per_question)


def _window_logits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[QAExample],
    settings: QASettings,
    batch_size: int,
    progress: bool,
) -> tuple[dict[str, Any], list, list]:
    """Every question's windows and their start and end logits over text tokens."""
    features = prepare_eval_features(
        examples, tokenizer, max_length=settings.max_length, doc_stride=settings.doc_stride
    )
    starts, ends = predict_logits(
        model, features, QACollator(tokenizer), batch_size=batch_size, progress=progress,
        precision=settings.precision,
    )  # fmt: skip
    return features, starts, ends


def predict_ranked_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[QAExample],
    settings: QASettings,
    *,
    k: int,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, list[Prediction]]:
    """The ``k`` best distinct answers of every question, best first (see :func:`ranked_answers`)."""
    features, starts, ends = _window_logits(model, tokenizer, examples, settings, batch_size, progress)
    return ranked_answers(
        examples, features["example_id"], features["offset_mapping"], starts, ends, k=k,
        n_best_size=settings.n_best, max_answer_length=settings.max_answer_length,
    )  # fmt: skip
