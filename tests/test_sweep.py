"""regtune sweep: grid expansion, every run scored on every dev file, resume, SIGKILL, folder checks."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import FAST_TRAIN, SquadPair, require_module
from regtune.cli import main as cli
from regtune.cli import sweep as cli_sweep
from regtune.core.errors import ConfigError, RegtuneError
from regtune.experiments.sweep import (
    VALIDATION,
    SweepConfig,
    _held_out,
    collect_results,
    dev_names,
    prepare_sweep_dir,
    run_finished,
    run_sweep,
)

#: FAST_TRAIN without the grid axes, and with fewer steps: a sweep trains several runs.
OPTIONS = {k: v for k, v in FAST_TRAIN.items() if k not in ("num_registers", "seed")} | {"max_steps": 4}


def _sweep(
    tmp: Path, tiny_model_dir: Path, squad: SquadPair, *, dev_files: list[str] | None = None, **kw: Any
) -> SweepConfig:
    grid = kw.pop("grid", {"num_registers": [0, 2], "seed": [1, 2]})
    return SweepConfig(
        output_dir=str(tmp / "sweep"),
        train_file=str(squad.train),
        dev_files=dev_files or [str(squad.dev)],
        grid=grid,
        options={
            **{k: v for k, v in {**OPTIONS, "model": str(tiny_model_dir)}.items() if k not in grid},
            **kw.pop("options", {}),
        },
        **kw,
    )


def _two_dev_files(tmp: Path, squad: SquadPair) -> list[str]:
    """The tiny dev file under two TyDi-style language folders, as a multilingual sweep would see."""
    files = []
    for lang in ("en", "sw"):
        target = tmp / "data" / lang / "dev.json"
        target.parent.mkdir(parents=True)
        shutil.copyfile(squad.dev, target)
        files.append(str(target))
    return files


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# --- configuration -------------------------------------------------------------------------------------


def test_grid_expands_to_one_run_per_point(
    tmp_path: Path, tiny_model_dir: Path, tiny_squad: SquadPair
) -> None:
    sweep = _sweep(tmp_path, tiny_model_dir, tiny_squad, grid={"num_registers": [0, 8], "seed": [1, 2, 3]})
    runs = sweep.runs()
    assert [r.run_id for r in runs] == [f"tau{t}-seed{s}" for t in (0, 8) for s in (1, 2, 3)]
    assert [(r.config.num_registers, r.config.seed) for r in runs] == [
        (t, s) for t in (0, 8) for s in (1, 2, 3)
    ]
    assert all(r.config.max_steps == 4 and r.config.model == str(tiny_model_dir) for r in runs)
    assert len({r.config.output_dir for r in runs}) == len(runs)


def test_other_axes_join_the_grid_and_the_run_ids(
    tmp_path: Path, tiny_model_dir: Path, tiny_squad: SquadPair
) -> None:
    sweep = _sweep(
        tmp_path,
        tiny_model_dir,
        tiny_squad,
        grid={
            "lr": [1e-3, 1e-4],
            "register_init": ["trunc_normal", "vocab"],
            "num_registers": [4],
            "seed": [1],
        },
    )
    runs = sweep.runs()
    assert len(runs) == 4
    assert {(r.config.lr, r.config.register_init) for r in runs} == {
        (lr, init) for lr in (1e-3, 1e-4) for init in ("trunc_normal", "vocab")
    }
    assert runs[0].run_id == "lr0.001-inittrunc_normal-tau4-seed1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"grid": {"num_registers": [0], "seed": []}}, "seed"),
        ({"grid": {"num_registers": [0, 0], "seed": [1]}}, "repeats"),
        ({"grid": {"num_registers": [0], "seed": [1], "epochs": [1, 2]}}, "unknown grid axis"),
        ({"grid": {"num_registers": [-1], "seed": [1]}}, "num_registers"),
        ({"options": {"seed": 3}}, "both a grid axis"),
        ({"select_on": "dev"}, "select_on"),
        ({"validation_fraction": 1.5}, "validation_fraction"),
    ],
)
def test_bad_sweeps_are_config_errors(
    tmp_path: Path, tiny_model_dir: Path, tiny_squad: SquadPair, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _sweep(tmp_path, tiny_model_dir, tiny_squad, **change)


def test_models_with_the_same_folder_name_get_distinct_runs(
    tmp_path: Path, tiny_model_dir: Path, tiny_squad: SquadPair
) -> None:
    sweep = _sweep(
        tmp_path,
        tiny_model_dir,
        tiny_squad,
        grid={"model": ["org-a/bert", "org-b/bert"], "num_registers": [0], "seed": [1]},
    )
    ids = [r.run_id for r in sweep.runs()]
    assert len(set(ids)) == 2 and all(i.startswith("modelbert_") for i in ids), ids
    assert {r.config.model for r in sweep.runs()} == {"org-a/bert", "org-b/bert"}


def test_bad_input_fails_before_the_folder_is_claimed(
    tmp_path: Path, tiny_model_dir: Path, tiny_squad: SquadPair
) -> None:
    sweep = _sweep(tmp_path, tiny_model_dir, tiny_squad, dev_files=[str(tiny_squad.dev), "missing/dev.json"])
    with pytest.raises(RegtuneError, match="missing"):
        run_sweep(sweep, progress=False)
    # No sweep.json: fixing the path and running again is not refused as "a different configuration".
    assert not (sweep.root / "sweep.json").exists()


def test_dev_names_are_languages_or_stems_and_unique() -> None:
    names = dev_names(["d/tydiqa/en/dev.json", "d/tydiqa/sw/dev.json", "x/squad-dev.json"])
    assert list(names) == ["en", "sw", "squad-dev"]
    with pytest.raises(ConfigError, match="both be named 'en'"):
        dev_names(["a/en/dev.json", "b/en/dev.json"])


# --- running, results, resume ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_sweep(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_squad: SquadPair
) -> SweepConfig:
    import torch

    tmp = tmp_path_factory.mktemp("sweep")
    sweep = _sweep(tmp, tiny_model_dir, tiny_squad, dev_files=_two_dev_files(tmp, tiny_squad))
    previous = torch.get_num_threads()
    try:
        run_sweep(sweep, threads=1, progress=False)
    finally:
        torch.set_num_threads(previous)
    return sweep


def test_every_run_is_scored_on_every_dev_file(finished_sweep: SweepConfig) -> None:
    rows = _read_csv(finished_sweep.root / "results.csv")
    assert len(rows) == 4 * 2
    assert {(r["num_registers"], r["seed"], r["dev"]) for r in rows} == {
        (t, s, d) for t in ("0", "2") for s in ("1", "2") for d in ("en", "sw")
    }
    assert all(r["language"] == r["dev"] for r in rows)  # TyDi-style folders are languages
    for spec in finished_sweep.runs():
        assert (spec.dir / "model" / "model.safetensors").is_file()
        for dev in ("en", "sw"):
            folder = spec.eval_dir(dev)
            metrics = json.loads((folder / "metrics.json").read_text())
            per_question = json.loads((folder / "per_question.json").read_text())
            predictions = json.loads((folder / "predictions.json").read_text())
            assert set(per_question) == set(predictions) and len(per_question) == metrics["num_questions"]
            f1 = 100 * sum(q["f1"] for q in per_question.values()) / len(per_question)
            assert f1 == pytest.approx(metrics["f1"])
            row = next(r for r in rows if r["run_id"] == spec.run_id and r["dev"] == dev)
            assert float(row["f1"]) == pytest.approx(metrics["f1"])
            assert int(row["train_steps"]) == 4
        # The same dev questions under two names: the same model scores them the same.
        en, sw = (json.loads((spec.eval_dir(d) / "metrics.json").read_text())["f1"] for d in ("en", "sw"))
        assert en == pytest.approx(sw)


def test_registers_and_seeds_change_the_runs(finished_sweep: SweepConfig) -> None:
    losses = {
        spec.run_id: json.loads((spec.dir / "metrics.json").read_text())["train_loss"]
        for spec in finished_sweep.runs()
    }
    assert len(set(losses.values())) == len(losses), losses


def test_running_again_skips_finished_runs(finished_sweep: SweepConfig) -> None:
    marks = {spec.run_id: (spec.dir / "metrics.json").stat().st_mtime_ns for spec in finished_sweep.runs()}
    trained: list[str] = []
    rows = run_sweep(finished_sweep, progress=False, on_run_done=trained.append)
    assert trained == []
    assert len(rows) == 8
    assert marks == {s.run_id: (s.dir / "metrics.json").stat().st_mtime_ns for s in finished_sweep.runs()}


def test_a_different_sweep_in_the_same_folder_is_refused(finished_sweep: SweepConfig) -> None:
    data = finished_sweep.to_dict()
    changed = SweepConfig.from_dict({**data, "options": {**data["options"], "lr": 5e-4}})
    with pytest.raises(ConfigError, match=r"different configuration \(options\)"):
        prepare_sweep_dir(changed)
    more = SweepConfig.from_dict({**data, "grid": {**data["grid"], "seed": [1, 2, 3]}})
    with pytest.raises(ConfigError, match=r"different configuration \(grid\)"):
        prepare_sweep_dir(more)
    # How runs are carried out is not part of the results: a new checkpoint interval is fine.
    prepare_sweep_dir(SweepConfig.from_dict({**data, "options": {**data["options"], "save_steps": 50}}))


def test_a_folder_that_is_not_a_sweep_is_refused(
    tmp_path: Path, tiny_model_dir: Path, tiny_squad: SquadPair
) -> None:
    sweep = _sweep(tmp_path, tiny_model_dir, tiny_squad)
    sweep.root.mkdir()
    (sweep.root / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a sweep folder"):
        prepare_sweep_dir(sweep)
    assert (sweep.root / "notes.txt").read_text() == "mine"


KILL_SCRIPT = """
import json, os, signal, sys

