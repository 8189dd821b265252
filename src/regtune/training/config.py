"""Run configuration: one dataclass for everything a user sets, with named presets per task.

A run's resolved config (the task's preset, then the user's explicit options on top) is saved as
``DIR/config.json`` beside its results, together with library versions. :class:`TrainConfig` holds the
options every task shares and inherits each task's own options dataclass
(:class:`~regtune.tasks.qa.task.QAOptions`, ...); only the run's own task's fields are saved and
checked, and only that task reads them.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from regtune.core.adapter import check_train_only
from regtune.core.errors import ConfigError, check_known_fields
from regtune.core.precision import check_attn_implementation, check_precision, describe_hardware
from regtune.core.registers import RegisterConfig
from regtune.tasks import TASKS, get_task
from regtune.tasks.classification.task import ClassificationOptions
from regtune.tasks.generative_qa.task import GenerativeQAOptions
from regtune.tasks.qa.task import QAOptions
from regtune.training.peft_arms import check_peft

#: Values of ``register_identity``: no per-slot vector, or a learned one (RegisterConfig.slot_identity).
IDENTITIES = ("none", "learned")


@dataclass
class TrainConfig(GenerativeQAOptions, ClassificationOptions, QAOptions):
    """Settings of one ``regtune train`` run: the shared ones here, each task's own inherited."""

    model: str = field(default="minilm-l6", metadata={"help": "Short name, local folder or Hub id."})
    task: str = field(default="qa", metadata={"help": "What is fine-tuned: " + ", ".join(TASKS) + "."})
    train_file: str = field(default="", metadata={"help": "Training file."})
    dev_file: str = field(default="", metadata={"help": "File scored after training."})
    output_dir: str = field(default="", metadata={"help": "Run folder: config, metrics, predictions, model."})
    preset: str = field(default="default", metadata={"help": "Recipe the rest starts from."})
    # Registers (see regtune.core.registers).
    num_registers: int = field(default=0, metadata={"help": "Number of register tokens (τ)."})
    register_placement: str = field(default="prepend", metadata={"help": "'prepend' or 'after_cls'."})
    register_init: str = field(
        default="trunc_normal",
        metadata={
            "help": "'trunc_normal', 'tiny_normal', 'vocab' (rows of the vocabulary) or 'orthogonal' "
            "(orthonormal directions at the token-embedding norm)."
        },
    )
    register_lr: float | None = field(default=None, metadata={"help": "LR of the registers (None: --lr)."})
    register_depth: str = field(
        default="input",
        metadata={
            "help": "'input' (registers enter before the first layer) or 'all' (every layer reads its own "
            "learned register vectors, P-tuning v2 style; encoders only)."
        },
    )
    register_identity: str = field(
        default="none",
        metadata={
            "help": "'none' or 'learned': a learned per-slot vector added to the register rows before every "
            "layer, so that slots stay apart (encoders only)."
        },
    )
    # Optimisation.
    epochs: float = field(default=2.0, metadata={"help": "Training epochs."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (-1: use --epochs)."})
    batch_size: int = field(default=16, metadata={"help": "Training sequences per step (per process)."})
    lr: float = field(default=1e-4, metadata={"help": "Peak learning rate (AdamW, linear decay)."})
    weight_decay: float = field(
        default=0.01, metadata={"help": "AdamW weight decay (not on bias/LN/registers)."}
    )
    warmup_ratio: float = field(default=0.1, metadata={"help": "Fraction of steps with linear warm-up."})
    seed: int = field(default=42, metadata={"help": "Seed for init, dropout and data order."})
    # Inputs.
    max_length: int = field(
        default=384, metadata={"help": "Text tokens per input sequence (registers not counted)."}
    )
    pad_to_max_length: bool = field(default=False, metadata={"help": "Pad every sequence to --max-length."})
    group_by_length: bool = field(default=True, metadata={"help": "Batch sequences of similar length."})
    train_only: str = field(
        default="all",
        metadata={
            "help": "'all', or 'registers+head': freeze the encoder, train only the registers and the "
            "task head (register tuning; the model folder then holds only those tensors, as a PEFT adapter)."
        },
    )
    peft: str = field(
        default="none",
        metadata={
            "help": "'none', 'lora' or 'prompt': train the real peft library's LoRA (on the attention query "
            "and value projections) or prompt tuning, with the task head, on a frozen encoder; the model "
            "folder then holds PEFT's adapter."
        },
    )
    peft_size: int = field(
        default=8, metadata={"help": "LoRA's rank r, or prompt tuning's number of virtual tokens."}
    )
    freeze_embeddings: bool = field(
        default=False,
        metadata={
            "help": "Keep the token-embedding matrix fixed (on multilingual models most of the weights); "
            "registers, position embeddings and the layers still train. A tied output layer stays fixed too."
        },
    )
    eval_batch_size: int = field(default=64, metadata={"help": "Sequences per inference batch."})
    # Run control.
    strict: bool = field(default=False, metadata={"help": "Fail on bad records instead of skipping them."})
    save_steps: int = field(default=200, metadata={"help": "Checkpoint every this many steps."})
    logging_steps: int = field(default=10, metadata={"help": "Log loss and LR every this many steps."})
    report_to: str = field(
        default="tensorboard",
        metadata={
            "help": "Where the Trainer's logs go besides train_log.jsonl: tensorboard, none, or any "
            "integration transformers supports that is installed (wandb, mlflow, comet_ml, ...)."
        },
    )
    attn_implementation: str = field(
        default="auto",
        metadata={
            "help": "'auto' (eager for bf16 on CPU, where it is faster; else sdpa), 'sdpa' or 'eager'."
        },
    )
    attention_dropout: float | None = field(
        default=0.0,
        metadata={"help": "Attention-probability dropout (None: the model's own, 0.1 for BERT)."},
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "'auto' (bf16 autocast on bf16 GPUs and AMX CPUs, else fp32), 'bf16' or 'fp32'.",
        },
    )

    def __post_init__(self) -> None:
        task = get_task(self.task)  # a one-line error for an unknown task
        if self.preset not in task.presets:
            raise ConfigError(
                f"unknown preset '{self.preset}' for task {self.task}; choose from {sorted(task.presets)}"
            )
        for name in ("batch_size", "eval_batch_size", "max_length", "save_steps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.lr <= 0 or (self.register_lr is not None and self.register_lr <= 0):
            raise ConfigError("learning rates must be > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("give --epochs > 0 or --max-steps > 0")
        if self.attention_dropout is not None and not 0 <= self.attention_dropout < 1:
            raise ConfigError(f"attention_dropout must be in [0, 1), got {self.attention_dropout}")
        check_precision(self.precision)
        check_train_only(self.train_only)
        check_peft(self)
        check_attn_implementation(self.attn_implementation)
        task.check_config(self)
        # Validates count, placement and init with the register module's own rules.
        self.registers()

    def registers(self) -> RegisterConfig:
        if self.register_identity not in IDENTITIES:
            raise ConfigError(
                f"register_identity must be one of {list(IDENTITIES)}, got {self.register_identity!r}"
            )
        return RegisterConfig(
            num_registers=self.num_registers,
            placement=self.register_placement,
            init=self.register_init,
            depth=self.register_depth,
            slot_identity=self.register_identity == "learned",
        )

    def to_dict(self) -> dict[str, Any]:
        """The shared fields and the run's own task's options (other tasks' options mean nothing here)."""
        foreign = {
            name for other in TASKS.values() if other.name != self.task for name in other.option_names()
        }
        return {k: v for k, v in asdict(self).items() if k not in foreign}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        check_known_fields(cls, data, "config keys")
        return cls(**data)


def saved_run_config(run_config_file: Path) -> dict[str, Any]:
    """The ``config`` object of a run's config.json, with the defaults of options added since: run folders
    from before tasks existed are QA runs, from before ``report_to`` reported to TensorBoard, from before
    ``freeze_embeddings`` trained the embeddings, and from before ``peft`` used no PEFT adapter."""
    saved = json.loads(run_config_file.read_text(encoding="utf-8"))["config"]
    saved.setdefault("task", "qa")
    saved.setdefault("report_to", "tensorboard")  # what every run did before the option existed
    saved.setdefault("freeze_embeddings", False)
    saved.setdefault("train_only", "all")
    saved.setdefault("peft", "none")
    saved.setdefault("peft_size", 8)
    saved.setdefault("register_depth", "input")
    saved.setdefault("register_identity", "none")
    return saved


def last_checkpoint(run_dir: Path) -> str | None:
    """The Trainer checkpoint (``RUN/trainer/checkpoint-N``, the newest) a run resumes from, or None.

    The one rule for "this run resumes": training and pretraining pass it to the Trainer, and a sweep
    plans its threads by it.
    """
    from transformers.trainer_utils import get_last_checkpoint

    trainer_dir = run_dir / "trainer"
    return get_last_checkpoint(str(trainer_dir)) if trainer_dir.exists() else None


def task_options() -> set[str]:
    """Names of every task's own option fields."""
    return {name for task in TASKS.values() for name in task.option_names()}


def preset_names() -> list[str]:
    """Every preset of any task (a task refuses the ones it does not have)."""
    return sorted({name for task in TASKS.values() for name in task.presets})


def preset_values(task: str, preset: str) -> dict[str, Any]:
    presets = get_task(task).presets
    if preset not in presets:
        raise ConfigError(f"unknown preset '{preset}' for task {task}; choose from {sorted(presets)}")
    return dict(presets[preset])


#: Command-line flag -> (TrainConfig field, type) for `regtune train` and `regtune sweep`; help texts come
#: from the field metadata. Also used to write a sweep's command line back (regtune.reporting.report).
#: Each task's own flags come from the ``flag`` metadata of its options' fields.
TRAIN_FLAGS: dict[str, tuple[str, Any]] = {
    "--registers": ("num_registers", int),
    "--placement": ("register_placement", str),
    "--register-init": ("register_init", str),
    "--register-lr": ("register_lr", float),
    "--register-depth": ("register_depth", str),
    "--register-identity": ("register_identity", str),
    "--train-only": ("train_only", str),
    "--peft": ("peft", str),
    "--peft-size": ("peft_size", int),
    "--epochs": ("epochs", float),
    "--max-steps": ("max_steps", int),
    "--batch-size": ("batch_size", int),
    "--lr": ("lr", float),
    "--weight-decay": ("weight_decay", float),
    "--warmup-ratio": ("warmup_ratio", float),
    "--seed": ("seed", int),
    "--max-length": ("max_length", int),
    "--eval-batch-size": ("eval_batch_size", int),
    "--save-steps": ("save_steps", int),
    "--logging-steps": ("logging_steps", int),
    "--report-to": ("report_to", str),
    "--attn-implementation": ("attn_implementation", str),
    "--attention-dropout": ("attention_dropout", float),
    "--precision": ("precision", str),
    **{
        f.metadata["flag"]: (f.name, f.metadata.get("type", f.type))
        for task in TASKS.values()
        for f in fields(task.options)
        if "flag" in f.metadata
    },
}
#: The flags of regtune train that a sweep may vary with comma-separated values: flag -> field.
GRID_FLAGS: dict[str, str] = {
    "--lr": "lr",
    "--register-lr": "register_lr",
    "--placement": "register_placement",
    "--register-init": "register_init",
    "--register-depth": "register_depth",
    "--register-identity": "register_identity",
    "--train-only": "train_only",
    "--peft": "peft",
}


def resolve_config(preset: str = "default", **explicit: Any) -> TrainConfig:
    """The task's preset values, then every explicitly given (non-None) option on top.

    The task is ``explicit['task']`` (default: qa).
    """
    task = explicit.get("task") or "qa"
    values = {**preset_values(task, preset), **{k: v for k, v in explicit.items() if v is not None}}
    return TrainConfig.from_dict({**values, "preset": preset, "task": task})


def environment_versions() -> dict[str, str]:
    """Versions recorded beside every result, so a number can be traced to its software."""
    import tokenizers
    import torch
    import transformers

    import regtune

    return {
        "regtune": regtune.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hardware": describe_hardware(),
    }
