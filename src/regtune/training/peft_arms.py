"""The PEFT arms of the few-parameter comparison (issue #14 §1.1): ``regtune train --peft lora|prompt``.

Three ways to train few parameters of a frozen encoder, each with the task head:

- register tuning, ``--train-only registers+head`` (regtune's own, :mod:`regtune.core.adapter`):
  τ×H register values; the registers get no position embedding, so the text keeps positions 0..N-1;
- prompt tuning, ``--peft prompt --peft-size n`` (Lester et al. 2021, https://arxiv.org/abs/2104.08691):
  n×H virtual-token embeddings prepended to the input embeddings, so they take positions 0..n-1 and
  the text n..n+N-1;
- LoRA, ``--peft lora --peft-size r`` (Hu et al. 2021, https://arxiv.org/abs/2106.09685): a rank-r
  update B·A (2·r·H values) on the attention query and value projections of every layer.

Both PEFT arms are the real ``peft`` library's (``get_peft_model``); regtune only corrects where PEFT's
task wrappers misplace the text (:func:`regtune.core.peft_adapter.align_with_text`). The head trains
through PEFT's ``modules_to_save``, which its QA and classification wrappers fill with the head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from regtune.core.auto import family_type
from regtune.core.errors import ConfigError, RegtuneError
from regtune.core.peft_adapter import align_with_text, quiet_peft
from regtune.core.registers import MODULE_NAME

if TYPE_CHECKING:
    from regtune.tasks.base import Task
    from regtune.training.config import TrainConfig

#: Values of ``--peft``: no PEFT adapter (the model trains as --train-only says), LoRA, prompt tuning.
PEFT_METHODS = ("none", "lora", "prompt")
#: Tasks with a PEFT wrapper that puts their head in ``modules_to_save`` (peft.TaskType names).
PEFT_TASK_TYPES = {"qa": "QUESTION_ANS", "classification": "SEQ_CLS"}
#: LoRA's targets where PEFT has no default for the family; PEFT's own default (the attention query and
#: value projections) for the rest.
LORA_TARGETS = {"distilbert": ["q_lin", "v_lin"]}
#: Position ids RoBERTa-style models reserve before the first token (their padding index + 1).
_POSITION_OFFSET_FAMILIES = ("roberta", "xlm-roberta")


def check_peft(config: TrainConfig) -> None:
    """One-line errors for ``--peft`` settings that cannot run (called by ``TrainConfig``)."""
    if config.peft not in PEFT_METHODS:
        raise ConfigError(f"peft must be one of {list(PEFT_METHODS)}, got {config.peft!r}")
    if config.peft_size < 1:
        raise ConfigError(
            f"peft_size must be >= 1 (LoRA's rank or prompt tuning's tokens), got {config.peft_size}"
        )
    if config.peft == "none":
        return
    if config.task not in PEFT_TASK_TYPES:
        raise ConfigError(f"--peft is for the tasks {', '.join(PEFT_TASK_TYPES)}, not {config.task}")
    if config.train_only != "all":
        raise ConfigError(
            f"--peft {config.peft} and --train-only {config.train_only} are two ways of freezing the "
            "encoder; give one (PEFT already trains only its adapter and the task head)"
        )
    if config.peft == "prompt" and config.num_registers:
        raise ConfigError(
            "--peft prompt is the registers' counterpart (learned tokens with position embeddings); run it "
            "with --registers 0"
        )


def trainable_parameters(model: nn.Module) -> int:
    """Number of values the optimizer updates: parameters with ``requires_grad`` (tied ones once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def apply_peft(model: nn.Module, config: TrainConfig, task: Task) -> nn.Module:
    """Wrap ``model`` (a task model with its registers) in PEFT's ``config.peft`` adapter.

    LoRA: rank ``peft_size`` on the attention query and value projections (PEFT's own default targets
    for BERT-style models), ``lora_alpha`` PEFT's default (8): the LoRA paper scales the update by α/r
    with α fixed, so that a change of r needs no new learning rate; no dropout (PEFT's default).
    Prompt tuning: ``peft_size`` virtual tokens, random init (PEFT's ``PromptTuningInit.RANDOM``).
    Registers (τ > 0, LoRA only) train beside the adapter, listed in ``modules_to_save``.

    Returns:
        The ``PeftModel``, aligned with the text (:func:`~regtune.core.peft_adapter.align_with_text`).
    """
    try:
        from peft import LoraConfig, PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
    except ImportError as err:
        raise RegtuneError("--peft needs the peft library: pip install 'regtune[peft]'") from err
    task_type = TaskType[PEFT_TASK_TYPES[task.name]]
    to_save = [MODULE_NAME] if config.num_registers else None  # PEFT adds the head itself
    hf_config = model.config
    if config.peft == "lora":
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

        family = family_type(hf_config)  # not model_type: a model with registers saves as regtune_<family>
        targets = LORA_TARGETS.get(family) or DEFAULTS.get(family)
        if targets is None:
            raise RegtuneError(f"--peft lora: PEFT knows no attention projections of {family} models")
        peft_config = LoraConfig(
            task_type=task_type, r=config.peft_size, target_modules=list(targets), modules_to_save=to_save
        )
    else:
        _check_positions(hf_config, config)
        peft_config = PromptTuningConfig(
            task_type=task_type,
            num_virtual_tokens=config.peft_size,
            prompt_tuning_init=PromptTuningInit.RANDOM,
            # Given, not looked up: PEFT cannot read DistilBERT's config names, and ELECTRA's virtual tokens
            # join its word embeddings before their projection to hidden_size.
            token_dim=model.get_input_embeddings().embedding_dim,
            num_layers=hf_config.num_hidden_layers,
            num_attention_heads=hf_config.num_attention_heads,
        )
    with quiet_peft():
        peft_model = get_peft_model(model, peft_config)
    return align_with_text(peft_model)


def _check_positions(hf_config: object, config: TrainConfig) -> None:
    """Prompt tuning's virtual tokens take position ids: n + --max-length must fit the model's table."""
    limit = hf_config.max_position_embeddings
    if family_type(hf_config) in _POSITION_OFFSET_FAMILIES:
        limit -= hf_config.pad_token_id + 1
    if config.peft_size + config.max_length > limit:
        raise ConfigError(
            f"--peft prompt: {config.peft_size} virtual tokens + --max-length {config.max_length} exceed the "
            f"model's {limit} positions; lower --max-length to {limit - config.peft_size}"
        )
