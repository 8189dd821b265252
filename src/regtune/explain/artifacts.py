"""Artifacts, attention sinks and register roles: what the registers do inside an encoder or a decoder.

Darcet et al. (2024, "Vision Transformers Need Registers", https://arxiv.org/abs/2309.16588) found that
ViTs recycle a few uninformative patches as scratch space: those patches get very large output norms and
soak up attention, and registers take that role over. In BERT-style encoders [CLS], [SEP] and punctuation
play a similar part ("attention sinks", Clark et al. 2019; Kobayashi et al. 2020). This module measures,
per layer, for one model on a set of fixed windows (a task's ``explain_inputs``):

* the distribution of token output norms per token category, and the high-norm outliers under a documented
  rule (:func:`mad_outliers`), with counts and shares per category;
* the attention mass each category receives (sinks), raw and per token relative to uniform attention;
* the attention entropy of every head;
* massive activations (Sun et al. 2024): per layer, the largest single hidden-state elements, where they
  sit, and how far they stand above the median magnitude; in decoders they sit on the first token;
* per register: the attention it receives, what it attends to, and how similar the registers are.

:mod:`regtune.explain.ablation` replaces or masks one register (and all of them) at inference and
reports the change in dev F1 with a paired question-bootstrap interval. Plots live in
:mod:`regtune.explain.artifact_plots`; everything here is JSON-ready through ``to_dict()``.

Sequence layout: every count comes from ``get_register_config(model)`` and the placement from
:func:`~regtune.core.registers.register_slice` / :func:`~regtune.core.registers.full_position`, never
a literal.
"""

from __future__ import annotations

import inspect
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from transformers import PreTrainedModel

from regtune.core.errors import ConfigError, RegtuneError
from regtune.core.registers import (
    RegisterConfig,
    full_position,
    get_register_config,
    register_slice,
)
from regtune.explain.attention import explain_attention
from regtune.tasks.inputs import ExplainInput

Category = Literal["cls", "sep", "register", "punct", "stopword", "content"]
#: Every token category, in the order of the category axis of all arrays below.
CATEGORIES: tuple[Category, ...] = ("cls", "sep", "register", "punct", "stopword", "content")
_REGISTER = CATEGORIES.index("register")


#: Default k of the outlier rule: the modified z-score cut of Iglewicz & Hoaglin (1993).
DEFAULT_K_MAD = 3.5
#: The robust scale is at least this share of the median, so a layer whose norms are all equal (a LayerNorm
#: output with unit gain) does not flag float noise as outliers.
MIN_SCALE_SHARE = 0.05
#: 1 / Φ⁻¹(3/4): scales the MAD to a standard deviation for normal data.
_MAD_TO_SD = 1.4826
#: Massive activations (Sun et al. 2024, "Massive Activations in Large Language Models"): a hidden-state
#: element larger than MASSIVE_ABS in magnitude and MASSIVE_RATIO times the layer's median magnitude.
MASSIVE_ABS = 100.0
MASSIVE_RATIO = 1000.0
#: Quantiles reported for the norm distribution of each category.
QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
_HISTOGRAM_BINS = 40
_TOP = 10

