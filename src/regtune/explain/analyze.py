"""`regtune analyze`: artifacts, attention sinks and register roles of one model, or two side by side.

Per model, in ``OUTPUT/<label>/``: ``analysis.json`` (:meth:`ArtifactAnalysis.to_dict`),
``ablation.json`` (τ>0 only) and the PNG plots; in ``OUTPUT/``: ``analyze_config.json`` (the resolved
settings), ``compare_sinks.png`` (with ``--compare``) and ``index.html``, which embeds every plot and the
per-layer tables. A model whose results already exist under the same settings is not recomputed, so an
interrupted run continues where it stopped; a folder holding an analysis with other settings is refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from regtune.core.errors import RegtuneError
from regtune.core.io import atomic_write_json
from regtune.explain.artifact_plots import ablation_metric
from regtune.explain.artifacts import CATEGORIES, analyze_model

#: Categories whose share of outliers and of attention the overview tables list.
_TABLE_CATEGORIES = ("cls", "sep", "register", "punct")


def layer_table(label: str, analysis: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per layer: outlier shares and attention received per token kind (from ``analysis.json``)."""
    rows = []
    for layer, entry in enumerate(analysis["norms"]):
        row: dict[str, Any] = {"model": label, "layer": layer}
        row["outliers"] = entry["outliers"]
        for cat in _TABLE_CATEGORIES:
            by_cat = entry["by_category"].get(cat)
            share = by_cat["outlier_share"] if by_cat and by_cat["count"] else None
            row[f"% {cat} outliers"] = None if share is None else round(100 * share, 1)
        if layer >= 1:
            attention = analysis["attention"]
            for cat in _TABLE_CATEGORIES:
                mass = attention["mass"][cat][layer - 1]
                per_token = attention["per_token"][cat][layer - 1]
                row[f"attn to {cat} %"] = None if mass is None else round(100 * mass, 1)
                row[f"{cat} x uniform"] = None if per_token is None else round(per_token, 2)
        rows.append(row)
    return rows


