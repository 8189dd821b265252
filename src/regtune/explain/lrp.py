"""Layer-wise Relevance Propagation for transformer encoders, AttnLRP-style, on the stock HF modules.

AttnLRP (Achtibat et al. 2024, "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
Transformers", https://arxiv.org/abs/2402.05602) shows that LRP for a transformer is a handful of rules,
and that each can be written as a modified gradient, so that one backward pass of the score computes
relevance as ``input ⊙ modified gradient``. The rules, and where they come from here:

- Linear layers and residual sums: the plain gradient already is the epsilon (z) rule; their biases are
  where relevance leaks out of the explanation.
- LayerNorm: identity rule on the normalisation. The standard deviation is detached, so the layer acts as
  the linear map ``(x - mean(x)) / std * weight`` for the backward pass (the centering is linear and keeps
  its gradient).
- Element-wise activations (GELU in the FFN, ...): identity rule, ``y = x * (act(x) / x).detach()``.
- Attention: :func:`regtune.explain.attention.explain_attention` with ``lrp_rule``. ``'attnlrp'`` is the
  uniform rule on both bilinear products (Q·Kᵀ and A·V) with the softmax's own gradient; ``'cp'`` holds the
  attention probabilities constant (Ali et al. 2022, "XAI for Transformers: Better Explanations through
  Conservative Propagation", https://arxiv.org/abs/2202.07304).

Conservation, honestly: with ``'cp'`` and zero biases the modified network is linear in the entry output,
so the relevance sums exactly to the logit. AttnLRP's softmax rule is *not* conservative: the softmax acts
like a ``-logsumexp`` bias on its inputs, which absorbs relevance, so with ``'attnlrp'`` some relevance
leaks even with zero biases. :class:`LRP` reports that leak instead of hiding it.

Nothing is copied from the model code: the rules are temporary ``forward`` attributes on LayerNorm and
activation instances plus the registered explanation attention, and :func:`lrp_rules` removes all of them
on exit, also on error.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any, Literal, get_args

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2CLS

from regtune.core.errors import ConfigError
from regtune.explain.attention import explain_attention
from regtune.explain.methods import Attribution, AttributionMethod, embedding_leaf
from regtune.tasks.inputs import ExplainInput

LRPRule = Literal["attnlrp", "cp"]
LRP_RULES: tuple[str, ...] = get_args(LRPRule)

#: Element-wise activation module classes that get the identity rule: every class transformers builds
#: from a ``hidden_act`` string (some entries are ``(class, kwargs)``), plus torch's own GELU.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = tuple(
    {entry[0] if isinstance(entry, tuple) else entry for entry in ACT2CLS.values()} | {nn.GELU}
)


def _layer_norm_rule(module: nn.LayerNorm, original: Callable[..., torch.Tensor]) -> Callable[..., Any]:
    """A ``forward`` for ``module``: the same output, the gradient of LayerNorm with its std held constant."""
    dims = tuple(range(-len(module.normalized_shape), 0))

    def forward(x: torch.Tensor) -> torch.Tensor:
        y = original(x)  # the stock output, so the forward pass is bit-for-bit unchanged
        xf = x.float()
        centered = xf - xf.mean(dim=dims, keepdim=True)
        std = (xf.var(dim=dims, unbiased=False, keepdim=True) + module.eps).sqrt().detach()
        linear = centered / std
        if module.weight is not None:
            linear = linear * module.weight.detach().float()
        linear = linear.to(y.dtype)
        # Value of y, gradient of the linear map; the bias adds value, not gradient: it is a leak.
        return y.detach() + (linear - linear.detach())

    return forward


def _activation_rule(original: Callable[..., torch.Tensor]) -> Callable[..., Any]:
    """A ``forward`` for an element-wise activation: same output, gradient ``act(x) / x`` (identity rule)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        y = original(x)
        with torch.no_grad():
            # Where |x| is tiny, act(x) is tiny too; a zero ratio there loses at most ~eps of relevance.
            big = x.abs() > torch.finfo(x.dtype).eps
            ratio = torch.where(big, y / torch.where(big, x, torch.ones_like(x)), torch.zeros_like(x))
        return y.detach() + (x - x.detach()) * ratio

    return forward


def _rule_forwards(model: nn.Module) -> list[tuple[nn.Module, Callable[..., Any]]]:
    """Every (module, patched forward) pair the LRP rules need in ``model``."""
    patches: list[tuple[nn.Module, Callable[..., Any]]] = []
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            patches.append((module, _layer_norm_rule(module, module.forward)))
        elif isinstance(module, ACTIVATION_TYPES):
            patches.append((module, _activation_rule(module.forward)))
    return patches