#: English function words. Hand-written rather than NLTK's list: NLTK is a large dependency that fetches
#: its corpora at run time (offline machines cannot), and a category needs only closed-class words.
#: Tokens of other languages therefore count as content. Single letters other than "a" and "i" are left
#: out because BPE splits words into such pieces ("cat" + "s").
STOP_WORDS: frozenset[str] = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most my
    myself no nor not now of off on once only or other our ours ourselves out over own same she should so
    some such than that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you your
    yours yourself yourselves also may might must shall upon whose within without via per
    """.split()  # noqa: SIM905  (a word block reads better than 140 quoted strings)
)
_PREFIXES = ("##", "Ġ", "▁")


def token_category(kind: str, token: str) -> Category:
    """The category of one token: ``cls``/``sep``/``register`` by kind, else punct, stop word or content.

    Args:
        kind: ``cls``, ``sep``, ``register``, ``question``, ``context`` or ``text`` (see
            :class:`~regtune.tasks.inputs.ExplainInput`).
        token: The tokenizer's token string; WordPiece ``##`` and BPE/SentencePiece ``Ġ``/``▁`` word markers
            are stripped first.

    Returns:
        ``punct`` for a piece without letters or digits (a bare ``▁`` included), ``stopword`` for a word
        in :data:`STOP_WORDS` (case-insensitive; never a ``##`` continuation piece, which belongs to the
        word before it), else ``content``.
    """
    if kind in ("cls", "sep", "register"):
        return kind  # type: ignore[return-value]
    if kind not in ("question", "context", "text"):
        raise ConfigError(f"unknown token kind {kind!r}; known: cls, sep, register, question, context, text")
    piece = token
    for prefix in _PREFIXES:
        if piece.startswith(prefix):
            piece = piece[len(prefix) :]
            break
    if not any(ch.isalnum() for ch in piece):
        return "punct"
    if not token.startswith("##") and piece.lower() in STOP_WORDS:
        return "stopword"
    return "content"


@dataclass(frozen=True)
class OutlierRule:
    """Result of :func:`mad_outliers` on one set of values.

    Attributes:
        median: Median of the reference values.
        mad: Raw median absolute deviation of the reference values.
        scale: ``max(1.4826 * mad, MIN_SCALE_SHARE * median)``, the robust standard deviation used.
        threshold: ``median + k * scale``; values strictly above it are outliers.
    """

    median: float
    mad: float
    scale: float
    threshold: float


def mad_outliers(
    values: np.ndarray, *, k: float = DEFAULT_K_MAD, reference: np.ndarray | None = None
) -> tuple[np.ndarray, OutlierRule]:
    """Flag high values: ``value > median + k * max(1.4826 * MAD, 0.05 * median)``.

    The median and MAD come from ``values[reference]`` (all values when None). Only the upper tail is
    flagged: the question is which tokens carry unusually *large* norms. With k = 3.5 this is Iglewicz &
    Hoaglin's modified z-score rule; the floor on the scale keeps a layer whose norms are all alike from
    flagging rounding noise.

    Args:
        values: (T,) values, e.g. token norms of one layer.
        k: Number of robust standard deviations above the median.
        reference: (T,) booleans choosing the values the median and MAD are computed from.

    Returns:
        ``(mask, rule)``: (T,) booleans, True for outliers, and the :class:`OutlierRule` applied.
    """
    if not k > 0:
        raise ConfigError(f"k_mad must be > 0, got {k}")
    values = np.asarray(values, dtype=np.float64)
    ref = values if reference is None else values[np.asarray(reference, dtype=bool)]
    if ref.size == 0:
        raise ValueError("no reference values for the outlier rule")
    median = float(np.median(ref))
    mad = float(np.median(np.abs(ref - median)))
    scale = max(_MAD_TO_SD * mad, MIN_SCALE_SHARE * abs(median))
    threshold = median + k * scale
    return values > threshold, OutlierRule(median, mad, scale, threshold)


@dataclass
class ArtifactAnalysis:
    """Per-layer norms, sinks, entropies and register statistics of one model on a set of windows.

    Layer indices: norms and register cosines have L+1 rows (0 is the embedding output, registers
    included; l is the output of layer l); attention arrays have L rows (row l-1 is layer l). Attention
    statistics average over *text* queries only, so a τ=0 and a τ>0 model are compared on the same
    queries; registers as queries appear in ``register_to_category`` and ``register_top_tokens``.

    Attributes:
        num_registers: R.
        placement: ``prepend`` or ``after_cls``.
        num_inputs: Windows analysed.
        k_mad: k of the outlier rule (:func:`mad_outliers`).
        norms: (L+1, T) L2 norm of every token of every window, registers included.
        categories: (T,) index into :data:`CATEGORIES` of each of those tokens.
        labels: (T,) token strings (``[REG i]`` for register i).
        attention_mass: (L, heads, C) mean over text queries of the attention going to keys of each
            category; sums to 1 over C.
        attention_per_token: (L, heads, C) mean over text queries of (mass to the category) / (its share of
            the keys): 1 is what uniform attention gives, > 1 marks a sink. NaN where a category never occurs.
        entropy: (L, heads) mean over text queries of the attention entropy (natural log).
        entropy_normalized: (L, heads) the same divided by log(S), S the window's keys (1 = uniform).
        register_attention: (L, R) mean over text queries and heads of the attention register i receives.
        register_to_category: (L, R, C) mean over windows and heads of register i's attention (as a query)
            to each category.
        register_cosine: (L+1, R, R) mean over windows of the cosine similarity of register outputs.
        register_top_tokens: per register, the text tokens it attends to most, averaged over layers and
            heads, summed over windows: ``{"token", "mass", "occurrences", "mean_per_occurrence"}``.
        peaks: (L+1, T) the largest |element| of every token's hidden state (massive activations).
        medians: (L+1, T) the median |element| of every token's hidden state; a layer's median magnitude
            is the median of these over its text tokens (a median of medians: the exact median over all
            elements would need every hidden state in memory).
    """

    num_registers: int
    placement: str
    num_inputs: int
    k_mad: float
    norms: np.ndarray
    categories: np.ndarray
    labels: np.ndarray
    attention_mass: np.ndarray
    attention_per_token: np.ndarray
    entropy: np.ndarray
    entropy_normalized: np.ndarray
    register_attention: np.ndarray
    register_to_category: np.ndarray
    register_cosine: np.ndarray
    register_top_tokens: list[list[dict[str, Any]]] = field(default_factory=list)
    peaks: np.ndarray | None = None
    medians: np.ndarray | None = None

    @property
    def num_layers(self) -> int:
        return int(self.attention_mass.shape[0])

    def outliers(self, layer: int) -> tuple[np.ndarray, OutlierRule]:
        """(T,) outlier flags of one hidden-state layer; the reference distribution is the text tokens."""
        return mad_outliers(self.norms[layer], k=self.k_mad, reference=self.categories != _REGISTER)

    def norm_summary(self, layer: int) -> dict[str, Any]:
        """Quantiles, histogram and outliers of one layer's norms, per category (JSON-ready)."""
        norms = self.norms[layer].astype(np.float64)
        flagged, rule = self.outliers(layer)
        edges = np.linspace(0.0, float(norms.max()) if norms.size else 1.0, _HISTOGRAM_BINS + 1)
        by_category: dict[str, Any] = {}
        histogram: dict[str, list[int]] = {}
        for index, name in enumerate(CATEGORIES):
            chosen = self.categories == index
            values = norms[chosen]
            count, outliers = int(chosen.sum()), int(flagged[chosen].sum())
            by_category[name] = {
                "count": count,
                "mean": float(values.mean()) if count else None,
                "quantiles": _quantiles(values) if count else None,
                "max": float(values.max()) if count else None,
                "outliers": outliers,
                "outlier_share": outliers / count if count else None,
            }
            histogram[name] = np.histogram(values, bins=edges)[0].tolist()
        top = Counter(self.labels[flagged].tolist()).most_common(_TOP)
        return {
            "layer": layer,
            "rule": {
                "median": rule.median,
                "mad": rule.mad,
                "scale": rule.scale,
                "threshold": rule.threshold,
            },
            "outliers": int(flagged.sum()),
            "by_category": by_category,
            "histogram": {"edges": edges.tolist(), "counts": histogram},
            "top_outlier_tokens": [{"token": t, "count": c} for t, c in top],
        }

    def massive_summary(self, layer: int, top: int = 3) -> dict[str, Any]:
        """One layer's largest activations, its median magnitude, and the massive ones by category."""
        peaks = self.peaks[layer].astype(np.float64)  # type: ignore[index]
        text = self.categories != _REGISTER
        median = float(np.median(self.medians[layer][text]))  # type: ignore[index]
        massive = (peaks > MASSIVE_ABS) & (peaks > MASSIVE_RATIO * median)
        order = np.argsort(-peaks, kind="stable")[:top]
        return {
            "layer": layer,
            "median_magnitude": median,
            "top": [
                {
                    "token": str(self.labels[i]),
                    "category": CATEGORIES[self.categories[i]],
                    "value": float(peaks[i]),
                }
                for i in order
            ],
            "top1_over_median": float(peaks[order[0]] / median) if median > 0 else None,
            "massive_tokens": int(massive.sum()),
            "massive_by_category": {
                name: int((massive & (self.categories == index)).sum())
                for index, name in enumerate(CATEGORIES)
            },
            "max_by_category": {
                name: float(peaks[self.categories == index].max())
                if (self.categories == index).any()
                else None
                for index, name in enumerate(CATEGORIES)
            },
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything but the raw per-token norms, as plain JSON (NaN becomes null)."""
        heads_mean = lambda a: a.mean(axis=1)  # noqa: E731  (L, heads, C) -> (L, C)
        r = self.num_registers
        offdiag = ~np.eye(r, dtype=bool)
        out = {
            "settings": {
                "num_registers": r,
                "placement": self.placement,
                "num_inputs": self.num_inputs,
                "num_layers": self.num_layers,
                "num_heads": int(self.attention_mass.shape[1]),
                "categories": list(CATEGORIES),
                "k_mad": self.k_mad,
                "outlier_rule": (
                    f"norm > median + {self.k_mad:g} * max(1.4826 * MAD, {MIN_SCALE_SHARE:g} * median), "
                    "median and MAD over the layer's text tokens"
                ),
                "layers": "norms/cosine: 0 = embedding output, l = output of layer l; attention: layer 1..L",
            },
            "norms": [self.norm_summary(layer) for layer in range(self.norms.shape[0])],
            "attention": {
                "mass": _by_category(heads_mean(self.attention_mass)),
                "per_token": _by_category(heads_mean(self.attention_per_token)),  # NaN: category absent
                "mass_per_head": self.attention_mass.tolist(),
                "entropy": self.entropy.tolist(),
                "entropy_normalized": self.entropy_normalized.tolist(),
            },
            "registers": {
                "attention_received": self.register_attention.tolist(),
                "to_category": self.register_to_category.tolist(),
                "cosine": self.register_cosine.tolist(),
                "cosine_last": self.register_cosine[-1].tolist(),
                "cosine_mean_offdiagonal": [
                    float(c[offdiag].mean()) if r > 1 else None for c in self.register_cosine
                ],
                "top_tokens": self.register_top_tokens,
            },
        }
        if self.peaks is not None:
            out["massive_activations"] = {
                "rule": f"|element| > {MASSIVE_ABS:g} and > {MASSIVE_RATIO:g} x the layer's median magnitude "
                "(Sun et al. 2024); median: over text tokens of each token's median |element|",
                "layers": [self.massive_summary(layer) for layer in range(self.peaks.shape[0])],
            }
        return _json_ready(out)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    return {str(q): float(v) for q, v in zip(QUANTILES, np.quantile(values, QUANTILES), strict=True)}


def _by_category(array: np.ndarray) -> dict[str, list[float]]:
    """(L, C) -> {category: [L values]}."""
    return {name: array[:, i].tolist() for i, name in enumerate(CATEGORIES)}


def _json_ready(obj: Any) -> Any:
    """Non-finite floats become None: JSON has no NaN, and a missing category is not a number."""
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _full_categories(item: ExplainInput, config: Any) -> tuple[np.ndarray, list[str]]:
    """(R+N,) category indices and token labels of one window in full-sequence order."""
    r = config.num_registers
    cats = np.empty(r + len(item), dtype=np.int64)
    labels = [""] * (r + len(item))
    for i, (kind, token) in enumerate(zip(item.kinds, item.tokens, strict=True)):
        j = full_position(config, i)
        cats[j], labels[j] = CATEGORIES.index(token_category(kind, token)), token
    reg = register_slice(r, config.placement)
    for i, j in enumerate(range(reg.start, reg.stop)):
        cats[j], labels[j] = _REGISTER, f"[REG {i}]"
    return cats, labels


def _collate(
    chunk: Sequence[ExplainInput], config: Any, pad_id: int, with_types: bool, device: torch.device
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, list[str]]:
    """Right-padded model inputs (B, N), full-sequence categories and token ids (B, R+N), labels.

    Padding sits at the end of the text, hence at the end of the full sequence whatever the placement;
    its category and id are -1. Registers get id -1 too (they are not vocabulary tokens).
    """
    r, n_max = config.num_registers, max(len(item) for item in chunk)
    ids = torch.full((len(chunk), n_max), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    cats = torch.full((len(chunk), r + n_max), -1, dtype=torch.long)
    full_ids = torch.full_like(cats, -1)
    labels: list[str] = []
    for b, item in enumerate(chunk):
        n = len(item)
        ids[b, :n] = torch.tensor(item.input_ids)
        mask[b, :n] = 1
        if item.token_type_ids is not None:
            types[b, :n] = torch.tensor(item.token_type_ids)
        item_cats, item_labels = _full_categories(item, config)
        cats[b, : r + n] = torch.from_numpy(item_cats)
        full_ids[b, [full_position(config, i) for i in range(n)]] = ids[b, :n]
        labels.extend(item_labels)
    batch = {"input_ids": ids, "attention_mask": mask}
    if with_types and all(item.token_type_ids is not None for item in chunk):
        batch["token_type_ids"] = types
    return {k: v.to(device) for k, v in batch.items()}, cats.to(device), full_ids.to(device), labels


class _Sums:
    """Running sums over windows; sized at the first batch, when the layer and head counts are known."""

    def __init__(self, layers: int, heads: int, r: int, vocab: int, device: torch.device) -> None:
        c = len(CATEGORIES)
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)  # noqa: E731
        self.mass, self.per_token = zeros(layers, heads, c), zeros(layers, heads, c)
        self.per_token_queries = zeros(c)  # text queries whose window has the category
        self.entropy, self.entropy_norm = zeros(layers, heads), zeros(layers, heads)
        self.reg_received, self.reg_to_cat = zeros(layers, r), zeros(layers, r, c)
        self.cosine = zeros(layers + 1, r, r)
        self.token_mass, self.token_count = zeros(r, vocab), zeros(vocab)
        self.text_queries = 0.0


@torch.no_grad()
def analyze_model(
    model: PreTrainedModel,
    inputs: Sequence[ExplainInput],
    *,
    batch_size: int = 8,
    k_mad: float = DEFAULT_K_MAD,
    top_k: int = _TOP,
) -> ArtifactAnalysis:
    """Norms, outliers, sinks, entropies and register statistics of ``model`` on ``inputs`` (one pass).

    Hidden states come from ``output_hidden_states`` and attention probabilities from
    :func:`~regtune.explain.attention.explain_attention`; both include the registers. Attention maps are
    reduced batch by batch and never kept, so memory is that of one batch's maps (L × B × heads × S²
    floats) plus one norm per token and layer.

    Args:
        model: A QA model, with or without registers.
        inputs: The windows, from the task's ``explain_inputs``.
        batch_size: Windows per forward pass.
        k_mad: k of the outlier rule (:func:`mad_outliers`).
        top_k: Tokens listed per register in ``register_top_tokens``.

    Returns:
        An :class:`ArtifactAnalysis`.
    """
    if not inputs:
        raise RegtuneError("no windows to analyse; give at least one question")
    if batch_size < 1 or top_k < 1:
        raise ConfigError(f"batch_size and top_k must be >= 1, got {batch_size} and {top_k}")
    mad_outliers(np.ones(1), k=k_mad)  # validates k_mad at the boundary
    config = get_register_config(model)
    r, reg = config.num_registers, register_slice(config.num_registers, config.placement)
    device = next(model.parameters()).device
    with_types = "token_type_ids" in inspect.signature(model.forward).parameters
    pad_id = getattr(model.config, "pad_token_id", None) or 0
    vocab = max(max(item.input_ids) for item in inputs) + 1
    token_text = {tid: tok for item in inputs for tid, tok in zip(item.input_ids, item.tokens, strict=True)}
    sums: _Sums | None = None
    parts = _Parts()
    was_training = model.training
    model.eval()
    try:
        with explain_attention(model, record=True) as state:
            for start in range(0, len(inputs), batch_size):
                chunk = inputs[start : start + batch_size]
                batch, cats, full_ids, chunk_labels = _collate(chunk, config, pad_id, with_types, device)
                state.probs.clear()
                hidden = model(**batch, output_hidden_states=True).hidden_states  # L+1 × (B, S, H)
                probs = list(state.probs)  # L × (B, heads, S, S)
                state.probs.clear()
                if len(probs) != len(hidden) - 1:
                    raise RegtuneError(f"recorded {len(probs)} attention maps for {len(hidden) - 1} layers")
                if sums is None:
                    sums = _Sums(len(probs), probs[0].shape[1], r, vocab, device)
                parts.add(hidden, cats, chunk_labels)
                _accumulate(sums, hidden, probs, cats, full_ids, reg)
    finally:
        model.train(was_training)
    assert sums is not None
    return _finish(
        sums, parts, config, len(inputs), float(k_mad), _top_tokens(sums, token_text, len(inputs), top_k)
    )


@dataclass
class _Parts:
    """Per-batch pieces of the token-level arrays, concatenated once at the end (text and registers only)."""

    norms: list[np.ndarray] = field(default_factory=list)  # (L+1, tokens of the batch)
    peaks: list[np.ndarray] = field(default_factory=list)
    medians: list[np.ndarray] = field(default_factory=list)
    categories: list[np.ndarray] = field(default_factory=list)  # (tokens of the batch,)
    labels: list[str] = field(default_factory=list)

    def add(self, hidden: Sequence[torch.Tensor], cats: torch.Tensor, labels: Sequence[str]) -> None:
        valid = cats >= 0  # (B, S): padding has category -1
        norms = torch.stack([h.float().norm(dim=-1) for h in hidden])  # (L+1, B, S)
        self.norms.append(norms[:, valid].cpu().numpy())
        peaks, medians = _magnitudes(hidden, valid)
        self.peaks.append(peaks)
        self.medians.append(medians)
        self.categories.append(cats[valid].cpu().numpy())
        self.labels.extend(labels)


def _finish(
    sums: _Sums,
    parts: _Parts,
    config: RegisterConfig,
    n: int,
    k_mad: float,
    top_tokens: list[list[dict[str, Any]]],
) -> ArtifactAnalysis:
    """Means from the running sums; per-token attention is NaN for tokens no text query saw."""
    per_token = sums.per_token / sums.per_token_queries.clamp_min(1)
    per_token[:, :, sums.per_token_queries == 0] = math.nan
    return ArtifactAnalysis(
        num_registers=config.num_registers,
        placement=config.placement.value,
        num_inputs=n,
        k_mad=k_mad,
        norms=np.concatenate(parts.norms, axis=1),
        categories=np.concatenate(parts.categories).astype(np.int8),
        labels=np.array(parts.labels, dtype=object),
        attention_mass=(sums.mass / sums.text_queries).cpu().numpy(),
        attention_per_token=per_token.cpu().numpy(),
        entropy=(sums.entropy / sums.text_queries).cpu().numpy(),
        entropy_normalized=(sums.entropy_norm / sums.text_queries).cpu().numpy(),
        register_attention=(sums.reg_received / sums.text_queries).cpu().numpy(),
        register_to_category=(sums.reg_to_cat / n).cpu().numpy(),
        register_cosine=(sums.cosine / n).cpu().numpy(),
        register_top_tokens=top_tokens,
        peaks=np.concatenate(parts.peaks, axis=1),
        medians=np.concatenate(parts.medians, axis=1),
    )


def _magnitudes(hidden: Sequence[torch.Tensor], valid: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per layer and real token, the largest and the median |element| of its hidden state: (L+1, T) each."""
    magnitudes = [h.float().abs() for h in hidden]  # L+1 × (B, S, H)
    peaks = torch.stack([m.amax(-1) for m in magnitudes])[:, valid]
    medians = torch.stack([m.median(-1).values for m in magnitudes])[:, valid]
    return peaks.cpu().numpy(), medians.cpu().numpy()


