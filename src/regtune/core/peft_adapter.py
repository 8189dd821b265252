"""PEFT adapters (LoRA, prompt tuning) on regtune's encoders: text-aligned outputs, saved and loaded.

regtune trains the real ``peft`` library's LoRA and prompt tuning (``regtune train --peft``; the
training side is :mod:`regtune.training.peft_arms`). Two things PEFT's task wrappers do (checked on
peft 0.21; ``tests/test_peft_arms.py`` fails once they change) would make those arms wrong here:

1. **Prompt tuning shifts every position.** PEFT prepends ``n`` virtual-token embeddings to the input
   embeddings, so the model sees (B, n+N) with the text at positions n..n+N-1, and hands the task head
   all n+N rows. QA then returns n+N start/end logits and scores ``start_positions``/``end_positions``
   (text indices) against them unshifted: every label points n tokens too early. A classifier's head
   (BERT's pooler on row 0, RoBERTa/ELECTRA/DistilBERT's head on row 0) reads a virtual token, not
   ``[CLS]``.
2. **PEFT's QA wrapper drops ``token_type_ids``** (a named argument of its ``forward`` that it never
   passes on), for LoRA and prompt tuning alike: BERT then reads the question and the context as one
   segment.

:func:`align_with_text` fixes both with hooks on the PEFT model, the same way the register hooks cut
registers (:mod:`regtune.core.registers`): the rows in front of the text are cut off the bare encoder's
output and the pooler's input, (B, n+N, H) -> (B, N, H), so every head reads the text only, QA logits
are (B, N) and the model's own loss reads label s at text token s; the token types reach the model, with
type 0 for the virtual tokens (what PEFT's classification wrapper gives them). The text still sits at
positions n.. : that is what prompt tuning is.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from regtune.core.errors import RegtuneError

#: The file PEFT's ``save_pretrained`` writes beside ``adapter_model.safetensors``.
PEFT_CONFIG_FILE = "adapter_config.json"
#: Attribute of a PEFT model whose outputs :func:`align_with_text` has aligned.
_ALIGNED = "_regtune_text_alignment"


def is_peft_model(model: nn.Module) -> bool:
    """Whether ``model`` is a ``peft.PeftModel`` (False where peft is not installed: then none can be)."""
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def is_peft_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :func:`save_peft_adapter` (PEFT's adapter files)."""
    return (Path(path) / PEFT_CONFIG_FILE).is_file()


@dataclass
class _Call:
    """What the PEFT model's own forward received, for the hooks further in (one forward at a time)."""

    text_length: int | None = None  # N, the text tokens of the input
    token_type_ids: torch.Tensor | None = None  # (B, N), taken from a QA wrapper that would drop them

    def clear(self) -> None:
        self.text_length, self.token_type_ids = None, None


