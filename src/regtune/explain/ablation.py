"""Inference-time register ablation: what the dev score loses when register i (or every register) is
zeroed, replaced by the registers' mean, or masked out of attention.

The score is the model's task's (:mod:`regtune.tasks`): F1 and EM for QA, accuracy for classification;
the interval is on the first (primary) one. One checkpoint per arm, so the intervals are paired example
bootstraps (:func:`regtune.experiments.stats.paired_difference`): they say whether *this* model depends on
a register, not whether registers help in general (that is the sweep's job).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from typing import Any, Literal

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from regtune.core.errors import ConfigError, RegtuneError
from regtune.core.registers import get_register_module, register_intervention
from regtune.experiments.stats import paired_difference
from regtune.explain.artifacts import _json_ready
from regtune.tasks import TaskData, task_of_model

AblationMode = Literal["zero", "mean", "mask"]
ABLATION_MODES: tuple[AblationMode, ...] = ("zero", "mean", "mask")


def ablation_overrides(
    tokens: torch.Tensor, mode: AblationMode, index: int | None = None
) -> tuple[torch.Tensor | None, list[bool] | None]:
    """The ``(values, keep)`` arguments of :func:`register_intervention` for one ablation.

    Args:
        tokens: (R, H) the learned register vectors, or (D, R, H) with deep registers, one set per layer
            (``RegisterTokens.learned_rows``): an ablation then reaches every layer's rows.
        mode: ``zero`` (the register becomes the zero vector), ``mean`` (the mean of the R learned
            registers, layer by layer) or ``mask`` (no token can attend to it).
        index: The register to ablate; None ablates all of them (with ``mean`` they become R copies).
    """
    r = tokens.shape[-2]
    chosen = list(range(r)) if index is None else [index]
    if mode == "mask":
        return None, [i not in chosen for i in range(r)]
    values = tokens.detach().clone()  # (R, H) or (D, R, H)
    if mode == "zero":
        values[..., chosen, :] = 0.0
    elif mode == "mean":
        values[..., chosen, :] = tokens.detach().mean(dim=-2, keepdim=True)
    else:
        raise ConfigError(f"ablation mode must be one of {list(ABLATION_MODES)}, got {mode!r}")
    return values, None


def _checked_choice(r: int, modes: Sequence[str], registers: Sequence[int] | None) -> list[int]:
    """The registers to ablate one at a time, after checking the model has R > 0 and the modes are known."""
    if r == 0:
        raise RegtuneError("this model has no registers (τ=0): nothing to ablate; analyse a τ>0 model")
    bad = [m for m in modes if m not in ABLATION_MODES]
    if bad or not modes:
        raise ConfigError(f"ablation modes must be a non-empty subset of {list(ABLATION_MODES)}, got {modes}")
    chosen = list(range(r)) if registers is None else [int(i) for i in registers]
    if any(not 0 <= i < r for i in chosen):
        raise ConfigError(f"register indices must be in [0, {r}), got {chosen}")
    return chosen


class _AblationScorer:
    """Scores the dev examples with the model as it is now (an ablation context may be active), and turns
    one ablation's scores into its row of the report."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        examples: list[Any],
        overrides: dict[str, Any] | None,
        batch_size: int,
        progress: bool,
    ) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.task = task_of_model(model.config)
        self.data = TaskData(path="", examples=examples)
        self.ids = [example.id for example in examples]
        self.overrides, self.batch_size, self.progress = overrides, batch_size, progress

    def scores(self) -> dict[str, np.ndarray]:
        """Metric -> (N,) per-example score on 0..1, in the order of ``ids``."""
        result = self.task.evaluate(
            self.model,
            self.tokenizer,
            self.data,
            batch_size=self.batch_size,
            progress=self.progress,
            overrides=self.overrides,
        )
        return {m: np.array([result.per_example[i][m] for i in self.ids]) for m in self.task.metrics}

    def row(
        self,
        index: int | None,
        mode: AblationMode,
        scores: dict[str, np.ndarray],
        base: dict[str, np.ndarray],
        **bootstrap: Any,
    ) -> dict[str, Any]:
        """One ablation's scores and deltas on 0..100, with a paired bootstrap CI on the primary metric."""
        metrics, primary = self.task.metrics, self.task.metrics[0]
        diff = paired_difference(scores[primary], base[primary], **bootstrap)
        return {
            "register": index,
            "mode": mode,
            **{m: 100.0 * float(scores[m].mean()) for m in metrics},
            **{f"delta_{m}": 100.0 * float((scores[m] - base[m]).mean()) for m in metrics},
            f"delta_{primary}_ci": [100.0 * diff.ci_low, 100.0 * diff.ci_high],
            "p_value": diff.p_value,
            f"per_question_{primary}": scores[primary].tolist(),
        }


