"""PNG plots of :mod:`regtune.explain.artifacts`: norms, sinks, entropies, register roles, ablations.

Every plot reads the JSON form (``ArtifactAnalysis.to_dict()`` or the dict of ``register_ablation``), so a
saved ``analysis.json`` can be re-plotted, and two analyses (τ=0 and τ>0, usually two separate runs) can be
compared without the models. Figures are drawn with the Agg canvas (no display needed) and written
atomically. Each category keeps one colour in every figure.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from regtune.explain.artifacts import CATEGORIES, ArtifactAnalysis
from regtune.reporting.plots import new_figure, save_png

#: One colour per token category, shared by all figures.
CATEGORY_COLOURS = {
    "cls": "tab:red",
    "sep": "tab:orange",
    "register": "tab:purple",
    "punct": "tab:green",
    "stopword": "tab:blue",
    "content": "tab:gray",
}
CATEGORY_LABELS = {
    "cls": "[CLS]",
    "sep": "[SEP]",
    "register": "registers",
    "punct": "punctuation",
    "stopword": "stop words",
    "content": "content words",
}
_MODE_LABELS = {"zero": "zero vector", "mean": "mean of the registers", "mask": "masked out of attention"}
#: File names written by :func:`write_artifact_plots`, and the usual name for :func:`plot_comparison`.
PLOT_FILES = {
    "norms": "norms.png",
    "sinks": "sinks.png",
    "entropy": "entropy.png",
    "register_attention": "register_attention.png",
    "register_cosine": "register_cosine.png",
    "ablation": "register_ablation.png",
    "comparison": "compare_sinks.png",
}


def _as_dict(analysis: ArtifactAnalysis | Mapping[str, Any]) -> Mapping[str, Any]:
    return analysis.to_dict() if isinstance(analysis, ArtifactAnalysis) else analysis


def _array(values: Any) -> np.ndarray:
    """JSON lists (None for missing) -> float array with NaN."""
    return np.array(values, dtype=float)


def _title(data: Mapping[str, Any]) -> str:
    settings = data["settings"]
    return f"τ={settings['num_registers']} ({settings['placement']}), {settings['num_inputs']} windows"


def _present(data: Mapping[str, Any]) -> list[str]:
    """Categories that occur at all (registers are absent for τ=0)."""
    return [c for c in CATEGORIES if data["norms"][0]["by_category"][c]["count"]]


def plot_norms(analysis: ArtifactAnalysis | Mapping[str, Any], path: str | Path) -> Path:
    """Token output norms per layer and category (median, IQR band, 99th percentile) and outlier shares."""
    data = _as_dict(analysis)
    layers = np.arange(len(data["norms"]))
    figure = new_figure(12.5, 4.6)
    left, right = figure.subplots(1, 2)
    for cat in _present(data):
        colour = CATEGORY_COLOURS[cat]
        q = [entry["by_category"][cat]["quantiles"] for entry in data["norms"]]
        median = _array([x["0.5"] for x in q])
        left.plot(layers, median, color=colour, marker="o", markersize=3, label=CATEGORY_LABELS[cat])
        left.fill_between(layers, [x["0.25"] for x in q], [x["0.75"] for x in q], color=colour, alpha=0.15)
        left.plot(layers, [x["0.99"] for x in q], color=colour, linestyle=":", linewidth=1)
        share = _array([entry["by_category"][cat]["outlier_share"] for entry in data["norms"]])
        right.plot(layers, 100.0 * share, color=colour, marker="o", markersize=3, label=CATEGORY_LABELS[cat])
    left.plot(
        layers,
        [entry["rule"]["threshold"] for entry in data["norms"]],
        color="black",
        linestyle="--",
        linewidth=1,
        label="outlier threshold",
    )
    left.set_yscale("log")
    left.set_xlabel("hidden state (0 = embedding output, l = output of layer l)")
    left.set_ylabel("L2 norm of the token's hidden state")
    left.set_title("Norms: median (line), 25–75 % (band), 99th percentile (dotted)")
    left.legend(fontsize="small")
    right.set_xlabel("hidden state (0 = embedding output, l = output of layer l)")
    right.set_ylabel("% of the category's tokens flagged")
    right.set_title("High-norm outliers per category")
    right.legend(fontsize="small")
    for ax in (left, right):
        ax.set_xticks(layers)
        ax.grid(True, alpha=0.3)
    figure.suptitle(
        f"Token output norms, {_title(data)}; rule: {data['settings']['outlier_rule']}", fontsize=9
    )
    return save_png(figure, path)


def _sink_axes(ax: Any, data: Mapping[str, Any], *, legend: bool = True) -> None:
    """Stacked bars: share of text queries' attention going to each category, per layer."""
    mass = data["attention"]["mass"]
    layers = np.arange(1, data["settings"]["num_layers"] + 1)
    bottom = np.zeros(len(layers))
    for cat in _present(data):
        values = np.nan_to_num(_array(mass[cat]))
        ax.bar(layers, values, bottom=bottom, color=CATEGORY_COLOURS[cat], label=CATEGORY_LABELS[cat])
        bottom += values
    ax.set_xticks(layers)
    ax.set_ylim(0, 1)
    ax.set_xlabel("layer")
    ax.set_ylabel("share of the text tokens' attention")
    if legend:  # outside the axes: stacked bars fill them to 1
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))


