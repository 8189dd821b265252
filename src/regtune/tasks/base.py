"""What a task is: the one interface that training, evaluation, sweeps and reports reach a task through.

A task owns everything that depends on what is being predicted:

* its **reader** and validation (:meth:`Task.read`), with one-line errors that name the file and record;
* **featurisation and collation** (:meth:`Task.train_dataset`, :meth:`Task.collator`);
* the **model class** it fine-tunes (:attr:`Task.auto_model`, e.g. ``AutoModelForQuestionAnswering``) and
  what the model config must say before the weights load (:meth:`Task.configure_model`, e.g. labels);
* **prediction** and its **metric per example** (:meth:`Task.evaluate`), so the paired statistics of
  :mod:`regtune.experiments.stats` work unchanged for every task;
* its **options** (a dataclass whose fields :class:`~regtune.training.config.TrainConfig` inherits) and its
  **presets**.

Nothing outside a task's own package knows what its examples look like: the layers above see
:class:`TaskData` (examples with an ``id``) and :class:`Evaluation` (scores per example id).

Adding a task: write ``regtune/tasks/<name>/`` with a :class:`Task` subclass, and list it in
:data:`regtune.tasks.TASKS`. See ``docs/architecture.md``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from regtune.core.errors import RegtuneError

if TYPE_CHECKING:
    import datasets
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from regtune.tasks.inputs import ExplainInput
    from regtune.training.config import TrainConfig

#: Key in a saved model's config naming the task it was fine-tuned for.
TASK_KEY = "regtune_task"


@dataclass(frozen=True)
class Skip:
    """A record left out in non-strict mode, and why."""

    example_id: str
    reason: str


@dataclass
class TaskData:
    """What a reader returns: the usable examples in file order (each has an ``id``), and the skipped.

    QA's :class:`~regtune.tasks.qa.data.SquadFile` has the same three attributes.
    """

    path: Any
    examples: list[Any]
    skipped: list[Skip] = field(default_factory=list)


@dataclass
class Evaluation:
    """Scores and predictions of one model on one data file.

    Attributes:
        metrics: Aggregates on 0..100 under the task's metric names, the example count under
            :attr:`Task.count_key`, and timings.
        per_example: Example id -> {metric: score on 0..1}: what the paired statistics resample.
        predictions: Example id -> the prediction, JSON-ready (answer text, label, ...).
    """

    metrics: dict[str, Any]
    per_example: dict[str, dict[str, float]] = field(repr=False)
    predictions: dict[str, Any] = field(repr=False)


class Task(ABC):
    """One fine-tuning task. Subclasses set the class attributes and implement the methods."""

    #: Name on the command line (``--task``) and in saved configs.
    name: ClassVar[str]
    #: The ``transformers`` Auto class the task fine-tunes (e.g. ``AutoModelForQuestionAnswering``).
    auto_model: ClassVar[Any]
    #: Per-example metrics, the first one primary (it picks τ under --select-on validation).
    metrics: ClassVar[tuple[str, ...]]
    #: The metrics.json scores results.csv shows (per-example ones and file-level ones like macro-F1).
    result_metrics: ClassVar[tuple[str, ...]]
    #: Display names of the metrics.
    metric_labels: ClassVar[Mapping[str, str]]
    #: The count in metrics.json (``num_questions``, ``num_examples``).
    count_key: ClassVar[str]
    #: File name of the per-example scores in a run folder.
    per_example_file: ClassVar[str]
    #: What one example is called in messages and tables ("question", "example").
    unit: ClassVar[str]
    #: What one model input is called ("window": a QA question may need several; "sequence").
    sequence: ClassVar[str]
    #: The dataclass of the task's own options; :class:`TrainConfig` inherits its fields.
    options: ClassVar[type]
    #: Preset name -> values of TrainConfig fields (the task's own options among them).
    presets: ClassVar[Mapping[str, Mapping[str, Any]]]

    def option_names(self) -> list[str]:
        return [f.name for f in fields(self.options)]

    def check_config(self, config: TrainConfig) -> None:  # noqa: B027 (optional hook)
        """Validate the task's options in ``config``; raise ConfigError with a one-line message."""

    @abstractmethod
    def looks_like(self, path: str) -> bool:
        """Whether ``path`` is a file of this task's format (used to infer ``--task``)."""

    @abstractmethod
    def read(self, source: str, config: TrainConfig, *, labels: Sequence[str] | None = None) -> TaskData:
        """Read and validate ``source`` with the options in ``config`` (``config.strict`` decides skips).

        ``labels``: for tasks with labels, the label set of the training file (a dev label outside it is
        an error).
        """

    @abstractmethod
    def read_for_model(
        self,
        source: str,
        model: PreTrainedModel,
        *,
        strict: bool = False,
        overrides: Mapping[str, Any] | None = None,
    ) -> TaskData:
        """Read ``source`` to score a trained ``model``: columns and labels as the model was trained."""

    @abstractmethod
    def example_from_inputs(self, inputs: Mapping[str, str], model: PreTrainedModel) -> Any:
        """One example from command-line inputs (``question``/``context``, ``text``/``text_pair``)."""

    def read_for_prediction(self, source: str, model: PreTrainedModel) -> TaskData:
        """Read a file of inputs to predict (``regtune predict --file``): references, if any, are ignored."""
        raise RegtuneError(f"task {self.name} cannot predict a file")

    def read_texts(self, source: str, *, text_columns: Sequence[str] = ()) -> list[str]:
        """The unlabelled passages of ``source`` for language-model pretraining (``regtune pretrain``), each
        once, in file order: QA's unique contexts, classification's texts (``text_columns``, or the
        task's default). Reader errors are the task's own one-line errors."""
        raise RegtuneError(f"task {self.name} has no unlabelled texts to pretrain on")

    @abstractmethod
    def predict(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        examples: Sequence[Any],
        *,
        batch_size: int = 64,
        progress: bool = False,
    ) -> list[dict[str, Any]]:
        """One JSON-ready record per example, in order (QA: answer, score, offsets; classification:
        label, its probability, every label's probability)."""

    @abstractmethod
    def prediction_line(self, record: Mapping[str, Any]) -> str:
        """The one line ``regtune predict`` prints for a record."""

    # --- explanations (regtune explain / analyze) -------------------------------------------------------

    #: What an attribution can explain (QA: start, end, span; classification: class); the last is default.
    explain_targets: ClassVar[tuple[str, ...]] = ()
    #: Whether an explained prediction is a class (classification) rather than only a span (QA).
    explains_a_class: ClassVar[bool] = False
    #: Whether ``analyze`` ablates each register alone as well as all at once (False where one dev
    #: evaluation is expensive, as for generation).
    ablate_each_register: ClassVar[bool] = True

    def explain_inputs(
        self, examples: Sequence[Any], tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel
    ) -> list[ExplainInput]:
        """One fixed token sequence per example, the same for every model of one base."""
        raise RegtuneError(f"task {self.name} has no explanations yet (regtune explain / analyze)")

    def input_settings(self, model: PreTrainedModel) -> dict[str, Any]:
        """The settings that fix an explained input's tokens (recorded beside explanations)."""
        return {}

    def explain_prediction(
        self, model: PreTrainedModel, item: ExplainInput
    ) -> tuple[tuple[int, int], int | None]:
        """What the model predicts on ``item``, as (text-token span the prediction is read from, class id).

        QA: the predicted answer span and None. Classification: ([CLS], [CLS]) and the predicted class.
        """
        raise RegtuneError(f"task {self.name} has no explanations yet (regtune explain / analyze)")

    def explain_score(self, out: Any, span: tuple[int, int], label: int | None, target: str) -> torch.Tensor:
        """The explained logit per row of a model output: (B,)."""
        raise RegtuneError(f"task {self.name} has no explanations yet (regtune explain / analyze)")

    def explain_probability(self, out: Any, span: tuple[int, int], label: int | None) -> torch.Tensor:
        """The probability of the explained prediction per row (B,), which faithfulness tracks."""
        raise RegtuneError(f"task {self.name} has no explanations yet (regtune explain / analyze)")

    def explain_rows(self, span: tuple[int, int], target: str) -> list[int]:
        """Text-token positions whose final states make the explained output (attention-gradient rows)."""
        return {"start": [span[0]], "end": [span[1]]}.get(target, [span[0], span[1]])

    def label_names(self, train: TaskData) -> list[str] | None:
        """The label set a model of this task is built with, or None for tasks without labels."""
        return None

    def model_labels(self, model: PreTrainedModel) -> list[str] | None:
        """The labels a trained model predicts, in id order, or None for tasks without labels."""
        return None

    def split_key(self, example: Any) -> str:
        """What decides an example's side of a held-out split (a hash of it): by default its id."""
        return str(example.id)

    def split_suffix(self, train_file: str) -> str:
        """File extension of the held-out split's files."""
        return ".json"

    @abstractmethod
    def write_examples(self, examples: Sequence[Any], path: Path, config: TrainConfig) -> None:
        """Write ``examples`` to ``path`` (atomically) in a format :meth:`read` reads back."""

    def configure_model(self, hf_config: PretrainedConfig, train: TaskData) -> None:  # noqa: B027
        """Set what the model config must hold before the weights load (labels, ...)."""

    @abstractmethod
    def train_dataset(
        self, train: TaskData, tokenizer: PreTrainedTokenizerBase, config: TrainConfig
    ) -> datasets.Dataset:
        """Featurised training rows, with their labels, for the Trainer."""

    @abstractmethod
    def collator(self, tokenizer: PreTrainedTokenizerBase, config: TrainConfig) -> Callable[..., Any]:
        """Batches of training rows -> tensors (model inputs and labels)."""

    @abstractmethod
    def save_settings(self, model: PreTrainedModel, config: TrainConfig) -> None:
        """Store in ``model.config`` what inference must reproduce (window sizes, decoding, precision)."""

    @abstractmethod
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
        """Predict every example of ``data`` and score it; settings come from the model (``overrides``)."""
