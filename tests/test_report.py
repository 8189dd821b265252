"""regtune.reporting.report: sweep statistics (cells, paired comparisons, Holm, selection), HTML report.

The sweep folders here are written by hand in the layout ``regtune sweep`` produces (no training): every
run gets per-question F1/EM drawn with numpy from a known model (question difficulty + a seed shift +
noise + an injected effect), so the expected means are computed here from the very files the report
reads, and the injected effect is known. The draws come from fixed seeds: "the null effect is not
significant" is checked on this one data set (a 5 % test flags a null in about 1 data set of 20).
"""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import skip_or_fail
from regtune.core.errors import RegtuneError
from regtune.core.io import atomic_write_json
from regtune.experiments.sweep import VALIDATION, SweepConfig, collect_results, write_results_csv
from regtune.reporting.report import CSV_TAIL, analyze_sweep, read_loss_curve, render_html, write_report
from regtune.tasks.qa.task import METRICS

QUESTIONS = 200
TAUS = (0, 8, 32)
SEEDS = (1, 2, 3)
DEVS = ("en", "sw")
#: (τ, dev) -> true F1 gain on 0..1: +10 points for τ=8 on en; nothing anywhere else.
EFFECTS = {(8, "en"): 0.10}
#: Bootstrap resamples for the main sweep (the default): p-values resolve well below 0.05 / 2.
N_BOOT = 2000
#: Per-run seed shift (SD, on 0..1) and per-question noise of the synthetic scores.
SEED_SD = 0.005
NOISE_SD = 0.08


# --- a synthetic sweep folder ------------------------------------------------------------------------------


def make_sweep(
    root: Path,
    *,
    taus: Sequence[int] = TAUS,
    seeds: Sequence[int] = SEEDS,
    devs: Sequence[str] = DEVS,
    effects: Mapping[tuple[int, str], float] = EFFECTS,
    select_on: str | None = None,
    grid_extra: Mapping[str, list[Any]] | None = None,
    unfinished: Sequence[str] = (),
    data_seed: int = 0,
    questions: Mapping[str, int] | None = None,
) -> SweepConfig:
    """Write sweep.json, runs/<id>/{config.json, train_log.jsonl, metrics.json, evals/...} and results.csv.

    Runs named in ``unfinished`` get a config and a training log but no scores, like a run in progress.
    ``questions`` sets some dev files' number of questions (default :data:`QUESTIONS`).
    """
    sizes = dict(questions or {})
    sweep = SweepConfig(
        output_dir=str(root),
        train_file="/data/tydiqa/en/train.json",
        dev_files=[f"/data/tydiqa/{dev}/dev.json" if "/" not in dev else dev for dev in devs],
        grid={**(grid_extra or {}), "num_registers": list(taus), "seed": list(seeds)},
        options={"model": "minilm-l6", "max_steps": 30, "logging_steps": 5},
        select_on=select_on,
    )
    atomic_write_json(
        root / "sweep.json",
        {"sweep": sweep.results_dict(), "versions": {"regtune": "0.1.0", "python": "3.11"}},
    )
    scored = sweep.scored_files()
    difficulty = {
        name: np.random.default_rng([data_seed, i]).uniform(0.15, 0.75, sizes.get(name, QUESTIONS))
        for i, name in enumerate(scored)
    }
    for spec in sweep.runs():
        tau, seed = spec.point["num_registers"], spec.point["seed"]
        atomic_write_json(
            spec.dir / "config.json", {"config": spec.config.to_dict(), "versions": {}, "data": {}}
        )
        noise = np.random.default_rng([data_seed, 1000 + tau, seed, len(spec.run_id)])
        steps = np.arange(5, 31, 5)
        losses = 5.0 * np.exp(-steps / 15) + 0.02 * tau + noise.normal(0, 0.05, len(steps))
        log = [
            {"step": int(s), "epoch": s / 30, "loss": float(x), "grad_norm": 1.0, "learning_rate": 1e-4}
            for s, x in zip(steps, losses, strict=True)
        ]
        log.append({"step": 30, "epoch": 1.0, "train_runtime": 1.0, "train_loss": float(losses.mean())})
        (spec.dir / "train_log.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in log), encoding="utf-8"
        )
        if spec.run_id in unfinished:
            continue
        for i, name in enumerate(scored):
            rng = np.random.default_rng([data_seed, tau, seed, i, *(hash_axes(spec.point))])
            f1 = difficulty[name] + rng.normal(0, SEED_SD) + effects.get((tau, name), 0.0)
            f1 = np.clip(f1 + rng.normal(0, NOISE_SD, f1.size), 0.0, 1.0)
            em = (f1 >= 0.75).astype(float)
            per_question = {
                f"{name}-q{q}": {"exact_match": float(em[q]), "f1": float(f1[q])} for q in range(f1.size)
            }
            metrics = {"exact_match": 100 * em.mean(), "f1": 100 * f1.mean(), "num_questions": f1.size}
            out = spec.eval_dir(name)
            atomic_write_json(out / "per_question.json", per_question)
            atomic_write_json(out / "predictions.json", {qid: "x" for qid in per_question})
            atomic_write_json(out / "metrics.json", {**metrics, "dev_name": name, "train_steps": 30})
        atomic_write_json(spec.dir / "metrics.json", {"f1": 0.0, "exact_match": 0.0})
    write_results_csv(sweep, collect_results(sweep))
    return sweep