def plot_sinks(analysis: ArtifactAnalysis | Mapping[str, Any], path: str | Path) -> Path:
    """Attention mass received per category and layer, in total and per token relative to uniform."""
    data = _as_dict(analysis)
    figure = new_figure(12.5, 4.6)
    left, right = figure.subplots(1, 2)
    _sink_axes(left, data)
    left.set_title("Where attention goes (mean over text queries and heads)")
    layers = np.arange(1, data["settings"]["num_layers"] + 1)
    for cat in _present(data):
        right.plot(
            layers,
            _array(data["attention"]["per_token"][cat]),
            color=CATEGORY_COLOURS[cat],
            marker="o",
            markersize=3,
            label=CATEGORY_LABELS[cat],
        )
    right.axhline(1.0, color="black", linestyle="--", linewidth=1, label="uniform attention")
    right.set_yscale("log")
    right.set_xticks(layers)
    right.set_xlabel("layer")
    right.set_ylabel("attention per token ÷ uniform (1/S)")
    right.set_title("Sinks: attention each token of a category receives")
    right.legend(fontsize="small")
    right.grid(True, alpha=0.3)
    figure.suptitle(f"Attention sinks, {_title(data)}", fontsize=10)
    return save_png(figure, path)


def _heatmap(figure: Any, ax: Any, values: np.ndarray, *, label: str, **kwargs: Any) -> None:
    from matplotlib import patheffects

    image = ax.imshow(values, aspect="auto", interpolation="nearest", **kwargs)
    figure.colorbar(image, ax=ax, label=label)
    if values.size <= 200:  # numbers stay readable only on small grids
        halo = [patheffects.withStroke(linewidth=2, foreground="white")]  # legible on dark and light cells
        for (i, j), v in np.ndenumerate(values):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=7, path_effects=halo)


def plot_entropy(analysis: ArtifactAnalysis | Mapping[str, Any], path: str | Path) -> Path:
    """Attention entropy of every head, normalised by log(S) (1 = uniform, 0 = one key)."""
    data = _as_dict(analysis)
    values = _array(data["attention"]["entropy_normalized"])  # (L, heads)
    figure = new_figure(1.6 + 0.45 * values.shape[1] + 2.5, 1.5 + 0.4 * values.shape[0])
    ax = figure.subplots()
    _heatmap(figure, ax, values, label="entropy / log(S)", cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(values.shape[1]))
    ax.set_yticks(range(values.shape[0]), [str(i + 1) for i in range(values.shape[0])])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(f"Attention entropy per head (mean over text queries)\n{_title(data)}", fontsize=10)
    return save_png(figure, path)


def _with_registers(analysis: ArtifactAnalysis | Mapping[str, Any]) -> tuple[Mapping[str, Any], int]:
    """The JSON form and its register count; a model without registers has nothing to plot."""
    data = _as_dict(analysis)
    r = data["settings"]["num_registers"]
    if r == 0:
        raise ValueError("τ=0: no registers to plot")
    return data, r


