"""Sentence (and sentence-pair) classification as a :class:`~regtune.tasks.base.Task`.

Files: TSV, CSV or JSONL (:mod:`.data`); model: ``AutoModelForSequenceClassification``, whose head (or
pooler) reads ``[CLS]``, never a register (the register core sees to that); metrics: accuracy per example
(for the paired statistics) and macro-F1 over the file (:mod:`.evaluation`). Labels are mapped to ids in
a stable order and saved as the model config's ``id2label`` / ``label2id``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import AutoModelForSequenceClassification

from regtune.core.errors import ConfigError, RegtuneError
from regtune.tasks.base import Evaluation, Task, TaskData
from regtune.tasks.classification.data import (
    FORMATS,
    ClassificationExample,
    label_order,
    read_classification,
    write_jsonl,
)
from regtune.tasks.classification.evaluation import (
    SETTINGS_KEY,
    ClassificationSettings,
    evaluate_classification,
    model_labels,
    predict_probabilities,
)
from regtune.tasks.classification.explain import (
    CLS_SPAN,
    build_explain_inputs,
    class_probability,
    class_score,
    predicted_class,
)
from regtune.tasks.classification.explain import TARGETS as EXPLAIN_TARGETS
from regtune.tasks.classification.features import ClassificationCollator, tokenize_examples

if TYPE_CHECKING:
    import datasets
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from regtune.tasks.inputs import ExplainInput
    from regtune.training.config import TrainConfig


def column_list(text: str) -> list[str]:
    """``--text-column a`` or ``--text-column a,b`` (a sentence pair)."""
    columns = [c.strip() for c in str(text).split(",") if c.strip()]
    if not 1 <= len(columns) <= 2:
        raise argparse.ArgumentTypeError(f"give one text column, or two for a pair: got {text!r}")
    return columns


@dataclass
class ClassificationOptions:
    """The classification task's own options (``TrainConfig`` inherits them; other tasks ignore them)."""

    text_columns: list[str] = field(
        default_factory=lambda: ["sentence"],
        metadata={
            "help": "Classification: the text column, or two comma-separated for sentence pairs.",
            "flag": "--text-column",
            "type": column_list,
        },
    )
    label_column: str = field(
        default="label",
        metadata={"help": "Classification: the label column.", "flag": "--label-column", "type": str},
    )


#: Named recipes for classification; ``default`` was set for the bundled MiniLM on SST-2 before any dev
#: score was seen (reasoning in docs/recipe.md).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "lr": 5e-5,  # GLUE fine-tuning range for small encoders; QA's 1e-4 served a random 2-way span head
        "epochs": 1.0,  # 67k SST-2 sentences: one pass is ~2,100 steps at batch 32
        "batch_size": 32,
        "warmup_ratio": 0.06,  # RoBERTa's GLUE recipe
        "max_length": 128,  # the longest SST-2 sentence is ~66 word pieces
        "save_steps": 500,  # a checkpoint (~270 MB with AdamW state) every few minutes on 2 cores
    },
}


