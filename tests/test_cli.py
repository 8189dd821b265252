"""The ``regtune`` command line: help texts, user errors as one line, evaluate and predict, presets."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import FinishedRun, SquadPair, skip_or_fail
from regtune.cli import main as cli
from regtune.tasks.qa.data import read_squad
from regtune.tasks.qa.task import PRESETS
from regtune.training.config import TrainConfig, resolve_config

pytestmark = pytest.mark.usefixtures("one_thread", "restore_hf_logging")

SEED_PRESET = {
    "lr": 2e-5,
    "batch_size": 8,
    "epochs": 3.0,
    "max_length": 434,
    "pad_to_max_length": True,
    "seed": 595,
}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``cli.main(argv)`` -> (exit code, stdout, stderr); argparse's SystemExit counts as the code."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- help ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["predict"]], ids=str)
def test_help_exits_zero(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, *command, "--help")
    assert code == 0 and err == ""
    assert out.startswith("usage: regtune")
    if command == ["train"]:
        assert "--registers" in out and "Presets:" in out


def test_every_option_has_help() -> None:
    parser = cli.build_parser()
    parsers = {"regtune": parser, **_subparsers(parser)}
    assert set(parsers) == {
        "regtune",
        "train",
        "pretrain",
        "evaluate",
        "predict",
        "sweep",
        "report",
        "compare",
        "select",
        "explain",
        "analyze",
        "push",
    }
    for name, p in parsers.items():
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                # The COMMAND positional: each command is listed with its own help line.
                assert all(choice.help for choice in action._choices_actions), name
                continue
            assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest}"


def test_train_options_cover_the_config() -> None:
    # Every TrainConfig field but the bookkeeping ones is settable from the command line.
    parser = _subparsers(cli.build_parser())["train"]
    dests = {a.dest for a in parser._actions}
    missing = set(TrainConfig().to_dict()) - dests - {"model", "train_file", "dev_file", "preset"}
    assert missing == set()


# --- user errors: one line, exit 2, no traceback -------------------------------------------------------


def _bad_answer_file(path: Path) -> Path:
    context = "Paris is the capital of France."
    qas = [
        {"id": "good-1", "question": "Capital?", "answers": [{"text": "Paris", "answer_start": 0}]},
        {"id": "bad-start-7", "question": "Country?", "answers": [{"text": "France", "answer_start": 3}]},
    ]
    payload = {"data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def _not_json(path: Path) -> Path:
    path.write_text('{"data": [ this is not json', encoding="utf-8")
    return path


BAD_TRAIN = {
    "not-json": (_not_json, [], ["not valid JSON"]),
    "missing": (lambda path: path, [], ["file not found"]),
    "bad-answer-strict": (_bad_answer_file, ["--strict"], ["bad-start-7"]),
}


@pytest.mark.parametrize("role", ["--train", "--dev"])
@pytest.mark.parametrize("case", sorted(BAD_TRAIN))
def test_bad_data_file_is_one_line(
    case: str,
    role: str,
    tiny_model_dir: Path,
    tiny_squad: SquadPair,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make, flags, fragments = BAD_TRAIN[case]
    bad = make(tmp_path / f"{case}.json")
    files = {"--train": tiny_squad.train, "--dev": tiny_squad.dev, role: bad}
    out_dir = tmp_path / "run"
    code, out, err = _run(
        capsys,
        "train",
        "--model",
        tiny_model_dir,
        *[x for kv in files.items() for x in kv],
        "--output-dir",
        out_dir,
        "--no-progress",
        *flags,
    )
    assert code == cli.EXIT_USER_ERROR
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("regtune: error: ") and str(bad) in err
    for fragment in fragments:
        assert fragment in err, err
    assert "Traceback" not in err + out
    assert not out_dir.exists(), "a refused run must leave no folder behind"


def test_bad_option_values_are_one_line(
    tiny_model_dir: Path, tiny_squad: SquadPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train", "--train", tiny_squad.train, "--dev", tiny_squad.dev, "--output-dir", tmp_path / "r"]
    cases = {
        # Fails the TrainConfig checks after argparse accepted it.
        "doc_stride": [*base, "--model", tiny_model_dir, "--max-length", "64", "--doc-stride", "64"],
        "no such folder": [*base, "--model", "./no-such-model-dir"],
    }
    for fragment, argv in cases.items():
        code, out, err = _run(capsys, *argv)
        assert code == cli.EXIT_USER_ERROR, argv
        assert err.count("\n") == 1 and err.startswith("regtune: error: ") and fragment in err, err
        assert "Traceback" not in err + out


def test_unknown_placement_is_an_argparse_error(
    tiny_squad: SquadPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--train", tiny_squad.train, "--dev", tiny_squad.dev, "--output-dir", tmp_path]
    code, _out, err = _run(capsys, *argv, "--placement", "middle")
    assert code == 2
    assert err.splitlines()[-1].startswith("regtune train: error: argument --placement: invalid choice")
    assert "'middle'" in err and "Traceback" not in err


def test_evaluate_and_predict_errors_are_one_line(
    tiny_squad: SquadPair, finished_run: FinishedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    code, _, err = _run(capsys, "evaluate", "--model", not_a_model, "--dev", tiny_squad.dev, "--no-progress")
    assert code == cli.EXIT_USER_ERROR and err.count("\n") == 1 and str(not_a_model) in err, err

    bad = _not_json(tmp_path / "dev.json")
    model = finished_run.dir / "model"
    code, _, err = _run(capsys, "evaluate", "--model", model, "--dev", bad, "--no-progress")
    assert code == cli.EXIT_USER_ERROR and err.count("\n") == 1 and str(bad) in err, err

    code, _, err = _run(capsys, "predict", "--model", model, "--question", " ", "--context", "Some text.")
    assert code == cli.EXIT_USER_ERROR and err.count("\n") == 1 and "--question" in err, err


def test_console_script_shows_no_traceback(tiny_squad: SquadPair, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("regtune")
    if not script.is_file():
        skip_or_fail(f"the regtune console script is not installed beside {sys.executable}")
    bad = _bad_answer_file(tmp_path / "bad.json")
    result = subprocess.run(
        [
            str(script),
            "train",
            "--model",
            "minilm-l6",
            "--train",
            str(bad),
            "--dev",
            str(tiny_squad.dev),
            "--output-dir",
            str(tmp_path / "run"),
            "--strict",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"regtune: error: {bad}: question bad-start-7")
    assert "Traceback" not in result.stderr + result.stdout


# --- evaluate and predict ------------------------------------------------------------------------------


def test_evaluate_reproduces_the_training_scores(
    finished_run: FinishedRun, tiny_squad: SquadPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "eval"
    code, out, err = _run(
        capsys,
        "evaluate",
        "--model",
        finished_run.dir / "model",
        "--dev",
        tiny_squad.dev,
        "--output-dir",
        out_dir,
        "--no-progress",
    )
    assert code == 0, err
    printed = json.loads(out)
    saved = json.loads((out_dir / "metrics.json").read_text())
    assert printed == saved
    for key in ("exact_match", "f1", "num_questions", "num_windows"):
        assert saved[key] == finished_run.metrics[key], key
    predictions = json.loads((out_dir / "predictions.json").read_text())
    assert predictions == json.loads((finished_run.dir / "predictions.json").read_text())


def _dev_question(tiny_squad: SquadPair) -> tuple[str, str]:
    example = next(ex for ex in read_squad(tiny_squad.dev).examples if "\n" not in ex.context)
    return example.question, example.context


def test_predict_prints_a_span_of_the_context(
    finished_run: FinishedRun, tiny_squad: SquadPair, capsys: pytest.CaptureFixture[str]
) -> None:
    question, context = _dev_question(tiny_squad)
    argv = ["predict", "--model", finished_run.dir / "model", "--question", question, "--context", context]

    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    lines = out.split("\n")
    assert len(lines) == 2 and lines[1] == ""  # the answer, then nothing
    answer = lines[0]
    assert answer in context

    code, out, err = _run(capsys, *argv, "--json")
    assert code == 0, err
    first, record_line, rest = out.split("\n")
    assert first == answer and rest == ""
    record = json.loads(record_line)
    assert set(record) == {"answer", "score", "start", "end"}
    assert record["answer"] == answer == context[record["start"] : record["end"]]
    assert isinstance(record["score"], float)


# --- presets -------------------------------------------------------------------------------------------


def test_seed_preset_resolves_to_the_seed_recipe() -> None:
    config = resolve_config("seed")
    for key, value in SEED_PRESET.items():
        assert getattr(config, key) == value, key
    assert config.preset == "seed" and config.group_by_length is False
    assert set(SEED_PRESET.items()) <= set(PRESETS["seed"].items())

    # Explicit options win; None means "not given" and keeps the preset's value.
    config = resolve_config("seed", lr=1e-4, batch_size=4, pad_to_max_length=False, seed=None)
    assert (config.lr, config.batch_size, config.pad_to_max_length) == (1e-4, 4, False)
    assert (config.seed, config.max_length, config.epochs) == (595, 434, 3.0)

    assert resolve_config("default") == TrainConfig()


def _parsed_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *flags: str) -> TrainConfig:
    """The config ``regtune train ... FLAGS`` would train with (train_model is replaced by a stub)."""
    import regtune.training.trainer

    seen: dict[str, Any] = {}

    def fake_train_qa(config: TrainConfig, **kwargs: Any) -> dict[str, Any]:
        seen["config"], seen["kwargs"] = config, kwargs
        return {}

    monkeypatch.setattr(regtune.training.trainer, "train_model", fake_train_qa)
    argv = ["train", "--train", "t.json", "--dev", "d.json", "--output-dir", str(tmp_path), *flags]
    assert cli.main(argv) == 0
    return seen["config"]


def test_cli_applies_the_preset_then_explicit_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = _parsed_config(monkeypatch, tmp_path, "--preset", "seed")
    assert config == resolve_config(
        "seed", model="minilm-l6", train_file="t.json", dev_file="d.json", output_dir=str(tmp_path)
    )
    for key, value in SEED_PRESET.items():
        assert getattr(config, key) == value, key

    config = _parsed_config(
        monkeypatch,
        tmp_path,
        "--preset",
        "seed",
        "--lr",
        "1e-4",
        "--batch-size",
        "4",
        "--no-pad-to-max-length",
        "--registers",
        "8",
        "--strict",
    )
    assert (config.lr, config.batch_size, config.pad_to_max_length) == (1e-4, 4, False)
    assert (config.num_registers, config.strict) == (8, True)
    assert (config.seed, config.max_length, config.epochs) == (595, 434, 3.0)

    # Without --preset: the default preset, i.e. the dataclass defaults.
    config = _parsed_config(monkeypatch, tmp_path)
    assert config.preset == "default" and (config.lr, config.batch_size) == (1e-4, 16)
    assert config.strict is False and config.pad_to_max_length is False


def test_unknown_preset_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--train", "t.json", "--dev", "d.json", "--output-dir", tmp_path, "--preset", "fast"]
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "invalid choice: 'fast'" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (["--verbose", "report", "somewhere"], True),
        (["report", "somewhere", "--verbose"], True),
        (["evaluate", "--verbose", "--model", "m", "--dev", "d.json"], True),
        (["report", "somewhere"], False),
    ],
)
def test_global_flags_work_before_and_after_the_subcommand(argv: list[str], verbose: bool) -> None:
    from regtune.cli.main import build_parser

    assert build_parser().parse_args(argv).verbose is verbose


def test_train_without_dev_trains_saves_and_evaluates_later(
    tiny_model_dir: Path, tiny_squad: SquadPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["train", "--model", str(tiny_model_dir), "--registers", "2", "--train", str(tiny_squad.train),
            "--output-dir", str(out), "--max-steps", "2", "--batch-size", "4", "--max-length", "128",
            "--doc-stride", "32", "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    assert "trained without --dev" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_steps"] == 2 and metrics["dev_file"] is None and "f1" not in metrics
    assert not (out / "predictions.json").exists() and (out / "model" / "model.safetensors").exists()
    assert json.loads((out / "config.json").read_text())["data"]["dev_file"] is None
    assert cli.main(["evaluate", "--model", str(out / "model"), "--dev", str(tiny_squad.dev)]) == 0
    assert json.loads(capsys.readouterr().out)["num_questions"] > 0


def test_predict_a_question_file_with_top_k(
    finished_run: FinishedRun, tiny_squad: SquadPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = read_squad(tiny_squad.dev).examples[:5]
    questions = tmp_path / "questions.jsonl"
    questions.write_text(
        "".join(
            json.dumps({"id": e.id, "question": e.question, "context": e.context}) + "\n" for e in examples
        )
    )
    out = tmp_path / "answers.jsonl"
    model = str(finished_run.dir / "model")
    argv = [
        "predict",
        "--model",
        model,
        "--file",
        str(questions),
        "--output",
        str(out),
        "--top-k",
        "3",
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [e.id for e in examples]
    for record, example in zip(records, examples, strict=True):
        assert 1 <= len(record["answers"]) <= 3 and record["answers"][0]["answer"] == record["answer"]
        scores = [a["score"] for a in record["answers"]]
        assert scores == sorted(scores, reverse=True)
        assert all(example.context[a["start"] : a["end"]] == a["answer"] for a in record["answers"])
    capsys.readouterr()
    # The best answer is what a one-question predict prints.
    one = examples[0]
    assert cli.main(["predict", "--model", model, "--question", one.question, "--context", one.context]) == 0
    assert capsys.readouterr().out.splitlines()[0] == records[0]["answer"]
    assert cli.main(["predict", "--model", model, "--text", "x", "--top-k", "0"]) == 2