import torch
from transformers import TrainerCallback

import regtune.training.trainer
from regtune.experiments.sweep import SweepConfig, run_sweep

torch.set_num_threads(1)


class KillAt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 4:  # after checkpoint-3, before the run's last save
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no atexit, no finally


original = regtune.training.trainer.train_model
calls = []


def train_model(config, **kwargs):
    calls.append(config.output_dir)
    if len(calls) == 2:  # the second run dies at step 4 of 4, after its step-3 checkpoint
        kwargs["callbacks"] = [KillAt()]
    return original(config, **kwargs)


regtune.training.trainer.train_model = train_model
run_sweep(SweepConfig.from_dict(json.loads(open(sys.argv[1]).read())), threads=1, progress=False)
sys.exit(3)  # not reached
"""


def test_sigkill_loses_only_the_run_in_progress(
    tmp_path: Path, tiny_model_dir: Path, tiny_squad: SquadPair
) -> None:
    sweep = _sweep(
        tmp_path,
        tiny_model_dir,
        tiny_squad,
        grid={"num_registers": [0, 2], "seed": [1]},
        options={"save_steps": 3},
    )
    (tmp_path / "sweep.json").write_text(json.dumps(sweep.to_dict()))
    (tmp_path / "kill.py").write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "kill.py"), str(tmp_path / "sweep.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    first, second = sweep.runs()
    scored = sweep.scored_files()
    assert run_finished(first, scored)
    assert not run_finished(second, scored)
    assert not (second.dir / "metrics.json").exists()
    # results.csv is rewritten (atomically) after every finished run: it holds the first run only.
    assert [r["run_id"] for r in _read_csv(sweep.root / "results.csv")] == [first.run_id]
    assert collect_results(sweep)[0]["run_id"] == first.run_id  # the finished run's results are intact
    stray = [p for p in sweep.root.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name]
    assert stray == []
    first_mark = (first.dir / "metrics.json").stat().st_mtime_ns

    # The rerun may change how runs are carried out (here the checkpoint interval): the killed run
    # still continues from its checkpoint instead of being refused as a different run.
    data = sweep.to_dict()
    rerun = SweepConfig.from_dict({**data, "options": {**data["options"], "save_steps": 50}})
    done: list[str] = []
    rows = run_sweep(rerun, threads=1, progress=False, on_run_done=done.append)
    assert done == [second.run_id]  # only the killed run trains again
    assert (first.dir / "metrics.json").stat().st_mtime_ns == first_mark
    resumed = json.loads((second.dir / "metrics.json").read_text())
    assert resumed["resumed_from_step"] == 3 and resumed["train_steps"] == 4
    assert [r["run_id"] for r in rows] == [first.run_id, second.run_id]


# --- select on a held-out validation split -----------------------------------------------------------


def test_held_out_split_is_fixed_and_disjoint(
    tmp_path: Path, tiny_model_dir: Path, tiny_squad: SquadPair
) -> None:
    sweep = _sweep(tmp_path, tiny_model_dir, tiny_squad, select_on=VALIDATION, validation_fraction=0.25)
    prepare_sweep_dir(sweep)
    original = json.loads(tiny_squad.train.read_text())
    ids = [q["id"] for a in original["data"] for p in a["paragraphs"] for q in p["qas"]]
    split = {
        name: [
            q["id"]
            for a in json.loads((sweep.root / "data" / f"{name}.json").read_text())["data"]
            for p in a["paragraphs"]
            for q in p["qas"]
        ]
        for name in ("train", VALIDATION)
    }
    assert sorted(split["train"] + split[VALIDATION]) == sorted(ids)
    assert not set(split["train"]) & set(split[VALIDATION])
    assert 0 < len(split[VALIDATION]) < len(ids)
    # The id decides, not the file order: the same questions in reverse order split the same way.
    reversed_train = tmp_path / "reversed.json"
    reversed_train.write_text(json.dumps({**original, "data": original["data"][::-1]}))
    again = _sweep(
        tmp_path / "again",
        tiny_model_dir,
        tiny_squad,
        select_on=VALIDATION,
        validation_fraction=0.25,
    )
    again = SweepConfig.from_dict({**again.to_dict(), "train_file": str(reversed_train)})
    prepare_sweep_dir(again)
    held_again = [
        q["id"]
        for a in json.loads((again.root / "data" / f"{VALIDATION}.json").read_text())["data"]
        for p in a["paragraphs"]
        for q in p["qas"]
    ]
    assert sorted(held_again) == sorted(split[VALIDATION])
    assert split[VALIDATION] == [i for i in ids if _held_out(i, 0.25)]
    # Every run trains on the rest and is scored on the held-out part first.
    assert all(r.config.train_file == str(sweep.root / "data" / "train.json") for r in sweep.runs())
    assert next(iter(sweep.scored_files())) == VALIDATION


# --- command line ---------------------------------------------------------------------------------------


def _cli_args(tiny_model_dir: Path, squad: SquadPair, out: Path) -> list[str]:
    args = ["sweep", "--model", str(tiny_model_dir), "--train", str(squad.train), "--dev", str(squad.dev)]
    args += ["--output-dir", str(out), "--no-progress", "--threads", "1"]
    for name, value in OPTIONS.items():
        flag = "--" + name.replace("_", "-").replace("num-registers", "registers")
        args += [flag, str(value)]
    return args


def test_cli_sweep_writes_results(
    tmp_path: Path, tiny_model_dir: Path, tiny_squad: SquadPair, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _cli_args(tiny_model_dir, tiny_squad, tmp_path / "out")
    assert cli.main([*args, "--registers", "0,2", "--seeds", "5"]) == 0
    assert "2 results (2 runs)" in capsys.readouterr().out
    rows = _read_csv(tmp_path / "out" / "results.csv")
    dev = tiny_squad.dev.parent.name  # a file named dev.json is named by its folder, as TyDi's languages
    assert [(r["num_registers"], r["seed"], r["dev"]) for r in rows] == [("0", "5", dev), ("2", "5", dev)]
    saved = json.loads((tmp_path / "out" / "sweep.json").read_text())["sweep"]
    assert saved["grid"] == {"num_registers": [0, 2], "seed": [5]}
    assert saved["options"]["max_steps"] == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--registers", "0,x", "--seeds", "1"], "invalid"),
        (["--registers", "0", "--seeds", "1", "--dev", "/nonexistent/*/dev.json"], "matches no file"),
        (["--registers", "0", "--seeds", "1", "--placement", "middle"], "placement must be one of"),
    ],
)
def test_cli_sweep_errors_are_one_line(
    tmp_path: Path,
    tiny_model_dir: Path,
    tiny_squad: SquadPair,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    args = _cli_args(tiny_model_dir, tiny_squad, tmp_path / "out")
    with pytest.raises(SystemExit) if message == "invalid" else _no_raise():
        code = cli.main([*args, *extra])
        assert code == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]
    if message != "invalid":
        assert len(err) == 1
    assert not (tmp_path / "out" / "results.csv").exists()


class _no_raise:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# --- launchers ------------------------------------------------------------------------------------------


def _results(sweep: SweepConfig) -> list[tuple[str, str, str, str, str]]:
    rows = _read_csv(sweep.root / "results.csv")
    return [(r["run_id"], r["dev"], r["f1"], r["exact_match"], r["train_steps"]) for r in rows]


def _train_losses(sweep: SweepConfig) -> dict[str, float]:
    return {s.run_id: json.loads((s.dir / "metrics.json").read_text())["train_loss"] for s in sweep.runs()}


@pytest.fixture(scope="module")
def local_pair(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_squad: SquadPair
) -> SweepConfig:
    """Two runs on the local launcher, one thread each: the reference for the other launchers."""
    import torch

    sweep = _sweep(
        tmp_path_factory.mktemp("local"),
        tiny_model_dir,
        tiny_squad,
        grid={"num_registers": [0, 2], "seed": [3]},
    )
    previous = torch.get_num_threads()
    try:
        run_sweep(sweep, threads=1, progress=False)
    finally:
        torch.set_num_threads(previous)
    return sweep


def _same_sweep_elsewhere(sweep: SweepConfig, folder: Path) -> SweepConfig:
    return SweepConfig.from_dict({**sweep.to_dict(), "output_dir": str(folder)})


@pytest.mark.slow
def test_worker_processes_give_the_local_results(local_pair: SweepConfig, tmp_path: Path) -> None:
    sweep = _same_sweep_elsewhere(local_pair, tmp_path / "jobs")
    done: list[str] = []
    run_sweep(sweep, jobs=2, threads=1, progress=False, on_run_done=done.append)
    assert sorted(done) == sorted(s.run_id for s in sweep.runs())
    assert _results(sweep) == _results(local_pair)
    assert _train_losses(sweep) == _train_losses(local_pair)


@pytest.mark.slow
def test_ray_launcher_gives_the_local_results(local_pair: SweepConfig, tmp_path: Path) -> None:
    ray = require_module("ray")
    sweep = _same_sweep_elsewhere(local_pair, tmp_path / "ray")
    try:
        done: list[str] = []
        # No address: run_sweep starts a local Ray instance, a cluster of one machine; one CPU per task.
        run_sweep(sweep, launcher="ray", progress=False, on_run_done=done.append)
    finally:
        ray.shutdown()
    assert sorted(done) == sorted(s.run_id for s in sweep.runs())
    assert _results(sweep) == _results(local_pair)
    assert _train_losses(sweep) == _train_losses(local_pair)


def test_cli_dev_files_expand_globs_once_in_order(tmp_path: Path, tiny_squad: SquadPair) -> None:
    files = _two_dev_files(tmp_path, tiny_squad)  # data/en/dev.json, data/sw/dev.json
    pattern = str(tmp_path / "data" / "*" / "dev.json")
    # sw first, then a glob that matches it again: scored once, in its first place.
    assert cli_sweep.dev_files([files[1], pattern]) == [files[1], files[0]]
    assert cli_sweep.dev_files([f"{files[0]},{files[1]}"]) == files


def test_select_on_validation_end_to_end(tmp_path: Path, tiny_model_dir: Path, tiny_squad: SquadPair) -> None:
    from regtune.reporting.report import analyze_sweep

    sweep = _sweep(
        tmp_path,
        tiny_model_dir,
        tiny_squad,
        grid={"num_registers": [0, 2], "seed": [1, 2]},
        select_on=VALIDATION,
        validation_fraction=0.3,
    )
    rows = run_sweep(sweep, threads=1, progress=False)
    assert {r["dev"] for r in rows} == {VALIDATION, tiny_squad.dev.parent.name}
    for spec in sweep.runs():  # train_model scored the held-out part; the dev file came after
        assert json.loads((spec.dir / "metrics.json").read_text())["dev_file"].endswith("validation.json")
    analysis = analyze_sweep(sweep.root, n_boot=200)
    group = analysis["selection"]["groups"][0]
    means = {v["num_registers"]: v["mean"] for v in group["validation"]}
    assert group["chosen_num_registers"] == max(means, key=lambda tau: means[tau])
    assert [r["dev"] for r in group["results"]] == [tiny_squad.dev.parent.name]


def test_screening_on_the_held_out_split_scores_no_dev_file(
    tmp_path: Path, tiny_model_dir: Path, tiny_squad: SquadPair
) -> None:
    from regtune.reporting.report import analyze_sweep

    grid = {"num_registers": [0, 2], "seed": [1]}
    sweep = _sweep(
        tmp_path, tiny_model_dir, tiny_squad, grid=grid, select_on=VALIDATION, validation_fraction=0.3
    )
    sweep = dataclasses.replace(sweep, dev_files=[])
    rows = run_sweep(sweep, threads=1, progress=False)
    assert {r["dev"] for r in rows} == {VALIDATION}
    for spec in sweep.runs():
        assert sorted(p.name for p in (spec.dir / "evals").iterdir()) == [VALIDATION]
    group = analyze_sweep(sweep.root, n_boot=100)["selection"]["groups"][0]
    assert group["results"] == [] and len(group["validation"]) == 2
    with pytest.raises(ConfigError, match="give at least one dev file"):
        dataclasses.replace(sweep, select_on=None, dev_files=[])


def test_cli_report_on_a_real_sweep(
    finished_sweep: SweepConfig,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exported = tmp_path / "published"
    args = ["report", str(finished_sweep.root), "--n-boot", "200", "--export", str(exported)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert str(finished_sweep.root / "report" / "index.html") in out
    summary = json.loads((finished_sweep.root / "summary.json").read_text())
    assert {c["dev"] for c in summary["cells"]} == {"en", "sw"}
    # The report shows what every run really trained with: preset values too, grid axes left out.
    resolved = summary["resolved_run_config"]
    assert resolved["max_steps"] == 4 and resolved["epochs"] == 2.0 and resolved["precision"] == "auto"
    assert "num_registers" not in resolved and "seed" not in resolved
    # The export holds the small files only, in the sweep's layout, and is itself a reportable sweep.
    names = {p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file()}
    assert {"sweep.json", "results.csv", "summary.json", "report/index.html"} <= names
    assert "runs/tau2-seed1/evals/sw/per_question.json" in names
    assert not any("/model/" in n or "/trainer/" in n or n.endswith("predictions.json") for n in names)
    assert cli.main(["report", str(exported), "--n-boot", "200"]) == 0
    again = json.loads((exported / "summary.json").read_text())
    assert again["cells"] == summary["cells"]  # the same statistics from the published files alone
    assert (finished_sweep.root / "report" / "index.html").stat().st_size > 1000
    # A sweep folder given as a relative path exports the same files (make study does this).
    monkeypatch.chdir(finished_sweep.root.parent)
    relative = tmp_path / "from-relative"
    assert cli.main(["report", finished_sweep.root.name, "--n-boot", "200", "--export", str(relative)]) == 0
    assert {p.relative_to(relative).as_posix() for p in relative.rglob("*") if p.is_file()} == names
    capsys.readouterr()
    # Not a sweep: one line, exit 2.
    assert cli.main(["report", str(finished_sweep.root / "runs")]) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a sweep folder" in err[0]


def test_ray_resource_requests_that_cannot_be_met_fail_at_once() -> None:
    from regtune.experiments.sweep import check_ray_resources

    nodes = [
        {"Alive": True, "Resources": {"CPU": 4.0}},
        {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}},
        {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},  # a dead node schedules nothing
    ]
    check_ray_resources(nodes, 8, 1)  # fits the second node
    with pytest.raises(ConfigError, match=r"16 CPU\(s\).*largest live node has 8.*--threads"):
        check_ray_resources(nodes, 16, 0)
    with pytest.raises(ConfigError, match=r"2 GPU\(s\).*has 1.*--gpus-per-run"):
        check_ray_resources(nodes, 1, 2)


def test_a_last_partial_wave_of_runs_gets_the_idle_cores() -> None:
    from regtune.experiments.sweep import wave_threads

    assert wave_threads(4, 2, 2) == [1, 1, 1, 1]
    assert wave_threads(3, 2, 2) == [1, 1, 2]  # the third run would otherwise leave a core idle
    assert wave_threads(1, 2, 2) == [2]
    assert wave_threads(5, 2, 16) == [8, 8, 8, 8, 16]
    assert wave_threads(7, 3, 2) == [1, 1, 1, 1, 1, 1, 2]  # never 0 threads
    assert wave_threads(0, 2, 2) == []


def test_a_resumed_sweep_gives_no_run_the_cores_of_a_partial_wave(
    tmp_path: Path, tiny_model_dir: Path, tiny_squad: SquadPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A resumed run ends early, so the "last wave" would start beside a run with hours left: 3 threads
    # on 2 cores. With a checkpoint anywhere in the sweep, every run gets cores // jobs.
    import regtune.experiments.sweep as sweep_module
    from regtune.experiments.sweep import wave_threads

    assert wave_threads(3, 2, 2, resuming=True) == [1, 1, 1]
    assert wave_threads(5, 2, 16, resuming=True) == [8] * 5
    sweep = _sweep(tmp_path, tiny_model_dir, tiny_squad, grid={"num_registers": [0, 2, 4], "seed": [1]})
    sweep_module.prepare_sweep_dir(sweep)
    first, *rest = sweep.runs()
    assert not first.resumes
    (first.dir / "trainer" / "checkpoint-200").mkdir(parents=True)
    assert first.resumes and not any(spec.resumes for spec in rest)

    asked = []

    class Stop(Exception):
        pass

    def spy(runs: int, jobs: int, cores: int, *, resuming: bool = False) -> list[int]:
        asked.append(resuming)
        raise Stop  # before any worker starts

    monkeypatch.setattr(sweep_module, "wave_threads", spy)
    with pytest.raises(Stop):
        run_sweep(sweep, jobs=2, progress=False)
    assert asked == [True]