class ClassificationTask(Task):
    """Sentence and sentence-pair classification (SST-2 and the like)."""

    name = "classification"
    auto_model = AutoModelForSequenceClassification
    metrics = ("accuracy",)
    result_metrics = ("accuracy", "macro_f1")
    metric_labels: Mapping[str, str] = {"accuracy": "accuracy"}
    count_key = "num_examples"
    per_example_file = "per_example.json"
    unit = "example"
    sequence = "sequence"
    options = ClassificationOptions
    presets = PRESETS

    def check_config(self, config: TrainConfig) -> None:
        if not 1 <= len(config.text_columns) <= 2:
            raise ConfigError(f"give one text column, or two for a pair: got {config.text_columns}")
        if config.label_column in config.text_columns:
            raise ConfigError(f"column '{config.label_column}' cannot be both a text and the label")

    def looks_like(self, path: str) -> bool:
        return Path(path).suffix.lower() in FORMATS

    def read(self, source: str, config: TrainConfig, *, labels: Sequence[str] | None = None) -> TaskData:
        return read_classification(
            source,
            text_columns=config.text_columns,
            label_column=config.label_column,
            strict=config.strict,
            labels=labels,
        )

    def read_for_model(
        self,
        source: str,
        model: PreTrainedModel,
        *,
        strict: bool = False,
        overrides: Mapping[str, Any] | None = None,
    ) -> TaskData:
        settings = self._settings(model, overrides)
        return read_classification(
            source,
            text_columns=settings.text_columns,
            label_column=settings.label_column,
            strict=strict,
            labels=model_labels(model),
        )

    def read_for_prediction(self, source: str, model: PreTrainedModel) -> TaskData:
        return self.read_for_model(source, model, overrides={"label_column": None})

    def read_texts(self, source: str, *, text_columns: Sequence[str] = ()) -> list[str]:
        columns = tuple(text_columns) or tuple(ClassificationOptions().text_columns)
        data = read_classification(source, text_columns=columns, label_column=None)
        # A pair's two texts are two passages; repeated sentences (SST-2 has many) count once.
        return list(dict.fromkeys(text for example in data.examples for text in example.texts))

    def _settings(
        self, model: PreTrainedModel, overrides: Mapping[str, Any] | None
    ) -> ClassificationSettings:
        try:
            return replace(ClassificationSettings.from_model(model), **(overrides or {}))
        except TypeError as err:
            raise RegtuneError(f"classification: unknown setting ({err})") from err

    def example_from_inputs(self, inputs: Mapping[str, str], model: PreTrainedModel) -> ClassificationExample:
        pair = len(self._settings(model, None).text_columns) == 2
        texts = [inputs.get("text") or ""] + ([inputs.get("text_pair") or ""] if pair else [])
        if not all(text.strip() for text in texts):
            need = "--text and --text-pair (it was trained on sentence pairs)" if pair else "--text"
            raise RegtuneError(f"a classification model needs {need}, not empty")
        if not pair and inputs.get("text_pair"):
            raise RegtuneError("--text-pair given, but the model was trained on single sentences")
        return ClassificationExample(id="input", texts=tuple(texts), label=None)

    def predict(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        examples: Sequence[Any],
        *,
        batch_size: int = 64,
        progress: bool = False,
    ) -> list[dict[str, Any]]:
        labels = model_labels(model)
        settings = self._settings(model, None)
        probs = predict_probabilities(
            model, tokenizer, examples, settings, batch_size=batch_size, progress=progress
        )
        records = []
        for example, row in zip(examples, probs, strict=True):
            best = int(row.argmax())
            records.append(
                {
                    "id": example.id,
                    "label": labels[best],
                    "probability": float(row[best]),
                    "probabilities": {label: float(p) for label, p in zip(labels, row, strict=True)},
                }
            )
        return records

    def prediction_line(self, record: Mapping[str, Any]) -> str:
        return f"{record['label']}\t{record['probability']:.4f}"

    explain_targets = EXPLAIN_TARGETS
    explains_a_class = True

    def explain_inputs(
        self, examples: Sequence[Any], tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel
    ) -> list[ExplainInput]:
        settings = self._settings(model, None)
        return build_explain_inputs(
            examples, tokenizer, max_length=settings.max_length, labels=model_labels(model)
        )

    def input_settings(self, model: PreTrainedModel) -> dict[str, Any]:
        settings = self._settings(model, None)
        return {
            "task": self.name,
            "max_length": settings.max_length,
            "text_columns": list(settings.text_columns),
        }

    def explain_prediction(self, model: PreTrainedModel, item: ExplainInput) -> tuple[tuple[int, int], int]:
        return CLS_SPAN, predicted_class(model, item)

    def explain_score(self, out: Any, span: tuple[int, int], label: int | None, target: str) -> torch.Tensor:
        return class_score(out, _label(label))

    def explain_probability(self, out: Any, span: tuple[int, int], label: int | None) -> torch.Tensor:
        return class_probability(out, _label(label))

    def explain_rows(self, span: tuple[int, int], target: str) -> list[int]:
        return [CLS_SPAN[0]]

    def label_names(self, train: TaskData) -> list[str]:
        return label_order(train.examples)

    def model_labels(self, model: PreTrainedModel) -> list[str]:
        return model_labels(model)

    def split_key(self, example: Any) -> str:
        # Line numbers move when rows are added or reordered; the text and label do not, and copies of
        # one sentence land on the same side (no leak from training into validation).
        return "\t".join([*example.texts, example.label or ""])

    def split_suffix(self, train_file: str) -> str:
        return ".jsonl"

    def write_examples(self, examples: Sequence[Any], path: Path, config: TrainConfig) -> None:
        write_jsonl(examples, path, text_columns=config.text_columns, label_column=config.label_column)

    def configure_model(self, hf_config: PretrainedConfig, train: TaskData) -> None:
        labels = self.label_names(train)
        if len(labels) < 2:
            raise RegtuneError(f"{train.path}: the training file has {len(labels)} label(s); need at least 2")
        hf_config.num_labels = len(labels)
        hf_config.id2label = dict(enumerate(labels))
        hf_config.label2id = {label: i for i, label in enumerate(labels)}
        hf_config.problem_type = "single_label_classification"

    def train_dataset(
        self, train: TaskData, tokenizer: PreTrainedTokenizerBase, config: TrainConfig
    ) -> datasets.Dataset:
        import datasets

        label_ids = {label: i for i, label in enumerate(self.label_names(train))}
        columns = tokenize_examples(
            train.examples, tokenizer, max_length=config.max_length, label_ids=label_ids
        )
        return datasets.Dataset.from_dict(columns)

    def collator(self, tokenizer: PreTrainedTokenizerBase, config: TrainConfig) -> Callable[..., Any]:
        return ClassificationCollator(
            tokenizer, pad_to_max_length=config.pad_to_max_length, max_length=config.max_length
        )

    def save_settings(self, model: PreTrainedModel, config: TrainConfig) -> None:
        setattr(model.config, SETTINGS_KEY, ClassificationSettings.from_train_config(config).to_dict())

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
        settings = self._settings(model, overrides)
        return evaluate_classification(
            model, tokenizer, data.examples, settings, batch_size=batch_size, progress=progress
        )


def _label(label: int | None) -> int:
    if label is None:
        raise RegtuneError("a classification attribution needs the class it explains")
    return label
