"""Register tokens for any Hugging Face encoder: the one mechanism, attached to the stock model.

Registers (Darcet et al. 2024, "Vision Transformers Need Registers", https://arxiv.org/abs/2309.16588)
are ``num_registers`` learned vectors that sit between the embedding layer's output and the first
transformer layer. They carry no input content and get no position or token-type embedding, so the
text keeps all of its positions.

How it attaches (no HF model code is copied; four hooks on stock modules):

1. a forward pre-hook on the base encoder (``model.base_model``) gives the 2-D attention mask
   ``num_registers`` ones, (B, N) -> (B, R+N), before the model turns it into a 4-D mask;
2. a forward hook on the *entry* module (the embeddings, or ELECTRA's ``embeddings_project`` when
   ``embedding_size != hidden_size``) inserts the registers into its output, (B, N, H) -> (B, R+N, H);
3. a forward pre-hook on the pooler, where there is one, hands it the text part only, so it reads
   ``[CLS]`` whatever the placement;
4. a forward hook on the base encoder cuts the registers off ``last_hidden_state``, (B, R+N, H) -> (B, N, H),
   so every task head (QA, classification) sees text tokens only and can never predict a register.

``output_hidden_states`` and eager ``output_attentions`` are collected inside the base model, before
hook 4, so they keep the registers (length R+N); :func:`split_registers` separates the two parts.

With ``num_registers=0`` the same hooks run and change nothing, so τ=0 is the stock model.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from transformers import AutoConfig, PreTrainedModel

from regtune.core.auto import family_type, mark_register_model, register_auto_classes
from regtune.core.causal import attach_causal
from regtune.core.errors import ConfigError, RegtuneError, check_known_fields
from regtune.core.hub import resolve_model_name

logger = logging.getLogger(__name__)

#: Key under which the register settings are stored in the saved ``config.json``.
CONFIG_KEY = "regtune_registers"
#: Attribute name of the register module on the base encoder (state-dict key ``<prefix>.registers.tokens``).
MODULE_NAME = "registers"


class RegisterPlacement(StrEnum):
    """Where the registers go in the sequence the transformer layers see."""

    PREPEND = "prepend"  # [REG]*R [CLS] text... (the seed's layout)
    AFTER_CLS = "after_cls"  # [CLS] [REG]*R text... ([CLS] stays at index 0 of the full sequence)


class RegisterInit(StrEnum):
    """How the register vectors start."""

    TRUNC_NORMAL = "trunc_normal"  # std 0.02, truncated at 2 std (the seed's)
    TINY_NORMAL = "tiny_normal"  # std 1e-6 (DINOv2 / timm)
    VOCAB = "vocab"  # embedding-layer outputs of randomly sampled tokens: the scale of real tokens
    # Orthonormal directions times the mean norm of real token vectors: distinct slots from step 0, at the
    # scale the first layer expects (issue #14: symmetric slots get identical updates).
    ORTHOGONAL = "orthogonal"


class RegisterDepth(StrEnum):
    """Which layers read learned register vectors."""

    INPUT = "input"  # registers enter once, before the first layer; later layers read their outputs
    # Every layer reads its own learned vectors in the register rows, instead of the previous layer's
    # register outputs (P-tuning v2's deep prompts, on registers). Encoders only.
    ALL = "all"


#: Tokens sampled to measure the norm of real token vectors (orthogonal init); all of a smaller vocabulary.
NORM_SAMPLE = 1024
#: The slot identity starts orthonormal at this norm per unit of sqrt(H): a std-0.02 vector's norm, as
#: BERT initialises position embeddings. Small against token vectors, so it does not drown the content.
IDENTITY_SCALE = 0.02


_DEFAULT_STD = {RegisterInit.TRUNC_NORMAL: 0.02, RegisterInit.TINY_NORMAL: 1e-6}


@dataclass
class RegisterConfig:
    """Register settings; stored in the model config under ``regtune_registers`` when saved."""

    num_registers: int = field(default=0, metadata={"help": "Number of learned register tokens (τ)."})
    placement: RegisterPlacement = field(
        default=RegisterPlacement.PREPEND,
        metadata={"help": "'prepend' (before [CLS], the seed's) or 'after_cls' ([CLS] stays first)."},
    )
    init: RegisterInit = field(
        default=RegisterInit.TRUNC_NORMAL,
        metadata={"help": "'trunc_normal' (std 0.02), 'tiny_normal' (std 1e-6) or 'vocab' (token scale)."},
    )
    init_std: float | None = field(
        default=None, metadata={"help": "Override the std of the normal inits; None uses the init's default."}
    )
    depth: RegisterDepth = field(
        default=RegisterDepth.INPUT,
        metadata={
            "help": "'input' (registers enter once) or 'all' (every layer reads its own learned ones)."
        },
    )
    slot_identity: bool = field(
        default=False,
        metadata={"help": "Add a learned per-slot vector to each register row before every layer."},
    )

    def __post_init__(self) -> None:
        if isinstance(self.num_registers, bool) or not isinstance(self.num_registers, int):
            raise ConfigError(f"num_registers must be an integer, got {self.num_registers!r}")
        if self.num_registers < 0:
            raise ConfigError(f"num_registers must be >= 0, got {self.num_registers}")
        try:
            self.placement = RegisterPlacement(self.placement)
        except ValueError:
            options = [p.value for p in RegisterPlacement]
            raise ConfigError(f"placement must be one of {options}, got {self.placement!r}") from None
        try:
            self.init = RegisterInit(self.init)
        except ValueError:
            options = [i.value for i in RegisterInit]
            raise ConfigError(f"init must be one of {options}, got {self.init!r}") from None
        if self.init_std is not None and not self.init_std > 0:
            raise ConfigError(f"init_std must be > 0, got {self.init_std}")
        try:
            self.depth = RegisterDepth(self.depth)
        except ValueError:
            options = [d.value for d in RegisterDepth]
            raise ConfigError(f"depth must be one of {options}, got {self.depth!r}") from None
        if not isinstance(self.slot_identity, bool):
            raise ConfigError(f"slot_identity must be true or false, got {self.slot_identity!r}")

    @property
    def per_layer(self) -> bool:
        """Whether each layer edits the register rows it reads (deep registers or the slot identity)."""
        return self.num_registers > 0 and (self.depth is RegisterDepth.ALL or self.slot_identity)

    @property
    def deep(self) -> bool:
        """Whether layers after the first read their own learned register rows (``depth='all'``, τ > 0)."""
        return self.num_registers > 0 and self.depth is RegisterDepth.ALL

    @property
    def insert_at(self) -> int:
        """Index of the first register in the full (registers + text) sequence."""
        return 0 if self.placement is RegisterPlacement.PREPEND else 1

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["placement"] = self.placement.value
        out["init"] = self.init.value
        out["depth"] = self.depth.value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegisterConfig:
        check_known_fields(cls, data, "register settings")
        return cls(**data)


class RegisterTokens(nn.Module):
    """The learned register vectors and the sequence edits that place them.

    Attributes:
        tokens: (R, H) parameter, one row per register: what the first layer reads.
        layer_tokens: (L-1, R, H) parameter with ``depth='all'``: what layers 1..L-1 read in the register
            rows instead of the previous layer's register outputs; None otherwise.
        slot_identity: (R, H) parameter with ``slot_identity``: added to the register rows before every
            layer, so that slots stay distinguishable however alike their contents become; None otherwise.
    """

    def __init__(self, config: RegisterConfig, hidden_size: int, num_layers: int = 1) -> None:
        super().__init__()
        self.config = config
        r = config.num_registers
        # At τ=0 the (0, H) tensor is never used in a forward pass. DDP (find_unused_parameters=False, the
        # Trainer's setting) fails on a parameter that requires grad and gets none, so it takes no grad.
        self.tokens = nn.Parameter(torch.empty(r, hidden_size), requires_grad=r > 0)
        deep = config.deep and num_layers > 1
        self.layer_tokens = nn.Parameter(torch.empty(num_layers - 1, r, hidden_size)) if deep else None
        identity = config.per_layer and config.slot_identity
        self.slot_identity = nn.Parameter(torch.empty(r, hidden_size)) if identity else None
        # Set only inside `register_intervention` (ablations, attribution baselines); never saved.
        # (R, H) or (B, R, H); with depth='all' (D, R, H) or (B, D, R, H), one row set per layer.
        self.values_override: torch.Tensor | None = None
        self.keep_override: torch.Tensor | None = None  # (R,) bool; False masks a register out

    @property
    def num_registers(self) -> int:
        return self.config.num_registers

    @property
    def depths(self) -> int:
        """D, the number of learned register row sets: the number of layers with depth='all', else 1."""
        return 1 if self.layer_tokens is None else 1 + self.layer_tokens.shape[0]

    @property
    def rows_shape(self) -> tuple[int, ...]:
        """(R, H), or (D, R, H) with depth='all': the shape of :meth:`learned_rows` and of an override."""
        r_h = tuple(self.tokens.shape)
        return r_h if self.layer_tokens is None else (self.depths, *r_h)

    def learned_rows(self) -> torch.Tensor:
        """The learned register vectors, detached: (R, H), or (D, R, H) with depth='all' (layer d reads [d]).

        The shape a values override of :func:`register_intervention` takes; the slot identity is not part
        of it (an override replaces the registers' content, not their slot's address).
        """
        if self.layer_tokens is None:
            return self.tokens.detach()
        return torch.cat([self.tokens.detach()[None], self.layer_tokens.detach()], dim=0)

    def _override_at(self, depth: int) -> torch.Tensor | None:
        """The override's rows for one depth: (R, H) or (B, R, H); None without an override."""
        values = self.values_override
        if values is None or self.layer_tokens is None:
            return values
        return values[..., depth, :, :]

    def insert(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, N, H) -> (B, R+N, H), registers at ``config.insert_at``."""
        if self.num_registers == 0:
            return hidden  # τ=0 costs nothing, not even a copy
        at = self.config.insert_at
        override = self._override_at(0)
        regs = self.tokens if override is None else override
        if regs.dim() == 2:
            regs = regs.unsqueeze(0)
        # to the device too: under DataParallel an override tensor stays where it was made
        regs = regs.to(hidden.device, hidden.dtype).expand(hidden.shape[0], -1, -1)  # (B, R, H)
        return torch.cat([hidden[:, :at], regs, hidden[:, at:]], dim=1)

    def enter_layer(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        """(B, R+N, H) -> (B, R+N, H): the register rows layer ``index`` reads.

        With ``depth='all'``, layers after the first read ``layer_tokens[index - 1]`` there (or the values
        override's row set ``index``); with the slot identity, every layer reads its rows plus
        ``slot_identity``. A keep override masks registers in every layer (through the attention mask).
        """
        if not self.config.per_layer:
            return hidden
        at, r = self.config.insert_at, self.num_registers
        rows = hidden[:, at : at + r]  # (B, R, H)
        if self.layer_tokens is not None and index > 0:
            override = self._override_at(index)
            learned = self.layer_tokens[index - 1] if override is None else override
            rows = learned.to(hidden.device, hidden.dtype).expand(hidden.shape[0], -1, -1)  # (B, R, H)
        if self.slot_identity is not None:
            rows = rows + self.slot_identity.to(hidden.dtype)
        return torch.cat([hidden[:, :at], rows, hidden[:, at + r :]], dim=1)

    def extend_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (B, R+N): every token attends to every register and back."""
        if self.num_registers == 0:
            return mask
        at = self.config.insert_at
        ones = mask.new_ones(mask.shape[0], self.num_registers)
        if self.keep_override is not None:
            ones = ones * self.keep_override.to(device=mask.device, dtype=mask.dtype)
        return torch.cat([mask[:, :at], ones, mask[:, at:]], dim=1)

    def extra_repr(self) -> str:
        extra = f", depth={self.config.depth.value}" if self.layer_tokens is not None else ""
        extra += ", slot_identity=True" if self.slot_identity is not None else ""
        return f"num_registers={self.num_registers}, placement={self.config.placement.value}{extra}"


@contextlib.contextmanager
def register_intervention(
    model: nn.Module,
    *,
    values: torch.Tensor | None = None,
    keep: torch.Tensor | list[bool] | None = None,
) -> Iterator[None]:
    """Run ``model`` with its registers replaced or masked out, for ablations and attribution baselines.

    Args:
        model: a model returned by :func:`add_registers` or :func:`load_model`.
        values: used instead of the learned vectors: (R, H) for every row of a batch, or (B, R, H) one set
            per row; with ``depth='all'`` one set per layer, (D, R, H) or (B, D, R, H) (the shape of
            ``RegisterTokens.learned_rows``): on such a model a 3-D tensor is always read as (D, R, H),
            never as a batch, so give one row set per example as (B, D, R, H). Gradients flow into it,
            not into the learned tokens. The slot identity, if any, is still added: it is the slot's
            address, not its content.
        keep: (R,) booleans; a False register is masked out of attention (no token can attend to it), as if
            it were padding.

    The learned tokens are untouched, and the override is removed when the block exits, even on error.
    """
    module = get_register_module(model)
    if module is None or module.num_registers == 0:
        if (values is not None and values.numel()) or (keep is not None and len(keep)):
            raise RegtuneError("this model has no registers to replace or mask")
        yield
        return
    rows = module.rows_shape  # (R, H), or (D, R, H) with depth='all'
    if values is not None and (
        values.dim() not in (len(rows), len(rows) + 1) or tuple(values.shape[-len(rows) :]) != rows
    ):
        names = "(R, H)" if len(rows) == 2 else "(D, R, H), one set per layer,"
        expected = ", ".join(map(str, rows))
        raise RegtuneError(
            f"register values must have shape {names} or a batch of them: (..., {expected}), "
            f"got {tuple(values.shape)}"
        )
    r = rows[-2]
    keep_tensor = None if keep is None else torch.as_tensor(keep, dtype=torch.bool).flatten()
    if keep_tensor is not None and keep_tensor.numel() != r:
        raise RegtuneError(f"keep needs one flag per register ({r}), got {keep_tensor.numel()}")
    previous = module.values_override, module.keep_override
    module.values_override, module.keep_override = values, keep_tensor
    try:
        yield
    finally:
        module.values_override, module.keep_override = previous


def register_slice(
    num_registers: int, placement: RegisterPlacement | str = RegisterPlacement.PREPEND
) -> slice:
    """Positions of the registers in a full (registers + text) sequence."""
    at = RegisterConfig(num_registers=num_registers, placement=placement).insert_at
    return slice(at, at + num_registers)


def full_position(registers: int | RegisterConfig | nn.Module, text_index: int) -> int:
    """Index in the full (registers + text) sequence of text token ``text_index``."""
    config = _resolve_config(registers)
    return text_index if text_index < config.insert_at else text_index + config.num_registers


def _resolve_config(registers: int | RegisterConfig | nn.Module) -> RegisterConfig:
    if isinstance(registers, RegisterConfig):
        return registers
    if isinstance(registers, nn.Module):
        return get_register_config(registers)
    return RegisterConfig(num_registers=registers)


def split_registers(
    tensor: torch.Tensor, registers: int | RegisterConfig | nn.Module, dim: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a full-sequence tensor into its register part and its text part along ``dim``.

    Works on any tensor whose ``dim`` runs over the R+N positions: hidden states (B, R+N, H) with
    ``dim=1``; attentions (B, heads, R+N, R+N) with ``dim=-1`` (keys) or ``dim=-2`` (queries).

    Args:
        tensor: the full-sequence tensor, e.g. one entry of ``outputs.hidden_states``.
        registers: a model returned by :func:`add_registers`, its :class:`RegisterConfig`, or a count
            (then the default ``prepend`` placement is assumed).
        dim: the sequence dimension.

    Returns:
        ``(register_part, text_part)``; register_part has size R along ``dim``, text_part N.
    """
    config = _resolve_config(registers)
    at, r = config.insert_at, config.num_registers
    n_total = tensor.shape[dim]
    if n_total < r + at:
        raise ValueError(f"sequence dimension {dim} has {n_total} positions, fewer than the {r} registers")
    regs = tensor.narrow(dim, at, r)
    if at == 0 or r == 0:  # the text is one contiguous block: a view, no copy
        return regs, tensor.narrow(dim, r, n_total - r)
    text = torch.cat([tensor.narrow(dim, 0, at), tensor.narrow(dim, at + r, n_total - at - r)], dim=dim)
    return regs, text


def register_similarity(hidden: torch.Tensor, registers: int | RegisterConfig | nn.Module) -> torch.Tensor:
    """Mean off-diagonal cosine similarity of the registers in each sequence: (B, R+N, H) -> (B,).

    The register diversity figure of a run (issue #14): 1 when the registers are copies of one vector
    (what registers added at fine-tuning became on MiniLM), about 0 when they point apart. Needs R >= 2.
    """
    regs, _ = split_registers(hidden, registers)  # (B, R, H)
    r = regs.shape[1]
    if r < 2:
        raise ValueError(f"register similarity needs at least 2 registers, got {r}")
    unit = nn.functional.normalize(regs.float(), dim=-1)
    cosine = unit @ unit.transpose(1, 2)  # (B, R, R)
    return (cosine.sum(dim=(1, 2)) - cosine.diagonal(dim1=1, dim2=2).sum(dim=-1)) / (r * (r - 1))


#: Encoder families the four encoder hooks handle: absolute learned positions, a 2-D mask argument, and
#: an ``embeddings`` module whose output feeds the first layer. Relative or rotary encoders (DeBERTa-v2,
#: ModernBERT) are not among them: their positions are computed inside the layers.
ENCODER_MODEL_TYPES = ("bert", "distilbert", "electra", "roberta", "xlm-roberta")
#: Decoder-only families whose base model takes ``inputs_embeds``, ``position_ids`` and a 2-D mask and
#: computes RoPE or learned positions from those position ids (see :mod:`regtune.core.causal`).
CAUSAL_MODEL_TYPES = ("gpt2", "llama", "mistral", "qwen2", "qwen3")


register_auto_classes(ENCODER_MODEL_TYPES, CAUSAL_MODEL_TYPES)  # see regtune.core.auto


def _family(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    return family_type(config) if config is not None else None


def is_causal_model(model: nn.Module) -> bool:
    """Whether ``model`` is one of the supported decoder-only families."""
    return _family(model) in CAUSAL_MODEL_TYPES


def check_supported(model: nn.Module) -> None:
    """Refuse, in one line, a model family the register hooks were not written and tested for."""
    model_type = _family(model)
    if model_type not in ENCODER_MODEL_TYPES + CAUSAL_MODEL_TYPES:
        raise RegtuneError(
            f"{type(model).__name__} (model_type {model_type!r}) is not supported; registers work with the "
            f"encoders {', '.join(ENCODER_MODEL_TYPES)} and the causal LMs {', '.join(CAUSAL_MODEL_TYPES)}"
        )


def _entry_module(base: nn.Module) -> nn.Module:
    """The module whose output feeds the first transformer layer, at ``hidden_size``."""
    # ELECTRA projects embeddings (embedding_size) up to hidden_size before the encoder.
    project = getattr(base, "embeddings_project", None)
    if isinstance(project, nn.Module):
        return project
    embeddings = getattr(base, "embeddings", None)
    if not isinstance(embeddings, nn.Module):
        raise RegtuneError(f"{type(base).__name__}: no `embeddings` module found; cannot place registers")
    return embeddings


def _layers(base: nn.Module) -> nn.ModuleList:
    """The transformer layers of a supported encoder, in order."""
    for owner in ("encoder", "transformer"):  # BERT, RoBERTa, XLM-R, ELECTRA; DistilBERT
        layers = getattr(getattr(base, owner, None), "layer", None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise RegtuneError(f"{type(base).__name__}: no encoder layers found; cannot place deep registers")


def entry_module(model: nn.Module) -> nn.Module:
    """The module whose output feeds the first layer: an encoder's embeddings (output with the registers
    already in, (B, R+N, H)), or a causal LM's token embedding table (output without them, (B, N, H):
    decoder registers go in at the prefill, after it)."""
    if is_causal_model(model):
        return _base_model(model).get_input_embeddings()
    return _entry_module(_base_model(model))


def _base_model(model: nn.Module) -> nn.Module:
    """The bare transformer under a task head, and under a PEFT wrapper (``PeftModel``) if there is one."""
    get_base = getattr(model, "get_base_model", None)  # PeftModel -> the wrapped transformers model
    if callable(get_base):
        model = get_base()
    return getattr(model, "base_model", model)


def _in_use(module: object) -> RegisterTokens | None:
    """The register module the hooks use: the module itself, or the active adapter's copy when PEFT's
    ``modules_to_save`` has wrapped it (PEFT trains and saves that copy, one per adapter)."""
    if isinstance(module, RegisterTokens):
        return module
    copies = getattr(module, "modules_to_save", None)  # peft.utils.ModulesToSaveWrapper
    if copies is None:
        return None
    active = [] if module.disable_adapters else [a for a in module.active_adapters if a in copies]
    chosen = copies[active[0]] if active else module.original_module
    return chosen if isinstance(chosen, RegisterTokens) else None


def get_register_module(model: nn.Module) -> RegisterTokens | None:
    """The :class:`RegisterTokens` in use on ``model`` (PEFT's trained copy under LoRA), or None."""
    return _in_use(getattr(_base_model(model), MODULE_NAME, None))


def _live(base: nn.Module) -> RegisterTokens:
    """Looked up at every forward, not captured once: PEFT may have swapped in its trainable copy."""
    module = _in_use(getattr(base, MODULE_NAME, None))
    if module is None:
        raise RegtuneError("the register module was removed from the model")
    return module


def get_register_config(model: nn.Module) -> RegisterConfig:
    """The register settings of ``model``; a model without registers counts as τ=0."""
    module = get_register_module(model)
    return module.config if module is not None else RegisterConfig(num_registers=0)


def register_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The register parameters (no weight decay; optionally their own learning rate)."""
    module = get_register_module(model)
    return list(module.parameters()) if module is not None else []


@torch.no_grad()
def _entry_rows(base: nn.Module, entry: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """What the first layer would read for token ids (B, N): the entry module's output, (B, N, H)."""
    if entry is base.get_input_embeddings():  # a causal LM: its registers replace token embeddings
        return entry(ids)
    embeddings = base.embeddings
    was_training = base.training
    base.eval()  # no dropout in the sampled rows
    try:
        rows = embeddings(input_ids=ids)
        return entry(rows) if entry is not embeddings else rows
    finally:
        base.train(was_training)


def token_vector_norm(base: nn.Module, entry: nn.Module) -> float:
    """Mean L2 norm of real token vectors as the first layer reads them: up to :data:`NORM_SAMPLE` distinct
    random tokens, each alone at position 0 (embeddings, LayerNorm and, for ELECTRA, the projection)."""
    vocab_size = base.get_input_embeddings().num_embeddings
    device = next(entry.parameters()).device
    ids = torch.randperm(vocab_size)[:NORM_SAMPLE].unsqueeze(1).to(device)  # (K, 1)
    return _entry_rows(base, entry, ids)[:, 0].float().norm(dim=-1).mean().item()


def _orthonormal_rows(rows: int, width: int, norm: float) -> torch.Tensor:
    """(rows, width) float32, orthonormal rows (columns when rows > width) times ``norm``.

    Drawn in float32 and copied into the parameter's dtype: torch has no QR for bf16/fp16 on CPU.
    """
    values = torch.empty(rows, width, dtype=torch.float32)
    nn.init.orthogonal_(values)
    return values.mul_(norm)


@torch.no_grad()
def _init_rows(
    tokens: torch.Tensor, config: RegisterConfig, base: nn.Module, entry: nn.Module, norm: float | None
) -> None:
    """Fill one (R, H) block of register vectors by ``config.init`` (``norm``: real tokens' mean norm,
    measured once per module for the orthogonal init)."""
    if config.init is RegisterInit.VOCAB:
        # Distinct token ids, so that every register starts distinct from the others.
        ids = torch.randperm(base.get_input_embeddings().num_embeddings)[: config.num_registers]
        tokens.copy_(_entry_rows(base, entry, ids.unsqueeze(0).to(tokens.device))[0].to(tokens.dtype))
    elif config.init is RegisterInit.ORTHOGONAL:
        # Orthonormal rows when R <= H (else orthonormal columns: R > H vectors cannot all be orthogonal).
        tokens.copy_(_orthonormal_rows(*tokens.shape, norm))
    else:
        std = config.init_std or _DEFAULT_STD[config.init]
        nn.init.trunc_normal_(tokens, mean=0.0, std=std, a=-2 * std, b=2 * std)


@torch.no_grad()
def _init_module(module: RegisterTokens, base: nn.Module, entry: nn.Module) -> None:
    config = module.config
    if config.num_registers == 0:
        return
    norm = token_vector_norm(base, entry) if config.init is RegisterInit.ORTHOGONAL else None
    _init_rows(module.tokens.data, config, base, entry, norm)
    if module.layer_tokens is not None:
        for block in module.layer_tokens.data:  # each layer's (R, H), drawn the same way
            _init_rows(block, config, base, entry, norm)
    if module.slot_identity is not None:
        r, h = module.slot_identity.shape
        module.slot_identity.data.copy_(_orthonormal_rows(r, h, IDENTITY_SCALE * h**0.5))


def _save_with_peft(model: nn.Module) -> None:
    """Registers added to a ``PeftModel`` (LoRA first): list them in every adapter's ``modules_to_save``, so
    that PEFT trains, saves and loads them, exactly as when they were added before ``get_peft_model``."""
    from peft.utils import set_additional_trainable_modules

    for name, peft_config in model.peft_config.items():
        peft_config.modules_to_save = [*(peft_config.modules_to_save or []), MODULE_NAME]
        set_additional_trainable_modules(
            model=model.get_base_model(),
            peft_config=peft_config,
            model_config=model.config.to_dict(),
            adapter_name=name,
            activate_adapter=name in model.active_adapters,
        )


def add_registers(
    model: PreTrainedModel,
    num_registers: int,
    *,
    placement: RegisterPlacement | str = RegisterPlacement.PREPEND,
    init: RegisterInit | str = RegisterInit.TRUNC_NORMAL,
    init_std: float | None = None,
    depth: RegisterDepth | str = RegisterDepth.INPUT,
    slot_identity: bool = False,
) -> PreTrainedModel:
    """Give a stock ``transformers`` encoder or causal LM ``num_registers`` learned register tokens, in place.

    The model keeps its forward inputs and output types. Task logits and losses cover text tokens
    only; ``output_hidden_states`` and eager ``output_attentions`` include the registers (R+N).
    On a causal LM the registers go in once per sequence, before the text, at position
    :data:`~regtune.core.causal.REGISTER_POSITION`; ``generate()`` works unchanged
    (see :mod:`regtune.core.causal`).

    Args:
        model: an encoder of :data:`ENCODER_MODEL_TYPES` (BERT, DistilBERT, ELECTRA, RoBERTa, XLM-R) or a
            causal LM of :data:`CAUSAL_MODEL_TYPES` (GPT-2, Llama, Mistral, Qwen2, Qwen3), bare or with a
            task head (``*ForQuestionAnswering``, ``*ForSequenceClassification``, ``*ForCausalLM``, ...).
        num_registers: τ, the number of registers; 0 leaves the model's outputs unchanged.
        placement: ``prepend`` (default) or ``after_cls``.
        init: ``trunc_normal`` (std 0.02), ``tiny_normal`` (std 1e-6), ``vocab`` (rows of sampled tokens)
            or ``orthogonal`` (orthonormal rows times the mean norm of real token vectors).
        init_std: overrides the std of the normal inits.
        depth: ``input`` (default) or ``all``: every layer reads its own learned register vectors
            (encoders only).
        slot_identity: add a learned per-slot vector to the register rows before every layer (encoders
            only).

    Returns:
        The same model object, with ``model.num_registers`` set and the settings stored in
        ``model.config.regtune_registers`` so that :func:`load_model` can rebuild it.
    """
    config = RegisterConfig(
        num_registers=num_registers,
        placement=placement,
        init=init,
        init_std=init_std,
        depth=depth,
        slot_identity=slot_identity,
    )
    return _attach(model, config, initialize=True)


def add_registers_with(model: PreTrainedModel, config: RegisterConfig) -> PreTrainedModel:
    """:func:`add_registers` with every setting from ``config`` (e.g. ``TrainConfig.registers()``)."""
    return _attach(model, config, initialize=True)


# The register modules of the forward passes running in this thread, per model: id(base) -> a stack of weak
# references (a stack, in case a pass of the model runs inside another). nn.DataParallel runs each replica in
# its own thread, and a replica's submodules share the original's hook objects, which hold the original base
# (on the first device). The base's own pre-hook is handed the module that runs, the replica, so it records
# the replica's registers here for the entry and layer hooks of the same pass; the base's last hook, called
# even when the pass raises, forgets them. Weak, so that nothing here keeps a replica alive.
class _Running(threading.local):
    def __init__(self) -> None:
        self.stacks: dict[int, list[weakref.ref]] = {}


_RUNNING = _Running()


class _OnBase:
    """A hook that reaches the register module in use through ``base`` at every call.

    An object, not a closure over ``base``: ``copy.deepcopy(model)`` copies its ``base`` along with the
    model, so the copy's hooks edit with the copy's registers (a closure would keep the original's).
    ``role`` is ``open`` for the base's pre-hook (it records the running model's registers for this
    pass), ``close`` for the base's last forward hook (it forgets them), ``inside`` for the hooks between.
    """

    def __init__(
        self,
        base: nn.Module,
        action: Callable[..., Any] | None,
        role: Literal["open", "inside", "close"] = "inside",
    ) -> None:
        self.base, self.action, self.role = base, action, role

    def __call__(self, module: nn.Module, *args: Any) -> Any:
        stacks = _RUNNING.stacks
        key = id(self.base)
        if self.role == "open":  # `module` is the model that runs: the base, or a DataParallel replica
            stacks.setdefault(key, []).append(weakref.ref(_live(module)))
        stack = stacks.get(key, [])
        if self.role == "close":
            if stack:
                stack.pop()
            if not stack:
                stacks.pop(key, None)
            return None
        live = stack[-1]() if stack else None
        live = live if live is not None else _live(self.base)  # called outside a pass of the base
        return self.action(live, module, *args)


def _attach(model: PreTrainedModel, config: RegisterConfig, *, initialize: bool) -> PreTrainedModel:
    """Install the register module and its hooks: four for an encoder (see the module docstring), two for
    a causal LM (see :mod:`regtune.core.causal`)."""
    check_supported(model)
    base = _base_model(model)
    if get_register_module(model) is not None:
        raise RegtuneError(f"{type(model).__name__} already has registers; add them once")
    causal = is_causal_model(model)
    if causal and config.placement is not RegisterPlacement.PREPEND:
        raise ConfigError("a causal model takes its registers before the text: placement must be 'prepend'")
    if causal and config.per_layer:
        # Decoder registers exist at the prefill only (their keys and values then live in the cache).
        raise ConfigError(
            "depth 'all' and the slot identity are for encoders; a causal LM's registers enter once"
        )
    entry = base.get_input_embeddings() if causal else _entry_module(base)
    reference = next(entry.parameters())
    layers = _layers(base) if config.per_layer else []
    module = RegisterTokens(config, base.config.hidden_size, num_layers=max(len(layers), 1)).to(
        device=reference.device, dtype=reference.dtype
    )
    if initialize:
        _init_module(module, base, entry)
    base.add_module(MODULE_NAME, module)
    model.num_registers = config.num_registers
    setattr(model.config, CONFIG_KEY, config.to_dict())
    if config.num_registers:
        mark_register_model(model.config)  # saves as regtune_<family>: plain transformers cannot drop them
    if initialize and config.num_registers and hasattr(model, "peft_config"):
        _save_with_peft(model)
    if causal:
        attach_causal(base, _live)
        return model

    def extend_mask(live: RegisterTokens, _module: nn.Module, args: tuple, kwargs: dict) -> tuple:
        # attention_mask is the 2nd positional argument of every supported base model's forward.
        if kwargs.get("attention_mask") is not None:
            kwargs["attention_mask"] = live.extend_mask(kwargs["attention_mask"])
        elif len(args) > 1 and args[1] is not None:
            args = (args[0], live.extend_mask(args[1]), *args[2:])
        return args, kwargs

    def insert_registers(live: RegisterTokens, _module: nn.Module, _args: tuple, output: torch.Tensor) -> Any:
        return live.insert(output)  # (B, N, H) -> (B, R+N, H)

    def pooler_text_only(_module: nn.Module, args: tuple) -> tuple:
        return (split_registers(args[0], config)[1], *args[1:])

    def drop_registers(_module: nn.Module, _args: tuple, output: Any) -> Any:
        if isinstance(output, tuple):
            return (split_registers(output[0], config)[1], *output[1:])
        output.last_hidden_state = split_registers(output.last_hidden_state, config)[1]
        return output

    def enter_layer(index: int, live: RegisterTokens, _module: nn.Module, args: tuple) -> tuple:
        # hidden_states is the first positional argument of every supported encoder layer.
        return (live.enter_layer(index, args[0]), *args[1:])

    base.register_forward_pre_hook(_OnBase(base, extend_mask, "open"), with_kwargs=True)
    entry.register_forward_hook(_OnBase(base, insert_registers))
    if config.per_layer:
        for index, layer in enumerate(layers):
            layer.register_forward_pre_hook(_OnBase(base, functools.partial(enter_layer, index)))
    pooler = getattr(base, "pooler", None)
    if isinstance(pooler, nn.Module):
        pooler.register_forward_pre_hook(pooler_text_only)
    base.register_forward_hook(drop_registers)
    base.register_forward_hook(_OnBase(base, None, "close"), always_call=True)
    return model


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence the 'unused weights' notice for the register tensor, which we load ourselves."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


#: ``from_pretrained`` options that say *which files* to read. load_model passes them to every read (the
#: config, the weights, the register tensor), so that all of them come from one revision of one folder.
HUB_FILE_OPTIONS = ("revision", "subfolder", "token", "cache_dir", "local_files_only", "force_download")


def _load_register_tensor(path: str, key: str, hub: dict[str, Any]) -> torch.Tensor:
    """Read one tensor from a (possibly sharded) safetensors checkpoint, from the files ``hub`` selects."""
    import json

    from safetensors import safe_open
    from transformers.utils import cached_file

    index_file = cached_file(
        path, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False, **hub
    )
    if index_file is not None:
        shard = json.loads(Path(index_file).read_text())["weight_map"].get(key)
        if shard is None:
            raise RegtuneError(f"{path}: checkpoint has no register tensor '{key}'")
        weights_file = cached_file(path, shard, **hub)
    else:
        weights_file = cached_file(path, "model.safetensors", **hub)
    with safe_open(weights_file, framework="pt") as handle:
        if key not in handle.keys():  # noqa: SIM118 (safe_open handles are not containers)
            raise RegtuneError(f"{path}: checkpoint has no register tensor '{key}'")
        return handle.get_tensor(key)


def load_model(path: str | Path, **from_pretrained_kwargs: Any) -> PreTrainedModel:
    """Load what ``model.save_pretrained(path)`` wrote, registers included, into an identical model.

    The architecture comes from ``config.architectures``; the register settings from
    ``config.regtune_registers``. Only safetensors are read and remote code is never trusted.

    Args:
        path: a folder written by ``save_pretrained``, a Hub id of one, or an embedded model's short name
            (``minilm-l6``, ``smollm2-135m``; see :data:`regtune.core.hub.EMBEDDED_MODELS`).
        **from_pretrained_kwargs: passed on to ``from_pretrained`` (e.g. ``dtype``, ``device_map``). The
            file options (``revision``, ``subfolder``, ``token``, ``cache_dir``, ``local_files_only``,
            ``force_download``) also go to the config and the register tensor's reads.
    """
    import transformers

    path = resolve_model_name(str(path))
    from regtune.core.adapter import is_adapter, load_adapter  # adapter.py builds on this module

    if is_adapter(path):  # a --train-only run's model: the base model plus the trained tensors
        return load_adapter(path, **from_pretrained_kwargs)
    from regtune.core.peft_adapter import is_peft_folder, load_peft_adapter

    if is_peft_folder(path):  # a --peft run's model: a PeftModel on the base model, aligned with the text
        return load_peft_adapter(path, **from_pretrained_kwargs)
    hub = {k: from_pretrained_kwargs[k] for k in HUB_FILE_OPTIONS if k in from_pretrained_kwargs}
    from_pretrained_kwargs.update(use_safetensors=True, trust_remote_code=False)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False, **hub)
    except (OSError, ValueError) as err:
        raise RegtuneError(f"{path}: not a saved model folder ({err.__class__.__name__}: {err})") from err
    architectures = getattr(config, "architectures", None) or []
    model_cls = getattr(transformers, architectures[0], None) if architectures else None
    if model_cls is None:
        raise RegtuneError(f"{path}: config.json names no known architecture ({architectures})")
    register_config = RegisterConfig.from_dict(getattr(config, CONFIG_KEY, None) or {})
    with _quiet_transformers():
        model, info = model_cls.from_pretrained(
            path, config=config, output_loading_info=True, **from_pretrained_kwargs
        )
    prefix = f"{model.base_model_prefix}." if model.base_model is not model else ""
    ours = f"{prefix}{MODULE_NAME}."  # the register module's tensors, which _attach then loads
    unexpected = [k for k in info.get("unexpected_keys", []) if not k.startswith(ours)]
    if info.get("missing_keys") or unexpected:
        raise RegtuneError(
            f"{path}: checkpoint does not match {model_cls.__name__}: "
            f"missing {sorted(info.get('missing_keys', []))[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    if get_register_module(model) is not None:
        # The head built its base model through AutoModel.from_config, whose regtune_* class attached the
        # registers, and from_pretrained loaded their tensor with the rest.
        return model
    _attach(model, register_config, initialize=False)
    if register_config.num_registers:
        module = get_register_module(model)
        with torch.no_grad():
            for name, parameter in module.named_parameters():  # tokens, and layer_tokens / slot_identity
                parameter.copy_(_load_register_tensor(path, ours + name, hub).to(parameter.dtype))
    return model