def check_rule(rule: str) -> None:
    """Raise :class:`ConfigError` unless ``rule`` is one of :data:`LRP_RULES`."""
    if rule not in LRP_RULES:
        raise ConfigError(f"LRP rule must be one of {list(LRP_RULES)}, got {rule!r}")


@contextlib.contextmanager
def norm_and_activation_rules(module: nn.Module) -> Iterator[None]:
    """Give every LayerNorm and element-wise activation in ``module`` its LRP rule for the block.

    Works on any ``nn.Module``; on exit each patched module gets its own ``forward`` back, even on error.
    """
    patches = _rule_forwards(module)
    # A module may already carry an instance-level `forward` (another tool's patch): put that one back.
    saved = [(patched, patched.__dict__.get("forward")) for patched, _ in patches]
    try:
        for patched, forward in patches:
            patched.forward = forward
        yield
    finally:
        for patched, previous in saved:
            if previous is None:
                patched.__dict__.pop("forward", None)  # the class method is used again
            else:
                patched.forward = previous


@contextlib.contextmanager
def lrp_rules(model: PreTrainedModel, rule: LRPRule = "attnlrp") -> Iterator[None]:
    """Run ``model`` with the LRP gradient rules (see the module docstring); outputs are unchanged.

    Inside the block, ``input ⊙ gradient`` at any layer input is LRP relevance. On exit every LayerNorm and
    activation gets its own ``forward`` back and the model its previous attention implementation, even on
    error.
    """
    check_rule(rule)
    with explain_attention(model, lrp_rule=rule), norm_and_activation_rules(model):
        yield


class LRP(AttributionMethod):
    """Layer-wise Relevance Propagation with AttnLRP's rules (Achtibat et al. 2024, arXiv:2402.05602).

    Relevance is read where the registers enter: at the output of the module that feeds the first
    transformer layer (the embeddings, or ELECTRA's ``embeddings_project``), one score per position of the
    full (registers + text) sequence, ``(x ⊙ modified gradient).sum(hidden)``. Besides the per-token
    scores, :attr:`Attribution.buckets` says where the logit went: ``text`` (question and context tokens),
    ``special`` ([CLS]/[SEP]), ``registers``, and ``leak`` (the logit minus all relevance: what biases and,
    with ``'attnlrp'``, the softmax absorbed); ``leak_share`` is ``leak / |logit|``.

    With ``rule='cp'`` (attention probabilities held constant) and zero biases relevance is conserved
    exactly; with ``'attnlrp'`` the softmax rule leaks even then (see :mod:`regtune.explain.lrp`).

    Args:
        model: A QA model (any supported architecture, any τ).
        rule: ``'attnlrp'`` (default) or ``'cp'``: how relevance crosses attention.
    """

    name = "lrp"

    def __init__(self, model: PreTrainedModel, *, rule: LRPRule = "attnlrp") -> None:
        super().__init__(model)
        check_rule(rule)
        self.rule = rule

    def _attribute(
        self, inputs: ExplainInput, target: str, span: tuple[int, int], label: int | None = None
    ) -> Attribution:
        with torch.enable_grad(), embedding_leaf(self.model) as captured, lrp_rules(self.model, self.rule):
            out = self.model(**inputs.batch(self.device))
            score = self.score(out, span, label, target)[0]
            (grad,) = torch.autograd.grad(score, captured[0])  # captured[0]: (1, R+N, H)
        x = captured[0].detach()
        relevance = (x.float() * grad.float())[0].sum(dim=-1)  # (R+N, H) -> (R+N,)
        text, regs = self._split(relevance)
        output = score.item()
        special = [kind in ("cls", "sep") for kind in inputs.kinds]
        buckets = {
            "text": float(sum(v for v, s in zip(text, special, strict=True) if not s)),
            "special": float(sum(v for v, s in zip(text, special, strict=True) if s)),
            "registers": float(regs.sum()),
        }
        buckets["leak"] = output - sum(buckets.values())
        buckets["leak_share"] = buckets["leak"] / abs(output) if output != 0 else math.nan
        return Attribution(
            inputs.question_id,
            self.name,
            target,
            span,
            text,
            regs,
            output,
            buckets=buckets,
            extra={"rule": self.rule},
        )
