"""What the command modules share: option parsers, the train-option table, and choosing the task."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from typing import Any

from regtune.core.adapter import TRAIN_ONLY
from regtune.core.errors import RegtuneError
from regtune.core.precision import ATTN_IMPLEMENTATIONS, PRECISIONS
from regtune.core.registers import RegisterDepth, RegisterInit
from regtune.tasks import TASKS, infer_task
from regtune.tasks.classification.task import column_list  # noqa: F401 (re-exported for the commands)
from regtune.training.config import IDENTITIES, TRAIN_FLAGS, TrainConfig, preset_values
from regtune.training.peft_arms import PEFT_METHODS

CHOICES = {
    "--placement": ["prepend", "after_cls"],
    "--register-init": [i.value for i in RegisterInit],
    "--register-depth": [d.value for d in RegisterDepth],
    "--register-identity": list(IDENTITIES),
    "--train-only": list(TRAIN_ONLY),
    "--peft": list(PEFT_METHODS),
    "--attn-implementation": list(ATTN_IMPLEMENTATIONS),
    "--precision": list(PRECISIONS),
}

TASK_HELP = (
    "what to fine-tune: 'qa' (extractive QA, SQuAD-1.1 JSON), 'classification' (TSV/CSV/JSONL with "
    "--text-column/--label-column) or 'generative-qa' (causal LMs such as smollm2-135m: answers generated "
    "from the same SQuAD JSON) (default: inferred from the training file's extension; JSON means 'qa')"
)


def field_help(name: str) -> str:
    """A TrainConfig field's help text with its default under each task's default preset."""
    field_ = next(f for f in fields(TrainConfig) if f.name == name)
    plain = field_.default_factory() if field_.default is MISSING else field_.default  # type: ignore[misc]
    defaults = {task: preset_values(task, "default").get(name, plain) for task in TASKS}
    if len({repr(value) for value in defaults.values()}) == 1:
        shown = str(plain)
    else:
        shown = ", ".join(f"{task} {value}" for task, value in defaults.items())
    return f"{field_.metadata['help']} (default preset: {shown})"


def at_least(least: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from err
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    return parse


def comma_list(type_: type) -> Any:
    def parse(text: str) -> list[Any]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected comma-separated values, got {text!r}")
        try:
            return [type_(item) for item in items]
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{text!r}: {err}") from err

    return parse


def add_switches(p: argparse.ArgumentParser) -> None:
    """The on/off options of regtune train, shared by train and sweep (None: the preset decides)."""
    for name in ("pad_to_max_length", "group_by_length", "freeze_embeddings"):
        p.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=field_help(name),
        )
    p.add_argument(
        "--strict", action="store_true", default=None, help="fail on the first bad record instead of skipping"
    )


def add_task_argument(p: argparse.ArgumentParser, help_text: str = TASK_HELP) -> None:
    p.add_argument("--task", choices=list(TASKS), help=help_text)


def choose_task(given: str | None, data_file: str) -> str:
    """``--task`` if given, else the task the data file's format implies; a one-line error if unclear."""
    if given:
        return given
    inferred = infer_task(data_file)
    if inferred is None:
        raise RegtuneError(
            f"{data_file}: cannot tell the task from the file name; give --task ({', '.join(TASKS)})"
        )
    return inferred


def train_flag_names() -> list[str]:
    """TrainConfig fields set by TRAIN_FLAGS (the rest are switches or set by the command itself)."""
    return [name for name, _ in TRAIN_FLAGS.values()]


def score_line(task_name: str, metrics: dict[str, Any]) -> str:
    """One line of a run's scores, e.g. ``exact_match 52.05  f1 62.93  (440 questions)``."""
    from regtune.tasks import get_task

    task = get_task(task_name)
    scores = "  ".join(f"{name} {metrics[name]:.2f}" for name in task.result_metrics if name in metrics)
    return f"{scores}  ({metrics.get(task.count_key)} {task.unit}s)"


TASK_CHECK_HELP = "the task the model must have been trained for (default: the model's own, from its config)"


def check_task(given: str | None, *model_dirs: str | None) -> None:
    """With ``--task``, refuse a model trained for another task (the task itself comes from the model)."""
    if not given:
        return
    from transformers import AutoConfig

    from regtune.core.hub import resolve_model_name
    from regtune.tasks import task_of_model

    for folder in filter(None, model_dirs):
        try:
            trained = task_of_model(AutoConfig.from_pretrained(resolve_model_name(folder))).name
        except (OSError, ValueError) as err:
            raise RegtuneError(f"{folder}: not a saved model folder ({err.__class__.__name__})") from err
        if trained != given:
            raise RegtuneError(f"--task {given}: {folder} was trained for {trained}")
