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


def ablation_table(label: str, ablation: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per ablation: which register, how, F1 and ΔF1 with its interval."""
    rows = []
    for entry in [*ablation["all"], *ablation["single"]]:
        low, high = entry["delta_f1_ci"]
        rows.append(
            {
                "model": label,
                "register": "all" if entry["register"] is None else entry["register"],
                "mode": entry["mode"],
                "F1": _round(entry["f1"], 2),
                "ΔF1": _round(entry["delta_f1"], 2),
                "95% CI": f"[{_text(low)}, {_text(high)}]",  # None: too few questions for an interval
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
    strict: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """The whole ``regtune analyze`` job; returns the files written, by name."""
    from regtune import __version__
    from regtune.core.hub import load_tokenizer
    from regtune.core.registers import get_register_config, load_model
    from regtune.explain.ablation import register_ablation
    from regtune.explain.artifact_plots import PLOT_FILES, plot_comparison, write_artifact_plots
    from regtune.explain.inputs import build_explain_inputs
    from regtune.explain.render import write_figure_page
    from regtune.explain.run import (
        check_same_inputs,
        default_labels,
        fingerprint,
        prepare_output_dir,
        select_examples,
    )
    from regtune.tasks.qa.data import load_examples
    from regtune.tasks.qa.evaluation import QASettings

    paths = [model] + ([compare] if compare else [])
    models = [load_model(p) for p in paths]
    if compare:
        check_same_inputs(models[0], models[1])
    labels = default_labels(*models)
    tokenizer = load_tokenizer(model)
    data = load_examples(dev, strict=strict)
    if not data.examples:
        raise RegtuneError(f"{dev}: no usable questions")
    examples = select_examples(data.examples, num_examples, seed)
    settings = QASettings.from_model(models[0])
    inputs = build_explain_inputs(
        examples, tokenizer, max_length=settings.max_length, doc_stride=settings.doc_stride
    )
    resolved = {
        "regtune_version": __version__,
        "models": {label: str(Path(p).resolve()) for label, p in zip(labels, paths, strict=True)},
        "model_fingerprints": [fingerprint(p) for p in paths],
        "dev": str(Path(dev).resolve()),
        "dev_fingerprint": fingerprint(dev),
        "num_questions_statistics": len(inputs),
        "num_questions_ablation": len(data.examples) if ablation else 0,
        "sample_seed": seed,
        "max_length": settings.max_length,
        "doc_stride": settings.doc_stride,
    }
    prepare_output_dir(output_dir, resolved, kind="analyze")
    written: dict[str, Path] = {"config": output_dir / "analyze_config.json"}
    analyses: dict[str, dict[str, Any]] = {}
    tables: dict[str, list[dict[str, Any]]] = {"Per layer: high-norm outliers and attention sinks": []}
    ablation_rows: list[dict[str, Any]] = []
    images: list[Path] = []
    for label, m, path in zip(labels, models, paths, strict=True):
        folder = output_dir / label
        run_settings = {**resolved, "model": str(Path(path).resolve())}
        analysis = _load_if_same(folder / "analysis.json", run_settings)
        if analysis is None:
            analysis = {**analyze_model(m, inputs).to_dict(), "run_settings": run_settings}
            atomic_write_json(folder / "analysis.json", analysis)
        analyses[label] = analysis
        ablated = None
        if ablation and get_register_config(m).num_registers > 0:
            ablated = _load_if_same(folder / "ablation.json", run_settings)
            if ablated is None:
                model_settings = QASettings.from_model(m)
                ablated = {
                    **register_ablation(m, tokenizer, data.examples, model_settings, progress=progress),
                    "run_settings": run_settings,
                }
                atomic_write_json(folder / "ablation.json", ablated)
            ablation_rows += ablation_table(label, ablated)
        images += write_artifact_plots(analysis, folder, ablation=ablated)
        tables["Per layer: high-norm outliers and attention sinks"] += layer_table(label, analysis)
        written[label] = folder / "analysis.json"
    if compare:
        comparison = plot_comparison(analyses, output_dir / PLOT_FILES["comparison"])
        images.insert(0, comparison)
        written["comparison plot"] = comparison
    if ablation_rows:
        tables["Register ablation on the whole dev file (paired question bootstrap)"] = ablation_rows
    tables["Registers: mean off-diagonal cosine similarity per hidden state"] = [
        {
            "model": label,
            **{f"h{i}": _round(v) for i, v in enumerate(a["registers"]["cosine_mean_offdiagonal"])},
        }
        for label, a in analyses.items()
        if a["settings"]["num_registers"] > 1
    ]
    notes = [
        f"Norms, outliers and attention: {len(inputs)} questions of {Path(dev).name} (seed {seed}), one "
        "window each; ablation: every question of the file.",
        f"Outlier rule: {next(iter(analyses.values()))['settings']['outlier_rule']}.",
        "'attn to X %': share of the text tokens' attention that lands on tokens of kind X (mean of heads); "
        "'X x uniform': that share divided by X's share of the keys (1 = no preference, >1 = a sink).",
        f"Token kinds: {', '.join(CATEGORIES)} (stop words: a fixed English list; other languages count as "
        "content).",
    ]
    written["page"] = write_figure_page(
        output_dir / "index.html",
        title=f"regtune analyze: {' vs '.join(labels)} on {Path(dev).name}",
        subtitle="High-norm artifact tokens, attention sinks and register roles",
        tables=tables,
        images=images,
        notes=notes,
    )
    return written


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def _text(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}"


__all__: Sequence[str] = ["ablation_table", "layer_table", "run_analyze"]
