"""regtune select: a pre-registered study's screening picks (by the plan's rule) and its confirmation.

The sweeps are written by hand (``test_report.make_sweep``, no training) with known injected effects on
the held-out split ("validation") and on the official dev file ("en"), so which arms the rule must pick
is known before the code runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from regtune.cli import main as cli
from regtune.core.errors import RegtuneError
from regtune.core.io import atomic_write_json
from regtune.experiments.sweep import SweepConfig, collect_results, run_finished
from regtune.reporting import selection
from regtune.reporting.selection import Rule, load_plan, minimum_detectable_effect, pick
from test_report import make_sweep

V = "validation"
#: Injected F1 gains (0..1) on the held-out split: better > good > 0 > bad; the comparator beats them all.
SCREEN_EFFECTS = {"good": 0.04, "better": 0.08, "bad": -0.04, "comparator": 0.15}


def _plan(path: Path, **rule: Any) -> Path:
    arms = [
        {"id": 1, "name": "control", "arm": "base", "flags": "--registers 0"},
        *(
            {"id": i, "name": name, "arm": name, "control": 1, "lever": name != "comparator",
             "flags": f"--registers 8 --model {{screen}}/{name}"}
            for i, name in enumerate(SCREEN_EFFECTS, start=2)
        ),
    ]  # fmt: skip
    plan = {"rule": {"seeds": 3, **rule}, "tasks": {"tydi": _TASK}, "arms": arms}
    path.write_text(json.dumps(plan), encoding="utf-8")
    return path


_TASK = {"metric": "f1", "screen_dev": V, "confirm_dev": "en"}


def _screening(root: Path, names: tuple[str, ...] = ("base", *SCREEN_EFFECTS)) -> Path:
    for name in names:
        tau = 0 if name == "base" else 8
        effect = SCREEN_EFFECTS.get(name, 0.0)
        make_sweep(root / "tydi" / name, taus=(tau,), devs=("en",), select_on=V, effects={(tau, V): effect})
    return root


@pytest.fixture(scope="module")
def screened(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("selection")
    return _plan(base / "plan.json"), _screening(base / "runs")


def test_the_rule_picks_the_two_largest_positive_levers_and_never_a_comparator(screened) -> None:
    plan_file, root = screened
    result = selection.screen(load_plan(plan_file), root, "tydi", n_boot=500)
    rows = {row["name"]: row for row in result["rows"]}
    assert result["complete"] and [r["n_seeds"] for r in rows.values()] == [3, 3, 3, 3]
    # The injected ordering shows in the measured Δ, and the comparator's is the largest of all ...
    assert rows["comparator"]["delta"] > rows["better"]["delta"] > rows["good"]["delta"] > 0
    assert rows["bad"]["delta"] < 0
    # ... but the picks are the two best levers, largest first.
    assert result["picks"] == [3, 2]
    assert rows["good"]["mde"] == pytest.approx(
        minimum_detectable_effect(rows["good"]["ci_low"], rows["good"]["ci_high"], 3)
    )


def test_the_smallest_detectable_effect_uses_the_seed_level_t_distribution() -> None:
    # A ±4.303 interval (t(0.975, 2) × SE 1) detects (4.303 + 1.061) SE with 3 seeds; a ±2.776 interval
    # (SE 1 with 5 seeds) detects 3.717 SE; with many seeds it tends to the normal 1.96 + 0.84.
    assert minimum_detectable_effect(-4.303, 4.303, 3) == pytest.approx(5.364, abs=2e-3)
    assert minimum_detectable_effect(-2.776, 2.776, 5) == pytest.approx(3.717, abs=2e-3)
    assert minimum_detectable_effect(-1.96, 1.96, 10_000) == pytest.approx(2.802, abs=2e-3)
    assert minimum_detectable_effect(-1.0, 1.0, 1) is None
    assert minimum_detectable_effect(None, 1.0, 3) is None


def test_one_pick_when_the_rule_allows_one(screened, tmp_path: Path) -> None:
    _, root = screened
    plan = load_plan(_plan(tmp_path / "plan.json", max_picks=1))
    assert selection.screen(plan, root, "tydi", n_boot=200)["picks"] == [3]


def test_ties_go_to_fewer_trainable_parameters_then_the_lower_id() -> None:
    rows = [
        {"id": 2, "lever": True, "delta": 1.004, "trainable_parameters": 9_000},
        {"id": 3, "lever": True, "delta": 0.996, "trainable_parameters": 500},  # equal at 0.01 points
        {"id": 4, "lever": True, "delta": 1.0, "trainable_parameters": 500},
        {"id": 5, "lever": False, "delta": 5.0, "trainable_parameters": 1},
        {"id": 6, "lever": True, "delta": 0.0, "trainable_parameters": 1},  # not > 0
        {"id": 7, "lever": True, "delta": None, "trainable_parameters": 1},  # not run
    ]
    assert pick(rows, Rule(max_picks=2)) == [3, 4]
    assert pick(rows, Rule(max_picks=5)) == [3, 4, 2]
    assert pick(rows, Rule(max_picks=2, min_delta=2.0)) == []


def test_an_unfinished_screening_picks_nothing_and_writes_no_confirm_list(tmp_path: Path) -> None:
    plan = load_plan(_plan(tmp_path / "plan.json"))
    root = _screening(tmp_path / "runs", names=("base", "good", "bad"))
    result = selection.freeze(plan, root, selection.screen(plan, root, "tydi", n_boot=200))
    assert not result["complete"] and result["picks"] is None
    assert [r["status"] for r in result["rows"]] == ["done", "not run", "done", "not run"]
    out = root / "tydi" / "selection"
    assert "not yet: better (0), comparator (0)." in (out / "screening.md").read_text()
    assert not (out / "confirm.tsv").exists()


def test_complete_picks_are_frozen_and_list_the_sweeps_to_confirm(tmp_path: Path) -> None:
    plan_file = _plan(tmp_path / "plan.json")
    root = _screening(tmp_path / "runs")
    plan = load_plan(plan_file)
    selection.freeze(plan, root, selection.screen(plan, root, "tydi", n_boot=200))
    lines = (root / "tydi" / "selection" / "confirm.tsv").read_text().splitlines()
    # Controls first, each sweep once; {screen} becomes the task's screening folder.
    assert lines == [
        "control --registers 0",
        f"better --registers 8 --model {root / 'tydi'}/better",
        f"good --registers 8 --model {root / 'tydi'}/good",
    ]
    table = (root / "tydi" / "selection" / "screening.md").read_text()
    assert table.count("**picked**") == 2 and "| comparator |" in table
    # The forest plot beside the table: PNG and SVG, linked from it.
    assert "](screening.png)" in table
    png = (root / "tydi" / "selection" / "screening.png").read_bytes()
    assert png.startswith(b"\x89PNG") and (root / "tydi" / "selection" / "screening.svg").is_file()
    # The same plan and runs again: the frozen decision comes back, and a deleted confirm.tsv is rewritten.
    (root / "tydi" / "selection" / "confirm.tsv").unlink()
    again = selection.freeze(plan, root, selection.screen(plan, root, "tydi", n_boot=200))
    assert again["picks"] == [3, 2]
    assert (root / "tydi" / "selection" / "confirm.tsv").read_text().splitlines() == lines
    # A changed plan (here: the rule) may not re-decide a complete screening, nor tabulate its confirmation.
    changed = load_plan(_plan(plan_file, max_picks=1))
    with pytest.raises(RegtuneError, match="were frozen from a complete screening under another version"):
        selection.freeze(changed, root, selection.screen(changed, root, "tydi", n_boot=200))
    with pytest.raises(RegtuneError, match="frozen under another version"):
        selection.confirm(changed, root, n_boot=200)
    # The same plan (hashed when it was loaded) over runs that would now pick otherwise (here: faked).
    redone = {**selection.screen(plan, root, "tydi", n_boot=200), "picks": [2]}
    with pytest.raises(RegtuneError, match=r"frozen from a complete screening; this one would pick \[2\]"):
        selection.freeze(plan, root, redone)


def test_a_fresh_checkout_confirms_the_published_picks_without_the_screening_runs(
    tmp_path: Path, capsys
) -> None:
    plan_file = _plan(tmp_path / "plan.json")
    plan = load_plan(plan_file)
    root = _screening(tmp_path / "runs")
    selection.freeze(plan, root, selection.screen(plan, root, "tydi", n_boot=200))
    published = (root / "tydi" / "selection" / "screening.json").read_text()
    listed = (root / "tydi" / "selection" / "confirm.tsv").read_text()
    # Another machine: no screening runs, only the published screening.json in the selection folder.
    fresh = tmp_path / "fresh"
    (fresh / "tydi" / "selection").mkdir(parents=True)
    (fresh / "tydi" / "selection" / "screening.json").write_text(published)
    recomputed = selection.screen(plan, fresh, "tydi", n_boot=200)
    assert not recomputed["complete"] and recomputed["picks"] is None
    kept = selection.freeze(plan, fresh, recomputed)
    assert kept["picks"] == [3, 2] and kept["complete"]
    assert (fresh / "tydi" / "selection" / "screening.json").read_text() == published
    expected = listed.replace(str(root / "tydi"), str(fresh / "tydi"))  # {screen} is this root's folder
    assert (fresh / "tydi" / "selection" / "confirm.tsv").read_text() == expected
    # The command says where the picks came from, since it has no screening table to point to.
    assert cli.main(["select", str(plan_file), "--root", str(fresh), "--output", str(tmp_path / "c")]) == 0
    printed = capsys.readouterr().out
    frozen = fresh / "tydi" / "selection" / "screening.json"
    assert f"picks ['better', 'good']\n  {frozen} (frozen; runs not here)" in printed


def _make(*targets: str, **variables: Path) -> None:
    """The repository's Makefile, with this interpreter's environment standing in for the set-up .venv."""
    venv = Path(sys.executable).parent.parent
    assigned = [f"{k}={v}" for k, v in {"VENV": venv, **variables}.items()]
    repo = Path(__file__).resolve().parent.parent
    subprocess.run(["make", "-s", "-o", f"{venv}/.installed", *targets, *assigned], cwd=repo, check=True)


def test_make_levers_keep_then_restore_brings_back_the_finished_runs(tmp_path: Path) -> None:
    # The study's runs/ is lost on a fresh checkout; what levers-keep puts under version control must be
    # enough to resume: the frozen picks, and finished runs that the sweep skips and the tables read.
    runs, results = tmp_path / "runs", tmp_path / "results"
    sweep = make_sweep(
        runs / "tydi" / "confirm" / "control", taus=(0,), devs=("en",), unfinished=("tau0-seed3",)
    )
    (sweep.root / "runs" / "tau0-seed1" / "model").mkdir()
    (sweep.root / "runs" / "tau0-seed1" / "model" / "model.safetensors").write_bytes(b"weights")
    for task in ("tydi", "sst2"):
        (results / f"screening-{task}").mkdir(parents=True)
        (results / f"screening-{task}" / "screening.json").write_text(f'{{"task": "{task}"}}')
    original = collect_results(sweep)
    _make("levers-keep", LEVERS_DIR=runs, LEVERS_RESULTS=results)
    kept = results / "runs" / "tydi" / "confirm" / "control"
    assert sorted(p.name for p in (kept / "runs").iterdir()) == ["tau0-seed1", "tau0-seed2"]
    assert not list(kept.rglob("*.safetensors")) and (kept / "report").is_dir()
    shutil.rmtree(runs)  # the fresh checkout
    _make("levers-restore", LEVERS_DIR=runs, LEVERS_RESULTS=results)
    assert json.loads((runs / "sst2" / "selection" / "screening.json").read_text()) == {"task": "sst2"}
    folder = runs / "tydi" / "confirm" / "control"
    saved = json.loads((folder / "sweep.json").read_text())["sweep"]
    restored = SweepConfig.from_dict({**saved, "output_dir": str(folder)})
    assert collect_results(restored) == original and len(original) == 2
    finished = {spec.run_id: run_finished(spec, restored.scored_files()) for spec in restored.runs()}
    assert finished == {"tau0-seed1": True, "tau0-seed2": True, "tau0-seed3": False}  # seed 3 trains again
    # Restoring again, over a run folder that is being retrained here, copies nothing into it (and succeeds).
    shutil.rmtree(folder / "runs" / "tau0-seed2" / "evals")
    _make("levers-restore", LEVERS_DIR=runs, LEVERS_RESULTS=results)
    assert not (folder / "runs" / "tau0-seed2" / "evals").exists()
    assert run_finished(restored.runs()[0], restored.scored_files())


def test_confirmation_holm_corrects_across_the_picks(tmp_path: Path) -> None:
    plan_file = _plan(tmp_path / "plan.json", confirm_seeds=5)
    root = _screening(tmp_path / "runs")
    plan = load_plan(plan_file)
    selection.freeze(plan, root, selection.screen(plan, root, "tydi", n_boot=200))
    confirm = root / "tydi" / "confirm"
    seeds = (1, 2, 3, 4, 5)
    make_sweep(confirm / "control", taus=(0,), seeds=seeds, devs=("en",))
    make_sweep(confirm / "better", taus=(8,), seeds=seeds, devs=("en",), effects={(8, "en"): 0.08})
    partial = selection.confirm(plan, root, n_boot=500)
    assert not partial["complete"] and [r["status"] for r in partial["rows"]] == ["done", "not run"]
    make_sweep(confirm / "good", taus=(8,), seeds=seeds, devs=("en",), effects={(8, "en"): 0.0})
    result = selection.confirm(plan, root, n_boot=500)
    assert result["complete"] and result["picks"] == {"tydi": [3, 2]}
    better, good = result["rows"]
    assert better["delta"] > 4 and better["p_holm"] < 0.05 and better["n_seeds"] == 5
    assert good["ci_low"] < 0 < good["ci_high"]
    # Holm with two tests: the smaller p doubles; the larger is max(its own p, the smaller's adjusted).
    low, high = sorted((better, good), key=lambda r: r["p_value"])
    assert low["p_holm"] == pytest.approx(min(1.0, 2 * low["p_value"]))
    assert high["p_holm"] == pytest.approx(max(high["p_value"], low["p_holm"]))
    selection.write_confirmation(plan, result, tmp_path / "out")
    table = (tmp_path / "out" / "confirmation.md").read_text()
    assert "Holm across every row" in table and "](confirmation.png)" in table
    assert "- tydi (f1 on `en`): picks 3 better, 2 good" in table
    # Each side's level beside Δ: their difference is Δ, and the table shows both.
    level, control_level = better["score"], better["control_score"]
    assert level["mean"] - control_level["mean"] == pytest.approx(better["delta"], abs=1e-9)
    row = next(line for line in table.splitlines() if "| better |" in line)
    assert f"| {level['mean']:.2f} [{level['ci_low']:.2f}, {level['ci_high']:.2f}] | 1 |" in row
    assert f"| {control_level['mean']:.2f} [" in row
    svg = (tmp_path / "out" / "confirmation.svg").read_text()
    assert "tydi: better" in svg and "tydi: good" in svg  # one labelled line per pick


def test_holm_pools_the_picks_of_every_task(tmp_path: Path) -> None:
    import shutil

    plan_file = _plan(tmp_path / "plan.json", confirm_seeds=3)
    data = json.loads(plan_file.read_text())
    data["tasks"]["other"] = _TASK
    plan_file.write_text(json.dumps(data))
    plan = load_plan(plan_file)
    root = _screening(tmp_path / "runs")
    shutil.copytree(root / "tydi", root / "other")
    for task in ("tydi", "other"):
        selection.freeze(plan, root, selection.screen(plan, root, task, n_boot=200))
        for name, effect in (("control", 0.0), ("better", 0.03), ("good", 0.0)):
            tau = 0 if name == "control" else 8
            make_sweep(
                root / task / "confirm" / name, taus=(tau,), devs=("en",), effects={(tau, "en"): effect},
                data_seed=1 if task == "other" else 0,
            )  # fmt: skip
    result = selection.confirm(plan, root, n_boot=500)
    assert [(r["task"], r["name"]) for r in result["rows"]] == [
        ("tydi", "better"), ("tydi", "good"), ("other", "better"), ("other", "good"),
    ]  # fmt: skip
    # One family of four: the smallest p is multiplied by 4, not by 2 as a per-task family would.
    smallest = min(result["rows"], key=lambda r: r["p_value"])
    assert smallest["p_holm"] == pytest.approx(min(1.0, 4 * smallest["p_value"]))


def test_run_figures_come_from_the_runs_metrics(tmp_path: Path) -> None:
    plan = load_plan(_plan(tmp_path / "plan.json"))
    root = _screening(tmp_path / "runs")
    for i, run in enumerate(sorted((root / "tydi" / "good" / "runs").iterdir())):
        atomic_write_json(run / "metrics.json", {"trainable_parameters": 1000 + i})
        atomic_write_json(run / "evals" / V / "metrics.json", {"f1": 1.0, "register_similarity": 0.5})
    row = next(r for r in selection.screen(plan, root, "tydi", n_boot=200)["rows"] if r["name"] == "good")
    assert row["trainable_parameters"] == pytest.approx(1001) and row["register_similarity"] == 0.5
    assert row["control_register_similarity"] is None  # τ=0 has no registers to compare


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p["arms"][1].update(control=99), "control 99 is not another arm"),
        (lambda p: p["arms"][1].update(name="control"), "id or name is used twice"),
        (lambda p: p["arms"][1].update(name="Good Arm"), "lower-case letters"),
        (lambda p: p["arms"][1].pop("control"), "a lever needs a control"),
        (lambda p: p["arms"][1].update(colour="red"), "arm #2 of 'arms': .*unexpected keyword arg.*'colour'"),
        (lambda p: p["arms"][1].update(name=7), "'name', 'arm' and 'flags' are strings"),
        (lambda p: p.pop("arms"), "needs 'tasks'"),
        (lambda p: p.update(tasks=["tydi"]), "needs 'tasks'"),
        (lambda p: p["rule"].update(tie=0), "tie must be > 0"),
        (lambda p: p["rule"].update(seeds="3"), "whole numbers >= 1"),
    ],
)
def test_bad_plans_are_refused_in_one_line(tmp_path: Path, edit, message: str) -> None:
    path = _plan(tmp_path / "plan.json")
    plan = json.loads(path.read_text())
    edit(plan)
    path.write_text(json.dumps(plan))
    with pytest.raises(RegtuneError, match=message) as err:
        load_plan(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_cli_screens_confirms_and_refuses_bad_input(screened, tmp_path: Path, capsys) -> None:
    plan_file, root = screened
    out = tmp_path / "confirmation"
    assert (
        cli.main(["select", str(plan_file), "--root", str(root), "--n-boot", "200", "--output", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "tydi: 4 of 4 comparisons screened, picks ['better', 'good']" in printed
    # The picks' confirmation sweeps have not run: the table lists them as such and says it is incomplete.
    table = (out / "confirmation.md").read_text()
    assert "**incomplete**" in table and table.count("| not run |") == 2
    assert cli.main(["select", str(plan_file), "--root", str(root), "--task", "sst2"]) == cli.EXIT_USER_ERROR
    assert "no task 'sst2'" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{")
    assert cli.main(["select", str(tmp_path / "broken.json"), "--root", str(root)]) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'broken.json'}: not a readable JSON plan" in err


def test_a_plan_that_does_not_fit_the_runs_names_the_plan_and_the_arm(screened, tmp_path: Path) -> None:
    _, root = screened
    path = _plan(tmp_path / "plan.json")
    plan = json.loads(path.read_text())
    plan["tasks"]["tydi"]["metric"] = "f2"
    path.write_text(json.dumps(plan))
    with pytest.raises(RegtuneError, match=r"task 'tydi', arm 2 \(good\): metric 'f2' is not one") as err:
        selection.screen(load_plan(path), root, "tydi", n_boot=200)
    assert str(err.value).startswith(f"{path}: ")


def test_the_published_levers_plan_loads_and_its_confirmation_flags_are_sweep_options() -> None:
    # The levers study's plan is read again, by the same code, when confirmation starts, hours after it
    # was written: a typo in an arm's flags must fail here, not then.
    plan = load_plan(Path(__file__).parents[1] / "docs/results/register-levers/plan.json")
    parser = cli.build_parser()
    for arm in plan.arms:
        flags = arm.flags.replace("{screen}", "runs/levers/tydi").split()
        args = parser.parse_args(
            ["sweep", "--train", "t.json", "--seeds", "1", "--output-dir", "out", *flags]
        )
        assert args.registers, arm.name
