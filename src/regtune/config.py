"""Run configuration: one dataclass for everything a user sets, with named presets.

A run's resolved config (preset, then the user's explicit options on top) is saved as
``DIR/config.json`` beside its results, together with library versions.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from regtune.errors import ConfigError, check_known_fields
from regtune.precision import check_attn_implementation, check_precision
from regtune.registers import RegisterConfig


@dataclass
class TrainConfig:
    """Settings of one ``regtune train`` run (fine-tuning for extractive QA)."""

    model: str = field(default="minilm-l6", metadata={"help": "Short name, local folder or Hub id."})
    train_file: str = field(default="", metadata={"help": "SQuAD-1.1 JSON training file."})
    dev_file: str = field(default="", metadata={"help": "SQuAD-1.1 JSON file scored after training."})
    output_dir: str = field(default="", metadata={"help": "Run folder: config, metrics, predictions, model."})
    preset: Literal["default", "seed"] = field(
        default="default", metadata={"help": "Recipe the rest starts from."}
    )
    # Registers (see regtune.registers).
    num_registers: int = field(default=0, metadata={"help": "Number of register tokens (τ)."})
    register_placement: str = field(default="prepend", metadata={"help": "'prepend' or 'after_cls'."})
    register_init: str = field(
        default="trunc_normal", metadata={"help": "'trunc_normal', 'tiny_normal', 'vocab'."}
    )
    register_lr: float | None = field(default=None, metadata={"help": "LR of the registers (None: --lr)."})
    # Optimisation.
    epochs: float = field(default=2.0, metadata={"help": "Training epochs."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (-1: use --epochs)."})
    batch_size: int = field(default=16, metadata={"help": "Training windows per step (per process)."})
    lr: float = field(default=1e-4, metadata={"help": "Peak learning rate (AdamW, linear decay)."})
    weight_decay: float = field(
        default=0.01, metadata={"help": "AdamW weight decay (not on bias/LN/registers)."}
    )
    warmup_ratio: float = field(default=0.1, metadata={"help": "Fraction of steps with linear warm-up."})
    seed: int = field(default=42, metadata={"help": "Seed for init, dropout and data order."})
    # Features.
    max_length: int = field(default=384, metadata={"help": "Text tokens per window (registers not counted)."})
    doc_stride: int = field(default=128, metadata={"help": "Overlap in tokens between context windows."})
    pad_to_max_length: bool = field(default=False, metadata={"help": "Pad every window to --max-length."})
    group_by_length: bool = field(default=True, metadata={"help": "Batch windows of similar length."})
    # Evaluation / post-processing.
    eval_batch_size: int = field(default=64, metadata={"help": "Windows per inference batch."})
    n_best: int = field(default=20, metadata={"help": "Start and end candidates per window."})
    max_answer_length: int = field(default=30, metadata={"help": "Longest answer span, in tokens."})
    # Run control.
    strict: bool = field(default=False, metadata={"help": "Fail on bad records instead of skipping them."})
    save_steps: int = field(default=200, metadata={"help": "Checkpoint every this many steps."})
    logging_steps: int = field(default=10, metadata={"help": "Log loss and LR every this many steps."})
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
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset '{self.preset}'; choose from {sorted(PRESETS)}")
        for name in (
            "batch_size",
            "eval_batch_size",
            "max_length",
            "n_best",
            "max_answer_length",
            "save_steps",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.doc_stride < self.max_length:
            raise ConfigError(
                f"doc_stride must be in (0, max_length={self.max_length}), got {self.doc_stride}"
            )
        if self.lr <= 0 or (self.register_lr is not None and self.register_lr <= 0):
            raise ConfigError("learning rates must be > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("give --epochs > 0 or --max-steps > 0")
        if self.attention_dropout is not None and not 0 <= self.attention_dropout < 1:
            raise ConfigError(f"attention_dropout must be in [0, 1), got {self.attention_dropout}")
        check_precision(self.precision)
        check_attn_implementation(self.attn_implementation)
        # Validates count, placement and init with the register module's own rules.
        self.registers()

    def registers(self) -> RegisterConfig:
        return RegisterConfig(
            num_registers=self.num_registers, placement=self.register_placement, init=self.register_init
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        check_known_fields(cls, data, "config keys")
        return cls(**data)


#: Named recipes. ``seed`` reproduces the original project's; ``default`` is ours for the bundled MiniLM.
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

#: Command-line flag -> (TrainConfig field, type) for `regtune train` and `regtune sweep`; help texts come
#: from the field metadata. Also used to write a sweep's command line back (regtune.report).
TRAIN_FLAGS: dict[str, tuple[str, type]] = {
    "--registers": ("num_registers", int),
    "--placement": ("register_placement", str),
    "--register-init": ("register_init", str),
    "--register-lr": ("register_lr", float),
    "--epochs": ("epochs", float),
    "--max-steps": ("max_steps", int),
    "--batch-size": ("batch_size", int),
    "--lr": ("lr", float),
    "--weight-decay": ("weight_decay", float),
    "--warmup-ratio": ("warmup_ratio", float),
    "--seed": ("seed", int),
    "--max-length": ("max_length", int),
    "--doc-stride": ("doc_stride", int),
    "--eval-batch-size": ("eval_batch_size", int),
    "--n-best": ("n_best", int),
    "--max-answer-length": ("max_answer_length", int),
    "--save-steps": ("save_steps", int),
    "--logging-steps": ("logging_steps", int),
    "--attn-implementation": ("attn_implementation", str),
    "--attention-dropout": ("attention_dropout", float),
    "--precision": ("precision", str),
}
#: The flags of regtune train that a sweep may vary with comma-separated values: flag -> field.
GRID_FLAGS: dict[str, str] = {
    "--lr": "lr",
    "--register-lr": "register_lr",
    "--placement": "register_placement",
    "--register-init": "register_init",
}


def resolve_config(preset: str = "default", **explicit: Any) -> TrainConfig:
    """The preset's values, then every explicitly given (non-None) option on top."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose from {sorted(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in explicit.items() if v is not None}}
    return TrainConfig.from_dict({**values, "preset": preset})


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
    }