def _accumulate(
    sums: _Sums,
    hidden: Sequence[torch.Tensor],
    probs: Sequence[torch.Tensor],
    cats: torch.Tensor,
    full_ids: torch.Tensor,
    reg: slice,
) -> None:
    """Add one batch's attention and register statistics to ``sums``."""
    valid = cats >= 0  # (B, S)
    text = valid & (cats != _REGISTER)
    onehot = torch.nn.functional.one_hot(cats.clamp(min=0), len(CATEGORIES)).double() * valid[..., None]
    queries = text.double()  # (B, S): attention statistics average over text queries
    n_keys = valid.sum(dim=1).double()  # (B,)
    n_cat = onehot.sum(dim=1)  # (B, C)
    # Mass divided by the category's share of the keys: 1 is uniform attention; 0 where it is absent.
    inv_share = torch.where(n_cat > 0, n_keys[:, None] / n_cat.clamp_min(1), torch.zeros_like(n_cat))
    log_keys = torch.log(n_keys).clamp_min(1e-12)[:, None, None]  # a 1-key window has entropy 0 anyway
    sums.text_queries += float(queries.sum())
    sums.per_token_queries += queries.sum(dim=1) @ (n_cat > 0).double()
    rows_mean = None
    for layer, p in enumerate(probs):
        p = p.double()  # (B, heads, S, S); padded keys hold exactly 0
        mass = torch.einsum("bhqk,bkc->bhqc", p, onehot)
        sums.mass[layer] += torch.einsum("bhqc,bq->hc", mass, queries)
        sums.per_token[layer] += torch.einsum("bhqc,bq,bc->hc", mass, queries, inv_share)
        entropy = -torch.special.xlogy(p, p).sum(dim=-1)  # (B, heads, S)
        sums.entropy[layer] += torch.einsum("bhq,bq->h", entropy, queries)
        sums.entropy_norm[layer] += torch.einsum("bhq,bq->h", entropy / log_keys, queries)
        if reg.stop > reg.start:
            heads_mean = p.mean(dim=1)  # (B, S, S)
            sums.reg_received[layer] += torch.einsum("bqr,bq->r", heads_mean[:, :, reg], queries)
            rows = heads_mean[:, reg, :]  # (B, R, S): each register as a query
            sums.reg_to_cat[layer] += torch.einsum("brk,bkc->rc", rows, onehot)
            rows_mean = rows / len(probs) if rows_mean is None else rows_mean + rows / len(probs)
    if rows_mean is None:
        return
    for layer, h in enumerate(hidden):
        regs = torch.nn.functional.normalize(h[:, reg].double(), dim=-1)  # (B, R, H)
        sums.cosine[layer] += torch.einsum("bih,bjh->ij", regs, regs)
    ids = full_ids[text]  # (T,) token ids of the text keys
    sums.token_mass.index_add_(1, ids, rows_mean.permute(1, 0, 2)[:, text])  # (R, T) summed by id
    sums.token_count.index_add_(0, ids, torch.ones_like(ids, dtype=torch.float64))


def _top_tokens(sums: _Sums, token_text: dict[int, str], n: int, top_k: int) -> list[list[dict[str, Any]]]:
    """Per register, the token ids with the largest attention summed over windows (mean per window)."""
    mass = sums.token_mass.cpu().numpy() / n  # (R, V)
    count = sums.token_count.cpu().numpy()  # (V,)
    out = []
    present = np.flatnonzero(count > 0)
    for row in mass:
        order = present[np.argsort(-row[present], kind="stable")][:top_k]
        out.append(
            [
                {
                    "token": token_text.get(int(t), str(int(t))),
                    "mass": float(row[t]),
                    "occurrences": int(count[t]),
                    "mean_per_occurrence": float(row[t] * n / count[t]),
                }
                for t in order
            ]
        )
    return out