def register_ablation(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Any],
    settings: Any = None,
    *,
    modes: Sequence[AblationMode] = ABLATION_MODES,
    registers: Sequence[int] | None = None,
    batch_size: int = 64,
    n_boot: int = 2000,
    confidence: float = 0.95,
    rng: np.random.Generator | int | None = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Dev scores with register i replaced or masked at inference, for each i and for all at once.

    Args:
        model: A model with registers (τ > 0), of any task.
        tokenizer: Its tokenizer.
        examples: The dev examples (QA questions, classification rows).
        settings: The task's inference settings as a dataclass (e.g. ``QASettings``), or None for the
            model's own.
        modes: Any of ``zero``, ``mean``, ``mask`` (see :func:`ablation_overrides`).
        registers: The registers to ablate one at a time (default: all R); the all-at-once row is always run.
        batch_size: Sequences per forward pass.
        n_boot: Bootstrap replicates of the paired example bootstrap.
        confidence: Coverage of the interval on the primary metric.
        rng: A generator, a seed, or None.
        progress: Show evaluation progress bars.

    Returns:
        A JSON-ready dict (scores on 0..100, per-example primary scores on 0..1 in the order of
        ``question_ids``); for QA the metrics are ``f1`` (primary) and ``exact_match``, for
        classification ``accuracy``::

            {"num_registers": R, "modes": [...], "metrics": ["f1", "exact_match"], "question_ids": [...],
             "confidence": 0.95, "n_boot": 2000,
             "baseline": {"f1", "exact_match", "per_question_f1"},
             "single": [{"register": i, "mode": m, "f1", "exact_match", "delta_f1", "delta_exact_match",
                         "delta_f1_ci": [low, high], "p_value", "per_question_f1"}, ...],
             "all": [{"register": None, "mode": m, ...}, ...]}

    Raises:
        RegtuneError: The model has no registers (τ=0): there is nothing to ablate.
        ConfigError: An unknown mode, a register index out of range, or bad bootstrap options.
    """
    module = get_register_module(model)
    r = 0 if module is None else module.num_registers
    chosen = _checked_choice(r, modes, registers)
    generator = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    overrides = asdict(settings) if is_dataclass(settings) else None
    scorer = _AblationScorer(model, tokenizer, list(examples), overrides, batch_size, progress)
    base = scorer.scores()
    task, metrics = scorer.task, scorer.task.metrics

    def ablate(index: int | None, mode: AblationMode) -> dict[str, Any]:
        values, keep = ablation_overrides(module.learned_rows(), mode, index)
        with register_intervention(model, values=values, keep=keep):
            scores = scorer.scores()
        return scorer.row(index, mode, scores, base, n_boot=n_boot, confidence=confidence, rng=generator)

    return _json_ready(
        {
            "num_registers": r,
            "modes": list(modes),
            "metrics": list(metrics),
            "metric_labels": {m: task.metric_labels[m] for m in metrics},
            "question_ids": scorer.ids,
            "confidence": confidence,
            "n_boot": n_boot,
            "interval": f"paired bootstrap over {task.unit}s (one model: no seed noise)",
            "baseline": {
                **{m: 100.0 * float(base[m].mean()) for m in metrics},
                f"per_question_{metrics[0]}": base[metrics[0]].tolist(),
            },
            "single": [ablate(i, mode) for i in chosen for mode in modes],
            "all": [ablate(None, mode) for mode in modes],
        }
    )
