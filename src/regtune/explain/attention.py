"""One attention function for every explanation method, registered with transformers' AttentionInterface.

Attribution and analysis need three things the stock kernels do not give: the attention probabilities
of every layer *with their gradients* (attention-gradient relevance), LRP's modified gradient rules
inside attention, and the probabilities of a whole dev set without keeping a graph. Instead of patching
model code, :func:`explain_attention` switches a model to the attention implementation registered here
under :data:`IMPLEMENTATION` (eager attention math plus those options) and switches it back on exit.
Every supported encoder (BERT, RoBERTa, XLM-R, ELECTRA, DistilBERT) and the Llama-style decoders
(Llama, Mistral, Qwen2, Qwen3) dispatch through the interface, so one function serves them all; tests
check that its logits equal the eager kernel's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from regtune.core.errors import RegtuneError

#: Name of the attention implementation registered by this module.
IMPLEMENTATION = "regtune_explain"

#: How LRP treats attention (see :mod:`regtune.explain.lrp`): None is the plain gradient.
AttentionRule = Literal["attnlrp", "cp"] | None


@dataclass
class AttentionState:
    """What the current :func:`explain_attention` block asks of every attention call.

    Attributes:
        record: Keep each layer's probabilities (B, heads, S, S) in ``probs``, in call (= layer) order.
        retain_grad: Also keep their gradients after ``backward()`` (needs ``record``).
        lrp_rule: ``'attnlrp'``: the uniform rule on both bilinear products (Q·Kᵀ and A·V), i.e. each
            factor gets half the gradient, and the softmax keeps its gradient (AttnLRP's softmax rule in
            gradient×input form). ``'cp'``: probabilities held constant (Ali et al. 2022), so relevance
            flows through the values only and is conserved. None: plain gradients.
        probs: The recorded probabilities.
    """

    record: bool = False
    retain_grad: bool = False
    lrp_rule: AttentionRule = None
    probs: list[torch.Tensor] = field(default_factory=list)


_STATE: list[AttentionState] = []


def _half_gradient(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the forward pass, ``x`` with half the gradient in the backward pass."""
    return 0.5 * x + 0.5 * x.detach()


def _attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **_kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention: query (B, heads, S, d), key/value (B, kv_heads, S, d), additive mask (B, 1, S, S)
    -> (B, S, heads, d). Grouped-query models (Llama, Qwen2) have fewer key/value heads: each serves
    ``heads // kv_heads`` consecutive query heads, as in transformers' ``repeat_kv``."""
    state = _STATE[-1] if _STATE else AttentionState()
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)  # (B, heads, S, d)
        value = value.repeat_interleave(groups, dim=1)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    rule = state.lrp_rule
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, heads, S, S)
    if rule == "attnlrp":
        # Uniform rule on the bilinear product: the plain gradient of q·k counts its relevance twice.
        scores = _half_gradient(scores)
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    if state.record:
        if state.retain_grad and probs.requires_grad:
            probs.retain_grad()
        state.probs.append(probs)
    mixing = probs.detach() if rule == "cp" else probs
    output = torch.matmul(mixing, value)
    if rule == "attnlrp":
        output = _half_gradient(output)
    return output.transpose(1, 2).contiguous(), probs


AttentionInterface.register(IMPLEMENTATION, _attention)
AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)


@contextlib.contextmanager
def explain_attention(
    model: PreTrainedModel,
    *,
    record: bool = False,
    retain_grad: bool = False,
    lrp_rule: AttentionRule = None,
) -> Iterator[AttentionState]:
    """Run ``model`` with the explanation attention; yields the state that collects the probabilities.

    The model's previous attention implementation is restored on exit, even on error.
    """
    previous = model.config._attn_implementation
    state = AttentionState(record=record, retain_grad=retain_grad, lrp_rule=lrp_rule)
    model.set_attn_implementation(IMPLEMENTATION)
    if model.config._attn_implementation != IMPLEMENTATION:
        # transformers only logs a warning for a model class that does not dispatch through the
        # AttentionInterface; explanations computed on its own attention would be silently wrong.
        raise RegtuneError(
            f"{type(model).__name__} cannot switch its attention implementation; regtune "
            "explains BERT, RoBERTa, XLM-R, ELECTRA and DistilBERT models"
        )
    _STATE.append(state)
    try:
        yield state
    finally:
        _STATE.pop()
        model.set_attn_implementation(previous)