def hash_axes(point: Mapping[str, Any]) -> list[int]:
    """Other grid values as seed entropy, so runs that differ only in lr draw different noise."""
    return [sum(str(v).encode()) for k, v in sorted(point.items()) if k not in ("num_registers", "seed")]


def run_scores(sweep: SweepConfig, dev: str, metric: str, **point: Any) -> dict[int, np.ndarray]:
    """Seed -> per-question scores of one cell, read back from the files (in question order)."""
    out = {}
    for spec in sweep.runs():
        if any(spec.point[k] != v for k, v in point.items()):
            continue
        path = spec.eval_dir(dev) / "per_question.json"
        if path.exists() and (spec.eval_dir(dev) / "metrics.json").exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            out[spec.point["seed"]] = np.array([data[q][metric] for q in sorted(data)])
    return out


def find_cell(analysis: Mapping[str, Any], dev: str, **axes: Any) -> dict[str, Any]:
    matches = [
        c for c in analysis["cells"] if c["dev"] == dev and all(c["axes"][k] == v for k, v in axes.items())
    ]
    assert len(matches) == 1, (dev, axes, len(matches))
    return matches[0]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[SweepConfig, dict[str, Any]]:
    root = tmp_path_factory.mktemp("report") / "sweep"
    sweep = make_sweep(root)
    return sweep, analyze_sweep(root, n_boot=N_BOOT, seed=0)


# --- statistics --------------------------------------------------------------------------------------------


def test_cell_means_match_the_per_question_files(sweep_dir: tuple[SweepConfig, dict[str, Any]]) -> None:
    sweep, analysis = sweep_dir
    assert len(analysis["cells"]) == len(DEVS) * len(TAUS)
    for dev in DEVS:
        for tau in TAUS:
            cell = find_cell(analysis, dev, num_registers=tau)
            assert cell["seeds"] == list(SEEDS)
            assert cell["n_questions"] == QUESTIONS
            for metric in METRICS:
                per_seed = run_scores(sweep, dev, metric, num_registers=tau)
                expected = 100 * np.mean([scores.mean() for scores in per_seed.values()])
                summary = cell["metrics"][metric]
                assert summary["mean"] == pytest.approx(expected, abs=1e-9)
                assert summary["n_seeds"] == len(SEEDS) and summary["n_questions"] == QUESTIONS
                assert summary["ci_low"] <= summary["mean"] <= summary["ci_high"]
                assert summary["ci_low"] < summary["ci_high"]
                assert summary["std"] > 0


def test_injected_effect_is_significant_after_holm_and_null_is_not(
    sweep_dir: tuple[SweepConfig, dict[str, Any]],
) -> None:
    sweep, analysis = sweep_dir
    assert all(c["vs_tau0"]["f1"] is None for c in analysis["cells"] if c["axes"]["num_registers"] == 0)
    for dev in DEVS:
        for tau in (8, 32):
            comparison = find_cell(analysis, dev, num_registers=tau)["vs_tau0"]["f1"]
            treated = run_scores(sweep, dev, "f1", num_registers=tau)
            base = run_scores(sweep, dev, "f1", num_registers=0)
            paired = 100 * np.mean([(treated[s] - base[s]).mean() for s in SEEDS])
            assert comparison["delta"] == pytest.approx(paired, abs=1e-9)
            assert comparison["seeds"] == list(SEEDS) and comparison["n_questions"] == QUESTIONS
            assert comparison["ci_low"] <= comparison["delta"] <= comparison["ci_high"]
            assert comparison["p_holm"] >= comparison["p_value"]
            if (tau, dev) in EFFECTS:
                assert 100 * EFFECTS[tau, dev] - 3 < comparison["delta"] < 100 * EFFECTS[tau, dev] + 3
                assert comparison["ci_low"] > 0
                assert comparison["p_holm"] < 0.05
            else:
                assert comparison["ci_low"] < 0 < comparison["ci_high"]
                assert comparison["p_holm"] > 0.05


