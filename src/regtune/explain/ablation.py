"""Inference-time register ablation: what dev F1 loses when register i (or every register) is zeroed,
replaced by the registers' mean, or masked out of attention.

One checkpoint per arm, so the ΔF1 intervals are paired question bootstraps
(:func:`regtune.experiments.stats.paired_difference`): they say whether *this* model depends on a
register, not whether registers help in general (that is the sweep's job).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from regtune.core.errors import ConfigError, RegtuneError
from regtune.core.registers import get_register_module, register_intervention
from regtune.experiments.stats import paired_difference
from regtune.explain.artifacts import _json_ready
from regtune.tasks.qa.data import QAExample
from regtune.tasks.qa.evaluation import QASettings, evaluate_qa

AblationMode = Literal["zero", "mean", "mask"]
ABLATION_MODES: tuple[AblationMode, ...] = ("zero", "mean", "mask")


def ablation_overrides(
    tokens: torch.Tensor, mode: AblationMode, index: int | None = None
) -> tuple[torch.Tensor | None, list[bool] | None]:
    """The ``(values, keep)`` arguments of :func:`register_intervention` for one ablation.

    Args:
        tokens: (R, H) the learned register vectors.
        mode: ``zero`` (the register becomes the zero vector), ``mean`` (the mean of the R learned
            registers) or ``mask`` (no token can attend to it).
        index: The register to ablate; None ablates all of them (with ``mean`` they become R copies).
    """
    r = tokens.shape[0]
    chosen = list(range(r)) if index is None else [index]
    if mode == "mask":
        return None, [i not in chosen for i in range(r)]
    values = tokens.detach().clone()  # (R, H)
    if mode == "zero":
        values[chosen] = 0.0
    elif mode == "mean":
        values[chosen] = tokens.detach().mean(dim=0)
    else:
        raise ConfigError(f"ablation mode must be one of {list(ABLATION_MODES)}, got {mode!r}")
    return values, None


def register_ablation(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[QAExample],
    settings: QASettings,
    *,
    modes: Sequence[AblationMode] = ABLATION_MODES,
    registers: Sequence[int] | None = None,
    batch_size: int = 64,
    n_boot: int = 2000,
    confidence: float = 0.95,
    rng: np.random.Generator | int | None = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Dev F1/EM with register i replaced or masked at inference, for each i and for all at once.

    Args:
        model: A QA model with registers (τ > 0).
        tokenizer: Its tokenizer.
        examples: The dev questions.
        settings: Featurisation and decoding settings (e.g. ``QASettings.from_model(model)``).
        modes: Any of ``zero``, ``mean``, ``mask`` (see :func:`ablation_overrides`).
        registers: The registers to ablate one at a time (default: all R); the all-at-once row is always run.
        batch_size: Windows per forward pass.
        n_boot: Bootstrap replicates of the paired question bootstrap.
        confidence: Coverage of the ΔF1 interval.
        rng: A generator, a seed, or None.
        progress: Show evaluation progress bars.

    Returns:
        A JSON-ready dict (scores on 0..100, per-question F1 on 0..1 in the order of ``question_ids``)::

            {"num_registers": R, "modes": [...], "question_ids": [...], "confidence": 0.95, "n_boot": 2000,
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
    if r == 0:
        raise RegtuneError("this model has no registers (τ=0): nothing to ablate; analyse a τ>0 model")
    bad = [m for m in modes if m not in ABLATION_MODES]
    if bad or not modes:
        raise ConfigError(f"ablation modes must be a non-empty subset of {list(ABLATION_MODES)}, got {modes}")
    chosen = list(range(r)) if registers is None else [int(i) for i in registers]
    if any(not 0 <= i < r for i in chosen):
        raise ConfigError(f"register indices must be in [0, {r}), got {chosen}")
    generator = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng

    def run() -> tuple[np.ndarray, np.ndarray]:
        result = evaluate_qa(model, tokenizer, examples, settings, batch_size=batch_size, progress=progress)
        em, f1 = zip(*(result.per_question[qid] for qid in ids), strict=True)
        return np.array(em), np.array(f1)

    ids = [example.id for example in examples]
    base_em, base_f1 = run()

    def ablate(index: int | None, mode: AblationMode) -> dict[str, Any]:
        values, keep = ablation_overrides(module.tokens, mode, index)
        with register_intervention(model, values=values, keep=keep):
            em, f1 = run()
        diff = paired_difference(f1, base_f1, n_boot=n_boot, confidence=confidence, rng=generator)
        low, high, p_value = 100.0 * diff.ci_low, 100.0 * diff.ci_high, diff.p_value
        return {
            "register": index,
            "mode": mode,
            "f1": 100.0 * float(f1.mean()),
            "exact_match": 100.0 * float(em.mean()),
            "delta_f1": 100.0 * float((f1 - base_f1).mean()),
            "delta_exact_match": 100.0 * float((em - base_em).mean()),
            "delta_f1_ci": [low, high],
            "p_value": p_value,
            "per_question_f1": f1.tolist(),
        }

    return _json_ready(
        {
            "num_registers": r,
            "modes": list(modes),
            "question_ids": ids,
            "confidence": confidence,
            "n_boot": n_boot,
            "interval": "paired bootstrap over questions (one model: no seed noise)",
            "baseline": {
                "f1": 100.0 * float(base_f1.mean()),
                "exact_match": 100.0 * float(base_em.mean()),
                "per_question_f1": base_f1.tolist(),
            },
            "single": [ablate(i, mode) for i in chosen for mode in modes],
            "all": [ablate(None, mode) for mode in modes],
        }
    )
