"""train_model end to end on a tiny random BERT: the run folder, determinism, kill-and-resume, guards.

One uninterrupted run (the session fixture ``finished_run``: 9 steps of 4 windows, checkpoints every 3)
is the reference the other tests compare with.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback, TrainingArguments, set_seed

from conftest import FAST_TRAIN, FinishedRun, SquadPair
from regtune.cli import main as cli
from regtune.core.errors import RegtuneError
from regtune.core.io import atomic_write_json, atomic_write_text
from regtune.core.registers import CONFIG_KEY, add_registers, load_model, register_parameters
from regtune.tasks.qa.data import read_squad
from regtune.tasks.qa.evaluation import QA_SETTINGS_KEY
from regtune.training.config import TRAIN_FLAGS, TrainConfig
from regtune.training.trainer import (
    RegisterTrainer,
    build_model,
    check_run_dir,
    optimizer_param_groups,
    report_destinations,
    train_model,
    truncate_log,
)
from tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread", "restore_hf_logging")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _log_records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def _loss_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in _log_records(run_dir) if "loss" in r]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model" / "model.safetensors")


def _assert_same_weights(a: Path, b: Path, atol: float) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst <= atol, f"weights differ by up to {worst}"


def _leftovers(run_dir: Path) -> list[str]:
    """Things a finished run must not leave behind: checkpoints, half-saved models, temp files."""
    found = [str(p.relative_to(run_dir)) for p in run_dir.rglob("checkpoint-*")]
    found += [str(p.relative_to(run_dir)) for p in run_dir.rglob("*.tmp")]
    return found


# --- the run folder -----------------------------------------------------------------------------------


def test_run_folder_holds_every_result(finished_run: FinishedRun, tiny_squad: SquadPair) -> None:
    run, metrics = finished_run.dir, finished_run.metrics

    saved_config = _read_json(run / "config.json")
    assert saved_config["config"] == finished_run.config.to_dict()
    assert {"regtune", "torch", "transformers", "python", "hardware"} <= saved_config["versions"].keys()
    assert "torch kernels" in saved_config["versions"]["hardware"]
    assert saved_config["data"]["train_file"] == str(tiny_squad.train)

    assert _read_json(run / "metrics.json") == metrics
    dev_ids = [ex.id for ex in read_squad(tiny_squad.dev).examples]
    assert metrics["num_questions"] == len(dev_ids)
    assert 0 <= metrics["exact_match"] <= metrics["f1"] <= 100
    assert metrics["train_steps"] == FAST_TRAIN["max_steps"]
    assert metrics["resumed_from_step"] == 0
    assert metrics["num_registers"] == FAST_TRAIN["num_registers"]
    assert metrics["train_seconds"] > 0 and metrics["eval_seconds"] >= 0
    assert math.isfinite(metrics["train_loss"]) and metrics["train_loss"] > 0

    predictions = _read_json(run / "predictions.json")
    assert sorted(predictions) == sorted(dev_ids)
    assert all(isinstance(text, str) for text in predictions.values())

    # per_question.json: scores on 0-1 whose means are the headline numbers.
    per_question = _read_json(run / "per_question.json")
    assert sorted(per_question) == sorted(dev_ids)
    f1s = [q["f1"] for q in per_question.values()]
    assert all(0 <= f1 <= 1 for f1 in f1s)
    assert 100 * sum(f1s) / len(f1s) == pytest.approx(metrics["f1"])
    ems = [q["exact_match"] for q in per_question.values()]
    assert 100 * sum(ems) / len(ems) == pytest.approx(metrics["exact_match"])

    # One record per logging step (logging_steps=1), each with loss and the linearly decaying LR.
    records = [r for r in _log_records(run) if "loss" in r]
    assert [r["step"] for r in records] == list(range(1, FAST_TRAIN["max_steps"] + 1))
    assert all(math.isfinite(r["loss"]) and "learning_rate" in r for r in records)
    lrs = [r["learning_rate"] for r in records]
    assert lrs[0] == pytest.approx(FAST_TRAIN["lr"]) and lrs == sorted(lrs, reverse=True)
    # tensorboard is a dev dependency, so the Trainer also writes event files.
    assert list((run / "trainer").glob("runs/*/events.out.tfevents.*"))

    model_dir = run / "model"
    assert (model_dir / "model.safetensors").is_file()
    assert (model_dir / "tokenizer.json").is_file()
    model_config = _read_json(model_dir / "config.json")
    assert model_config[CONFIG_KEY]["num_registers"] == FAST_TRAIN["num_registers"]
    assert model_config[QA_SETTINGS_KEY] == {
        "max_length": FAST_TRAIN["max_length"],
        "doc_stride": FAST_TRAIN["doc_stride"],
        "n_best": finished_run.config.n_best,
        "max_answer_length": finished_run.config.max_answer_length,
        "precision": "auto",  # as asked; resolved again on whatever device evaluates it
    }
    assert load_model(model_dir).num_registers == FAST_TRAIN["num_registers"]

    assert _leftovers(run) == []
    assert not (run / "model.tmp").exists()


# --- determinism ---------------------------------------------------------------------------------------


def test_same_seed_gives_the_same_run(
    finished_run: FinishedRun, make_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    again = train_model(make_config(tmp_path / "again"), progress=False)
    for key in ("f1", "exact_match", "train_loss", "num_train_windows"):
        assert again[key] == finished_run.metrics[key], key
    assert _read_json(tmp_path / "again/predictions.json") == _read_json(
        finished_run.dir / "predictions.json"
    )
    _assert_same_weights(tmp_path / "again", finished_run.dir, atol=0.0)

    # ...and the seed is what makes it so: another seed trains differently.
    other = train_model(make_config(tmp_path / "other", seed=FAST_TRAIN["seed"] + 1), progress=False)
    assert other["train_loss"] != finished_run.metrics["train_loss"]


# --- SIGKILL mid-training, then --resume ---------------------------------------------------------------

KILL_SCRIPT = """
import json, os, signal, sys