def _length(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else int(tensor.shape[1])


def _front_rows(hidden: torch.Tensor, call: _Call) -> int:
    """How many rows sit before the text in ``hidden`` (B, n+N, H): PEFT's virtual tokens (0 for LoRA, or
    outside a PEFT forward)."""
    if call.text_length is None:
        return 0
    extra = hidden.shape[1] - call.text_length
    if extra < 0:
        raise RegtuneError(f"the encoder returned {hidden.shape[1]} rows for {call.text_length} text tokens")
    return extra


def align_with_text(model: nn.Module) -> nn.Module:
    """Make a PEFT model's outputs cover the text only, and keep its token types (see the module doc).

    Args:
        model: a ``PeftModel`` (LoRA or prompt tuning) around one of regtune's encoders with a task head,
            registers attached (τ may be 0).

    Returns:
        The same model, hooked: heads read (B, N, H), QA logits are (B, N), the pooler reads ``[CLS]``.
        Hidden states and attentions (``output_hidden_states``) keep PEFT's n+N rows.
    """
    if not is_peft_model(model):
        raise RegtuneError(f"{type(model).__name__} is not a PEFT model")
    if getattr(model, _ALIGNED, None) is not None:
        return model
    from peft import PeftModelForQuestionAnswering

    inner = model.get_base_model()  # the transformers task model, e.g. BertForQuestionAnswering
    bare = inner.base_model  # BertModel: its output and its pooler's input carry the virtual rows
    call = _Call()
    drops_types = isinstance(model, PeftModelForQuestionAnswering)

    def remember(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        call.clear()
        ids = kwargs.get("input_ids", args[0] if args else None)
        call.text_length = _length(ids if ids is not None else kwargs.get("inputs_embeds"))
        if drops_types:  # held here, handed to the task model below, where PEFT would have lost them
            call.token_type_ids = kwargs.pop("token_type_ids", None)
        return args, kwargs

    def restore_types(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        types = call.token_type_ids
        if types is not None and kwargs.get("token_type_ids") is None:
            # Prompt tuning hands the model inputs_embeds (B, n+N, H); LoRA hands it input_ids (B, N).
            seen = kwargs.get("inputs_embeds")
            seen = kwargs.get("input_ids") if seen is None else seen
            front = (seen.shape[1] if seen is not None else types.shape[1]) - types.shape[1]
            kwargs["token_type_ids"] = nn.functional.pad(types, (front, 0))  # (B, n+N): type 0 in front
        return args, kwargs

    def pooler_text_only(_module: nn.Module, args: tuple) -> tuple:
        return (args[0][:, _front_rows(args[0], call) :], *args[1:])

    def drop_front_rows(_module: nn.Module, _args: tuple, output: Any) -> Any:
        if isinstance(output, tuple):
            return (output[0][:, _front_rows(output[0], call) :], *output[1:])
        hidden = output.last_hidden_state
        output.last_hidden_state = hidden[:, _front_rows(hidden, call) :]
        return output

    model.register_forward_pre_hook(remember, with_kwargs=True)
    model.register_forward_hook(lambda *_: call.clear(), always_call=True)
    inner.register_forward_pre_hook(restore_types, with_kwargs=True)
    pooler = getattr(bare, "pooler", None)
    if isinstance(pooler, nn.Module):
        pooler.register_forward_pre_hook(pooler_text_only)
    bare.register_forward_hook(drop_front_rows)  # registered after the register hooks: runs after them
    setattr(model, _ALIGNED, call)
    return model


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """Hide the deprecation PEFT triggers in transformers (``is_gradient_checkpointing``) while it wraps
    a model: a note for PEFT's authors, not for the user of a training run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def save_peft_adapter(model: nn.Module, folder: Path, base_model: str) -> None:
    """Write PEFT's adapter (``adapter_config.json`` naming ``base_model``, ``adapter_model.safetensors``
    with the adapter and the ``modules_to_save`` copies: task head, registers) and the task model's
    ``config.json`` (labels, task, registers, settings) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for peft_config in model.peft_config.values():
        peft_config.base_model_name_or_path = base_model  # resolved again when loaded
    # The token embeddings never train under --peft (LoRA adapts query/value, prompt tuning has its own
    # prompt module), so PEFT need not check whether to save them; its "auto" check looks the base model
    # up by name, cannot resolve a regtune alias such as "minilm-l6", and warns on every save.
    model.save_pretrained(folder, save_embedding_layers=False)
    inner = model.get_base_model()
    inner.config.architectures = [type(inner).__name__]  # the head load_peft_adapter rebuilds
    inner.config.save_pretrained(folder)


def load_peft_adapter(path: str | Path, **from_pretrained_kwargs: Any) -> nn.Module:
    """The model a :func:`save_peft_adapter` folder describes: its base model's weights, the task head
    class from ``config.json``, the registers it was trained with, then PEFT's adapter and
    :func:`align_with_text`. Inference mode: nothing trains."""
    from peft import PeftModel

    from regtune.core.adapter import load_base_model
    from regtune.core.registers import CONFIG_KEY, RegisterConfig, _attach, get_register_module

    path = Path(path)
    model, _ = load_base_model(
        path, PEFT_CONFIG_FILE, "base_model_name_or_path", "PEFT adapter", **from_pretrained_kwargs
    )
    config = model.config
    if get_register_module(model) is None:
        # Initialised, not left empty: the adapter's modules_to_save copy is the one in use, but
        # disable_adapter() would read these.
        _attach(model, RegisterConfig.from_dict(getattr(config, CONFIG_KEY, None) or {}), initialize=True)
    with quiet_peft():
        peft = PeftModel.from_pretrained(model, path).eval()
    peft.requires_grad_(False)  # PEFT leaves a loaded prompt encoder trainable; this model is for inference
    return align_with_text(peft)
