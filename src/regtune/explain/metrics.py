"""Per-example numbers that make two models' attributions comparable: focus, faithfulness, agreement,
plausibility.

All of them read the text-token scores of an :class:`~regtune.explain.methods.Attribution`; registers are
reported apart (``Attribution.register_share``) and are never perturbed. Definitions:

* **focus** of |a| normalised over the window's text tokens (Σ|a| = 1): entropy divided by log(N) (1 =
  spread evenly, 0 = all on one token), the Gini coefficient of that distribution (0 = even, → 1 = all
  on one token), and the share of mass in the top 10 % of tokens;
* **faithfulness** (DeYoung et al. 2020, ERASER, arXiv:1911.03429): the maskable tokens (QA: the
  context; classification: the sentence text; never [CLS], [SEP], the question or a register) are ranked
  by their signed score; *comprehensiveness* at k % is p(y | x) − p(y | x without the top k %),
  *sufficiency* is p(y | x) − p(y | only the top k % kept). Removed tokens are replaced by ``[MASK]`` (or
  ``[PAD]``), so positions stay fixed. p(y) is the task's probability of the prediction made on the intact
  input: for QA softmax(start)[s] · softmax(end)[e] over the window, for classification softmax(logits)[c].
  AOPC is the mean over k ∈ {1, 5, 10, 20, 50} %. Higher comprehensiveness and lower sufficiency mean a
  more faithful ranking;
* **agreement**: Spearman correlation of two models' signed text scores on the same window;
* **plausibility** (QA): the share of |a| on the gold answer's tokens (NaN if the window cuts the answer,
  and for classification, which has no gold tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import spearmanr
from transformers import PreTrainedModel

from regtune.explain.methods import Attribution
from regtune.tasks.inputs import ExplainInput

#: Fractions of the context removed (comprehensiveness) or kept (sufficiency), as in ERASER.
FRACTIONS: tuple[float, ...] = (0.01, 0.05, 0.10, 0.20, 0.50)


def focus(attribution: Attribution) -> dict[str, float]:
    """Normalised entropy, Gini and top-10 % mass of |a| over text tokens."""
    weights = np.abs(attribution.text)
    n = weights.size
    total = float(weights.sum())
    if n < 2 or total <= 0:
        return {"entropy": math.nan, "gini": math.nan, "top10_mass": math.nan}
    p = weights / total
    nonzero = p[p > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum() / math.log(n))
    ascending = np.sort(p)
    ranks = np.arange(1, n + 1)
    gini = float((2 * ranks - n - 1) @ ascending / (n - 1))  # 0 even .. 1 all on one token (normalised)
    top = max(1, math.ceil(0.10 * n))
    top10 = float(np.sort(p)[::-1][:top].sum())
    return {"entropy": entropy, "gini": gini, "top10_mass": top10}


def plausibility(attribution: Attribution, inputs: ExplainInput) -> float:
    """Share of |a| over text tokens that falls on the gold answer span; NaN without one."""
    if inputs.gold_span is None:
        return math.nan
    weights = np.abs(attribution.text)
    total = float(weights.sum())
    if total <= 0:
        return math.nan
    start, end = inputs.gold_span
    return float(weights[start : end + 1].sum() / total)


def agreement(a: Attribution, b: Attribution) -> float:
    """Spearman correlation of two attributions of one window (aligned by text-token index)."""
    if a.text.shape != b.text.shape:
        raise ValueError(f"{a.question_id}: attributions over {a.text.size} and {b.text.size} text tokens")
    if np.ptp(a.text) == 0 or np.ptp(b.text) == 0:
        return math.nan  # a constant map has no ranking
    return float(spearmanr(a.text, b.text).statistic)


@torch.no_grad()
def faithfulness(
    model: PreTrainedModel,
    inputs: ExplainInput,
    attribution: Attribution,
    *,
    replace_id: int,
    fractions: Sequence[float] = FRACTIONS,
) -> dict[str, float]:
    """AOPC comprehensiveness and sufficiency of one attribution, plus the value at every fraction.

    One batch of 1 + 2·len(fractions) perturbed copies of the input; only maskable tokens change (the
    question, [CLS]/[SEP] and the registers are never touched).
    """
    from regtune.tasks import task_of_model

    context = np.flatnonzero(inputs.maskable())  # text-token indices that may be replaced
    order = context[np.argsort(-attribution.text[context], kind="stable")]  # most positive first
    base = list(inputs.input_ids)
    rows = [base]
    for fraction in fractions:
        k = max(1, round(fraction * context.size))
        removed = list(base)
        for i in order[:k]:
            removed[i] = replace_id
        kept = list(base)
        for i in order[k:]:
            kept[i] = replace_id
        rows += [removed, kept]
    device = next(model.parameters()).device
    batch = inputs.batch(device, repeat=len(rows))
    batch["input_ids"] = torch.tensor(rows, dtype=torch.long, device=device)
    out = model(**batch)
    p = task_of_model(model.config).explain_probability(out, attribution.span, attribution.label).cpu()
    p_full = float(p[0])
    comprehensiveness = [p_full - float(p[1 + 2 * i]) for i in range(len(fractions))]
    sufficiency = [p_full - float(p[2 + 2 * i]) for i in range(len(fractions))]
    result = {
        "p_span": p_full,
        "comprehensiveness": float(np.mean(comprehensiveness)),
        "sufficiency": float(np.mean(sufficiency)),
    }
    for fraction, c, s in zip(fractions, comprehensiveness, sufficiency, strict=True):
        result[f"comprehensiveness@{fraction:g}"] = c
        result[f"sufficiency@{fraction:g}"] = s
    return result


def question_metrics(
    model: PreTrainedModel, inputs: ExplainInput, attribution: Attribution, *, replace_id: int
) -> dict[str, float]:
    """Every single-model number for one question: focus, faithfulness, plausibility, register share."""
    return {
        **focus(attribution),
        **faithfulness(model, inputs, attribution, replace_id=replace_id),
        "plausibility": plausibility(attribution, inputs),
        "register_share": attribution.register_share,
    }
