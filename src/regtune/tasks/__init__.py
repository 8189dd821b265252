"""Tasks on top of the core: each one a package with a :class:`~regtune.tasks.base.Task` subclass.

``TASKS`` is the registry the layers above look tasks up in (``--task NAME``); :func:`infer_task` picks
the task from a data file where that is unambiguous.
"""

from __future__ import annotations

from regtune.core.errors import ConfigError
from regtune.tasks.base import TASK_KEY, Evaluation, Task, TaskData
from regtune.tasks.classification.task import ClassificationTask
from regtune.tasks.generative_qa.task import GenerativeQATask
from regtune.tasks.qa.task import QATask

#: Task name -> the task; the first is the default.
TASKS: dict[str, Task] = {task.name: task for task in (QATask(), ClassificationTask(), GenerativeQATask())}


def get_task(name: str) -> Task:
    """The task called ``name``; a one-line error listing the known ones otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown task {name!r}; choose from {', '.join(TASKS)}") from None


def infer_task(path: str) -> str | None:
    """The one task whose format ``path`` has (by extension and a look at its start), else None."""
    matches = [name for name, task in TASKS.items() if task.looks_like(str(path))]
    return matches[0] if len(matches) == 1 else None


def task_of_model(model_config: object) -> Task:
    """The task a saved regtune model was fine-tuned for; a stock model's by its head (QA for an encoder
    with no head: models from before tasks existed)."""
    name = getattr(model_config, TASK_KEY, None)
    if name is None:
        architectures = getattr(model_config, "architectures", None) or []
        if any("SequenceClassification" in a for a in architectures):
            name = "classification"
        elif any("CausalLM" in a or "LMHeadModel" in a for a in architectures):
            name = "generative-qa"  # a stock causal LM, e.g. scored zero-shot
        else:
            name = "qa"
    return get_task(name)


__all__ = ["TASKS", "TASK_KEY", "Evaluation", "Task", "TaskData", "get_task", "infer_task", "task_of_model"]
