"""Statistics and an offline HTML report for a finished (or partly finished) ``regtune sweep`` folder.

A sweep trains every grid point with several seeds and scores each run on several dev files. One run's
F1 says little: seeds and the particular dev questions both move it by points. This module therefore

* groups runs into *cells* (one dev file × one value of every grid axis but the seed) and summarises each
  cell with an interval that holds both seed and question noise (:func:`regtune.experiments.stats.summarize`);
* compares every τ > 0 with τ = 0 of the same dev file and other axes, paired by seed and question
  (:func:`regtune.experiments.stats.compare`), and Holm-corrects the p-values across the τ's of that group, so
  "some τ helps" is not claimed just because many τ's were tried;
* with several dev files (languages), adds XTREME's average over them and the zero-shot average without
  the training language, each with an interval and a paired Δ vs τ=0
  (:func:`regtune.experiments.stats.summarize_average`), and Holm-corrects across every dev file × τ
  (``p_holm_all``), so "registers change some language" is not claimed from the best of many languages;
* under ``select_on='validation'``, picks τ on the held-out part of the training data and reports that
  τ's dev results, the honest number when τ itself is a tuned hyper-parameter.

Files written (both atomically, so a reader never sees half of one)::

    DIR/summary.json         everything computed here (:func:`analyze_sweep`; its fields below)
    DIR/summary.csv          one row per cell and metric
    DIR/report/index.html    the report (:func:`write_report`), with its plots as PNG and SVG beside it

``summary.json`` holds::

    format      "regtune-sweep-summary/1"
    sweep       sweep.json's "sweep" object (the resolved grid, files and fixed options)
    versions    sweep.json's "versions"
    resolved_run_config  the full training config of the first finished run (preset + options)
    settings    n_boot, seed, confidence, metrics, scale, resampling and multiple-comparison method
    axes        the grid axes but the seed, in grid order (num_registers among them)
    devs        scored dev names in order ("validation" first under select_on)
    training_dev  the dev file in the training language (see :func:`training_dev`), or None
    runs        [{run_id, point: {axis: value}, finished}] for every grid point
    cells       [{dev, axes: {axis: value}, seeds, runs, n_questions,
                  metrics: {f1|exact_match: {mean, std, ci_low, ci_high, n_seeds, n_questions}},
                  vs_tau0: {f1|exact_match: None | {baseline_num_registers, seeds, n_seeds,
                            n_questions, seeds_left_out, baseline_seeds_left_out,
                            delta, ci_low, ci_high, p_value, p_holm, p_holm_all}}}]
    averages    with 2+ dev files: [{average: "all" | "zero_shot", dev (its label), devs, axes, seeds,
                runs, n_questions (total), questions_per_dev, metrics, vs_tau0}] per τ and other axes,
                shaped like cells (see :func:`_language_averages`)
    groups      [{dev, axes (the other axes), num_registers: [τ...], has_baseline, note}]
    selection   None, or {on, metric, groups: [{axes, validation: [{num_registers, mean, ci_low,
                ci_high, n_seeds}], chosen_num_registers, results: [{dev, metrics, vs_tau0}]}]}
    notes       plain-language remarks (left-out seeds, missing baselines, unfinished runs)

All scores are on 0..100; p_holm is Holm-adjusted across the τ's of one group (dev, other axes) for
one metric, p_holm_all across every dev file's comparisons of the sweep for one metric
(:func:`_holm_across_devs`). The result depends only on the finished runs' files, ``n_boot`` and
``seed``.

The report is self-contained: no scripts, no external CSS or fonts, images by relative path, so the
folder can be copied anywhere and opened offline.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from regtune.core.errors import ConfigError, DataError, RegtuneError
from regtune.core.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from regtune.experiments import stats
from regtune.reporting import plots
from regtune.reporting.html import Cell, escape, linked_figure, page_head, table
from regtune.reporting.plots import plot_text, save_png_and_svg

if TYPE_CHECKING:
    from regtune.experiments.sweep import SweepConfig

# regtune.experiments.sweep (grid expansion, run ids) is imported inside the functions: it pulls in torch and
# transformers through regtune.training.config, seconds that `import regtune.reporting.report` need not pay.

# The metrics summarised for every cell are the task's (regtune.tasks: QA's F1 and EM, classification's
# accuracy), in report order; per-example scores are on 0..1, summaries on 0..100. The analysis records
# them in settings["metrics"], settings["metric_labels"] and settings["unit"], which the page reads.
#: Coverage of every confidence interval; 1 - CONFIDENCE is the significance level in the report.
CONFIDENCE = 0.95
#: The grid axis compared against its zero value.
TAU = "num_registers"
#: Identifies the layout of summary.json, for readers that outlive this version.
SUMMARY_FORMAT = "regtune-sweep-summary/1"
REPORT_DIR = "report"
#: Columns of summary.csv before and after the grid axes.
CSV_HEAD = ("dev", "metric")
CSV_TAIL = (
    "n_seeds",
    "n_questions",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "delta_vs_tau0",
    "delta_ci_low",
    "delta_ci_high",
    "p_value",
    "p_holm",
    "p_holm_all",
    "in_language",
    "average_of",
)


# --- reading the sweep ------------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise RegtuneError(f"{path}: missing {what}") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RegtuneError(f"{path}: unreadable {what} ({err.__class__.__name__})") from err


def _load_sweep(root: Path) -> tuple[SweepConfig, dict[str, Any]]:
    """The folder's :class:`~regtune.experiments.sweep.SweepConfig` and raw ``sweep.json``.

    The sweep module itself expands the grid, so run ids and "finished" mean here exactly what they mean
    to ``regtune sweep``.
    """
    from regtune.experiments.sweep import SweepConfig

    sweep_file = root / "sweep.json"
    if not sweep_file.is_file():
        raise RegtuneError(f"{root}: not a sweep folder (no sweep.json)")
    saved = _read_json(sweep_file, "sweep file")
    if not isinstance(saved, dict) or not isinstance(saved.get("sweep"), dict):
        raise RegtuneError(f"{sweep_file}: not a regtune sweep file (no 'sweep' object)")
    try:
        sweep = SweepConfig.from_dict({**saved["sweep"], "output_dir": str(root)})
    except TypeError as err:  # a missing required key
        raise RegtuneError(f"{sweep_file}: incomplete sweep ({err})") from err
    except ConfigError as err:  # unknown keys or values this version of regtune rejects
        raise RegtuneError(f"{sweep_file}: {err}") from err
    return sweep, saved


def _rng(seed: int, *label: Any) -> np.random.Generator:
    """A generator per cell or comparison, derived from ``seed`` and a stable label.

    Independent of the order cells are visited in and of which other runs have finished, so adding one
    run to a sweep changes only the numbers that involve it.
    """
    digest = hashlib.sha256(json.dumps([str(part) for part in label]).encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "big")])


def _finite(value: Any) -> float | None:
    """A plain float for JSON, or None where the statistic is undefined (e.g. the std of one seed)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _common_questions(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Question ids every run scored, in the first run's order (fixed order keeps the bootstrap stable)."""
    common = set(runs[0])
    for run in runs[1:]:
        common &= set(run)
    return [qid for qid in runs[0] if qid in common]


def _summary_dict(summary: Any) -> dict[str, Any]:
    return {
        "mean": _finite(summary.mean),
        "std": _finite(summary.std),
        "ci_low": _finite(summary.ci_low),
        "ci_high": _finite(summary.ci_high),
        "n_seeds": int(summary.n_seeds),
        "n_questions": int(summary.n_questions),
    }


# --- analysis ---------------------------------------------------------------------------------------------


def analyze_sweep(root: Path, *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Summarise every cell of the sweep in ``root`` and compare each τ with τ = 0; write the summaries.

    Only finished runs count (every dev file scored), so the report can be made while a sweep is still
    running. A cell is one dev file × one value of every grid axis but the seed; its runs are its seeds.

    Returns the dict also written to ``DIR/summary.json``; its fields are listed in this module's
    docstring.

    Raises:
        RegtuneError: ``root`` has no sweep.json, or no run of the sweep has finished yet.
    """
    from regtune.experiments.sweep import VALIDATION, run_finished

    root = Path(root)
    sweep, saved = _load_sweep(root)
    scored = sweep.scored_files()
    specs = sweep.runs()
    finished = [spec for spec in specs if run_finished(spec, scored)]
    finished_ids = {spec.run_id for spec in finished}
    if not finished:
        raise RegtuneError(f"{root}: no finished run yet (0 of {len(specs)}); nothing to report")

    axes = [axis for axis in sweep.grid if axis != "seed"]
    others = [axis for axis in axes if axis != TAU]
    notes: list[str] = []
    if len(finished) < len(specs):
        notes.append(f"{len(finished)} of {len(specs)} runs have finished; only finished runs are analysed.")

    task = sweep.task
    metrics = task.metrics
    ctx = _Context(root, task, _read_scores(finished, scored, task), notes, n_boot, seed)
    cells = _make_cells(scored, finished, axes)
    for cell in cells:
        _summarize_cell(ctx, cell)
    # Comparisons with τ = 0 inside each group of cells that differ only in τ.
    group_cells = _group_cells(cells, others)
    groups = [_compare_group(ctx, dev, members, others) for (dev, _), members in group_cells.items()]

    selection = None
    if sweep.select_on == VALIDATION:
        selection = _select_on_validation(
            cells, others, [d for d in scored if d != VALIDATION], notes, metric=metrics[0]
        )
    # The held-out split under select_on is for choosing τ, not a language: it is left out of the
    # averages over languages and of the Holm family across dev files.
    languages = [dev for dev in scored if not (sweep.select_on and dev == VALIDATION)]
    training = training_dev(sweep.train_file, languages)
    _holm_across_devs(cells, languages, metrics)
    analysis: dict[str, Any] = {
        "format": SUMMARY_FORMAT,
        "sweep": saved["sweep"],
        "versions": saved.get("versions", {}),
        "resolved_run_config": _resolved_run_config(finished[0], sweep),
        "settings": _settings(task, n_boot, seed),
        "axes": axes,
        "devs": list(scored),
        "training_dev": training,
        "runs": [
            {"run_id": spec.run_id, "point": dict(spec.point), "finished": spec.run_id in finished_ids}
            for spec in specs
        ],
        "cells": cells,
        "groups": groups,
        "averages": _language_averages(ctx, cells, languages, training, others),
        "selection": selection,
        "notes": notes,
    }
    atomic_write_json(root / "summary.json", analysis)
    atomic_write_text(root / "summary.csv", summary_csv(analysis))
    return analysis


def _resolved_run_config(run: Any, sweep: SweepConfig) -> dict[str, Any]:
    """The fully resolved training config (preset + options), from a finished run's own config.json.

    sweep.json holds only what the user gave. Grid axes and per-run paths vary, so they are left out.
    """
    run_config = _read_json(run.dir / "config.json", "run config")
    return {
        key: value
        for key, value in (run_config.get("config", {}) if isinstance(run_config, dict) else {}).items()
        if key not in sweep.grid and key not in ("output_dir",)
    }


def _settings(task: Any, n_boot: int, seed: int) -> dict[str, Any]:
    """summary.json's ``settings``: what was computed and how, in words a reader of the file can follow."""
    metrics = task.metrics
    return {
        "n_boot": n_boot,
        "seed": seed,
        "confidence": CONFIDENCE,
        "task": task.name,
        "metrics": list(metrics),
        "metric_labels": {m: task.metric_labels[m] for m in metrics},
        "unit": task.unit,
        "scale": "0-100",
        "resampling": f"{task.unit}s: bootstrap with replacement; seeds: Student t (n_seeds - 1 df) "
        "scaled by the standard error of the per-seed scores (regtune.experiments.stats)",
        "comparison": f"paired by seed and {task.unit}; τ vs τ=0 of the same dev file and other axes",
        "multiple_comparisons": "Holm across the τ's of one dev file, other-axes group and metric",
        "multiple_comparisons_all": "p_holm_all: Holm across every dev file × τ × other-axes comparison "
        "with τ=0 of one metric (the held-out validation split excluded)",
        "average": "unweighted mean over the dev files (each file weighs the same); per seed the average "
        f"of the per-file scores; {task.unit}s bootstrapped within each file independently, seeds "
        "through the per-seed averages (regtune.experiments.stats.summarize_average); its Δ is paired "
        "per file and Holm-corrected across the τ's of one average",
    }


@dataclass
class _Context:
    """What every step of :func:`analyze_sweep` reads: the sweep's task, scores and settings, and notes."""

    root: Path
    task: Any  # regtune.tasks.Task
    scores: dict[tuple[str, str], dict[str, Mapping[str, float]]]  # (run id, dev) -> example id -> scores
    notes: list[str]
    n_boot: int
    seed: int


def _read_scores(finished: Sequence[Any], scored: Mapping[str, str], task: Any) -> dict[tuple[str, str], Any]:
    """Per-example scores of every finished run on every dev file."""
    scores: dict[tuple[str, str], dict[str, Mapping[str, float]]] = {}
    for spec in finished:
        for dev in scored:
            path = spec.eval_dir(dev) / task.per_example_file
            data = _read_json(path, f"per-{task.unit} scores")
            if not isinstance(data, dict) or not data:
                raise RegtuneError(f"{path}: expected a non-empty object of {task.unit} id -> scores")
            scores[spec.run_id, dev] = data
    return scores


def _make_cells(
    scored: Mapping[str, str], finished: Sequence[Any], axes: Sequence[str]
) -> list[dict[str, Any]]:
    """Cells (dev file × every axis but the seed), in dev order and then grid order, with their runs."""
    cells: list[dict[str, Any]] = []
    cell_index: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}
    for dev in scored:
        for spec in finished:
            key = (dev, tuple(spec.point[axis] for axis in axes))
            cell = cell_index.get(key)
            if cell is None:
                cell = {
                    "dev": dev,
                    "axes": {axis: spec.point[axis] for axis in axes},
                    "seeds": [],
                    "runs": [],
                }
                cell_index[key] = cell
                cells.append(cell)
            cell["seeds"].append(spec.point["seed"])
            cell["runs"].append(spec.run_id)
    return cells


def _summarize_cell(ctx: _Context, cell: dict[str, Any]) -> None:
    """Mean, std and CI of every metric over the cell's seeds and shared examples (in place)."""
    unit, metrics = ctx.task.unit, ctx.task.metrics
    runs = [ctx.scores[run_id, cell["dev"]] for run_id in cell["runs"]]
    questions = _common_questions(runs)
    if not questions:
        raise RegtuneError(f"{ctx.root}: the runs {cell['runs']} share no {unit} on '{cell['dev']}'")
    if any(len(run) != len(questions) for run in runs):
        ctx.notes.append(
            f"{_cell_label(cell)}: the seeds scored different {unit}s; "
            f"only the {len(questions)} they share are used."
        )
    cell["n_questions"] = len(questions)
    cell["metrics"] = {}
    for metric in metrics:
        matrix = _matrix(ctx.root, cell["dev"], cell["runs"], runs, metric, questions)
        summary = stats.summarize(
            matrix,
            n_boot=ctx.n_boot,
            confidence=CONFIDENCE,
            rng=_rng(ctx.seed, "cell", cell["dev"], *cell["axes"].items(), metric),
        )
        cell["metrics"][metric] = _summary_dict(summary)
    cell["vs_tau0"] = dict.fromkeys(metrics)
    cell["register_similarity"] = _register_similarity(ctx.root, cell)
    if len(runs) < 2:
        ctx.notes.append(f"{_cell_label(cell)}: one finished seed, so no seed spread and no CI.")


def _register_similarity(root: Path, cell: Mapping[str, Any]) -> dict[str, Any] | None:
    """The cell's register diversity figure: each run's ``register_similarity`` (mean off-diagonal
    cosine of its registers' last hidden states; 1 = copies) and their mean; None where runs lack it
    (τ < 2, or runs trained before regtune recorded it)."""
    values = []
    for run_id in cell["runs"]:
        path = root / "runs" / run_id / "evals" / cell["dev"] / "metrics.json"
        value = _read_json(path, "scores").get("register_similarity") if path.is_file() else None
        if value is None:
            return None
        values.append(float(value))
    return {"mean": sum(values) / len(values), "per_seed": values} if values else None


def _group_cells(
    cells: Sequence[dict[str, Any]], others: Sequence[str]
) -> dict[tuple[str, tuple[Any, ...]], list[dict[str, Any]]]:
    """Cells that differ only in τ, by (dev, other axes); each group with its τ=0 cell.

    A sweep runs τ=0 once for the axes that change nothing without registers (their first values, see
    ``REGISTER_ONLY_AXES``), so a group of another value of those axes takes that shared τ=0 cell.
    """
    groups: dict[tuple[str, tuple[Any, ...]], list[dict[str, Any]]] = {}
    for cell in cells:
        groups.setdefault((cell["dev"], tuple(cell["axes"][axis] for axis in others)), []).append(cell)
    for (dev, _), members in groups.items():
        if any(cell["axes"][TAU] == 0 for cell in members):
            continue
        shared = _shared_tau0(cells, dev, members[0]["axes"], others)
        if shared is not None:
            members.insert(0, shared)
    return groups


def _shared_tau0(
    cells: Sequence[Mapping[str, Any]], dev: str, axes: Mapping[str, Any], others: Sequence[str]
) -> Mapping[str, Any] | None:
    """The τ=0 cell of ``dev`` that agrees with ``axes`` on every axis that matters at τ=0."""
    from regtune.experiments.sweep import REGISTER_ONLY_AXES

    kept = [axis for axis in others if axis not in REGISTER_ONLY_AXES]
    return next(
        (
            cell
            for cell in cells
            if cell["dev"] == dev
            and cell["axes"][TAU] == 0
            and all(cell["axes"][axis] == axes[axis] for axis in kept)
        ),
        None,
    )


def _compare_group(
    ctx: _Context, dev: str, members: Sequence[dict[str, Any]], others: Sequence[str]
) -> dict[str, Any]:
    """Every τ of one group (dev file, other axes) against its τ=0, Holm-corrected; fills each cell's
    ``vs_tau0`` and returns the group's record."""
    metrics = ctx.task.metrics
    # Named by a τ>0 member: a shared τ=0 cell (see _group_cells) has other values of the register-only axes.
    named = next((cell for cell in members if cell["axes"][TAU] != 0), members[0])
    group = {
        "dev": dev,
        "axes": {axis: named["axes"][axis] for axis in others},
        "num_registers": [cell["axes"][TAU] for cell in members],
        "has_baseline": False,
        "note": None,
    }
    baseline = next((cell for cell in members if cell["axes"][TAU] == 0), None)
    if baseline is None:
        group["note"] = f"{_group_label(group)}: no finished τ=0 run, so no comparison with τ=0."
        ctx.notes.append(group["note"])
        return group
    group["has_baseline"] = True
    treated = [cell for cell in members if cell is not baseline]
    for metric in metrics:
        results: dict[str, dict[str, Any]] = {}
        for cell in treated:
            result = _compare_cells(
                ctx.root,
                cell,
                baseline,
                ctx.scores,
                metric,
                n_boot=ctx.n_boot,
                rng=_rng(ctx.seed, "cmp", dev, metric, *cell["axes"].items()),
            )
            if result is None:
                if metric == metrics[0]:
                    ctx.notes.append(
                        f"{_cell_label(cell)}: shares no seed or {ctx.task.unit} with τ=0; not compared."
                    )
                continue
            results[str(cell["axes"][TAU])] = result
            cell["vs_tau0"][metric] = result
        if results:
            adjusted = stats.holm({tau: result["p_value"] for tau, result in results.items()})
            for tau, result in results.items():
                result["p_holm"] = _finite(adjusted[tau])
    for cell in treated:
        _seed_notes(ctx, cell, cell["vs_tau0"][metrics[0]])
    return group


def _seed_notes(ctx: _Context, cell: Mapping[str, Any], comparison: Mapping[str, Any] | None) -> None:
    if comparison and comparison["n_seeds"] < 2:
        ctx.notes.append(f"{_cell_label(cell)}: only one seed shared with τ=0, so Δ has no CI or p-value.")
    if comparison and (comparison["seeds_left_out"] or comparison["baseline_seeds_left_out"]):
        ctx.notes.append(
            f"{_cell_label(cell)}: compared with τ=0 on the seeds both have "
            f"({_join(comparison['seeds'])}); left out: τ={cell['axes'][TAU]} "
            f"{_join(comparison['seeds_left_out']) or 'none'}, "
            f"τ=0 {_join(comparison['baseline_seeds_left_out']) or 'none'}."
        )


def _matrix(
    root: Path,
    dev: str,
    run_ids: Sequence[str],
    runs: Sequence[Mapping[str, Any]],
    metric: str,
    questions: Sequence[str],
) -> np.ndarray:
    """The (seeds, questions) score matrix; a bad score becomes an error naming the sweep and runs."""
    try:
        matrix, _ = stats.score_matrix(runs, metric, question_ids=questions)
    except DataError as err:
        raise DataError(f"{root}: {dev} scores of runs {', '.join(run_ids)} (in that order): {err}") from err
    return matrix


def _compare_cells(
    root: Path,
    cell: Mapping[str, Any],
    baseline: Mapping[str, Any],
    scores: Mapping[tuple[str, str], Mapping[str, Any]],
    metric: str,
    *,
    n_boot: int,
    rng: np.random.Generator,
) -> dict[str, Any] | None:
    """``cell`` minus ``baseline`` on the seeds and questions both have; None when no seed is shared.

    Pairing by seed removes what a seed does to both runs alike (data order, head init); pairing by
    question removes question difficulty. Both need the same seeds and questions on both sides.
    """
    paired = _paired_matrices(root, cell, baseline, scores, metric)
    if paired is None:
        return None
    seeds, treated_matrix, base_matrix = paired
    result = stats.compare(treated_matrix, base_matrix, n_boot=n_boot, confidence=CONFIDENCE, rng=rng)
    return _comparison_dict(result, seeds, cell, baseline)


def _paired_matrices(
    root: Path,
    cell: Mapping[str, Any],
    baseline: Mapping[str, Any],
    scores: Mapping[tuple[str, str], Mapping[str, Any]],
    metric: str,
) -> tuple[list[Any], np.ndarray, np.ndarray] | None:
    """(shared seeds, treated matrix, baseline matrix) of one dev file's cells, rows by seed and columns by
    the questions every one of those runs scored; None when they share no seed or no question."""
    dev = cell["dev"]
    by_seed = dict(zip(cell["seeds"], cell["runs"], strict=True))
    base_by_seed = dict(zip(baseline["seeds"], baseline["runs"], strict=True))
    seeds = [s for s in cell["seeds"] if s in base_by_seed]
    if not seeds:
        return None
    treated = [scores[by_seed[s], dev] for s in seeds]
    base = [scores[base_by_seed[s], dev] for s in seeds]
    questions = _common_questions([*treated, *base])
    if not questions:
        return None
    treated_matrix = _matrix(root, dev, [by_seed[s] for s in seeds], treated, metric, questions)
    base_matrix = _matrix(root, dev, [base_by_seed[s] for s in seeds], base, metric, questions)
    return seeds, treated_matrix, base_matrix


def _comparison_dict(
    result: stats.Comparison, seeds: Sequence[Any], cell: Mapping[str, Any], baseline: Mapping[str, Any]
) -> dict[str, Any]:
    """A ``vs_tau0`` entry; the Holm fields are filled in once the whole family is known."""
    return {
        "baseline_num_registers": 0,
        # The τ=0 cell's other axes: they differ from the cell's own for a shared τ=0 (register-only axes).
        "baseline_axes": {axis: value for axis, value in baseline["axes"].items() if axis != TAU},
        "seeds": list(seeds),
        "n_seeds": int(result.n_seeds),
        "n_questions": int(result.n_questions),
        "seeds_left_out": [s for s in cell["seeds"] if s not in baseline["seeds"]],
        "baseline_seeds_left_out": [s for s in baseline["seeds"] if s not in cell["seeds"]],
        "delta": _finite(result.delta),
        "ci_low": _finite(result.ci_low),
        "ci_high": _finite(result.ci_high),
        "p_value": _finite(result.p_value),
        "p_holm": None,
        "p_holm_all": None,
    }


def _holm_across_devs(cells: Sequence[dict[str, Any]], devs: Sequence[str], metrics: Sequence[str]) -> None:
    """Fill ``p_holm_all``: Holm across every comparison with τ=0 on the ``devs`` (in place).

    The family, per metric, is every dev file × τ × other-axes comparison of the sweep: "registers change
    some language's score" is then claimed at 5 % family-wise, however many languages and τ's were tried.
    ``p_holm`` (within one dev file) stays beside it; the two answer different questions. Cells of other
    dev files (the held-out split) keep ``p_holm_all`` None.
    """
    for metric in metrics:
        family = {
            str(index): cell["vs_tau0"][metric]["p_value"]
            for index, cell in enumerate(cells)
            if cell["dev"] in devs and cell["vs_tau0"][metric] is not None
        }
        for index, adjusted in stats.holm(family).items():
            cells[int(index)]["vs_tau0"][metric]["p_holm_all"] = _finite(adjusted)


def training_dev(train_file: str, devs: Sequence[str]) -> str | None:
    """The dev file in the training language, or None when the sweep does not tell.

    TyDi-style folders name both: ``.../en/train.json`` trains on ``en``, and ``.../en/dev.json`` is the
    dev file named ``en`` (:func:`regtune.experiments.sweep.dev_names` names ``xx/dev.json`` by its folder).
    So the training file's folder name, when it is one of ``devs``, is the in-language dev file.
    """
    folder = Path(train_file).parent.name
    return folder if folder and folder in devs else None


#: How the averages over dev files are labelled in summary.csv's dev column and in the report.
AVERAGE_LABELS = {"all": "average", "zero_shot": "zero-shot average"}


def _language_averages(
    ctx: _Context,
    cells: Sequence[dict[str, Any]],
    devs: Sequence[str],
    training: str | None,
    others: Sequence[str],
) -> list[dict[str, Any]]:
    """XTREME's average over languages per τ and other axes, over every dev file and over all but the
    training language (the zero-shot average); an average needs 2+ dev files, else it is left out.

    As in XTREME (https://arxiv.org/abs/2003.11080) every language weighs the same, English included: a
    language with 10x the questions does not count more. Each record holds, per metric, the mean over
    seeds of each seed's average of its per-language scores, on the questions of each language's cell
    (so it is the mean of those cells' means), and its interval from
    :func:`regtune.experiments.stats.summarize_average`: questions resampled within each language on
    their own, seeds through the per-seed averages with Student t tails. Its Δ vs the τ=0 average is
    paired per language by seed and question, and Holm-corrected across the τ's of that average; the
    averages are not in ``p_holm_all``'s family, which is about single languages.
    """
    kinds = {"all": list(devs)}
    if training is not None:
        kinds["zero_shot"] = [dev for dev in devs if dev != training]
    by_key = {(cell["dev"], tuple(cell["axes"].items())): cell for cell in cells}
    averages: list[dict[str, Any]] = []
    for name, members in kinds.items():
        if len(members) < 2:
            continue
        # Every finished run is scored on every dev file, so each dev file has a cell per grid point.
        rows = []
        for first in (cell for cell in cells if cell["dev"] == members[0]):
            parts = [by_key[dev, tuple(first["axes"].items())] for dev in members]
            rows.append((_average_record(ctx, name, parts), parts))
        _compare_averages(ctx, rows, others)
        averages += [record for record, _ in rows]
    return averages


def _average_record(ctx: _Context, name: str, parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One average's record at one grid point, from that point's cells (one per dev file, same runs)."""
    first = parts[0]
    record: dict[str, Any] = {
        "average": name,
        "dev": AVERAGE_LABELS[name],
        "devs": [part["dev"] for part in parts],
        "axes": dict(first["axes"]),
        "seeds": list(first["seeds"]),
        "runs": list(first["runs"]),
        "n_questions": sum(part["n_questions"] for part in parts),
        "questions_per_dev": {part["dev"]: part["n_questions"] for part in parts},
        "metrics": {},
        "vs_tau0": dict.fromkeys(ctx.task.metrics),
    }
    for metric in ctx.task.metrics:
        matrices = []
        for part in parts:
            runs = [ctx.scores[run_id, part["dev"]] for run_id in part["runs"]]
            questions = _common_questions(runs)  # the cell's own, so the mean is the mean of cell means
            matrices.append(_matrix(ctx.root, part["dev"], part["runs"], runs, metric, questions))
        summary = stats.summarize_average(
            matrices,
            n_boot=ctx.n_boot,
            confidence=CONFIDENCE,
            rng=_rng(ctx.seed, "average", name, *first["axes"].items(), metric),
        )
        record["metrics"][metric] = _summary_dict(summary)
    return record


def _compare_averages(
    ctx: _Context, rows: Sequence[tuple[dict[str, Any], Sequence[Mapping[str, Any]]]], others: Sequence[str]
) -> None:
    """Each τ's average against the τ=0 average of the same other axes, Holm across those τ's (in place).

    ``rows`` pairs each average record with its per-dev cells. Without a τ=0 average there is nothing to
    compare with; the per-dev groups already note that.
    """
    from regtune.experiments.sweep import REGISTER_ONLY_AXES

    groups: dict[tuple[Any, ...], list[tuple[dict[str, Any], Sequence[Mapping[str, Any]]]]] = {}
    for record, parts in rows:
        groups.setdefault(tuple(record["axes"][axis] for axis in others), []).append((record, parts))
    # τ=0 averages by the axes that matter at τ=0: a group of another value of a register-only axis takes
    # the shared one (as _group_cells does per dev file).
    kept = [axis for axis in others if axis not in REGISTER_ONLY_AXES]
    tau0 = {tuple(r["axes"][axis] for axis in kept): (r, p) for r, p in rows if r["axes"][TAU] == 0}
    for members in groups.values():
        baseline = next(((r, p) for r, p in members if r["axes"][TAU] == 0), None)
        baseline = baseline or tau0.get(tuple(members[0][0]["axes"][axis] for axis in kept))
        if baseline is None:
            continue
        base_record, base_parts = baseline
        for metric in ctx.task.metrics:
            results: dict[str, dict[str, Any]] = {}
            for record, parts in members:
                if record is base_record:
                    continue
                paired = [
                    _paired_matrices(ctx.root, part, base_part, ctx.scores, metric)
                    for part, base_part in zip(parts, base_parts, strict=True)
                ]
                if any(pair is None for pair in paired):
                    continue  # no shared seed: the per-dev comparisons note it
                result = stats.compare_average(
                    [pair[1] for pair in paired if pair is not None],
                    [pair[2] for pair in paired if pair is not None],
                    n_boot=ctx.n_boot,
                    confidence=CONFIDENCE,
                    rng=_rng(ctx.seed, "average-cmp", record["average"], metric, *record["axes"].items()),
                )
                seeds = paired[0][0] if paired[0] is not None else []
                record["vs_tau0"][metric] = _comparison_dict(result, seeds, record, base_record)
                results[str(record["axes"][TAU])] = record["vs_tau0"][metric]
            adjusted = stats.holm({tau: comparison["p_value"] for tau, comparison in results.items()})
            for tau, comparison in results.items():
                comparison["p_holm"] = _finite(adjusted[tau])


def _select_on_validation(
    cells: Sequence[dict[str, Any]],
    others: Sequence[str],
    devs: Sequence[str],
    notes: list[str],
    *,
    metric: str = "f1",
) -> dict[str, Any]:
    """Per combination of the other axes: the τ with the best mean validation score (the task's first
    metric), and its dev results.

    τ is then chosen without looking at any dev file, so the chosen τ's dev score is an unbiased estimate
    of "tune τ, then deploy" (the best dev score over τ's would be optimistic).
    """
    from regtune.experiments.sweep import VALIDATION

    by_key = {(c["dev"], tuple(c["axes"].items())): c for c in cells}
    groups = []
    seen: set[tuple[Any, ...]] = set()
    for cell in cells:
        if cell["dev"] != VALIDATION:
            continue
        other_values = tuple(cell["axes"][axis] for axis in others)
        if other_values in seen:
            continue
        seen.add(other_values)
        candidates = [
            c
            for c in cells
            if c["dev"] == VALIDATION and tuple(c["axes"][axis] for axis in others) == other_values
        ]
        if not any(c["axes"][TAU] == 0 for c in candidates):
            shared = _shared_tau0(cells, VALIDATION, cell["axes"], others)
            candidates = [shared, *candidates] if shared is not None else candidates
        # Ties go to the first τ in grid order (the fewest registers when the grid is ascending).
        chosen = max(candidates, key=lambda c: c["metrics"][metric]["mean"])
        if len({c["metrics"][metric]["n_seeds"] for c in candidates}) > 1:
            where = _axes_text(dict(zip(others, other_values, strict=True)))
            notes.append(
                f"select_on validation ({where}): the τ's have different numbers of finished seeds, "
                "so their validation means are less comparable."
            )
        results = []
        for dev in devs:
            target = by_key.get((dev, tuple(chosen["axes"].items())))
            if target is None:
                continue
            results.append({"dev": dev, "metrics": target["metrics"], "vs_tau0": target["vs_tau0"]})
        groups.append(
            {
                "axes": dict(zip(others, other_values, strict=True)),
                "validation": [
                    {
                        "num_registers": c["axes"][TAU],
                        "mean": c["metrics"][metric]["mean"],
                        "ci_low": c["metrics"][metric]["ci_low"],
                        "ci_high": c["metrics"][metric]["ci_high"],
                        "n_seeds": c["metrics"][metric]["n_seeds"],
                    }
                    for c in candidates
                ],
                "chosen_num_registers": chosen["axes"][TAU],
                "results": results,
            }
        )
    return {"on": VALIDATION, "metric": metric, "groups": groups}


def summary_csv(analysis: Mapping[str, Any]) -> str:
    """``summary.csv``: one row per cell and metric, the τ=0 comparison on the same row (empty for τ=0).

    The averages over dev files follow, one row per average, grid point and metric: their ``dev`` is
    the average's label and ``average_of`` lists the dev files averaged (";"-separated; empty for a dev
    file's own row). ``in_language`` marks the training language's rows (empty when it is unknown).
    """
    axes = list(analysis["axes"])
    training = analysis.get("training_dev")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*CSV_HEAD, *axes, *CSV_TAIL], lineterminator="\n")
    writer.writeheader()
    for cell in [*analysis["cells"], *analysis.get("averages", [])]:
        averaged = cell.get("devs")
        for metric in _metrics(analysis):
            summary = cell["metrics"][metric]
            comparison = cell["vs_tau0"][metric] or {}
            writer.writerow(
                {
                    "dev": cell["dev"],
                    "metric": metric,
                    **{axis: cell["axes"][axis] for axis in axes},
                    **{k: summary[k] for k in ("n_seeds", "n_questions", "mean", "std", "ci_low", "ci_high")},
                    "delta_vs_tau0": comparison.get("delta"),
                    "delta_ci_low": comparison.get("ci_low"),
                    "delta_ci_high": comparison.get("ci_high"),
                    "p_value": comparison.get("p_value"),
                    "p_holm": comparison.get("p_holm"),
                    "p_holm_all": comparison.get("p_holm_all"),
                    "in_language": cell["dev"] == training if training and not averaged else None,
                    "average_of": ";".join(averaged) if averaged else None,
                }
            )
    return buffer.getvalue()


# --- labels -----------------------------------------------------------------------------------------------


def _join(values: Iterable[Any]) -> str:
    return ", ".join(str(v) for v in values)


def _axes_text(axes: Mapping[str, Any]) -> str:
    return ", ".join(f"{axis}={value}" for axis, value in axes.items()) or "all runs"


def _cell_label(cell: Mapping[str, Any]) -> str:
    return f"{cell['dev']}, {_axes_text(cell['axes'])}"


def _group_label(group: Mapping[str, Any]) -> str:
    others = _axes_text(group["axes"]) if group["axes"] else ""
    return f"{group['dev']}" + (f", {others}" if others else "")


def _other_axes(analysis: Mapping[str, Any]) -> list[str]:
    return [axis for axis in analysis["axes"] if axis != TAU]


def _taus(analysis: Mapping[str, Any]) -> list[Any]:
    return list(analysis["sweep"]["grid"][TAU])


def _metrics(analysis: Mapping[str, Any]) -> list[str]:
    """The task's metrics, primary first (summaries written before tasks existed are QA's)."""
    return list(analysis["settings"].get("metrics", ("f1", "exact_match")))


def _metric_label(analysis: Mapping[str, Any], metric: str) -> str:
    return analysis["settings"].get("metric_labels", {"f1": "F1", "exact_match": "EM"}).get(metric, metric)


def _unit(analysis: Mapping[str, Any]) -> str:
    return str(analysis["settings"].get("unit", "question"))


# --- plots ------------------------------------------------------------------------------------------------


def plot_scores(analysis: Mapping[str, Any], folder: Path) -> list[str]:
    """Each metric against τ with 95 % CI error bars, one line per dev file × other-axes combination.

    τ values sit at even spacing (they are usually 0, 4, 8, 32: a linear axis would crowd the small
    ones); lines are nudged sideways so their error bars do not hide each other.
    """
    taus = _taus(analysis)
    others = _other_axes(analysis)
    lines: dict[tuple[str, tuple[Any, ...]], list[dict[str, Any]]] = {}
    for cell in analysis["cells"]:
        lines.setdefault((cell["dev"], tuple(cell["axes"][a] for a in others)), []).append(cell)
    metrics = _metrics(analysis)
    figure = plots.new_figure(5.75 * len(metrics) + 1.5, 4.6)
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    colours = plots.colours(len(lines), "tab10" if len(lines) <= 10 else "viridis")
    width = min(0.3, 0.06 * max(len(lines) - 1, 0))
    for ax, metric in zip(axes, metrics, strict=True):
        for i, ((dev, values), members) in enumerate(lines.items()):
            shift = (i / (len(lines) - 1) - 0.5) * width if len(lines) > 1 else 0.0
            xs, ys, low, high = [], [], [], []
            for cell in sorted(members, key=lambda c: taus.index(c["axes"][TAU])):
                summary = cell["metrics"][metric]
                if summary["mean"] is None:
                    continue
                mean = summary["mean"]
                xs.append(taus.index(cell["axes"][TAU]) + shift)
                ys.append(mean)
                low.append(mean - summary["ci_low"] if summary["ci_low"] is not None else 0.0)
                high.append(summary["ci_high"] - mean if summary["ci_high"] is not None else 0.0)
            label = dev + (f" ({_axes_text(dict(zip(others, values, strict=True)))})" if others else "")
            ax.errorbar(
                xs,
                ys,
                yerr=[low, high],
                marker="o",
                markersize=4,
                capsize=3,
                linewidth=1.3,
                color=colours[i],
                label=plot_text(label),
            )
        ax.set_xticks(range(len(taus)), [str(t) for t in taus])
        ax.set_xlabel("τ (number of registers)")
        name = _metric_label(analysis, metric)
        ax.set_ylabel(f"{name} (0–100)")
        ax.set_title(f"{name} against τ, mean over seeds with 95 % CI")
        ax.grid(True, axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right upper", fontsize="small", title="dev file")
    return save_png_and_svg(figure, folder, "scores_vs_tau")


def read_loss_curve(path: Path) -> tuple[list[int], list[float]]:
    """Steps and training losses from a run's ``train_log.jsonl``.

    A run killed mid-write can leave a torn last line; such lines (and the final summary record, which
    has ``train_loss`` rather than ``loss``) are skipped rather than failing the whole report.
    """
    steps: list[int] = []
    losses: list[float] = []
    if not path.is_file():
        return steps, losses
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            step, loss = int(record["step"]), float(record["loss"])
        except (ValueError, KeyError, TypeError):
            continue
        if math.isfinite(loss):
            steps.append(step)
            losses.append(loss)
    return steps, losses


def plot_losses(root: Path, analysis: Mapping[str, Any], folder: Path) -> list[str]:
    """Training loss of every run that has logged one, coloured by τ (unfinished runs dashed).

    Returns no file names when no run has logged a loss yet.
    """
    from matplotlib.lines import Line2D

    taus = _taus(analysis)
    colours = dict(zip(taus, plots.colours(len(taus), "viridis"), strict=True))
    curves = []
    for run in analysis["runs"]:
        steps, losses = read_loss_curve(Path(root) / "runs" / run["run_id"] / "train_log.jsonl")
        if steps:
            curves.append((run, steps, losses))
    if not curves:
        return []
    figure = plots.new_figure(9.5, 4.4)
    ax = figure.subplots()
    for run, steps, losses in curves:
        ax.plot(
            steps,
            losses,
            color=colours[run["point"][TAU]],
            linewidth=1.0,
            alpha=0.8,
            linestyle="-" if run["finished"] else "--",
        )
    handles = [Line2D([], [], color=colours[t], linewidth=2, label=f"τ={t}") for t in taus]
    if not all(run["finished"] for run, _, _ in curves):
        handles.append(Line2D([], [], color="grey", linestyle="--", label="unfinished run"))
    ax.legend(handles=handles, fontsize="small", loc="upper right")
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss")
    ax.set_title(f"Training loss of {len(curves)} runs, coloured by τ")
    ax.grid(True, alpha=0.3)
    return save_png_and_svg(figure, folder, "training_loss")


# --- HTML -------------------------------------------------------------------------------------------------

#: The report's own rules on top of the shared BASE_CSS.
_CSS = (
    "body{max-width:1250px}.sig{font-weight:bold;color:#0b6e2e}.neg{color:#a01b1b}"
    "pre{background:#f6f8fa;padding:.7em;overflow-x:auto;white-space:pre-wrap;word-break:break-all}"
    ".chosen{background:#e5f4e8 !important;font-weight:bold}"
)


def _num(value: float | None, digits: int = 2, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _ci(low: float | None, high: float | None, signed: bool = False) -> str:
    if low is None or high is None:
        return "–"
    return f"[{_num(low, signed=signed)}, {_num(high, signed=signed)}]"


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _significant(comparison: Mapping[str, Any] | None) -> bool:
    return bool(comparison and comparison["p_holm"] is not None and comparison["p_holm"] < 1 - CONFIDENCE)


#: Columns of one metric's row in the result tables.
_METRIC_COLUMNS = (
    "metric",
    "mean",
    "std",
    "95% CI",
    "Δ vs τ=0",
    "Δ 95% CI",
    "p",
    "p (Holm)",
    "p (Holm, all)",
)


def _metric_rows(
    analysis: Mapping[str, Any], lead: Sequence[Cell], cell: Mapping[str, Any]
) -> list[list[Cell]]:
    """One row per metric: ``lead`` cells (spanning all metric rows), summary, then Δ vs τ=0."""
    rows: list[list[Cell]] = []
    metrics = _metrics(analysis)
    for i, metric in enumerate(metrics):
        summary = cell["metrics"][metric]
        comparison = cell["vs_tau0"][metric]
        if comparison is None:
            delta_cells: list[Cell] = [("num", "–")] * 5
        else:
            cls = "num sig" if _significant(comparison) else "num"
            if comparison["delta"] is not None and comparison["delta"] < 0 and _significant(comparison):
                cls += " neg"
            delta_cells = [
                (cls, escape(_num(comparison["delta"], signed=True))),
                ("num", escape(_ci(comparison["ci_low"], comparison["ci_high"], signed=True))),
                ("num", escape(_p(comparison["p_value"]))),
                (cls, escape(_p(comparison["p_holm"]))),
                # .get: a summary.json written before p_holm_all existed renders as well.
                ("num", escape(_p(comparison.get("p_holm_all")))),
            ]
        row: list[Cell] = [(c[0], c[1], len(metrics)) for c in lead] if i == 0 else []
        row += [
            ("", escape(_metric_label(analysis, metric))),
            ("num", escape(_num(summary["mean"]))),
            ("num", escape(_num(summary["std"]))),
            ("num", escape(_ci(summary["ci_low"], summary["ci_high"]))),
            *delta_cells,
        ]
        rows.append(row)
    return rows


def _dev_table(analysis: Mapping[str, Any], dev: str) -> str:
    others = _other_axes(analysis)
    rows = []
    for cell in analysis["cells"]:
        if cell["dev"] != dev:
            continue
        lead: list[Cell] = [("", escape(cell["axes"][axis])) for axis in others]
        lead += [
            ("num", escape(cell["axes"][TAU])),
            ("num", escape(_join(cell["seeds"]))),
            ("num", escape(cell["n_questions"])),
            # .get: a summary.json written before register_similarity existed renders as well.
            ("num", escape(_num((cell.get("register_similarity") or {}).get("mean")))),
        ]
        rows += _metric_rows(analysis, lead, cell)
    head = [*others, "τ", "seeds", f"{_unit(analysis)}s", "register similarity", *_METRIC_COLUMNS]
    return table(head, rows)


def _overview_table(analysis: Mapping[str, Any], metric: str) -> str:
    """Dev files (then the averages over them) × τ: mean with its CI, and Δ vs τ=0 with its CI (bold and
    *: Holm-significant within the row's dev file or average)."""
    taus = _taus(analysis)
    others = _other_axes(analysis)
    rows_of = [*analysis["cells"], *analysis.get("averages", [])]
    by_key = {(c["dev"], tuple(c["axes"][a] for a in others), c["axes"][TAU]): c for c in rows_of}
    combos = list(dict.fromkeys(k[:2] for k in by_key))
    rows = []
    for dev, values in combos:
        members = [by_key[dev, values, tau] for tau in taus if (dev, values, tau) in by_key]
        seeds = sorted({c["metrics"][metric]["n_seeds"] for c in members})
        row: list[Cell] = [("", escape(_row_label(analysis, members[0])))]
        row += [("", escape(v)) for v in values]
        # The finished seeds per τ; a range when a τ has fewer (a sweep still running).
        row.append(("num", escape(str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}")))
        for tau in taus:
            cell = by_key.get((dev, values, tau))
            if cell is None:
                row.append(("num", "–"))
                continue
            summary = cell["metrics"][metric]
            text = escape(f"{_num(summary['mean'])} {_ci(summary['ci_low'], summary['ci_high'])}")
            comparison = cell["vs_tau0"][metric]
            if comparison is not None:
                mark = "*" if _significant(comparison) else ""
                delta = f"Δ {_num(comparison['delta'], signed=True)} "
                delta += _ci(comparison["ci_low"], comparison["ci_high"], signed=True) + mark
                text += f'<br><span class="{"sig" if mark else ""}">{escape(delta)}</span>'
            row.append(("num", text))
        rows.append(row)
    return table(["dev", *others, "seeds", *(f"τ={t}" for t in taus)], rows)


def _row_label(analysis: Mapping[str, Any], cell: Mapping[str, Any]) -> str:
    """A dev file's name, marked when it is the training language, or an average's name and extent."""
    training = analysis.get("training_dev")
    if "average" not in cell:
        return f"{cell['dev']} (training language)" if cell["dev"] == training else str(cell["dev"])
    without = f", without {training}" if cell["average"] == "zero_shot" else ""
    return f"{cell['dev']} ({len(cell['devs'])} dev files{without})"


def _selection_html(analysis: Mapping[str, Any]) -> str:
    selection = analysis.get("selection")
    if not selection:
        return (
            "<p>No selection: the sweep was run without <code>--select-on</code>, so every τ is reported "
            "and none is chosen. Picking the best τ by its dev score would overstate that score.</p>"
        )
    primary = _metric_label(analysis, selection.get("metric", _metrics(analysis)[0]))
    parts = [
        "<p>τ was chosen per combination of the other axes by the best mean "
        f"{escape(primary)} on the held-out part of "
        "the training file (<code>validation</code>); no dev file was looked at. The chosen τ's dev results "
        "below are therefore fair estimates of <em>tune τ, then use it</em>. As τ was fixed before the dev "
        "files were looked at, each dev file holds one comparison with τ=0, so its plain p is valid; "
        "p (Holm), and the bold marking, come from the table of all τ's further down and are "
        "conservative here.</p>"
    ]
    for group in selection["groups"]:
        if group["axes"]:
            parts.append(f"<h3>{escape(_axes_text(group['axes']))}</h3>")
        rows = []
        for entry in group["validation"]:
            cls = "num chosen" if entry["num_registers"] == group["chosen_num_registers"] else "num"
            rows.append(
                [
                    (cls, escape(entry["num_registers"])),
                    (cls, escape(entry["n_seeds"])),
                    (cls, escape(_num(entry["mean"]))),
                    (cls, escape(_ci(entry["ci_low"], entry["ci_high"]))),
                ]
            )
        parts.append(f"<p>Chosen: <strong>τ = {escape(group['chosen_num_registers'])}</strong></p>")
        parts.append(table(["τ", "seeds", f"validation {primary}", "95% CI"], rows))
        result_rows = []
        for result in group["results"]:
            result_rows += _metric_rows(analysis, [("", escape(result["dev"]))], result)
        parts.append(table(["dev", *_METRIC_COLUMNS], result_rows))
    return "\n".join(parts)


def command_line(sweep: Mapping[str, Any]) -> str:
    """The ``regtune sweep`` command that reproduces ``sweep`` (sweep.json's ``sweep`` object).

    Execution-only flags (--jobs, --launcher, --save-steps, ...) do not change results and are not
    recorded in sweep.json, so they are not shown.
    """
    from regtune.training.config import GRID_FLAGS, TRAIN_FLAGS

    flags = {name: flag for flag, (name, _) in TRAIN_FLAGS.items()}
    grid = sweep.get("grid", {})
    words = ["regtune", "sweep"]
    if "model" in grid:
        words += ["--model", ",".join(map(str, grid["model"]))]
    elif "model" in sweep.get("options", {}):
        words += ["--model", str(sweep["options"]["model"])]
    words += ["--registers", ",".join(map(str, grid.get(TAU, [])))]
    words += ["--seeds", ",".join(map(str, grid.get("seed", [])))]
    words += ["--train", str(sweep.get("train_file", "")), "--dev", *map(str, sweep.get("dev_files", []))]
    words += ["--output-dir", "DIR"]
    if sweep.get("preset", "default") != "default":
        words += ["--preset", str(sweep["preset"])]
    for flag, name in GRID_FLAGS.items():
        if name in grid:
            words += [flag, ",".join(map(str, grid[name]))]
    for name, value in sweep.get("options", {}).items():
        if name == "model":
            continue
        if isinstance(value, bool):
            words.append(("--" if value else "--no-") + name.replace("_", "-"))
        elif name in flags:
            words += [flags[name], ",".join(map(str, value)) if isinstance(value, list) else str(value)]
        else:
            words += [f"--{name.replace('_', '-')}", str(value)]
    if sweep.get("select_on"):
        words += ["--select-on", str(sweep["select_on"])]
        words += ["--validation-fraction", str(sweep.get("validation_fraction"))]
    return shlex.join(words)


def _key_value_table(data: Mapping[str, Any]) -> str:
    rows = []
    for key, value in data.items():
        text = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
        rows.append([("", f"<code>{escape(key)}</code>"), ("", escape(text))])
    return table(["key", "value"], rows)


def render_html(analysis: Mapping[str, Any], score_plot: Sequence[str], loss_plot: Sequence[str]) -> str:
    """The report page; every value taken from the sweep is escaped (names and paths are user input)."""
    from regtune.experiments.sweep import VALIDATION

    sweep = analysis["sweep"]
    runs = analysis["runs"]
    n_finished = sum(run["finished"] for run in runs)
    devs = analysis["devs"]
    # "validation" is the held-out split only under select_on; otherwise it is just a dev file's name.
    held_out = VALIDATION if sweep.get("select_on") else None
    real_devs = [d for d in devs if d != held_out]
    level = round(100 * analysis["settings"]["confidence"])
    title = f"regtune sweep report: τ ∈ {{{_join(_taus(analysis))}}}"
    unit, metrics = _unit(analysis), _metrics(analysis)
    names = [_metric_label(analysis, m) for m in metrics]
    p = [
        *page_head(title, _CSS),
        f"<p>{n_finished} of {len(runs)} runs finished · "
        f"seeds {escape(_join(sweep['grid'].get('seed', [])))} · "
        f"dev files: {escape(_join(devs))} · scores on 0–100. Data: "
        '<a href="../summary.json">summary.json</a>, <a href="../summary.csv">summary.csv</a>, '
        '<a href="../results.csv">results.csv</a>.</p>',
        _reading_aid(analysis),
    ]
    if analysis["notes"]:
        p.append(
            "<h2>Notes</h2><ul>" + "".join(f'<li class="note">{escape(n)}</li>' for n in analysis["notes"])
        )
        p[-1] += "</ul>"
    p.append("<h2>Scores against τ</h2>")
    p.append(
        _linked(
            score_plot,
            f"{' and '.join(names)} against the number of registers, one line per dev file, with 95% CIs",
            f"Mean over seeds; error bars are {level}% CIs: {unit}s bootstrapped, seeds with Student-t "
            "tails (see how to read this report).",
        )
    )
    p.append(f"<h2>Selection ({escape(sweep.get('select_on') or 'none')})</h2>")
    p.append(_selection_html(analysis))
    if len(real_devs) > 1:
        p.append(f"<h2>Overview: {escape(names[0])} per dev file and τ</h2>")
        p.append(
            f"<p>Mean {escape(names[0])} with its {level}% CI over the seeds (column <em>seeds</em>) and "
            f"{unit}s; below it Δ vs τ=0 with its CI, * where Holm-significant (per dev file, or per "
            "average). Details per dev file below.</p>"
        )
        p.append(_overview_table(analysis, metrics[0]))
    p.append(_averages_html(analysis))
    p.append("<h2>Results per dev file</h2>")
    for dev in devs:
        label = f"{dev} (held-out part of the training file)" if dev == held_out else dev
        if dev == analysis.get("training_dev") and len(real_devs) > 1:
            label = f"{dev} (training language: in-language, not zero-shot)"
        p.append(f"<h3>{escape(label)}</h3>")
        group_notes = [g["note"] for g in analysis["groups"] if g["dev"] == dev and g["note"]]
        p.extend(f'<p class="note">{escape(n)}</p>' for n in group_notes)
        p.append(_dev_table(analysis, dev))
    p.append("<h2>Training loss</h2>")
    if loss_plot:
        p.append(
            _linked(
                loss_plot,
                "Training loss against step for every run, coloured by the number of registers",
                "Every run's logged training loss (train_log.jsonl); dashed: unfinished runs.",
            )
        )
    else:
        p.append("<p>No run has logged a training loss yet.</p>")
    p.append(_configuration_html(analysis))
    p.append("</body></html>")
    return "\n".join(p) + "\n"


def _reading_aid(analysis: Mapping[str, Any]) -> str:
    """The "how to read this report" box: what every kind of number on the page means."""
    settings = analysis["settings"]
    level, alpha, unit = round(100 * settings["confidence"]), 1 - settings["confidence"], _unit(analysis)
    items = [
        f"Each number is a mean over the finished seeds of a cell (one dev file, one τ, one value of "
        f"every other axis). The <em>{level}% CI</em> holds both sources of noise: the dev {unit}s "
        f"(resampled with replacement, {escape(settings['n_boot'])} times) and the seeds (how far another "
        "training run could land, from the spread of the per-seed scores with Student-t tails, since 3–5 "
        "seeds are too few to resample). It says where the mean could be with other seeds and other "
        f"{unit}s of the same kind; it is not the range of single runs. One seed gives no CI (–).",
        "<em>Δ vs τ=0</em> is the paired difference with the τ=0 runs of the same dev file and other "
        f"axes: seed matched with seed, {unit} with {unit}, using only the seeds both sides have. Its "
        f"CI and p-value (two-sided, for “no difference”) come from the same seed and {unit} noise.",
        f"<em>p (Holm)</em> is the p-value corrected with Holm's method across all τ's compared with "
        f"τ=0 in that group (per dev file and metric), because trying many τ's makes a chance win likely. "
        f"Bold green marks p (Holm) &lt; {alpha:.2f}. A non-significant Δ means the sweep cannot tell; "
        "it is not proof of no effect.",
        "<em>p (Holm, all)</em> is corrected across every dev file × τ comparison of the sweep (per "
        "metric): the family behind a claim such as “registers change the score of some language”. It is "
        "never below p (Holm); trust a single language's result only where it stays small.",
        "<em>std</em> is the seed-to-seed standard deviation of a cell's score. With few seeds it "
        "dominates the CIs; more seeds narrow them most.",
        "<em>register similarity</em> is the mean off-diagonal cosine of the registers' last hidden "
        "states (mean over seeds): 1 means the registers are copies of one another, lower means a lever "
        "kept them apart. Measured once per run, on its first dev file, and shown in every file's rows; "
        "– for τ &lt; 2.",
    ]
    if analysis.get("averages"):
        items.append(
            "<em>average</em> is the average over languages as XTREME reports it: the unweighted mean of "
            f"the dev files' scores, each file weighing the same whatever its number of {unit}s, taken per "
            f"seed and then over seeds. Its CI resamples each file's {unit}s on their own and the seeds "
            "through the per-seed averages; its Δ is paired per file, and its p (Holm) corrects across "
            "the τ's of that average (it is not part of p (Holm, all)). <em>zero-shot average</em> leaves "
            "out the training language."
        )
    body = "".join(f"<li>{item}</li>" for item in items)
    return f'<div class="aid"><strong>How to read this report.</strong><ul>{body}</ul></div>'


def _averages_html(analysis: Mapping[str, Any]) -> str:
    """The averages over dev files, one table per average (nothing when the sweep has none)."""
    averages = analysis.get("averages") or []
    if not averages:
        return ""
    others = _other_axes(analysis)
    parts = ["<h2>Average over languages</h2>"]
    for name in dict.fromkeys(record["average"] for record in averages):
        records = [record for record in averages if record["average"] == name]
        parts.append(f"<h3>{escape(_row_label(analysis, records[0]))}</h3>")
        parts.append(f"<p>Dev files averaged: {escape(_join(records[0]['devs']))}.</p>")
        rows = []
        for record in records:
            lead: list[Cell] = [("", escape(record["axes"][axis])) for axis in others]
            lead += [
                ("num", escape(record["axes"][TAU])),
                ("num", escape(_join(record["seeds"]))),
                ("num", escape(record["n_questions"])),
            ]
            rows += _metric_rows(analysis, lead, record)
        head = [*others, "τ", "seeds", f"{_unit(analysis)}s (all files)", *_METRIC_COLUMNS]
        parts.append(table(head, rows))
    return "\n".join(parts)


def _configuration_html(analysis: Mapping[str, Any]) -> str:
    """The configuration section: the reproducing command, sweep.json, the resolved config, versions,
    the analysis settings and every run's state."""
    sweep = analysis["sweep"]
    p = ["<h2>Configuration</h2>"]
    p.append("<p>Command line that reproduces this sweep (run it with your <code>--output-dir</code>):</p>")
    p.append(f"<pre>{escape(command_line(sweep))}</pre>")
    p.append("<h3>Sweep (sweep.json)</h3>")
    p.append(_key_value_table(sweep))
    p.append("<h3>Resolved training configuration (the same for every run; grid axes vary)</h3>")
    p.append(_key_value_table(analysis.get("resolved_run_config", {})))
    p.append("<h3>Versions</h3>")
    p.append(_key_value_table(analysis.get("versions", {})))
    p.append("<h3>Analysis</h3>")
    p.append(_key_value_table(analysis["settings"]))
    p.append("<h3>Runs</h3>")
    run_rows = [
        [
            ("", f"<code>{escape(run['run_id'])}</code>"),
            ("", "finished" if run["finished"] else "not finished"),
        ]
        for run in analysis["runs"]
    ]
    p.append(table(["run", "state"], run_rows))
    return "\n".join(p)


def write_report(root: Path, analysis: dict[str, Any] | None = None) -> Path:
    """Write ``DIR/report/index.html`` (plots as PNG and SVG beside it); returns its path.

    ``analysis`` is :func:`analyze_sweep`'s result or a loaded ``summary.json``; None runs the analysis
    (and so also writes summary.json/csv). The plots are written before the page, so the page never
    points at a missing image, and the page itself is replaced atomically.
    """
    root = Path(root)
    if analysis is None:
        analysis = analyze_sweep(root)
    folder = root / REPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    score_plot = plot_scores(analysis, folder)
    loss_plot = plot_losses(root, analysis, folder)
    return atomic_write_text(folder / "index.html", render_html(analysis, score_plot, loss_plot))


#: Per-run files small enough to publish: everything needed to recompute the statistics and the plots.
EXPORT_RUN_FILES = ("config.json", "metrics.json", "train_log.jsonl")
EXPORT_EVAL_FILES = ("metrics.json", "per_question.json", "per_example.json")  # the tasks' score files


def export_results(root: Path, target: Path) -> list[Path]:
    """Copy a sweep's small result files to ``target`` (e.g. a docs folder under version control).

    Copies sweep.json, results.csv, summary.json/.csv, the report folder, and per finished run its
    config, metrics, training log and per-dev-file metrics and per-example scores, in the sweep's own
    layout (so the report's relative links and ``regtune report target`` keep working). Model weights,
    checkpoints and predictions stay behind. Returns the files written.
    """
    from regtune.experiments.sweep import run_finished

    # Resolved: the run folders recorded in sweep.json are absolute, and every source must be under root.
    root, target = Path(root).resolve(), Path(target)
    sweep, _ = _load_sweep(root)
    if not (root / "summary.json").exists():
        raise RegtuneError(f"{root}: no summary.json; run `regtune report {root}` first")
    if target.resolve() == root.resolve():
        raise RegtuneError(f"{target}: is the sweep folder itself; export to another folder")
    sources = [root / name for name in ("sweep.json", "results.csv", "summary.json", "summary.csv")]
    sources += sorted(p for p in (root / "report").iterdir() if p.is_file())
    scored = sweep.scored_files()
    for spec in sweep.runs():
        if not run_finished(spec, scored):
            continue
        sources += [spec.dir / name for name in EXPORT_RUN_FILES]
        sources += [spec.eval_dir(dev) / name for dev in scored for name in EXPORT_EVAL_FILES]
    written = []
    for source in sources:
        if source.is_file():
            relative = source.resolve().relative_to(root)
            written.append(atomic_write_bytes(target / relative, source.read_bytes()))
    return written


def _linked(names: Sequence[str], alt: str, caption: str) -> str:
    png, svg = names
    return linked_figure(png, svg, alt, caption)


def update_model_cards(root: Path, analysis: dict[str, Any]) -> list[Path]:
    """Rewrite each finished run's model card with its sweep cell's scores (intervals over seeds).

    A run scored on several dev files gets the first file's cell (the sweep's own ``--dev``).
    """
    from regtune.tasks import get_task
    from regtune.training.config import TrainConfig, saved_run_config
    from regtune.training.model_card import build_card, sweep_score_lines, write_model_card

    task = get_task(analysis["settings"]["task"])
    first_dev = analysis["devs"][0] if analysis.get("devs") else None
    written = []
    for cell in analysis["cells"]:
        if first_dev is not None and cell.get("dev") not in (first_dev, None):
            continue
        for run_id in cell["runs"]:
            run_dir = root / "runs" / run_id
            if not (run_dir / "model" / "config.json").exists() or not (run_dir / "metrics.json").exists():
                continue
            config = TrainConfig.from_dict(saved_run_config(run_dir / "config.json"))
            metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
            own = {name: metrics[name] for name in task.metrics if name in metrics}
            card = build_card(config, task, metrics, None, scores=sweep_score_lines(task, cell, own))
            written.append(write_model_card(run_dir / "model", card))
    return written