def massive_table(label: str, analysis: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per layer: the largest activation, where it sits, its ratio to the median, and the massive ones."""
    rows = []
    for entry in analysis.get("massive_activations", {}).get("layers", []):
        top = entry["top"][0]
        by_cat = entry["massive_by_category"]
        rows.append(
            {
                "model": label,
                "layer": entry["layer"],
                "largest |x|": _round(top["value"], 1),
                "on": f"{top['token']} ({top['category']})",
                "× median": _round(entry["top1_over_median"], 0),
                "median |x|": _round(entry["median_magnitude"], 4),
                "massive tokens": entry["massive_tokens"],
                **{f"massive on {cat}": by_cat.get(cat, 0) for cat in ("cls", "register", "sep")},
            }
        )
    return rows


def ablation_table(label: str, ablation: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per ablation: which register, how, the primary score and its Δ with the interval."""
    metric, name = ablation_metric(ablation)
    rows = []
    for entry in [*ablation["all"], *ablation["single"]]:
        low, high = entry[f"delta_{metric}_ci"]
        rows.append(
            {
                "model": label,
                "register": "all" if entry["register"] is None else entry["register"],
                "mode": entry["mode"],
                name: _round(entry[metric], 2),
                f"Δ{name}": _round(entry[f"delta_{metric}"], 2),
                "95% CI": f"[{_text(low)}, {_text(high)}]",  # None: too few examples for an interval
                "p": _round(entry["p_value"], 4),
            }
        )
    return rows


def _load_if_same(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    return saved if saved.get("run_settings") == settings else None


def run_analyze(
    *,
    model: str,
    dev: str,
    output_dir: Path,
    compare: str | None = None,
    num_examples: int | None = 200,
    seed: int = 0,
    ablation: bool = True,
    labels: Sequence[str] | None = None,
    strict: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """The whole ``regtune analyze`` job; returns the files written, by name. ``labels`` name the models'
    folders and plots (default: ``tau<R>`` of each)."""
    from regtune import __version__
    from regtune.core.hub import load_tokenizer
    from regtune.core.registers import load_model
    from regtune.explain.artifact_plots import PLOT_FILES, plot_comparison
    from regtune.explain.run import (
        check_labels,
        check_same_inputs,
        check_same_task,
        default_labels,
        fingerprint,
        prepare_output_dir,
        select_examples,
    )

    paths = [model] + ([compare] if compare else [])
    models = [load_model(p) for p in paths]
    task = check_same_task(models)
    if compare:
        check_same_inputs(models[0], models[1])
    labels = tuple(labels) if labels else default_labels(*models)
    check_labels(labels, len(models))
    tokenizer = load_tokenizer(model)
    data = task.read_for_model(dev, models[0], strict=strict)
    if not data.examples:
        raise RegtuneError(f"{dev}: no usable {task.unit}s")
    inputs = task.explain_inputs(select_examples(data.examples, num_examples, seed), tokenizer, models[0])
    resolved = {
        "regtune_version": __version__,
        "models": {label: str(Path(p).resolve()) for label, p in zip(labels, paths, strict=True)},
        "model_fingerprints": [fingerprint(p) for p in paths],
        "dev": str(Path(dev).resolve()),
        "dev_fingerprint": fingerprint(dev),
        "num_questions_statistics": len(inputs),
        "num_questions_ablation": len(data.examples) if ablation else 0,
        "sample_seed": seed,
        **task.input_settings(models[0]),
    }
    prepare_output_dir(output_dir, resolved, kind="analyze")
    written: dict[str, Path] = {"config": output_dir / "analyze_config.json"}
    analyses: dict[str, dict[str, Any]] = {}
    ablations: dict[str, dict[str, Any]] = {}
    images: list[Path] = []
    for label, m, path in zip(labels, models, paths, strict=True):
        run_settings = {**resolved, "model": str(Path(path).resolve())}
        analyses[label], ablated, plots = _analyze_one(
            m, inputs, output_dir / label, run_settings, ablation_data=data.examples if ablation else None,
            tokenizer=tokenizer, progress=progress,
        )  # fmt: skip
        if ablated is not None:
            ablations[label] = ablated
        images += plots
        written[label] = output_dir / label / "analysis.json"
    if compare:
        comparison = plot_comparison(analyses, output_dir / PLOT_FILES["comparison"])
        images.insert(0, comparison)
        written["comparison plot"] = comparison
    notes = _page_notes(task, len(inputs), dev, seed, next(iter(analyses.values())))
    written["page"] = _write_page(output_dir, labels, dev, analyses, ablations, images, notes, task.unit)
    return written


def _page_notes(task: Any, num_inputs: int, dev: str, seed: int, analysis: Mapping[str, Any]) -> list[str]:
    """The page's notes on what was measured, on how many examples, and how to read the tables."""
    return [
        f"Norms, outliers and attention: {num_inputs} {task.unit}s of {Path(dev).name} (seed {seed}), one "
        f"{task.sequence} each; ablation: every {task.unit} of the file.",
        f"Outlier rule: {analysis['settings']['outlier_rule']}.",
        "'attn to X %': share of the text tokens' attention that lands on tokens of kind X (mean of heads); "
        "'X x uniform': that share divided by X's share of the keys (1 = no preference, >1 = a sink).",
        f"Token kinds: {', '.join(CATEGORIES)} (stop words: a fixed English list; other languages count as "
        "content).",
    ]


def _analyze_one(
    model: Any,
    inputs: Sequence[Any],
    folder: Path,
    run_settings: dict[str, Any],
    *,
    ablation_data: Sequence[Any] | None,
    tokenizer: Any,
    progress: bool,
) -> tuple[dict[str, Any], dict[str, Any] | None, list[Path]]:
    """One model's analysis (and, for τ>0, its ablation), reusing files saved under the same settings."""
    from regtune.core.registers import get_register_config
    from regtune.explain.ablation import register_ablation
    from regtune.explain.artifact_plots import write_artifact_plots
    from regtune.tasks import task_of_model

    analysis = _load_if_same(folder / "analysis.json", run_settings)
    if analysis is None:
        analysis = {**analyze_model(model, inputs).to_dict(), "run_settings": run_settings}
        atomic_write_json(folder / "analysis.json", analysis)
    ablated = None
    if ablation_data is not None and get_register_config(model).num_registers > 0:
        ablated = _load_if_same(folder / "ablation.json", run_settings)
        if ablated is None:
            each = None if task_of_model(model.config).ablate_each_register else []
            ablated = {
                **register_ablation(model, tokenizer, ablation_data, registers=each, progress=progress),
                "run_settings": run_settings,
            }
            atomic_write_json(folder / "ablation.json", ablated)
    return analysis, ablated, write_artifact_plots(analysis, folder, ablation=ablated)


def _write_page(
    output_dir: Path,
    labels: Sequence[str],
    dev: str,
    analyses: Mapping[str, Mapping[str, Any]],
    ablations: Mapping[str, Mapping[str, Any]],
    images: Sequence[Path],
    notes: Sequence[str],
    unit: str,
) -> Path:
    """``index.html``: every plot, the per-layer table, the ablation table and the register similarity."""
    from regtune.explain.render import write_figure_page

    tables: dict[str, list[dict[str, Any]]] = {
        "Per layer: high-norm outliers and attention sinks": [
            row for label, analysis in analyses.items() for row in layer_table(label, analysis)
        ]
    }
    massive = [row for label, analysis in analyses.items() for row in massive_table(label, analysis)]
    if massive:
        name = "Per layer: massive activations (|x| > 100 and > 1000 × median; Sun et al. 2024)"
        tables[name] = massive
    if ablations:
        rows = [row for label, ablated in ablations.items() for row in ablation_table(label, ablated)]
        tables[f"Register ablation on the whole dev file (paired {unit} bootstrap)"] = rows
    tables["Registers: mean off-diagonal cosine similarity per hidden state"] = [
        {
            "model": label,
            **{f"h{i}": _round(v) for i, v in enumerate(a["registers"]["cosine_mean_offdiagonal"])},
        }
        for label, a in analyses.items()
        if a["settings"]["num_registers"] > 1
    ]
    return write_figure_page(
        output_dir / "index.html",
        title=f"regtune analyze: {' vs '.join(labels)} on {Path(dev).name}",
        subtitle="High-norm artifact tokens, attention sinks and register roles",
        tables=tables,
        images=images,
        notes=notes,
    )


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def _text(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}"


__all__: Sequence[str] = ["ablation_table", "layer_table", "run_analyze"]