import torch
from transformers import TrainerCallback

from regtune.training.config import TrainConfig
from regtune.training.trainer import train_model

torch.set_num_threads(1)  # as in the reference run: thread count can change float sums


class KillAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no atexit, no finally


config = TrainConfig.from_dict(json.loads(open(sys.argv[1]).read()))
train_model(config, progress=False, callbacks=[KillAt(int(sys.argv[2]))])
sys.exit(3)  # not reached
"""


def _cli_train_args(config: TrainConfig) -> list[str]:
    """The ``regtune train`` command line that resolves to ``config`` (default preset)."""
    argv = [
        "train",
        "--model",
        config.model,
        "--train",
        config.train_file,
        "--dev",
        config.dev_file,
        "--output-dir",
        config.output_dir,
        "--no-progress",
    ]
    for flag, (name, _type) in TRAIN_FLAGS.items():
        if name in FAST_TRAIN:
            argv += [flag, str(getattr(config, name))]
    return argv


def test_sigkill_then_resume_matches_the_uninterrupted_run(
    finished_run: FinishedRun,
    make_config: Callable[..., TrainConfig],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "killed"
    config = make_config(run)
    assert config.save_steps == 3 and config.max_steps == 9
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.to_dict()))
    script = tmp_path / "kill_at.py"
    script.write_text(KILL_SCRIPT)

    killed = subprocess.run(
        [sys.executable, str(script), str(config_file), "5"], capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    checkpoints = sorted(p.name for p in (run / "trainer").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-3"]
    assert not (run / "metrics.json").exists()
    assert not (run / "model").exists()
    assert _loss_steps(run) == [1, 2, 3, 4]  # step 5 was killed before it was logged

    # Without --resume the folder is refused; with it, training continues from checkpoint-3.
    assert cli.main(_cli_train_args(config)) == cli.EXIT_USER_ERROR
    assert "--resume" in capsys.readouterr().err
    assert cli.main([*_cli_train_args(config), "--resume"]) == 0
    # The summary comes last (HF's PrinterCallback prints each log record to stdout before it).
    summary = capsys.readouterr().out.splitlines()[-4:]
    assert summary[0].startswith("exact_match ") and summary[2] == f"metrics: {run / 'metrics.json'}"

    resumed = _read_json(run / "metrics.json")
    reference = finished_run.metrics
    assert resumed["resumed_from_step"] == 3
    assert resumed["train_steps"] == reference["train_steps"] == 9
    assert (resumed["f1"], resumed["exact_match"]) == (reference["f1"], reference["exact_match"])
    assert _read_json(run / "predictions.json") == _read_json(finished_run.dir / "predictions.json")
    _assert_same_weights(run, finished_run.dir, atol=1e-6)

    # The log has every step once, and the repeated steps 4-9 logged the reference run's losses.
    assert _loss_steps(run) == list(range(1, 10))
    ours = {r["step"]: r["loss"] for r in _log_records(run) if "loss" in r}
    theirs = {r["step"]: r["loss"] for r in _log_records(finished_run.dir) if "loss" in r}
    assert ours == pytest.approx(theirs, rel=1e-5)
    assert _leftovers(run) == []


def test_freeze_embeddings_keeps_the_token_matrix_and_trains_the_rest(
    finished_run: FinishedRun, make_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    config = make_config(tmp_path / "frozen", freeze_embeddings=True)
    model = build_model(config)
    word = model.get_input_embeddings().weight
    assert not word.requires_grad
    assert all(p.requires_grad for p in register_parameters(model))
    grouped = {id(p) for g in optimizer_param_groups(model, lr=1e-3, weight_decay=0.01) for p in g["params"]}
    assert id(word) not in grouped and len(grouped) == sum(p.requires_grad for p in model.parameters())

    train_model(config, progress=False)
    # The base folder is a plain BertModel; the QA model holds it under "bert.".
    base = {f"bert.{k}": v for k, v in load_file(Path(config.model) / "model.safetensors").items()}
    frozen, unfrozen = _weights(tmp_path / "frozen"), _weights(finished_run.dir)
    name = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(frozen[name], base[name])
    assert not torch.equal(unfrozen[name], base[name])  # without the switch the same run moves it
    for name in (
        "bert.embeddings.position_embeddings.weight",
        "bert.encoder.layer.0.attention.self.query.weight",
    ):
        assert not torch.equal(frozen[name], base[name]), name
    assert (
        json.loads((tmp_path / "frozen" / "config.json").read_text())["config"]["freeze_embeddings"] is True
    )


def test_a_run_folder_from_before_freeze_embeddings_resumes(
    finished_run: FinishedRun, tmp_path: Path
) -> None:
    saved = json.loads((finished_run.dir / "config.json").read_text())
    del saved["config"]["freeze_embeddings"]  # what a run folder from before the option holds
    atomic_write_json(tmp_path / "config.json", saved)
    assert check_run_dir(tmp_path, finished_run.config, resume=True) is None
    with pytest.raises(RegtuneError, match=r"different config .*freeze_embeddings"):
        check_run_dir(tmp_path, dataclasses.replace(finished_run.config, freeze_embeddings=True), resume=True)


class _StopAtFirstSave(TrainerCallback):
    def on_save(self, *args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt  # as a user's Ctrl-C right after checkpoint-3 was written


def test_a_checkpoint_whose_optimizer_groups_differ_is_refused_in_one_line(
    make_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    config = make_config(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train_model(config, progress=False, callbacks=[_StopAtFirstSave()])
    checkpoint = tmp_path / "run" / "trainer" / "checkpoint-3"
    # What an older regtune wrote for τ=0: one more parameter group than today's optimizer has.
    state = torch.load(checkpoint / "optimizer.pt", weights_only=False)
    state["param_groups"].append({**state["param_groups"][-1], "params": [10_000]})
    torch.save(state, checkpoint / "optimizer.pt")
    refused = r"checkpoint-3: its optimizer state does not fit .* delete .*trainer"
    with pytest.raises(RegtuneError, match=refused):
        train_model(config, resume=True, progress=False)


# --- atomic result files -------------------------------------------------------------------------------


def test_atomic_write_json_leaves_only_the_target(tmp_path: Path) -> None:
    target = tmp_path / "deeper" / "metrics.json"  # the folder is created
    atomic_write_json(target, {"f1": 50.0, "lang": "日本語"})
    atomic_write_json(target, {"f1": 60.0})  # replaces
    assert _read_json(target) == {"f1": 60.0}
    assert target.read_text(encoding="utf-8").endswith("\n")
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]


@pytest.mark.parametrize(
    "bad",
    [
        # Serialises, then fails while being written: a lone surrogate cannot be encoded as UTF-8.
        {"f1": 1.0, "text": "x" * 100_000 + "\ud800"},
        # Fails before anything is written.
        {"f1": object()},
    ],
    ids=["fails-mid-write", "not-serialisable"],
)
def test_a_failed_write_keeps_the_old_file(tmp_path: Path, bad: dict[str, Any]) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"f1": 50.0})
    with pytest.raises((UnicodeEncodeError, TypeError)):
        atomic_write_json(target, bad)
    assert _read_json(target) == {"f1": 50.0}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_files_get_the_permissions_of_a_plain_open(tmp_path: Path) -> None:
    import os

    atomic_write_text(tmp_path / "atomic.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    mode = os.stat(tmp_path / "atomic.txt").st_mode & 0o777
    assert mode == os.stat(tmp_path / "plain.txt").st_mode & 0o777
    assert mode & 0o044  # readable by others under the usual umask, unlike mkstemp's 0600


def test_atomic_write_text_failure_on_a_new_file_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(tmp_path / "log.txt", "ok\ud800")
    assert list(tmp_path.iterdir()) == []


# --- check_run_dir -------------------------------------------------------------------------------------


def test_check_run_dir_accepts_a_fresh_folder(
    make_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    assert check_run_dir(tmp_path / "new", make_config(tmp_path / "new"), resume=False) is None
    assert check_run_dir(tmp_path / "new", make_config(tmp_path / "new"), resume=True) is None


def test_check_run_dir_names_the_differing_key(finished_run: FinishedRun) -> None:
    changed = dataclasses.replace(finished_run.config, lr=5e-4)
    for resume in (False, True):
        with pytest.raises(RegtuneError) as err:
            check_run_dir(finished_run.dir, changed, resume=resume)
        message = str(err.value)
        assert "different config (lr)" in message and str(finished_run.dir) in message
        assert "\n" not in message


def test_report_to_never_blocks_a_resume_and_old_runs_reported_to_tensorboard(
    finished_run: FinishedRun, tmp_path: Path
) -> None:
    saved = json.loads((finished_run.dir / "config.json").read_text())
    assert saved["config"]["report_to"] == "tensorboard"
    del saved["config"]["report_to"]  # a run folder from before the option existed
    atomic_write_json(tmp_path / "config.json", saved)
    assert check_run_dir(tmp_path, finished_run.config, resume=True) is None
    elsewhere = dataclasses.replace(finished_run.config, report_to="none")
    assert check_run_dir(tmp_path, elsewhere, resume=True) is None  # where logs go changes no result


def test_report_to_takes_none_tensorboard_or_an_installed_integration() -> None:
    from transformers.integrations import get_available_reporting_integrations

    assert report_destinations("none") == "none"
    assert report_destinations("tensorboard") == ["tensorboard"]  # tensorboard is a dev dependency
    missing = next(
        n
        for n in ("wandb", "mlflow", "comet_ml", "neptune", "clearml")
        if n not in get_available_reporting_integrations()
    )
    with pytest.raises(
        RegtuneError, match=rf"--report-to {missing}: not installed here; installed: none, tensorboard"
    ):
        report_destinations(missing)


def test_report_to_none_writes_no_event_files(make_config: Callable[..., Any], tmp_path: Path) -> None:
    metrics = train_model(make_config(tmp_path / "run", report_to="none", max_steps=2), progress=False)
    assert metrics["train_steps"] == 2
    assert not list((tmp_path / "run" / "trainer").rglob("events.out.tfevents*"))
    assert (tmp_path / "run" / "train_log.jsonl").read_text().strip()  # our own log is always written


def test_check_run_dir_refuses_the_same_run_without_resume(finished_run: FinishedRun) -> None:
    with pytest.raises(RegtuneError, match="--resume"):
        check_run_dir(finished_run.dir, finished_run.config, resume=False)


def test_check_run_dir_unfinished_run_with_resume_continues(
    finished_run: FinishedRun, tmp_path: Path
) -> None:
    (tmp_path / "config.json").write_text((finished_run.dir / "config.json").read_text())
    # config.json but no metrics.json: an interrupted run, which --resume continues.
    assert check_run_dir(tmp_path, finished_run.config, resume=True) is None


class _MustNotTrain(TrainerCallback):
    def on_init_end(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("a finished run was trained again")


def test_resuming_a_finished_run_returns_its_metrics(finished_run: FinishedRun) -> None:
    metrics_file = finished_run.dir / "metrics.json"
    before = metrics_file.stat().st_mtime_ns
    assert check_run_dir(finished_run.dir, finished_run.config, resume=True) == finished_run.metrics
    metrics = train_model(finished_run.config, resume=True, progress=False, callbacks=[_MustNotTrain()])
    assert metrics == finished_run.metrics
    assert metrics_file.stat().st_mtime_ns == before


# --- the optimizer -------------------------------------------------------------------------------------


def _qa_model_with_registers(tau: int = 4):
    torch.manual_seed(0)
    return add_registers(tiny_model("bert"), tau)


def test_optimizer_groups_keep_registers_apart() -> None:
    model = _qa_model_with_registers()
    groups = optimizer_param_groups(model, lr=1e-3, weight_decay=0.1, register_lr=5e-2)
    decay, no_decay, registers = groups
    assert decay["weight_decay"] == 0.1 and "lr" not in decay  # the optimizer's lr applies
    assert no_decay["weight_decay"] == 0.0 and "lr" not in no_decay
    assert registers == {"params": register_parameters(model), "weight_decay": 0.0, "lr": 5e-2}

    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    not_decayed = {names[id(p)] for p in no_decay["params"]}
    assert all(not n.endswith(".bias") and "LayerNorm" not in n for n in decayed)
    assert {"qa_outputs.weight", "bert.embeddings.word_embeddings.weight"} <= decayed
    assert all(n.endswith(".bias") or "LayerNorm" in n for n in not_decayed)
    assert "qa_outputs.bias" in not_decayed and "bert.embeddings.LayerNorm.weight" in not_decayed

    # Every trainable parameter exactly once.
    grouped = [id(p) for group in groups for p in group["params"]]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for p in model.parameters() if p.requires_grad}


def test_optimizer_groups_defaults_and_frozen_parameters() -> None:
    model = _qa_model_with_registers()
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    groups = optimizer_param_groups(model, lr=1e-3, weight_decay=0.1)
    assert groups[-1]["lr"] == 1e-3  # no register_lr: the registers share the main LR
    grouped = {id(p) for group in groups for p in group["params"]}
    assert id(model.bert.embeddings.word_embeddings.weight) not in grouped

    # No registers, no (empty) register group.
    plain = optimizer_param_groups(tiny_model("bert"), lr=1e-3, weight_decay=0.1, register_lr=5e-2)
    assert len(plain) == 2 and all("lr" not in group for group in plain)


def test_register_trainer_builds_its_optimizer_from_the_groups(tmp_path: Path) -> None:
    model = _qa_model_with_registers()
    args = TrainingArguments(
        output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.1, report_to="none", use_cpu=True
    )
    trainer = RegisterTrainer(model=model, args=args, register_lr=5e-2)
    optimizer = trainer.create_optimizer()
    assert isinstance(optimizer, torch.optim.AdamW)
    # Trainer's default optimizer (torch >= 2.8) is the fused AdamW kernel: one launch for all tensors.
    assert optimizer.defaults["fused"] is True
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-3, 5e-2]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0, 0.0]
    assert optimizer.param_groups[2]["params"] == register_parameters(model)


def test_registers_move_during_training(finished_run: FinishedRun) -> None:
    # train_model seeds, then builds the model: the same two calls rebuild the run's initial weights.
    set_seed(finished_run.config.seed)
    initial = build_model(finished_run.config)
    trained = load_model(finished_run.dir / "model")
    before = register_parameters(initial)[0].detach()
    after = register_parameters(trained)[0].detach()
    assert before.shape == after.shape == (FAST_TRAIN["num_registers"], 32)
    assert torch.isfinite(after).all()
    # Adam moves a weight by about its LR per step. The registers' 9 steps at register_lr 1e-2
    # (linear decay) add up to 5e-2; at the main LR of 1e-3 they could move ~5e-3 at most.
    moved = (after - before).abs()
    main_lr_budget = FAST_TRAIN["lr"] * sum(range(1, 10)) / 9
    assert moved.max().item() > 2 * main_lr_budget, moved.max().item()
    assert moved.mean().item() > main_lr_budget, moved.mean().item()
    assert (moved > 0).all(), "every register entry should have been updated"


# --- model building --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dropout", [None, 0.0, 0.25])
def test_build_qa_model_sets_attention_dropout(tiny_model_dir: Path, dropout: float | None) -> None:
    config = TrainConfig(model=str(tiny_model_dir), num_registers=2, attention_dropout=dropout)
    model = build_model(config)
    expected = 0.1 if dropout is None else dropout  # BertConfig's own default stays when not given
    assert model.config.attention_probs_dropout_prob == expected
    assert model.bert.encoder.layer[0].attention.self.dropout.p == expected
    assert model.num_registers == 2


def test_attention_dropout_out_of_range_is_a_config_error() -> None:
    with pytest.raises(RegtuneError, match="attention_dropout"):
        TrainConfig(attention_dropout=1.0)


def test_truncate_log_drops_later_steps_and_a_torn_last_line(tmp_path: Path) -> None:
    log = tmp_path / "train_log.jsonl"
    records = [{"step": step, "loss": 1.0 / step} for step in (1, 2, 3, 4)]
    # A run killed mid-write leaves half a JSON line at the end.
    log.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 5, "lo')
    truncate_log(log, 3)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]
    assert list(tmp_path.iterdir()) == [log]  # rewritten atomically: no temporary file left
