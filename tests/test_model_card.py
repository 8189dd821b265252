"""Model cards (README.md with Hugging Face metadata) in every saved model folder, and `regtune push`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from conftest import FinishedRun, SquadPair
from regtune.cli import main as cli
from regtune.tasks import get_task
from regtune.training.config import resolve_config
from regtune.training.model_card import base_model_id, build_card


def test_a_trained_model_folder_has_a_hub_model_card(finished_run: FinishedRun) -> None:
    card = ModelCard.load(finished_run.dir / "model" / "README.md")  # the Hub's own parser
    data = card.data.to_dict()
    assert data["library_name"] == "regtune" and {"regtune", "registers", "qa"} <= set(data["tags"])
    assert data["metrics"] == ["exact_match", "f1"] and data["pipeline_tag"] == "question-answering"
    assert "base_model" not in data  # a local folder has no Hub id to name
    assert "regtune.load_model" in card.text and "n_seeds = 1" in card.text
    tau = finished_run.metrics["num_registers"]
    assert f"| registers (τ) | {tau} |" in card.text
    f1 = finished_run.metrics["f1"]
    assert f"**F1**: {f1:.2f} [" in card.text  # the run's own score, with its interval


def test_card_metadata_names_the_hub_base_model_and_datasets() -> None:
    config = resolve_config(
        "default", task="classification", model="minilm-l6", train_file="../shared/data/sst2/train.tsv",
        dev_file="../shared/data/sst2/dev.tsv", output_dir="runs/sst2-tau8", num_registers=8,
    )  # fmt: skip
    per_example = {f"line-{i}": {"accuracy": float(i % 4 != 0)} for i in range(100)}
    card = build_card(config, get_task("classification"), {"train_steps": 10}, per_example)
    reparsed = ModelCard(str(card))
    assert reparsed.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert reparsed.data.datasets == ["nyu-mll/glue"] and reparsed.data.pipeline_tag == "text-classification"
    assert "**accuracy**: 75.00 [" in card.text and "over 100 dev examples" in card.text
    assert base_model_id("smollm2-135m") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_model_id("bert-base-uncased") == "bert-base-uncased"


def test_sweep_report_puts_the_cell_interval_in_each_card(
    tiny_model_dir: Path, tiny_squad: SquadPair, tmp_path: Path
) -> None:
    out = tmp_path / "sweep"
    argv = [
        "sweep", "--model", str(tiny_model_dir), "--registers", "0,2", "--seeds", "1,2",
        "--train", str(tiny_squad.train), "--dev", str(tiny_squad.dev), "--output-dir", str(out),
        "--max-steps", "2", "--batch-size", "4", "--max-length", "128", "--doc-stride", "32",
        "--precision", "fp32", "--no-progress",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    assert cli.main(["report", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    cell = next(c for c in summary["cells"] if c["axes"]["num_registers"] == 2)
    card = ModelCard.load(out / "runs" / "tau2-seed1" / "model" / "README.md")
    f1 = cell["metrics"]["f1"]
    assert f"**F1**: {f1['mean']:.2f} [{f1['ci_low']:.2f}, {f1['ci_high']:.2f}] over n_seeds = 2" in card.text
    assert "Δ vs τ=0" in card.text
    assert "Δ vs τ=0" not in ModelCard.load(out / "runs" / "tau0-seed1" / "model" / "README.md").text


def test_push_checks_its_arguments_and_fails_offline_in_one_line(
    finished_run: FinishedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    model = finished_run.dir / "model"
    assert cli.main(["push", str(model), "not-a-repo-id"]) == 2
    assert "give it as owner/name" in capsys.readouterr().err
    assert cli.main(["push", str(tmp_path / "nowhere"), "me/model"]) == 2
    assert "no such folder" in capsys.readouterr().err
    bare = tmp_path / "bare"
    shutil.copytree(model, bare)
    (bare / "README.md").unlink()
    assert cli.main(["push", str(bare), "me/model"]) == 2
    assert "missing README.md" in capsys.readouterr().err
    # This machine has no network: with the Hub in offline mode the upload is refused in one line.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert cli.main(["push", str(model), "me/model", "--token", "hf_fake"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("regtune: error: cannot push")


def test_a_sweep_cell_of_one_seed_gets_a_card_line_without_an_interval() -> None:
    from regtune.tasks import get_task
    from regtune.training.model_card import sweep_score_lines

    task = get_task("qa")
    one_seed = {"mean": 61.5, "ci_low": None, "ci_high": None, "n_seeds": 1}
    cell = {"metrics": {"f1": one_seed, "exact_match": one_seed}, "n_questions": 440, "vs_tau0": {"f1": None}}
    lines = sweep_score_lines(task, cell, {"f1": 61.5, "exact_match": 50.0})
    assert lines[0].startswith("- **F1**: 61.50 [one seed: no CI] over n_seeds = 1 runs")


def test_push_takes_an_adapter_folder_and_still_refuses_one_without_weights(
    finished_run: FinishedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    adapter = tmp_path / "adapter"
    shutil.copytree(finished_run.dir / "model", adapter)
    (adapter / "model.safetensors").rename(adapter / "adapter_model.safetensors")  # a --train-only folder
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert cli.main(["push", str(adapter), "me/model", "--token", "hf_fake"]) == 2
    assert "cannot push" in capsys.readouterr().err  # got past the folder check, to the (offline) upload
    (adapter / "adapter_model.safetensors").unlink()
    assert cli.main(["push", str(adapter), "me/model"]) == 2
    assert "missing model.safetensors" in capsys.readouterr().err
