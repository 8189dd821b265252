"""Register tuning: train the registers and the task head only, and save just those tensors.

With ``--train-only registers+head`` the encoder stays frozen, so a trained model differs from its base
model only in the register module and the new task head: a few thousand parameters where the model has
millions. Like a PEFT adapter, the saved folder holds only those (``adapter_model.safetensors``), with
the full model config and a ``regtune_adapter.json`` that names the base model; :func:`load_adapter`
(called by :func:`regtune.load_model`) loads the base weights and puts the trained tensors back.

Why not PEFT itself: PEFT adapters wrap layers (LoRA) or prepend virtual tokens (prompt tuning); the
registers are already their own module, and the head is a plain layer, so a list of tensors is all there
is to save. ``peft`` users can still train registers inside a PEFT model (see the README).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, PreTrainedModel

from regtune.core.errors import ConfigError, RegtuneError

#: Values of ``--train-only``: everything, or the registers and the task head with the encoder frozen.
TRAIN_ONLY = ("all", "registers+head")
ADAPTER_FILE = "regtune_adapter.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FORMAT = "regtune-adapter/1"


def check_train_only(value: str) -> None:
    if value not in TRAIN_ONLY:
        raise ConfigError(f"train_only must be one of {list(TRAIN_ONLY)}, got {value!r}")


def freeze_all_but_registers_and_head(model: PreTrainedModel) -> list[str]:
    """Freeze every parameter of the bare transformer except the register module; returns the names of
    the parameters that still train (registers, and everything outside the base model: the task head).

    A head tied to the input embeddings (a causal LM's ``lm_head``) is the embedding matrix itself, part of
    the base model, so it stays frozen too.
    """
    from regtune.core.registers import register_parameters

    base_ids = {id(p) for p in model.base_model.parameters()}
    register_ids = {id(p) for p in register_parameters(model) if p.numel()}
    trained = []
    for name, parameter in model.named_parameters():
        keep = id(parameter) in register_ids or id(parameter) not in base_ids
        parameter.requires_grad_(keep)
        if keep:
            trained.append(name)
    return trained


def base_reference(model_name: str) -> str:
    """How an adapter folder names its base: a local folder as an absolute path, a short name or a Hub
    id as given (resolved again when the adapter is loaded)."""
    path = Path(model_name).expanduser()
    return str(path.resolve()) if path.exists() else model_name


def save_trained_only(model: PreTrainedModel, folder: Path, base_model: str) -> list[str]:
    """Write the model's config, its trainable tensors and ``regtune_adapter.json`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    trained = {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}
    if not trained:
        raise RegtuneError("nothing to save: no parameter of the model is trainable")
    # The config still names the base's class (e.g. BertModel) unless a Trainer checkpoint has renamed it;
    # load_adapter builds the class named here, so name the task model's own.
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(folder)
    save_file(trained, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    meta = {"format": ADAPTER_FORMAT, "base_model": base_model, "tensors": sorted(trained)}
    (folder / ADAPTER_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return sorted(trained)


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_FILE).is_file()


def load_adapter(path: str | Path, **from_pretrained_kwargs: Any) -> PreTrainedModel:
    """The model an adapter folder describes: its base model's weights plus the saved trained tensors."""
    from regtune.core.registers import CONFIG_KEY, RegisterConfig, _attach

    path = Path(path)
    model, info = load_base_model(
        path, ADAPTER_FILE, "base_model", "regtune adapter", **from_pretrained_kwargs
    )
    config = model.config
    _attach(model, RegisterConfig.from_dict(getattr(config, CONFIG_KEY, None) or {}), initialize=False)
    _put_tensors(model, load_file(str(path / ADAPTER_WEIGHTS)), info.get("missing_keys", []), path)
    return model


def load_base_model(
    path: Path, meta_file: str, base_key: str, what: str, **from_pretrained_kwargs: Any
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """The task model an adapter folder describes, holding its base model's weights (the head still new):
    the class and config from the folder's ``config.json``, the base named under ``base_key`` in its
    ``meta_file``. Shared by regtune's adapters and PEFT's (regtune.core.peft_adapter)."""
    import transformers

    from regtune.core.hub import resolve_model_name
    from regtune.core.registers import _quiet_transformers

    try:
        meta = json.loads((path / meta_file).read_text(encoding="utf-8"))
        base = resolve_model_name(meta[base_key])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RegtuneError(f"{path / meta_file}: not a readable {what} ({err})") from err
    config = AutoConfig.from_pretrained(path)
    model_cls = getattr(transformers, (config.architectures or [""])[0], None)
    if model_cls is None:
        raise RegtuneError(f"{path}: config.json names no known architecture ({config.architectures})")
    from_pretrained_kwargs.update(use_safetensors=True, trust_remote_code=False)
    with _quiet_transformers():  # the head is new on the base: the adapter holds its trained copy
        loaded = model_cls.from_pretrained(
            base, config=config, output_loading_info=True, **from_pretrained_kwargs
        )
    return loaded


def _put_tensors(model: nn.Module, tensors: dict[str, torch.Tensor], missing: list[str], path: Path) -> None:
    """Copy the adapter's tensors in; every weight the base lacked (the head) must be among them."""
    names = dict(model.named_parameters())
    unknown = sorted(set(tensors) - set(names))
    uncovered = sorted(set(missing) - set(tensors))
    if unknown or uncovered:
        raise RegtuneError(
            f"{path}: adapter does not fit its base model: unknown tensors {unknown[:5]}, "
            f"base weights missing and not in the adapter {uncovered[:5]}"
        )
    with torch.no_grad():
        for name, value in tensors.items():
            names[name].copy_(value.to(names[name].dtype))