def plot_register_attention(analysis: ArtifactAnalysis | Mapping[str, Any], path: str | Path) -> Path:
    """Attention each register receives per layer, and where each register looks (mean over layers)."""
    data, r = _with_registers(analysis)
    received = _array(data["registers"]["attention_received"])  # (L, R)
    to_cat = _array(data["registers"]["to_category"]).mean(axis=0)  # (R, C)
    figure = new_figure(12.5, 1.8 + max(3.0, 0.35 * max(r, received.shape[0])))
    left, right = figure.subplots(1, 2)
    _heatmap(figure, left, received, label="attention from a text query", cmap="magma")
    left.set_xticks(range(r))
    left.set_yticks(range(received.shape[0]), [str(i + 1) for i in range(received.shape[0])])
    left.set_xlabel("register")
    left.set_ylabel("layer")
    left.set_title("Attention each register receives (mean over text queries and heads)")
    bottom = np.zeros(r)
    for index, cat in enumerate(CATEGORIES):
        right.barh(
            range(r), to_cat[:, index], left=bottom, color=CATEGORY_COLOURS[cat], label=CATEGORY_LABELS[cat]
        )
        bottom += to_cat[:, index]
    right.set_yticks(range(r))
    right.invert_yaxis()
    right.set_xlim(0, 1)
    right.set_ylabel("register")
    right.set_xlabel("share of the register's attention (mean over layers and heads)")
    right.set_title("What each register attends to")
    right.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.suptitle(f"Register roles, {_title(data)}", fontsize=10)
    return save_png(figure, path)


def plot_register_cosine(analysis: ArtifactAnalysis | Mapping[str, Any], path: str | Path) -> Path:
    """Register–register cosine similarity at the last layer, and its off-diagonal mean per layer."""
    data, r = _with_registers(analysis)
    last = _array(data["registers"]["cosine_last"])  # (R, R)
    figure = new_figure(12.0, 4.8)
    left, right = figure.subplots(1, 2)
    _heatmap(figure, left, last, label="cosine similarity", cmap="coolwarm", vmin=-1.0, vmax=1.0)
    left.set_xticks(range(r))
    left.set_yticks(range(r))
    left.set_xlabel("register")
    left.set_ylabel("register")
    left.set_title("Cosine of register outputs, last layer (mean over windows)")
    offdiag = _array(data["registers"]["cosine_mean_offdiagonal"])
    right.plot(np.arange(len(offdiag)), offdiag, marker="o", color=CATEGORY_COLOURS["register"])
    right.set_ylim(-1.05, 1.05)
    right.axhline(1.0, color="black", linestyle="--", linewidth=1, label="identical copies")
    right.set_xticks(np.arange(len(offdiag)))
    right.set_xlabel("hidden state (0 = the learned vectors, l = output of layer l)")
    right.set_ylabel("mean cosine between different registers")
    right.set_title("Do the registers collapse into copies?")
    right.legend(fontsize="small")
    right.grid(True, alpha=0.3)
    figure.suptitle(f"Register similarity, {_title(data)}", fontsize=10)
    return save_png(figure, path)


def ablation_metric(ablation: Mapping[str, Any]) -> tuple[str, str]:
    """The metric an ablation's intervals are on, and its display name (older results are QA's F1)."""
    metric = str(ablation.get("metrics", ["f1"])[0])
    return metric, str(ablation.get("metric_labels", {}).get(metric, "F1" if metric == "f1" else metric))