def test_summary_files_and_determinism(sweep_dir: tuple[SweepConfig, dict[str, Any]], tmp_path: Path) -> None:
    sweep, analysis = sweep_dir
    saved = json.loads((sweep.root / "summary.json").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(analysis))
    assert saved["axes"] == ["num_registers"] and saved["devs"] == list(DEVS)
    assert saved["selection"] is None
    assert {g["dev"] for g in saved["groups"]} == set(DEVS) and all(
        g["has_baseline"] for g in saved["groups"]
    )

    with (sweep.root / "summary.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    # One row per cell and metric, then one per average over dev files (here over en and sw) and metric.
    assert len(rows) == (len(analysis["cells"]) + len(analysis["averages"])) * len(METRICS)
    assert sum(r["average_of"] == "" for r in rows) == len(analysis["cells"]) * len(METRICS)
    assert list(rows[0]) == ["dev", "metric", "num_registers", *CSV_TAIL]
    row = next(r for r in rows if r["dev"] == "en" and r["metric"] == "f1" and r["num_registers"] == "8")
    cell = find_cell(analysis, "en", num_registers=8)
    assert float(row["mean"]) == pytest.approx(cell["metrics"]["f1"]["mean"])
    assert float(row["p_holm"]) == pytest.approx(cell["vs_tau0"]["f1"]["p_holm"])
    assert all(r["delta_vs_tau0"] == "" for r in rows if r["num_registers"] == "0")

    # Same files and seed: byte-identical summary; another seed: same means, other bootstrap draws.
    copy = tmp_path / "copy"
    shutil.copytree(sweep.root, copy)
    (copy / "summary.json").unlink()
    again = analyze_sweep(copy, n_boot=N_BOOT, seed=0)
    assert (copy / "summary.json").read_bytes() == (sweep.root / "summary.json").read_bytes()
    other = analyze_sweep(copy, n_boot=N_BOOT, seed=1)
    pairs = list(zip(again["cells"], other["cells"], strict=True))
    assert all(a["metrics"]["f1"]["mean"] == b["metrics"]["f1"]["mean"] for a, b in pairs)
    assert any(a["metrics"]["f1"]["ci_low"] != b["metrics"]["f1"]["ci_low"] for a, b in pairs)


def test_unfinished_runs_pair_on_shared_seeds(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    sweep = make_sweep(root, devs=("en",), unfinished=("tau8-seed3", "tau0-seed1"))
    analysis = analyze_sweep(root, n_boot=200)
    assert [r["finished"] for r in analysis["runs"]].count(False) == 2
    assert find_cell(analysis, "en", num_registers=0)["seeds"] == [2, 3]
    assert find_cell(analysis, "en", num_registers=8)["seeds"] == [1, 2]
    comparison = find_cell(analysis, "en", num_registers=8)["vs_tau0"]["f1"]
    assert comparison["seeds"] == [2] and comparison["n_seeds"] == 1
    assert comparison["seeds_left_out"] == [1] and comparison["baseline_seeds_left_out"] == [3]
    treated = run_scores(sweep, "en", "f1", num_registers=8)
    base = run_scores(sweep, "en", "f1", num_registers=0)
    assert comparison["delta"] == pytest.approx(100 * (treated[2] - base[2]).mean(), abs=1e-9)
    # One shared seed says nothing about seed-to-seed spread: no interval, no p-value (not a narrow one).
    assert comparison["ci_low"] is None and comparison["p_value"] is None and comparison["p_holm"] is None
    assert any("only one seed shared" in note for note in analysis["notes"])
    assert any("seeds both have" in note and "τ=8" in note for note in analysis["notes"])
    assert any("of 9 runs have finished" in note for note in analysis["notes"])


def test_groups_without_tau0_are_not_compared(tmp_path: Path) -> None:
    analysis = analyze_sweep(make_sweep(tmp_path / "s", taus=(4, 8), devs=("en",)).root, n_boot=100)
    assert all(c["vs_tau0"][m] is None for c in analysis["cells"] for m in METRICS)
    assert [g["has_baseline"] for g in analysis["groups"]] == [False]
    assert any("no finished τ=0 run" in note for note in analysis["notes"])


def test_other_axes_make_separate_groups(tmp_path: Path) -> None:
    root = tmp_path / "s"
    sweep = make_sweep(
        root, taus=(0, 8), seeds=(1, 2), devs=("en",), grid_extra={"lr": [1e-4, 3e-4]}, effects={}
    )
    analysis = analyze_sweep(root, n_boot=100)
    assert analysis["axes"] == ["lr", "num_registers"]
    assert len(analysis["cells"]) == 4 and len(analysis["groups"]) == 2
    for lr in (1e-4, 3e-4):
        comparison = find_cell(analysis, "en", lr=lr, num_registers=8)["vs_tau0"]["f1"]
        treated = run_scores(sweep, "en", "f1", lr=lr, num_registers=8)
        base = run_scores(sweep, "en", "f1", lr=lr, num_registers=0)
        expected = 100 * np.mean([(treated[s] - base[s]).mean() for s in (1, 2)])
        assert comparison["delta"] == pytest.approx(expected, abs=1e-9)
        # A single comparison per group: Holm leaves its p-value as it is.
        assert comparison["p_holm"] == pytest.approx(comparison["p_value"])


def test_register_only_axes_share_one_tau0_run_and_compare_with_it(tmp_path: Path) -> None:
    root = tmp_path / "s"
    grid = {"register_init": ["trunc_normal", "orthogonal"], "register_depth": ["input", "all"]}
    sweep = make_sweep(root, taus=(0, 8), seeds=(1, 2), devs=("en",), grid_extra=grid, effects={})
    ids = [spec.run_id for spec in sweep.runs()]
    # τ=0 is the stock model whatever the init and depth: it runs once per seed, at their first values.
    assert [i for i in ids if "tau0" in i] == [
        "inittrunc_normal-depthinput-tau0-seed1",
        "inittrunc_normal-depthinput-tau0-seed2",
    ]
    assert len(ids) == 2 + 4 * 2
    analysis = analyze_sweep(root, n_boot=100)
    assert len(analysis["groups"]) == 4 and all(g["has_baseline"] for g in analysis["groups"])
    base = run_scores(sweep, "en", "f1", num_registers=0)
    for init in grid["register_init"]:
        for depth in grid["register_depth"]:
            treated = run_scores(sweep, "en", "f1", register_init=init, register_depth=depth, num_registers=8)
            expected = 100 * np.mean([(treated[s] - base[s]).mean() for s in (1, 2)])
            cell = find_cell(analysis, "en", register_init=init, register_depth=depth, num_registers=8)
            assert cell["vs_tau0"]["f1"]["delta"] == pytest.approx(expected, abs=1e-9)
    # Each group is named by its own values, and says which τ=0 it was compared with.
    assert sorted(
        (g["axes"]["register_init"], g["axes"]["register_depth"]) for g in analysis["groups"]
    ) == sorted((i, d) for i in grid["register_init"] for d in grid["register_depth"])
    cell = find_cell(analysis, "en", register_init="orthogonal", register_depth="all", num_registers=8)
    assert cell["vs_tau0"]["f1"]["baseline_axes"] == {
        "register_init": "trunc_normal",
        "register_depth": "input",
    }
    # With two languages, the averages of every value compare with the shared τ=0 average too.
    multi = make_sweep(tmp_path / "m", taus=(0, 8), seeds=(1, 2), devs=("en", "sw"), grid_extra=grid)
    averages = analyze_sweep(multi.root, n_boot=100)["averages"]
    treated = [a for a in averages if a["axes"]["num_registers"] == 8]
    assert len(treated) == 4 and all(
        a["vs_tau0"]["f1"] is not None for a in treated
    )  # "all" only: 1 zero-shot dev
    # An axis that matters at τ=0 (the learning rate) still gets its own τ=0 runs.
    lr_sweep = make_sweep(
        tmp_path / "lr", taus=(0, 8), seeds=(1,), devs=("en",), grid_extra={"lr": [1e-4, 3e-4]}
    )
    assert sum("tau0" in spec.run_id for spec in lr_sweep.runs()) == 2


def test_cells_carry_their_runs_register_similarity_where_every_run_recorded_it(tmp_path: Path) -> None:
    root = tmp_path / "s"
    sweep = make_sweep(root, taus=(0, 8), seeds=(1, 2), devs=("en",), effects={})
    for spec, value in zip(
        [s for s in sweep.runs() if s.point["num_registers"] == 8], (0.9, 0.5), strict=True
    ):
        path = spec.eval_dir("en") / "metrics.json"
        atomic_write_json(path, {**json.loads(path.read_text()), "register_similarity": value})
    analysis = analyze_sweep(root, n_boot=100)
    assert find_cell(analysis, "en", num_registers=8)["register_similarity"] == {
        "mean": pytest.approx(0.7),
        "per_seed": [0.9, 0.5],
    }
    assert find_cell(analysis, "en", num_registers=0)["register_similarity"] is None  # none recorded
    # The page's per-dev table shows it per cell: 0.70 for τ=8, – for τ=0.
    page = render_html(analysis, ["scores.png", "scores.svg"], [])
    rows = re.findall(r"<tr>(.*?)</tr>", page.split("Results per dev file")[1], re.S)
    header, *body = (re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S) for row in rows)
    column = header.index("register similarity")
    assert [cells[column] for cells in body if len(cells) == len(header)] == ["–", "0.70"]


def test_select_on_validation_picks_the_best_validation_tau(tmp_path: Path) -> None:
    root = tmp_path / "s"
    # τ=32 is best on the held-out split (where the choice is made), τ=8 on en (which must not matter).
    effects = {(32, VALIDATION): 0.06, (8, VALIDATION): 0.02, (8, "en"): 0.10}
    sweep = make_sweep(root, select_on=VALIDATION, effects=effects)
    analysis = analyze_sweep(root, n_boot=N_BOOT)
    assert analysis["devs"] == [VALIDATION, *DEVS]
    validation_means = {
        tau: 100
        * np.mean([s.mean() for s in run_scores(sweep, VALIDATION, "f1", num_registers=tau).values()])
        for tau in TAUS
    }
    best = max(validation_means, key=validation_means.__getitem__)
    selection = analysis["selection"]
    assert selection["on"] == VALIDATION and len(selection["groups"]) == 1
    group = selection["groups"][0]
    assert group["chosen_num_registers"] == best
    assert [e["num_registers"] for e in group["validation"]] == list(TAUS)
    assert [e["mean"] for e in group["validation"]] == pytest.approx([validation_means[t] for t in TAUS])
    assert [r["dev"] for r in group["results"]] == list(DEVS)
    for result in group["results"]:
        cell = find_cell(analysis, result["dev"], num_registers=best)
        assert result["metrics"] == cell["metrics"] and result["vs_tau0"] == cell["vs_tau0"]
        assert result["vs_tau0"]["f1"] is not None  # best is not τ=0 here


# --- averages over languages (XTREME) and Holm across dev files -------------------------------------------

#: A small cross-lingual sweep trained on en: sw has 10x the questions of en and fi, and the one effect.
XL_QUESTIONS = {"en": 20, "sw": 200, "fi": 20}
XL_EFFECTS = {(8, "sw"): 0.20}


@pytest.fixture(scope="module")
def crosslingual(tmp_path_factory: pytest.TempPathFactory) -> tuple[SweepConfig, dict[str, Any]]:
    root = tmp_path_factory.mktemp("crosslingual") / "sweep"
    sweep = make_sweep(
        root, taus=(0, 8), seeds=(1, 2), devs=tuple(XL_QUESTIONS), effects=XL_EFFECTS, questions=XL_QUESTIONS
    )
    return sweep, analyze_sweep(root, n_boot=200, seed=0)


def find_average(analysis: Mapping[str, Any], name: str, **axes: Any) -> dict[str, Any]:
    matches = [
        a
        for a in analysis["averages"]
        if a["average"] == name and all(a["axes"][k] == v for k, v in axes.items())
    ]
    assert len(matches) == 1, (name, axes, len(matches))
    return matches[0]


def file_scores(sweep: SweepConfig, dev: str, metric: str, tau: int) -> dict[int, float]:
    """Seed -> one run's score on one dev file (0..100), straight from its per-question file."""
    return {seed: 100 * s.mean() for seed, s in run_scores(sweep, dev, metric, num_registers=tau).items()}


def file_delta(sweep: SweepConfig, dev: str, metric: str, tau: int) -> float:
    """Paired Δ of τ against τ=0 on one dev file (0..100), from the files."""
    treated, base = (run_scores(sweep, dev, metric, num_registers=t) for t in (tau, 0))
    return 100 * float(np.mean([(treated[s] - base[s]).mean() for s in treated]))


def holm_by_definition(p_values: Mapping[Any, float]) -> dict[Any, float]:
    """Holm's adjusted p as defined: the i-th smallest gets max over j <= i of min(1, (m - j + 1) p_(j))."""
    ordered = sorted(p_values, key=p_values.__getitem__)
    m = len(ordered)
    return {
        key: max(min(1.0, (m - j) * p_values[ordered[j]]) for j in range(i + 1))
        for i, key in enumerate(ordered)
    }


def test_language_average_weighs_every_language_the_same(
    crosslingual: tuple[SweepConfig, dict[str, Any]],
) -> None:
    sweep, analysis = crosslingual
    assert analysis["training_dev"] == "en"
    for tau in (0, 8):
        record = find_average(analysis, "all", num_registers=tau)
        assert record["devs"] == list(XL_QUESTIONS) and record["seeds"] == [1, 2]
        assert record["n_questions"] == 240 and record["questions_per_dev"] == XL_QUESTIONS
        for metric in METRICS:
            scores = {dev: file_scores(sweep, dev, metric, tau) for dev in XL_QUESTIONS}
            per_seed = [np.mean([scores[dev][seed] for dev in XL_QUESTIONS]) for seed in (1, 2)]
            summary = record["metrics"][metric]
            assert summary["mean"] == pytest.approx(np.mean(per_seed), abs=1e-9)
            cell_means = [
                find_cell(analysis, d, num_registers=tau)["metrics"][metric]["mean"] for d in XL_QUESTIONS
            ]
            assert summary["mean"] == pytest.approx(np.mean(cell_means), abs=1e-9)
            assert summary["std"] == pytest.approx(np.std(per_seed, ddof=1), abs=1e-9)
            assert (summary["n_seeds"], summary["n_questions"]) == (2, 240)
            assert summary["ci_low"] <= summary["mean"] <= summary["ci_high"]

    # The +20 F1 on sw (200 of the 240 questions) moves the average by a third of it, not 200/240 of it.
    comparison = find_average(analysis, "all", num_registers=8)["vs_tau0"]["f1"]
    deltas = {dev: file_delta(sweep, dev, "f1", 8) for dev in XL_QUESTIONS}
    assert comparison["delta"] == pytest.approx(np.mean(list(deltas.values())), abs=1e-9)
    weighted_by_questions = sum(XL_QUESTIONS[dev] * delta for dev, delta in deltas.items()) / 240
    assert abs(weighted_by_questions - comparison["delta"]) > 5
    assert 20 / 3 - 3 < comparison["delta"] < 20 / 3 + 3
    assert comparison["ci_low"] <= comparison["delta"] <= comparison["ci_high"]
    assert comparison["seeds"] == [1, 2] and comparison["n_seeds"] == 2 and comparison["n_questions"] == 240
    # One τ compared with τ=0: Holm within the average leaves p as it is; the average is not in the
    # family of single languages.
    assert comparison["p_holm"] == pytest.approx(comparison["p_value"])
    assert comparison["p_holm_all"] is None
    assert all(
        a["vs_tau0"][m] is None
        for a in analysis["averages"]
        if a["axes"]["num_registers"] == 0
        for m in METRICS
    )


def test_zero_shot_average_leaves_out_the_training_language(
    crosslingual: tuple[SweepConfig, dict[str, Any]], tmp_path: Path
) -> None:
    sweep, analysis = crosslingual
    assert [a["average"] for a in analysis["averages"]] == ["all", "all", "zero_shot", "zero_shot"]
    for tau in (0, 8):
        record = find_average(analysis, "zero_shot", num_registers=tau)
        assert record["devs"] == ["sw", "fi"] and record["n_questions"] == 220
        for metric in METRICS:
            expected = np.mean(
                [np.mean(list(file_scores(sweep, d, metric, tau).values())) for d in ("sw", "fi")]
            )
            assert record["metrics"][metric]["mean"] == pytest.approx(expected, abs=1e-9)
    comparison = find_average(analysis, "zero_shot", num_registers=8)["vs_tau0"]["f1"]
    assert comparison["delta"] == pytest.approx(
        np.mean([file_delta(sweep, d, "f1", 8) for d in ("sw", "fi")])
    )

    with (sweep.root / "summary.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    zero_shot = [r for r in rows if r["dev"] == "zero-shot average"]
    assert len(zero_shot) == 2 * len(METRICS) and {r["average_of"] for r in zero_shot} == {"sw;fi"}
    row = next(r for r in zero_shot if r["metric"] == "f1" and r["num_registers"] == "8")
    assert float(row["delta_vs_tau0"]) == pytest.approx(comparison["delta"])
    assert float(row["mean"]) == pytest.approx(
        find_average(analysis, "zero_shot", num_registers=8)["metrics"]["f1"]["mean"]
    )
    assert {r["in_language"] for r in rows if r["dev"] == "en"} == {"True"}
    assert {r["in_language"] for r in rows if r["dev"] in ("sw", "fi")} == {"False"}

    # Trained on en but not scored on en: the training language is unknown, so no zero-shot average.
    root = tmp_path / "no-en"
    make_sweep(root, taus=(0, 8), seeds=(1, 2), devs=("sw", "fi"), questions={"sw": 20, "fi": 20})
    other = analyze_sweep(root, n_boot=100)
    assert other["training_dev"] is None
    assert {a["average"] for a in other["averages"]} == {"all"}


def test_holm_across_all_dev_files_is_one_family(sweep_dir: tuple[SweepConfig, dict[str, Any]]) -> None:
    _, analysis = sweep_dir
    for metric in METRICS:
        compared = [c for c in analysis["cells"] if c["vs_tau0"][metric] is not None]
        assert len(compared) == len(DEVS) * 2  # en and sw, τ=8 and τ=32
        expected = holm_by_definition(
            {(c["dev"], c["axes"]["num_registers"]): c["vs_tau0"][metric]["p_value"] for c in compared}
        )
        for cell in compared:
            comparison = cell["vs_tau0"][metric]
            assert comparison["p_holm_all"] == pytest.approx(
                expected[cell["dev"], cell["axes"]["num_registers"]]
            )
            assert comparison["p_holm_all"] >= comparison["p_holm"] >= comparison["p_value"]
    # The family of four is stricter than en's family of two, and the injected effect survives both.
    effect = find_cell(analysis, "en", num_registers=8)["vs_tau0"]["f1"]
    assert effect["p_holm"] < effect["p_holm_all"] < 0.05


def test_adding_languages_leaves_a_language_s_numbers_alone(tmp_path: Path) -> None:
    """en's files are the same in both sweeps (same draws); only p_holm_all, whose family grew, may move."""
    one = analyze_sweep(
        make_sweep(tmp_path / "one", taus=(0, 8), seeds=(1, 2), devs=("en",)).root, n_boot=100
    )
    two = analyze_sweep(
        make_sweep(tmp_path / "two", taus=(0, 8), seeds=(1, 2), devs=("en", "sw")).root, n_boot=100
    )
    assert one["averages"] == [] and len(two["averages"]) == 2  # the average over en and sw, τ=0 and τ=8
    for tau in (0, 8):
        alone, among = find_cell(one, "en", num_registers=tau), find_cell(two, "en", num_registers=tau)
        assert alone["metrics"] == among["metrics"]
        for metric in METRICS:
            if tau == 0:
                continue
            grown = {**among["vs_tau0"][metric], "p_holm_all": None}
            assert {**alone["vs_tau0"][metric], "p_holm_all": None} == grown
            # One dev file, one τ compared: every family is that one test.
            assert alone["vs_tau0"][metric]["p_holm_all"] == alone["vs_tau0"][metric]["p_value"]
    with (tmp_path / "one" / "summary.csv").open(encoding="utf-8") as handle:
        assert all(row["average_of"] == "" for row in csv.DictReader(handle))
    page = render_html(one, ["scores.png", "scores.svg"], [])
    assert "Average over languages" not in page and "training language" not in page


def test_report_shows_averages_and_holm_all(crosslingual: tuple[SweepConfig, dict[str, Any]]) -> None:
    _, analysis = crosslingual
    page = render_html(analysis, ["scores.png", "scores.svg"], [])
    assert "Average over languages" in page and "p (Holm, all)" in page
    assert "zero-shot average (2 dev files, without en)" in page and "en (training language" in page
    record = find_average(analysis, "all", num_registers=8)["metrics"]["f1"]
    assert f"{record['mean']:.2f} [{record['ci_low']:.2f}, {record['ci_high']:.2f}]" in page
    # A summary.json written before averages and p_holm_all existed still renders.
    old = json.loads(json.dumps(analysis))
    del old["averages"], old["training_dev"]
    for cell in old["cells"]:
        for comparison in cell["vs_tau0"].values():
            if comparison is not None:
                del comparison["p_holm_all"]
    old_page = render_html(old, ["scores.png", "scores.svg"], [])
    assert "Average over languages" not in old_page and "sw" in old_page


# --- errors ----------------------------------------------------------------------------------------------


def test_a_folder_without_sweep_json_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    with pytest.raises(RegtuneError, match="not a sweep folder") as info:
        analyze_sweep(tmp_path)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(RegtuneError, match="not a sweep folder"):
        write_report(tmp_path / "missing")


def test_a_sweep_without_finished_runs_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "s"
    make_sweep(root, taus=(0,), seeds=(1, 2), devs=("en",), unfinished=("tau0-seed1", "tau0-seed2"))
    with pytest.raises(RegtuneError, match="no finished run") as info:
        analyze_sweep(root)
    assert str(root) in str(info.value) and "\n" not in str(info.value)
    assert not (root / "summary.json").exists()


def test_a_bad_score_names_the_sweep(tmp_path: Path) -> None:
    root = tmp_path / "s"
    sweep = make_sweep(root, taus=(0,), seeds=(1, 2), devs=("en",))
    path = sweep.runs()[1].eval_dir("en") / "per_question.json"
    scores = json.loads(path.read_text(encoding="utf-8"))
    scores[next(iter(scores))]["f1"] = 55.0  # a 0..100 score where 0..1 belongs
    path.write_text(json.dumps(scores), encoding="utf-8")
    with pytest.raises(RegtuneError, match="tau0-seed2") as info:
        analyze_sweep(root, n_boot=100)
    assert str(root) in str(info.value) and "\n" not in str(info.value)


def test_a_torn_log_line_is_skipped(tmp_path: Path) -> None:
    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 5, "loss": 2.5}\n{"step": 10, "loss": 2.0}\n{"step": 30, "train_loss": 2}\n{"st')
    assert read_loss_curve(log) == ([5, 10], [2.5, 2.0])
    assert read_loss_curve(tmp_path / "none.jsonl") == ([], [])


# --- the HTML report ---------------------------------------------------------------------------------------


def test_report_files_and_escaping(tmp_path: Path) -> None:
    root = tmp_path / "s"
    odd = '/data/<b>&"odd.json'  # a dev name that is HTML
    make_sweep(root, devs=("en", odd), seeds=(1, 2), unfinished=("tau32-seed2",))
    analysis = analyze_sweep(root, n_boot=100)
    summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
    index = write_report(root, summary)  # a loaded summary.json serves as well as the returned dict
    assert index == root / "report" / "index.html"
    page = index.read_text(encoding="utf-8")
    for name in ("scores_vs_tau", "training_loss"):
        for ext in ("png", "svg"):
            assert (index.parent / f"{name}.{ext}").stat().st_size > 1000
    assert '<b>&"odd' not in page and html.escape('<b>&"odd') in page
    assert page.count("<table>") >= len(analysis["devs"]) + 3
    assert "Holm" in page and "regtune sweep --model minilm-l6 --registers 0,8,32 --seeds 1,2" in page
    assert "<script" not in page.lower()
    for target in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert "://" not in target and not target.startswith("//")
        assert (index.parent / html.unescape(target)).exists(), target


# --- rendered in a real browser ---------------------------------------------------------------------------

#: Injected at the top of a copy of the page: records script errors, failed resources and console errors,
#: then, on load, every image's natural width, into a <pre> that --dump-dom prints.
PROBE = """<script>
window.__problems = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  window.__problems.push(t && t !== window ? 'failed to load ' + (t.src || t.href) : 'error: ' + e.message);
}, true);
var __consoleError = console.error;
console.error = function () {
  window.__problems.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
  __consoleError.apply(console, arguments);
};
window.addEventListener('load', function () {
  var images = Array.prototype.map.call(document.images, function (i) {
    return {src: i.getAttribute('src'), naturalWidth: i.naturalWidth};
  });
  var out = document.createElement('pre');
  out.id = '__probe';
  out.textContent = JSON.stringify({images: images, problems: window.__problems});
  document.body.appendChild(out);
});
</script>"""


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    skip_or_fail("chromium is not installed (.ci/run installs it: apt-get install -y chromium)")


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        binary,
        "--headless",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_report_renders_in_headless_chromium(
    sweep_dir: tuple[SweepConfig, dict[str, Any]], tmp_path: Path
) -> None:
    binary = chromium_binary()
    sweep, analysis = sweep_dir
    index = write_report(sweep.root, analysis)
    page = index.read_text(encoding="utf-8")
    assert page.count("<img ") == 2

    # (a, b) A copy of the report with the probe injected, beside the same images.
    probe_dir = tmp_path / "probe"
    shutil.copytree(index.parent, probe_dir)
    probe = probe_dir / "probe.html"
    probe.write_text(page.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    result = run_chromium(binary, tmp_path / "profile", "--dump-dom", probe.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'<pre id="__probe">(.*?)</pre>', result.stdout, re.S)
    assert found, f"the probe did not run; chromium said:\n{result.stderr[-2000:]}"
    report = json.loads(html.unescape(found.group(1)))
    assert report["problems"] == []
    assert len(report["images"]) == 2
    assert all(image["naturalWidth"] > 0 for image in report["images"]), report["images"]
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console

    # (c) A screenshot of the page as delivered.
    shot = tmp_path / "screenshot.png"
    result = run_chromium(
        binary, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400", index.as_uri()
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shutil.copyfile(shot, tmp_path / "report-screenshot-copy.png")
