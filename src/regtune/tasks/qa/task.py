"""Extractive QA as a :class:`~regtune.tasks.base.Task`: SQuAD-1.1 JSON in, SQuAD v1.1 EM/F1 out.

The pieces are the QA pipeline's own modules: :mod:`.data` (reader), :mod:`.features` (sliding windows
and labels), :mod:`.postprocess` (n-best span search), :mod:`.metrics` (official EM/F1) and
:mod:`.evaluation` (length-sorted inference). This module only puts them behind the task interface.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import AutoModelForQuestionAnswering

from regtune.core.errors import ConfigError, RegtuneError
from regtune.core.io import atomic_write_json
from regtune.tasks.base import Evaluation, Task, TaskData
from regtune.tasks.qa.data import HUB_PREFIX, QAExample, load_examples, read_questions, squad_json
from regtune.tasks.qa.evaluation import (
    QA_SETTINGS_KEY,
    QASettings,
    evaluate_qa,
    predict_answers,
    predict_ranked_answers,
)
from regtune.tasks.qa.explain import TARGETS as QA_TARGETS
from regtune.tasks.qa.explain import build_explain_inputs, predicted_span, span_probability, target_score
from regtune.tasks.qa.features import QACollator, prepare_train_features
from regtune.tasks.qa.postprocess import Prediction

if TYPE_CHECKING:
    import datasets
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from regtune.tasks.inputs import ExplainInput
    from regtune.training.config import TrainConfig


@dataclass
class QAOptions:
    """The QA task's own options (``TrainConfig`` inherits them; other tasks ignore them)."""

    doc_stride: int = field(
        default=128,
        metadata={
            "help": "QA: overlap in tokens between context windows.",
            "flag": "--doc-stride",
            "type": int,
        },
    )
    n_best: int = field(
        default=20,
        metadata={"help": "QA: start and end candidates per window.", "flag": "--n-best", "type": int},
    )
    max_answer_length: int = field(
        default=30,
        metadata={"help": "QA: longest answer span, in tokens.", "flag": "--max-answer-length", "type": int},
    )


#: Named recipes for QA. ``seed`` reproduces the original project's; ``default`` is ours for the bundled
#: MiniLM (the TrainConfig defaults: see docs/recipe.md).
PRESETS: dict[str, dict[str, Any]] = {
    # Chosen for MiniLM-L6-H384 (5x smaller than bert-base): small models want a larger LR; dynamic
    # padding and length grouping; 30-token answers (TyDi en answers are short; SQuAD's usual cap).
    # No attention-probability dropout (the dataclass default 0.0): on CPU its (B, heads, S, S) random
    # masks cost a quarter of a training step and keep SDPA off its fused kernels, and F1 did not
    # suffer (docs/benchmarks.md). bf16 autocast where the hardware has it (precision 'auto').
    "default": {},
    # The seed project's recipe (SEED_NOTES.md): HF Trainer defaults otherwise.
    "seed": {
        "lr": 2e-5,
        "epochs": 3.0,
        "batch_size": 8,
        "weight_decay": 0.01,
        "warmup_ratio": 0.0,
        "max_length": 434,
        "doc_stride": 128,
        "pad_to_max_length": True,
        "group_by_length": False,
        "max_answer_length": 60,
        "seed": 595,
        "attention_dropout": None,  # the model's own (0.1 for BERT)
        "attn_implementation": "sdpa",
        "precision": "fp32",  # HF Trainer's default, as the seed project ran it
    },
}


#: QA's per-question metrics, in report order (F1 is the primary one).
METRICS = ("f1", "exact_match")


class SquadFiles:
    """What extractive and generative QA share: SQuAD-format files in and out, and one question from the
    command line. A mixin for :class:`~regtune.tasks.base.Task` subclasses (it uses ``self.name``)."""

    name: str

    def read(self, source: str, config: TrainConfig, *, labels: Sequence[str] | None = None) -> TaskData:
        return load_examples(source, strict=config.strict)  # type: ignore[return-value]

    def read_for_model(
        self,
        source: str,
        model: PreTrainedModel,
        *,
        strict: bool = False,
        overrides: Mapping[str, Any] | None = None,
    ) -> TaskData:
        return load_examples(source, strict=strict)  # type: ignore[return-value]

    def read_for_prediction(self, source: str, model: PreTrainedModel) -> TaskData:
        return TaskData(path=source, examples=read_questions(source))

    def read_texts(self, source: str, *, text_columns: Sequence[str] = ()) -> list[str]:
        # Questions share their paragraph's context: each context once (a question left out by the
        # reader's checks takes nothing away unless it was its paragraph's only one).
        return list(dict.fromkeys(example.context for example in load_examples(source).examples))

    def example_from_inputs(self, inputs: Mapping[str, str], model: PreTrainedModel) -> QAExample:
        question, context = inputs.get("question") or "", inputs.get("context") or ""
        if not question.strip() or not context.strip():
            raise RegtuneError(f"a {self.name} model needs --question and --context, neither empty")
        return QAExample(id="q", question=question, context=context, answers=())

    def write_examples(self, examples: Sequence[Any], path: Path, config: TrainConfig) -> None:
        atomic_write_json(path, squad_json(examples))


