"""Attribution methods, one class per method behind one captum-style contract, for every task.

Every method answers ``attribute(inputs, target=...)`` with an :class:`Attribution`: one score per text
token of the input (aligned by text-token index, so models with different τ compare directly) and the
registers' scores apart. What is explained comes from the model's task (:mod:`regtune.tasks`): for QA a
logit of the model's own predicted span in the window (its start logit, its end logit, or their sum,
``span``); for classification the logit of the predicted class (``class``).

Input checks live in :meth:`AttributionMethod.attribute`; the math in each ``_attribute``.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from transformers import PreTrainedModel

from regtune.core.errors import ConfigError, RegtuneWarning
from regtune.core.registers import (
    entry_module,
    full_position,
    get_register_config,
    is_causal_model,
    register_intervention,
    split_registers,
)
from regtune.explain.attention import explain_attention
from regtune.tasks import TASKS, task_of_model
from regtune.tasks.inputs import ExplainInput

Target = Literal["start", "end", "span", "class"]
#: Every task's targets (QA: start, end, span; classification: class).
TARGETS: tuple[str, ...] = tuple(dict.fromkeys(t for task in TASKS.values() for t in task.explain_targets))
RegisterBaseline = Literal["learned", "zero", "mean"]

#: IG warns when the completeness gap exceeds this share of |F(x) - F(baseline)|.
MAX_RELATIVE_DELTA = 0.05


@dataclass
class Attribution:
    """Scores of one method for one example (a question, a sentence) and one model.

    Attributes:
        question_id: The explained example.
        method: ``ig``, ``attn-grad`` or ``lrp``.
        target: ``start``, ``end`` or ``span`` (QA); ``class`` (classification).
        span: Inclusive text-token indices the prediction is read from: QA's predicted span;
            ``(0, 0)``, the [CLS] token, for classification.
        text: (N,) one score per text token, window order ([CLS]/[SEP] and question tokens included).
        registers: (R,) one score per register (empty for τ=0).
        output: F(x), the explained logit (sum) at the input.
        convergence_delta: IG only: |Σ attributions - (F(x) - F(baseline))| / |F(x) - F(baseline)|.
        buckets: LRP only: relevance summed over text tokens, [CLS]/[SEP], registers, and the leak
            (F(x) minus all relevance).
        label: The explained class id (classification), else None.
    """

    question_id: str
    method: str
    target: str
    span: tuple[int, int]
    text: np.ndarray
    registers: np.ndarray
    output: float
    convergence_delta: float | None = None
    buckets: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    label: int | None = None

    def normalized(self) -> np.ndarray:
        """Text scores scaled so that Σ|a| = 1 over text tokens (zeros stay zeros)."""
        total = float(np.abs(self.text).sum())
        return self.text / total if total > 0 else self.text.copy()

    @property
    def register_share(self) -> float:
        """Share of all absolute attribution that lands on registers (0 for τ=0)."""
        text, regs = float(np.abs(self.text).sum()), float(np.abs(self.registers).sum())
        return regs / (text + regs) if text + regs > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "question_id": self.question_id,
            "method": self.method,
            "target": self.target,
            "span": list(self.span),
            "output": self.output,
            # 5 significant digits: plenty for maps and metrics, and it keeps 200-question files small.
            "text": [float(f"{v:.5g}") for v in self.text],
            "registers": [float(f"{v:.5g}") for v in self.registers],
            "register_share": self.register_share,
            "convergence_delta": self.convergence_delta,
            "buckets": self.buckets,
            **({"label": self.label} if self.label is not None else {}),
        }


@contextlib.contextmanager
def embedding_leaf(model: PreTrainedModel) -> Iterator[list[torch.Tensor]]:
    """Make the output of the module that feeds layer 1 a fresh leaf that requires grad, for the block.

    Yields the list that collects those leaves, (B, R+N, H) each: registered after the register hook, the
    hook sees the registers. The graph starts there, so gradients at the embedding output exist even for a
    model whose parameters are frozen, and nothing below it is differentiated.
    """
    captured: list[torch.Tensor] = []

    def leaf(_module: torch.nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor:
        fresh = output.detach().requires_grad_(True)
        captured.append(fresh)
        return fresh

    handle = entry_module(model).register_forward_hook(leaf)
    try:
        yield captured
    finally:
        handle.remove()


class AttributionMethod(ABC):
    """Base class: input checks and the predicted span here, the method in :meth:`_attribute`."""

    name: ClassVar[str]

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self.num_registers = get_register_config(model).num_registers
        self.task = task_of_model(model.config)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def attribute(
        self,
        inputs: ExplainInput,
        target: Target | None = None,
        span: tuple[int, int] | None = None,
        label: int | None = None,
    ) -> Attribution:
        """Explain ``target`` of the model's prediction (or of ``span`` / ``label``) on one input.

        Args:
            inputs: The input, from the task's ``explain_inputs``.
            target: QA: ``start``, ``end`` or ``span`` (start + end logit, the default);
                classification: ``class`` (the default).
            span: QA: inclusive text-token indices to explain instead of the model's predicted span.
            label: Classification: the class to explain instead of the predicted one.
        """
        target = target or self.task.explain_targets[-1]
        if target not in self.task.explain_targets:
            choices = list(self.task.explain_targets)
            raise ConfigError(f"target must be one of {choices} for {self.task.name}, got {target!r}")
        was_training = self.model.training
        self.model.eval()
        try:
            return self._attribute_checked(inputs, target, span, label)
        finally:
            self.model.train(was_training)

    def _attribute_checked(
        self, inputs: ExplainInput, target: str, span: tuple[int, int] | None, label: int | None
    ) -> Attribution:
        if span is None or (label is None and self.task.explains_a_class):
            predicted, predicted_label = self.prediction(inputs)
            span = predicted if span is None else span
            label = predicted_label if label is None else label
        if not (0 <= span[0] <= span[1] < len(inputs)):
            raise ConfigError(
                f"{inputs.question_id}: span {span} is outside the window of {len(inputs)} tokens"
            )
        attribution = self._attribute(inputs, target, span, label)
        attribution.label = label
        return attribution

    def prediction(self, inputs: ExplainInput) -> tuple[tuple[int, int], int | None]:
        """The model's own prediction: (span it is read from, class id or None), from its task."""
        self.model.eval()
        return self.task.explain_prediction(self.model, inputs)

    def predicted_span(self, inputs: ExplainInput) -> tuple[int, int]:
        """The text-token span the prediction is read from (QA: the best answer span in the window)."""
        return self.prediction(inputs)[0]

    def score(self, out: Any, span: tuple[int, int], label: int | None, target: str) -> torch.Tensor:
        """The explained output per row of a model output, (B,), as the task defines it."""
        return self.task.explain_score(out, span, label, target)

    @abstractmethod
    def _attribute(
        self, inputs: ExplainInput, target: str, span: tuple[int, int], label: int | None = None
    ) -> Attribution: ...

    def _split(self, scores: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(R+N,) full-sequence scores -> ((N,) text, (R,) registers) as float64 arrays."""
        regs, text = split_registers(scores.detach().float().cpu(), self.model, dim=0)
        return text.numpy().astype(np.float64), regs.numpy().astype(np.float64)


class IntegratedGradients(AttributionMethod):
    """Integrated Gradients (Sundararajan et al. 2017, arXiv:1703.01365) on the embedding output.

    Captum's ``LayerIntegratedGradients`` interpolates the output of the module that feeds the first
    transformer layer, registers included, between a baseline and the input. The baseline input is
    ``[CLS] [PAD]... [SEP] [PAD]... [SEP]`` (special tokens kept, every text token padded), as in Captum's
    BERT-SQuAD tutorial. Its registers are the learned ones by default, so they cancel and completeness
    covers the text tokens; ``register_baseline='zero'`` or ``'mean'`` (every register replaced by the
    registers' mean) measures what the registers themselves contribute.

    Args:
        model: A QA model (any supported architecture, any τ).
        n_steps: Riemann steps of the path integral.
        internal_batch_size: Interpolation steps per forward pass.
        register_baseline: ``learned``, ``zero`` or ``mean``.
        pad_id: The token that replaces the text in the baseline: the tokenizer's pad token. None falls
            back to the model config's ``pad_token_id``, which a converted model may get wrong (the
            converted multilingual-e5-small says 0, which is ``<s>`` in its XLM-R vocabulary).
    """

    name = "ig"

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        n_steps: int = 50,
        internal_batch_size: int = 16,
        register_baseline: RegisterBaseline = "learned",
        pad_id: int | None = None,
    ) -> None:
        super().__init__(model)
        if register_baseline != "learned" and is_causal_model(model) and self.num_registers:
            raise ConfigError(
                "a causal LM's registers are not part of its embedding output, so IG can only keep them "
                "(register_baseline 'learned')"
            )
        if n_steps < 2 or internal_batch_size < 1:
            raise ConfigError(
                f"need n_steps >= 2 and internal_batch_size >= 1, got {n_steps}, {internal_batch_size}"
            )
        if register_baseline not in ("learned", "zero", "mean"):
            raise ConfigError(f"register_baseline must be learned, zero or mean, got {register_baseline!r}")
        if register_baseline != "learned" and get_register_config(model).deep:
            # IG interpolates the embedding output only; the rows deep layers read would move off-path.
            raise ConfigError(
                "with deep registers (--register-depth all) IG can only keep the learned registers "
                "(register_baseline 'learned'): later layers' register rows do not pass the embedding output"
            )
        self.n_steps = n_steps
        self.internal_batch_size = internal_batch_size
        self.register_baseline = register_baseline
        config_pad = model.config.pad_token_id
        self.pad_id = pad_id if pad_id is not None else (config_pad if config_pad is not None else 0)

    def _baseline_registers(self) -> torch.Tensor | None:
        if self.num_registers == 0 or self.register_baseline == "learned":
            return None
        learned = self.model.base_model.registers.tokens.detach()  # (R, H)
        if self.register_baseline == "zero":
            return torch.zeros_like(learned)
        return learned.mean(dim=0, keepdim=True).expand_as(learned).clone()

    def _attribute(
        self, inputs: ExplainInput, target: str, span: tuple[int, int], label: int | None = None
    ) -> Attribution:
        from captum.attr import LayerIntegratedGradients

        model = self.model
        batch = inputs.batch(self.device)
        pad_id = self.pad_id
        special = torch.tensor([k in ("cls", "sep") for k in inputs.kinds], device=self.device)
        baseline_ids = torch.where(special, batch["input_ids"], torch.full_like(batch["input_ids"], pad_id))
        baseline_regs = self._baseline_registers()
        extra = {k: v for k, v in batch.items() if k != "input_ids"}

        def forward(input_ids: torch.Tensor, registers: torch.Tensor | None = None) -> torch.Tensor:
            rows = input_ids.shape[0]
            kwargs = {k: v.expand(rows, -1) for k, v in extra.items()}
            with register_intervention(model, values=registers):
                out = model(input_ids=input_ids, **kwargs)
            return self.score(out, span, label, target)

        if baseline_regs is None:
            call_inputs: tuple[torch.Tensor, ...] = (batch["input_ids"],)
            call_baselines: tuple[torch.Tensor, ...] = (baseline_ids,)
        else:
            learned = model.base_model.registers.tokens.detach()[None]  # (1, R, H)
            call_inputs = (batch["input_ids"], learned)
            call_baselines = (baseline_ids, baseline_regs[None])
        lig = LayerIntegratedGradients(forward, entry_module(model))
        with torch.enable_grad():
            attributions, delta = lig.attribute(
                inputs=call_inputs,
                baselines=call_baselines,
                n_steps=self.n_steps,
                internal_batch_size=self.internal_batch_size,
                return_convergence_delta=True,
            )
        with torch.no_grad():
            f_input = float(forward(*call_inputs)[0])
            f_baseline = float(forward(*call_baselines)[0])
        scores = attributions[0].sum(dim=-1)  # (1, R+N, H) -> (R+N,)
        gap = abs(f_input - f_baseline)
        # Undefined (NaN, not inf) when the baseline scores like the input: nothing to be complete about.
        relative = abs(float(delta[0])) / gap if gap > 0 else math.nan
        if not relative <= MAX_RELATIVE_DELTA and not math.isnan(relative):
            warnings.warn(
                f"{inputs.question_id}: IG completeness gap is {relative:.1%} of |F(x) - F(baseline)| "
                f"(> {MAX_RELATIVE_DELTA:.0%}); raise n_steps",
                RegtuneWarning,
                stacklevel=3,
            )
        if is_causal_model(model):
            # A causal LM's embedding output has no registers (they go in after it, at the prefill): the
            # scores are the N text tokens', and the registers' are 0, their contribution cancelling
            # between input and baseline as it does for encoders with the learned baseline.
            text, regs = scores.detach().double().cpu().numpy(), np.zeros(self.num_registers)
        else:
            text, regs = self._split(scores)
        return Attribution(
            inputs.question_id,
            self.name,
            target,
            span,
            text,
            regs,
            f_input,
            convergence_delta=relative,
            extra={
                "baseline_output": f_baseline,
                "register_baseline": self.register_baseline,
                "n_steps": self.n_steps,
            },
        )


class AttentionGradient(AttributionMethod):
    """Attention-gradient relevance (Chefer, Gur, Wolf 2021, https://arxiv.org/abs/2103.15679).

    With A_l the attention probabilities of layer l (heads, S, S) and G_l their gradient w.r.t. the
    target: R starts as the identity (S, S) and, layer by layer from the input, R += mean_heads(
    clamp(G_l ⊙ A_l, min=0)) @ R. The explanation is the row of the predicted start token (``start``),
    end token (``end``) or the mean of both rows (``span``), minus the identity's own 1 on that token: it
    says how much each token fed the token that makes the prediction. Needs only the stock model's
    attention probabilities and their gradients (see :mod:`regtune.explain.attention`).
    """

    name = "attn-grad"

    def _attribute(
        self, inputs: ExplainInput, target: str, span: tuple[int, int], label: int | None = None
    ) -> Attribution:
        config = get_register_config(self.model)
        with (
            torch.enable_grad(),
            embedding_leaf(self.model),
            explain_attention(self.model, record=True) as state,
        ):
            out = self.model(**inputs.batch(self.device))
            score = self.score(out, span, label, target)[0]
            grads = torch.autograd.grad(score, state.probs)
            score = score.detach()
        # Deep registers need no special case: the register rows a layer computes are replaced before the
        # next reads them, so their attention gets zero gradient and the rule adds nothing through them.
        relevance = attention_gradient_rollout(
            [p.detach()[0].float() for p in state.probs], [g[0].float() for g in grads]
        )
        rows = self.task.explain_rows(span, target)
        full_rows = [full_position(config, r) for r in rows]
        eye = torch.eye(relevance.shape[0], device=relevance.device)
        scores = (relevance - eye)[full_rows].mean(dim=0)  # (S,)
        text, regs = self._split(scores)
        return Attribution(inputs.question_id, self.name, target, span, text, regs, score.item())


def attention_gradient_rollout(probs: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
    """Chefer et al.'s rule: R = I; per layer R += mean_heads(clamp(G ⊙ A, min=0)) @ R.

    Args:
        probs: Per layer, attention probabilities (heads, S, S), input layer first.
        grads: Their gradients, same shapes.

    Returns:
        R, shape (S, S).
    """
    size = probs[0].shape[-1]
    relevance = torch.eye(size, dtype=probs[0].dtype, device=probs[0].device)
    for attention, grad in zip(probs, grads, strict=True):
        cam = (grad * attention).clamp(min=0).mean(dim=0)  # (S, S)
        relevance = relevance + cam @ relevance
    return relevance
