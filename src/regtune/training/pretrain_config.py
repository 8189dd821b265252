"""The settings of one ``regtune pretrain`` run (see :mod:`regtune.training.pretrain`).

Apart from the trainer so that the command line can list the options without importing HF Trainer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from regtune.core.errors import ConfigError, check_known_fields
from regtune.core.precision import check_attn_implementation, check_precision
from regtune.core.registers import RegisterConfig


@dataclass
class PretrainConfig:
    """Settings of one ``regtune pretrain`` run; saved as ``DIR/config.json``.

    The optimisation and run-control fields have :class:`~regtune.training.config.TrainConfig`'s names, so
    that :func:`~regtune.training.trainer.training_arguments` builds the Trainer's arguments for both.
    """

    model: str = field(default="minilm-l6", metadata={"help": "Short name, local folder or Hub id."})
    text_files: list[str] = field(
        default_factory=list,
        metadata={"help": "Plain text (one passage per line), SQuAD JSON (its contexts) or TSV/CSV/JSONL."},
    )
    text_columns: list[str] = field(
        default_factory=lambda: ["sentence"],
        metadata={"help": "The text column(s) of TSV/CSV/JSONL files (a pair's texts are two passages)."},
    )
    output_dir: str = field(default="", metadata={"help": "Run folder: config, log, model, metrics."})
    num_registers: int = field(default=0, metadata={"help": "Number of register tokens (τ)."})
    register_placement: str = field(default="prepend", metadata={"help": "'prepend' or 'after_cls'."})
    register_init: str = field(
        default="trunc_normal",
        metadata={"help": "How the registers start (as regtune train's --register-init)."},
    )
    register_lr: float | None = field(default=None, metadata={"help": "LR of the registers (None: --lr)."})
    epochs: float = field(default=1.0, metadata={"help": "Passes over the training windows."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (-1: use --epochs)."})
    batch_size: int = field(default=32, metadata={"help": "Windows per step (per process)."})
    lr: float = field(default=5e-5, metadata={"help": "Peak learning rate (AdamW, linear decay)."})
    weight_decay: float = field(
        default=0.01, metadata={"help": "AdamW weight decay (not on bias/LN/registers)."}
    )
    warmup_ratio: float = field(default=0.06, metadata={"help": "Fraction of steps with linear warm-up."})
    seed: int = field(default=42, metadata={"help": "Seed for the head, registers, masks and data order."})
    max_length: int = field(
        default=128, metadata={"help": "Tokens per window; longer passages are cut into several windows."}
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "Fraction of tokens masked (BERT's)."})
    heldout_fraction: float = field(
        default=0.05, metadata={"help": "Fraction of passages held out to score the MLM loss (by text hash)."}
    )
    save_steps: int = field(default=200, metadata={"help": "Checkpoint every this many steps."})
    logging_steps: int = field(default=10, metadata={"help": "Log loss and LR every this many steps."})
    report_to: str = field(default="tensorboard", metadata={"help": "As regtune train's --report-to."})
    precision: str = field(default="auto", metadata={"help": "'auto', 'bf16' or 'fp32' (see regtune train)."})
    attn_implementation: str = field(default="auto", metadata={"help": "'auto', 'sdpa' or 'eager'."})

    def __post_init__(self) -> None:
        for name in ("batch_size", "save_steps", "logging_steps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_length < 8:
            raise ConfigError(f"max_length must be at least 8 tokens, got {self.max_length}")
        if self.lr <= 0 or (self.register_lr is not None and self.register_lr <= 0):
            raise ConfigError("learning rates must be > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("give --epochs > 0 or --max-steps > 0")
        if not 0 < self.mlm_probability < 1:
            raise ConfigError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if not 0 < self.heldout_fraction <= 0.5:
            raise ConfigError(f"heldout_fraction must be in (0, 0.5], got {self.heldout_fraction}")
        check_precision(self.precision)
        check_attn_implementation(self.attn_implementation)
        self.registers()  # count, placement and init, by the register module's own rules

    @property
    def group_by_length(self) -> bool:
        """Windows are drawn in random order, as in BERT's pretraining (read by training_arguments)."""
        return False

    def registers(self) -> RegisterConfig:
        return RegisterConfig(
            num_registers=self.num_registers, placement=self.register_placement, init=self.register_init
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainConfig:
        check_known_fields(cls, data, "pretrain config keys")
        return cls(**data)


def pretrain_field_help(name: str) -> str:
    """A PretrainConfig field's help text and default, for the command line."""
    field_ = next(f for f in fields(PretrainConfig) if f.name == name)
    default = field_.default_factory() if callable(field_.default_factory) else field_.default  # type: ignore[misc]
    return f"{field_.metadata['help']} (default: {default})"