class QATask(SquadFiles, Task):
    """Extractive QA over SQuAD-format files (TyDi QA GoldP)."""

    name = "qa"
    auto_model = AutoModelForQuestionAnswering
    metrics = METRICS
    result_metrics = ("exact_match", "f1")
    metric_labels: Mapping[str, str] = {"f1": "F1", "exact_match": "EM"}
    count_key = "num_questions"
    per_example_file = "per_question.json"
    unit = "question"
    sequence = "window"
    options = QAOptions
    presets = PRESETS

    def check_config(self, config: TrainConfig) -> None:
        for name in ("n_best", "max_answer_length"):
            if getattr(config, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(config, name)}")
        if not 0 < config.doc_stride < config.max_length:
            raise ConfigError(
                f"doc_stride must be in (0, max_length={config.max_length}), got {config.doc_stride}"
            )

    def looks_like(self, path: str) -> bool:
        return path.startswith(HUB_PREFIX) or Path(path).suffix.lower() == ".json"

    def predict(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        examples: Sequence[Any],
        *,
        batch_size: int = 64,
        progress: bool = False,
        top_k: int = 1,
    ) -> list[dict[str, Any]]:
        """The best answer per question; with ``top_k`` > 1 also ``answers``, the k best distinct spans."""
        settings = QASettings.from_model(model)
        if top_k > 1:
            ranked = predict_ranked_answers(
                model, tokenizer, examples, settings, k=top_k, batch_size=batch_size, progress=progress
            )
            return [_ranked_record(example.id, ranked[example.id]) for example in examples]
        predictions, _ = predict_answers(
            model, tokenizer, examples, settings, batch_size=batch_size, progress=progress
        )
        return [{"id": example.id, **_answer(predictions[example.id])} for example in examples]

    def prediction_line(self, record: Mapping[str, Any]) -> str:
        return str(record["answer"])

    explain_targets = QA_TARGETS

    def explain_inputs(
        self, examples: Sequence[Any], tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel
    ) -> list[ExplainInput]:
        settings = QASettings.from_model(model)
        return build_explain_inputs(
            examples, tokenizer, max_length=settings.max_length, doc_stride=settings.doc_stride
        )

    def input_settings(self, model: PreTrainedModel) -> dict[str, Any]:
        settings = QASettings.from_model(model)
        return {"max_length": settings.max_length, "doc_stride": settings.doc_stride}

    def explain_prediction(self, model: PreTrainedModel, item: ExplainInput) -> tuple[tuple[int, int], None]:
        settings = QASettings.from_model(model)
        span = predicted_span(
            model, item, n_best=settings.n_best, max_answer_length=settings.max_answer_length
        )
        return span, None

    def explain_score(self, out: Any, span: tuple[int, int], label: int | None, target: str) -> torch.Tensor:
        return target_score(out.start_logits.float(), out.end_logits.float(), span, target)

    def explain_probability(self, out: Any, span: tuple[int, int], label: int | None) -> torch.Tensor:
        return span_probability(out.start_logits, out.end_logits, span)

    def train_dataset(
        self, train: TaskData, tokenizer: PreTrainedTokenizerBase, config: TrainConfig
    ) -> datasets.Dataset:
        import datasets  # heavy import, only needed here

        features = prepare_train_features(
            train.examples, tokenizer, max_length=config.max_length, doc_stride=config.doc_stride
        )
        return datasets.Dataset.from_dict(features)

    def collator(self, tokenizer: PreTrainedTokenizerBase, config: TrainConfig) -> Callable[..., Any]:
        return QACollator(tokenizer, pad_to_max_length=config.pad_to_max_length, max_length=config.max_length)

    def save_settings(self, model: PreTrainedModel, config: TrainConfig) -> None:
        setattr(model.config, QA_SETTINGS_KEY, asdict(QASettings.from_train_config(config)))

    def evaluate(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        data: TaskData,
        *,
        batch_size: int = 64,
        progress: bool = True,
        overrides: Mapping[str, Any] | None = None,
    ) -> Evaluation:
        try:
            settings = replace(QASettings.from_model(model), **(overrides or {}))
        except TypeError as err:
            raise RegtuneError(f"QA evaluation: unknown setting ({err})") from err
        result = evaluate_qa(
            model, tokenizer, data.examples, settings, batch_size=batch_size, progress=progress
        )
        per_example = {qid: {"exact_match": em, "f1": f1} for qid, (em, f1) in result.per_question.items()}
        return Evaluation(
            metrics=result.metrics, per_example=per_example, predictions=result.prediction_texts()
        )


def _answer(prediction: Prediction) -> dict[str, Any]:
    return {
        "answer": prediction.text,
        # JSON has no -inf: a question with no valid span gets a null score.
        "score": prediction.score if math.isfinite(prediction.score) else None,
        "start": prediction.start_char,
        "end": prediction.end_char,
    }


def _ranked_record(qid: str, ranked: Sequence[Prediction]) -> dict[str, Any]:
    best = _answer(ranked[0]) if ranked else {"answer": "", "score": None, "start": 0, "end": 0}
    return {"id": qid, **best, "answers": [_answer(p) for p in ranked]}