def plot_ablation(ablation: Mapping[str, Any], path: str | Path) -> Path:
    """Δ of the primary score (QA F1, classification accuracy) on the dev set when register i (or all)
    is zeroed, replaced by the mean, or masked out."""
    metric, name = ablation_metric(ablation)
    modes = list(ablation["modes"])
    rows = [*ablation["single"], *ablation["all"]]
    groups = list(dict.fromkeys(row["register"] for row in rows))  # registers in order, then None (all)
    names = [("all" if g is None else str(g)) for g in groups]
    figure = new_figure(max(6.0, 1.5 + 0.5 * len(groups) * len(modes)), 4.6)
    ax = figure.subplots()
    width = 0.8 / len(modes)
    colours = {"zero": "tab:blue", "mean": "tab:olive", "mask": "tab:red"}
    for m, mode in enumerate(modes):
        by_group = {row["register"]: row for row in rows if row["mode"] == mode}
        xs = np.arange(len(groups)) + (m - (len(modes) - 1) / 2) * width
        delta = _array([by_group[g][f"delta_{metric}"] if g in by_group else None for g in groups])
        low = _array([by_group[g][f"delta_{metric}_ci"][0] if g in by_group else None for g in groups])
        high = _array([by_group[g][f"delta_{metric}_ci"][1] if g in by_group else None for g in groups])
        errors = np.nan_to_num(np.stack([delta - low, high - delta]))
        ax.bar(xs, delta, width=width, color=colours.get(mode), label=_MODE_LABELS.get(mode, mode))
        ax.errorbar(xs, delta, yerr=errors, fmt="none", ecolor="black", capsize=2, linewidth=0.8)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(groups)), names)
    ax.set_xlabel("ablated register ('all' = every register at once)")
    ax.set_ylabel(f"Δ{name} vs. the learned registers (points)")
    level = round(100 * ablation["confidence"])
    ax.set_title(
        f"Inference-time register ablation: baseline {name} {ablation['baseline'][metric]:.1f}, "
        f"{len(ablation['question_ids'])} examples, {level} % paired bootstrap CI",
        fontsize=10,
    )
    ax.legend(title="register replaced by", fontsize="small")
    ax.grid(True, axis="y", alpha=0.3)
    return save_png(figure, path)


def plot_comparison(analyses: Mapping[str, ArtifactAnalysis | Mapping[str, Any]], path: str | Path) -> Path:
    """Side by side (e.g. τ=0 vs τ=8): sink mass per category and outlier share per category, per layer.

    Top row: where the text tokens' attention goes; bottom row: share of each category's tokens that are
    high-norm outliers. Rows share their y axis, so the panels compare directly.
    """
    if not analyses:
        raise ValueError("no analyses to compare")
    datas = {label: _as_dict(a) for label, a in analyses.items()}
    figure = new_figure(1.0 + 5.2 * len(datas), 8.0)
    axes = figure.subplots(2, len(datas), sharey="row", squeeze=False)
    for column, (label, data) in enumerate(datas.items()):
        top, bottom = axes[0, column], axes[1, column]
        _sink_axes(top, data, legend=column == len(datas) - 1)
        top.set_title(f"{label}: {_title(data)}", fontsize=10)
        layers = np.arange(len(data["norms"]))
        for cat in _present(data):
            share = _array([entry["by_category"][cat]["outlier_share"] for entry in data["norms"]])
            bottom.plot(
                layers,
                100 * share,
                marker="o",
                markersize=3,
                color=CATEGORY_COLOURS[cat],
                label=CATEGORY_LABELS[cat],
            )
        bottom.set_xticks(layers)
        bottom.set_xlabel("hidden state (0 = embedding output)")
        bottom.set_ylabel("% of the category's tokens that are high-norm outliers")
        bottom.grid(True, alpha=0.3)
        if column == len(datas) - 1:
            bottom.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.suptitle("Do registers take over the sink and high-norm roles of [CLS]/[SEP]?", fontsize=11)
    return save_png(figure, path)


def write_artifact_plots(
    analysis: ArtifactAnalysis | Mapping[str, Any],
    folder: str | Path,
    *,
    ablation: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write every per-model plot that applies (register plots only for τ>0) to ``folder``.

    Returns:
        The written paths, named as in :data:`PLOT_FILES`.
    """
    folder = Path(folder)
    data = _as_dict(analysis)
    written = [
        plot_norms(data, folder / PLOT_FILES["norms"]),
        plot_sinks(data, folder / PLOT_FILES["sinks"]),
        plot_entropy(data, folder / PLOT_FILES["entropy"]),
    ]
    if data["settings"]["num_registers"]:
        written.append(plot_register_attention(data, folder / PLOT_FILES["register_attention"]))
        written.append(plot_register_cosine(data, folder / PLOT_FILES["register_cosine"]))
    if ablation is not None:
        written.append(plot_ablation(ablation, folder / PLOT_FILES["ablation"]))
    return written
