"""regtune compare: arms from different sweep folders, paired by seed and example."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from regtune.cli import main as cli
from regtune.core.errors import RegtuneError
from regtune.reporting.compare import ArmSpec, compare_arms
from regtune.reporting.report import analyze_sweep
from test_report import find_cell, make_sweep, run_scores


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("compare")
    make_sweep(root / "a", taus=(0, 8), seeds=(1, 2, 3), devs=("en",), effects={(8, "en"): 0.05})
    make_sweep(root / "b", taus=(0,), seeds=(1, 2), devs=("en", "sw"), data_seed=0)
    return root / "a", root / "b"


def test_the_difference_is_paired_on_the_seeds_both_arms_have(two_sweeps: tuple[Path, Path]) -> None:
    a, b = two_sweeps
    result = compare_arms(ArmSpec.parse(f"{a}:num_registers=8"), ArmSpec.parse(str(b)), "en", n_boot=500)
    assert result["seeds"] == [1, 2] and result["seeds_left_out"] == [3]
    from regtune.experiments.sweep import SweepConfig

    treated = run_scores(SweepConfig.from_dict(_sweep(a)), "en", "f1", num_registers=8)
    control = run_scores(SweepConfig.from_dict(_sweep(b)), "en", "f1", num_registers=0)
    expected = 100 * np.mean([(treated[s] - control[s]).mean() for s in (1, 2)])
    f1 = result["metrics"]["f1"]
    assert f1["delta"] == pytest.approx(expected, abs=1e-9)
    assert f1["ci_low"] < f1["delta"] < f1["ci_high"] and f1["n_seeds"] == 2
    # Each side's own level, on the same two seeds: Δ is their difference, and each interval holds its mean.
    for side, scores in (("treated", treated), ("control", control)):
        assert f1[side]["mean"] == pytest.approx(100 * np.mean([scores[s].mean() for s in (1, 2)]), abs=1e-9)
        assert f1[side]["ci_low"] < f1[side]["mean"] < f1[side]["ci_high"]
    assert f1["treated"]["mean"] - f1["control"]["mean"] == pytest.approx(f1["delta"], abs=1e-9)


def test_within_one_sweep_it_agrees_with_the_report(two_sweeps: tuple[Path, Path]) -> None:
    a, _ = two_sweeps
    result = compare_arms(ArmSpec.parse(f"{a}:num_registers=8"), ArmSpec.parse(f"{a}:num_registers=0"), "en")
    report = find_cell(analyze_sweep(a, n_boot=500), "en", num_registers=8)["vs_tau0"]["f1"]
    assert result["metrics"]["f1"]["delta"] == pytest.approx(report["delta"], abs=1e-9)
    cell = find_cell(analyze_sweep(a, n_boot=500), "en", num_registers=8)["metrics"]["f1"]
    assert result["metrics"]["f1"]["treated"]["mean"] == pytest.approx(cell["mean"], abs=1e-9)
    # Independent bootstraps of the same comparison: the intervals agree to within resampling noise.
    assert result["metrics"]["f1"]["ci_low"] == pytest.approx(report["ci_low"], abs=0.6)


def test_bad_arms_are_refused_in_one_line(two_sweeps: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two_sweeps
    cases = [
        (f"{a}:register_init=orthogonal", str(b), "en", "not among its grid axes"),
        (f"{a}:num_registers=32", str(b), "en", "no finished run matches"),
        (str(a), str(b), "en", "share seed 1; add filters"),
        (f"{a}:num_registers=8", str(b), "sw", "were not scored on 'sw'"),
        (f"{a}:num_registers", str(b), "en", "write filters as axis=value"),
        (str(tmp_path), str(b), "en", "not a sweep folder"),
    ]
    for treated, control, dev, message in cases:
        with pytest.raises(RegtuneError, match=message):
            compare_arms(ArmSpec.parse(treated), ArmSpec.parse(control), dev, n_boot=100)


def test_cli_prints_the_difference_and_writes_json(two_sweeps, tmp_path: Path, capsys) -> None:
    a, b = two_sweeps
    out = tmp_path / "c.json"
    args = ["compare", f"{a}:num_registers=8", str(b), "--dev", "en", "--n-boot", "200", "--json", str(out)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert (
        "f1: Δ " in printed and "(2 seeds, " in printed and "seeds only one arm has, left out: 3" in printed
    )
    assert printed.count("  treated ") == 2 and ", control " in printed  # one level line per metric
    assert json.loads(out.read_text())["metrics"]["exact_match"]["n_seeds"] == 2
    assert cli.main(["compare", str(a), str(b), "--dev", "en"]) == cli.EXIT_USER_ERROR


def _sweep(root: Path) -> dict:
    return {**json.loads((root / "sweep.json").read_text())["sweep"], "output_dir": str(root)}
