"""regtune pretrain: the MLM head of a bare encoder, the run folder, resume, bad input, and pretrain → train.

One tiny run (the module fixture ``pretrained``: a tiny random BertModel, 6 steps of 4 windows with 4
registers, checkpoints every 3) is the reference the other tests compare with.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling, TrainerCallback

from conftest import FAST_TRAIN, SquadPair
from regtune.cli import main as cli
from regtune.core.errors import RegtuneError
from regtune.core.hub import load_tokenizer
from regtune.core.registers import get_register_module, load_model
from regtune.training.config import resolve_config
from regtune.training.pretrain import (
    HELDOUT_MASK_SEED,
    build_mlm_model,
    heldout_loss,
    make_windows,
    mask_heldout,
    pretrain_model,
    read_passages,
    split_heldout,
)
from regtune.training.pretrain_config import PretrainConfig
from regtune.training.trainer import build_model, train_model

pytestmark = pytest.mark.usefixtures("one_thread", "restore_hf_logging")

TAU = 4
#: A run that finishes in about a second on a busy CPU: 6 steps of 4 windows, checkpoints every 3.
FAST_PRETRAIN: dict[str, Any] = {
    "num_registers": TAU,
    "register_lr": 1e-2,  # large, so the registers visibly move in 6 steps
    "lr": 1e-3,
    "max_steps": 6,
    "batch_size": 4,
    "max_length": 32,
    "warmup_ratio": 0.0,
    "save_steps": 3,
    "logging_steps": 1,
    "report_to": "none",
    "seed": 3,
}
#: The head weights BertForMaskedLM adds to a bare BertModel; the decoder is the tied embedding matrix.
BERT_NEW_HEAD = [
    "cls.predictions.bias",
    "cls.predictions.transform.LayerNorm.bias",
    "cls.predictions.transform.LayerNorm.weight",
    "cls.predictions.transform.dense.bias",
    "cls.predictions.transform.dense.weight",
]

_WORDS = "the cat sat on a mat while river ships carried grain past old towns and quiet green hills"


def _text_file(path: Path, lines: int = 60, seed: int = 0) -> Path:
    """Plain text, one passage per line, some longer than a window (they become several)."""
    rng = random.Random(seed)
    text = [" ".join(rng.choice(_WORDS.split()) for _ in range(rng.randint(4, 70))) for _ in range(lines)]
    path.write_text("\n".join(text) + "\n\n", encoding="utf-8")  # a blank last line is skipped
    return path


def _config(tiny_model_dir: Path, text: Path, output_dir: Path, **overrides: Any) -> PretrainConfig:
    return PretrainConfig(
        model=str(tiny_model_dir),
        text_files=[str(text)],
        output_dir=str(output_dir),
        **{**FAST_PRETRAIN, **overrides},
    )


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _text_file(tmp_path_factory.mktemp("text") / "passages.txt")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, text_file: Path) -> Path:
    """One uninterrupted tiny pretraining run; returns its folder."""
    run = tmp_path_factory.mktemp("pretrain") / "run"
    torch.set_num_threads(1)
    pretrain_model(_config(tiny_model_dir, text_file, run), progress=False)
    return run


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _loss_steps(run: Path) -> list[int]:
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if "loss" in r]


# --- the MLM head --------------------------------------------------------------------------------------


def test_mlm_head_is_tied_and_only_the_transform_and_bias_are_new(
    tiny_model_dir: Path, text_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    with caplog.at_level("WARNING"):
        model, report = build_mlm_model(_config(tiny_model_dir, text_file, tmp_path, num_registers=0))
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []  # no "newly initialized" notice
    assert model.config.tie_word_embeddings
    embeddings = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is embeddings  # tied: the decoder *is* the embedding matrix
    base = load_file(tiny_model_dir / "model.safetensors")
    assert torch.equal(embeddings, base["embeddings.word_embeddings.weight"])
    assert torch.equal(
        model.bert.encoder.layer[1].output.dense.weight, base["encoder.layer.1.output.dense.weight"]
    )
    assert report["new_head_weights"] == BERT_NEW_HEAD
    assert report["unused_checkpoint_weights"] == ["pooler.dense.bias", "pooler.dense.weight"]
    # The new weights start as transformers' _init_weights makes them.
    head = model.cls.predictions
    std = model.config.initializer_range
    assert 0.8 * std < head.transform.dense.weight.std().item() < 1.2 * std
    assert not head.transform.dense.bias.any() and not head.bias.any()
    assert torch.equal(head.transform.LayerNorm.weight, torch.ones_like(head.transform.LayerNorm.weight))
    assert not head.transform.LayerNorm.bias.any()


def test_mlm_logits_cover_the_text_tokens_and_labels_line_up(
    tiny_model_dir: Path, text_file: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model, _ = build_mlm_model(_config(tiny_model_dir, text_file, tmp_path, num_registers=3))
    model.eval()
    tokenizer = load_tokenizer(str(tiny_model_dir))
    windows = make_windows(
        ["a cat sat on the mat", "old ships carried grain past quiet towns"], tokenizer, 32
    )
    batch = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.5, seed=1)(windows)
    n = batch["input_ids"].shape[1]
    assert batch["labels"].shape == (2, n) and (batch["labels"] != -100).any()
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    assert out.logits.shape == (2, n, model.config.vocab_size)  # (B, N, V): no register reaches the head
    assert out.hidden_states[-1].shape[1] == n + 3  # the layers saw the registers
    # The loss is the cross-entropy at the masked text positions: labels and logits line up.
    expected = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), batch["labels"].flatten())
    assert torch.allclose(out.loss, expected)
    assert torch.isfinite(out.logits).all()


def test_an_untied_config_without_a_decoder_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoConfig

    untied = tmp_path / "untied"
    untied.mkdir()
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.tie_word_embeddings = False
    config.save_pretrained(untied)
    (untied / "model.safetensors").symlink_to(tiny_model_dir / "model.safetensors")
    with pytest.raises(RegtuneError, match=r"no MLM decoder .*tie_word_embeddings=False"):
        build_mlm_model(_config(untied, tmp_path / "t.txt", tmp_path / "run"))


# --- text ----------------------------------------------------------------------------------------------


def test_long_passages_become_windows_of_at_most_max_length(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    long = " ".join(_WORDS.split() * 4)  # ~70 words
    windows = make_windows([long, "short one"], tokenizer, 16)
    assert len(windows) > 3
    assert all(len(w["input_ids"]) <= 16 for w in windows)
    assert all(
        w["input_ids"][0] == tokenizer.cls_token_id and w["input_ids"][-1] == tokenizer.sep_token_id
        for w in windows
    )
    assert all(sum(w["special_tokens_mask"]) == 2 for w in windows)


def test_heldout_split_is_by_text_not_order() -> None:
    passages = [f"passage number {i}" for i in range(400)]
    train, held = split_heldout(passages, 0.05)
    assert set(train).isdisjoint(held) and len(train) + len(held) == 400
    assert 5 <= len(held) <= 40
    _, held2 = split_heldout(list(reversed(passages)), 0.05)
    assert set(held2) == set(held)
    assert len(split_heldout(["a", "b"], 0.05)[1]) == 1  # at least one each way
    with pytest.raises(RegtuneError, match="at least two passages"):
        split_heldout(["only one"], 0.05)


def test_heldout_masks_do_not_depend_on_the_batching(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    windows = make_windows([" ".join(_WORDS.split()[i:]) for i in range(8)], tokenizer, 32)
    first, again = mask_heldout(windows, tokenizer, 0.15), mask_heldout(windows, tokenizer, 0.15)
    assert all(torch.equal(a["labels"], b["labels"]) for a, b in zip(first, again, strict=True))
    assert HELDOUT_MASK_SEED == 0
    model = AutoModelForMaskedLM.from_pretrained(tiny_model_dir)
    scored = heldout_loss(model, first, tokenizer.pad_token_id)
    masked = sum(int((w["labels"] != -100).sum()) for w in first)
    assert scored["num_heldout_masked_tokens"] == masked > 0
    assert math.isfinite(scored["heldout_mlm_loss"])


def test_read_passages_takes_squad_contexts_and_tsv_sentences(tmp_path: Path, tiny_squad: SquadPair) -> None:
    contexts = read_passages([str(tiny_squad.train)])
    squad = _read_json(tiny_squad.train)
    expected = {p["context"] for a in squad["data"] for p in a["paragraphs"]}
    assert set(contexts) == expected and len(contexts) == len(set(contexts))
    tsv = tmp_path / "sst.tsv"
    tsv.write_text(
        "sentence\tlabel\na fine film .\t1\na dull film .\t0\na fine film .\t1\n", encoding="utf-8"
    )
    assert read_passages([str(tsv)]) == ["a fine film .", "a dull film ."]  # each once, in order
    plain = tmp_path / "p.txt"
    plain.write_text("  one  \n\ntwo\n", encoding="utf-8")
    assert read_passages([str(plain), str(tsv)]) == ["one", "two", "a fine film .", "a dull film ."]


def _empty(path: Path) -> Path:
    path.write_text("\n  \n", encoding="utf-8")
    return path


def _no_contexts(path: Path) -> Path:
    path.write_text(json.dumps({"version": "1.1", "data": []}), encoding="utf-8")
    return path


def _no_questions(path: Path) -> Path:
    payload = {"data": [{"title": "t", "paragraphs": [{"context": "Some text.", "qas": []}]}]}
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def _wrong_column(path: Path) -> Path:
    path.write_text("text\tlabel\nhello\t1\n", encoding="utf-8")
    return path


BAD_TEXT = {
    "empty.txt": (_empty, "no text to pretrain on"),
    "missing.txt": (lambda path: path, "no such file"),
    "missing.json": (lambda path: path, "no such file"),
    "no-contexts.json": (_no_contexts, "no text to pretrain on"),
    "no-questions.json": (_no_questions, "no text to pretrain on"),
    "wrong-column.tsv": (_wrong_column, "no column 'sentence'"),
}


@pytest.mark.parametrize("name", sorted(BAD_TEXT))
def test_bad_text_is_one_line_naming_the_file(
    name: str, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, fragment = BAD_TEXT[name]
    bad = make(tmp_path / name)
    with pytest.raises(RegtuneError, match=fragment) as err:
        read_passages([str(bad)])
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    out_dir = tmp_path / "run"
    argv = ["pretrain", "--model", str(tiny_model_dir), "--text", str(bad), "--output-dir", str(out_dir)]
    assert cli.main([*argv, "--no-progress"]) == cli.EXIT_USER_ERROR
    captured = capsys.readouterr()
    assert captured.err.startswith("regtune: error: ") and captured.err.count("\n") == 1, captured.err
    assert str(bad) in captured.err and "Traceback" not in captured.err + captured.out
    assert not out_dir.exists(), "a refused run must leave no folder behind"


def test_bad_option_values_exit_2(tiny_model_dir: Path, text_file: Path, tmp_path: Path, capsys) -> None:
    base = [
        "pretrain",
        "--model",
        str(tiny_model_dir),
        "--text",
        str(text_file),
        "--output-dir",
        str(tmp_path / "r"),
    ]
    for flags in (["--mlm-probability", "1.5"], ["--max-length", "4"], ["--heldout-fraction", "0"]):
        assert cli.main([*base, *flags]) == cli.EXIT_USER_ERROR, flags
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and flags[0].lstrip("-").replace("-", "_") in err, err


# --- the run folder and resume -------------------------------------------------------------------------


def test_pretrain_writes_the_run_layout(pretrained: Path, text_file: Path) -> None:
    saved = _read_json(pretrained / "config.json")
    assert saved["config"]["num_registers"] == TAU and saved["config"]["text_files"] == [str(text_file)]
    assert saved["data"]["text_files"][0]["sha256_16"] and "transformers" in saved["versions"]
    assert _loss_steps(pretrained) == list(range(1, 7))
    metrics = _read_json(pretrained / "metrics.json")
    assert metrics["train_steps"] == 6 and metrics["resumed_from_step"] == 0
    assert math.isfinite(metrics["heldout_mlm_loss"]) and metrics["num_heldout_masked_tokens"] > 0
    assert metrics["num_heldout_passages"] + metrics["num_train_passages"] == 60
    assert metrics["new_head_weights"] == BERT_NEW_HEAD
    model_dir = pretrained / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md"):
        assert (model_dir / name).is_file(), name
    model_config = _read_json(model_dir / "config.json")
    assert model_config["model_type"] == "regtune_bert" and model_config["architectures"] == [
        "BertForMaskedLM"
    ]
    assert "held-out masked-lm loss" in (model_dir / "README.md").read_text().lower()
    assert list(pretrained.rglob("checkpoint-*")) == [] and list(pretrained.rglob("*.tmp")) == []
    # Both loaders give the MLM model back with its trained registers.
    tokens = load_file(model_dir / "model.safetensors")["bert.registers.tokens"]
    for loaded in (load_model(model_dir), AutoModelForMaskedLM.from_pretrained(model_dir)):
        assert type(loaded).__name__ == "BertForMaskedLM"
        assert torch.equal(get_register_module(loaded).tokens, tokens)
        assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight


class _StopAtFirstSave(TrainerCallback):
    def on_save(self, *args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt  # as a user's Ctrl-C right after checkpoint-3 was written


def test_interrupt_then_resume_matches_the_uninterrupted_run(
    pretrained: Path,
    tiny_model_dir: Path,
    text_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    config = _config(tiny_model_dir, text_file, run)
    with pytest.raises(KeyboardInterrupt):
        pretrain_model(config, progress=False, callbacks=[_StopAtFirstSave()])
    assert sorted(p.name for p in (run / "trainer").glob("checkpoint-*")) == ["checkpoint-3"]
    assert not (run / "metrics.json").exists() and not (run / "model").exists()

    argv = ["pretrain", "--model", str(tiny_model_dir), "--text", str(text_file), "--output-dir", str(run)]
    argv += ["--no-progress", "--registers", str(TAU), "--register-lr", "0.01", "--lr", "0.001"]
    argv += ["--max-steps", "6", "--batch-size", "4", "--max-length", "32", "--warmup-ratio", "0"]
    argv += ["--save-steps", "3", "--logging-steps", "1", "--report-to", "none", "--seed", "3"]
    assert cli.main(argv) == cli.EXIT_USER_ERROR  # the folder holds this run: --resume is needed
    assert "--resume" in capsys.readouterr().err
    assert cli.main([*argv, "--lr", "0.002", "--resume"]) == cli.EXIT_USER_ERROR
    assert "different config (lr)" in capsys.readouterr().err
    assert cli.main([*argv, "--resume"]) == 0
    out = capsys.readouterr().out
    assert f"model: {run / 'model'}" in out and f"--registers {TAU}" in out

    resumed, reference = _read_json(run / "metrics.json"), _read_json(pretrained / "metrics.json")
    assert resumed["resumed_from_step"] == 3 and resumed["train_steps"] == 6
    for key in ("heldout_mlm_loss", "heldout_mlm_loss_initial"):
        assert resumed[key] == pytest.approx(reference[key], abs=1e-5), key
    ours, theirs = (
        load_file(run / "model" / "model.safetensors"),
        load_file(pretrained / "model/model.safetensors"),
    )
    assert ours.keys() == theirs.keys()
    assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) <= 1e-6
    assert _loss_steps(run) == list(range(1, 7))  # every step logged once
    assert list(run.rglob("checkpoint-*")) == []


# --- pretrain → train ----------------------------------------------------------------------------------


def _train_config(model: Path, tiny_squad: SquadPair, output_dir: Path, **overrides: Any):
    return resolve_config(
        "default",
        model=str(model),
        train_file=str(tiny_squad.train),
        dev_file=str(tiny_squad.dev),
        output_dir=str(output_dir),
        **{**FAST_TRAIN, "num_registers": TAU, "max_steps": 2, "save_steps": 2, **overrides},
    )


def test_train_starts_from_the_pretrained_encoder_and_registers(
    pretrained: Path, tiny_model_dir: Path, tiny_squad: SquadPair, tmp_path: Path
) -> None:
    weights = load_file(pretrained / "model" / "model.safetensors")
    model = build_model(_train_config(pretrained / "model", tiny_squad, tmp_path / "a"))
    tokens = get_register_module(model).tokens
    assert torch.equal(tokens, weights["bert.registers.tokens"])  # bit for bit, from the file
    for name, param in model.named_parameters():
        if name in weights:
            assert torch.equal(param, weights[name]), name
    assert "qa_outputs.weight" not in weights  # a new task head
    fresh = build_model(_train_config(tiny_model_dir, tiny_squad, tmp_path / "b"))
    assert not torch.equal(get_register_module(fresh).tokens, tokens)  # not a re-initialisation


def test_train_on_a_pretrained_model_saves_a_loadable_model(
    pretrained: Path, tiny_squad: SquadPair, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    metrics = train_model(_train_config(pretrained / "model", tiny_squad, run), progress=False)
    assert metrics["train_steps"] == 2 and "f1" in metrics
    saved = _read_json(run / "model" / "config.json")
    assert saved["architectures"] == ["BertForQuestionAnswering"] and saved["model_type"] == "regtune_bert"
    loaded = load_model(run / "model")
    assert get_register_module(loaded).num_registers == TAU


def test_train_with_other_register_settings_than_the_saved_ones_is_refused(
    pretrained: Path, tiny_squad: SquadPair, tmp_path: Path
) -> None:
    # The saved registers are loaded, not rebuilt: a depth, identity or placement the model was not trained
    # with would be recorded in config.json but not used.
    with pytest.raises(RegtuneError, match=r"other settings: depth 'all' \(saved: 'input'\)"):
        build_model(_train_config(pretrained / "model", tiny_squad, tmp_path / "a", register_depth="all"))
    with pytest.raises(RegtuneError, match=r"placement 'after_cls' \(saved: 'prepend'\)"):
        build_model(
            _train_config(pretrained / "model", tiny_squad, tmp_path / "b", register_placement="after_cls")
        )


def test_train_with_another_register_count_is_refused_in_one_line(
    pretrained: Path, tiny_squad: SquadPair, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(
        RegtuneError, match=f"has {TAU} trained registers; train it with --registers {TAU}, not 8"
    ):
        build_model(_train_config(pretrained / "model", tiny_squad, tmp_path / "a", num_registers=8))
    argv = [
        "train",
        "--model",
        str(pretrained / "model"),
        "--registers",
        "2",
        "--train",
        str(tiny_squad.train),
    ]
    assert cli.main([*argv, "--output-dir", str(tmp_path / "b"), "--no-progress"]) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--registers {TAU}, not 2" in err, err


def test_pretraining_a_model_with_registers_is_refused(
    pretrained: Path, text_file: Path, tmp_path: Path
) -> None:
    with pytest.raises(RegtuneError, match="already has registers"):
        build_mlm_model(_config(pretrained / "model", text_file, tmp_path))


# --- the bundled MiniLM on real text -------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_pretrains_on_tydi_contexts_and_trains_from_them(data_dir: Path, tmp_path: Path) -> None:
    contexts = data_dir / "en" / "train.json"
    config = PretrainConfig(
        model="minilm-l6",
        text_files=[str(contexts)],
        output_dir=str(tmp_path / "pretrain"),
        num_registers=TAU,
        max_steps=3,
        batch_size=4,
        max_length=64,
        heldout_fraction=0.005,
        report_to="none",
    )
    metrics = pretrain_model(config, progress=False)
    assert metrics["new_head_weights"] == BERT_NEW_HEAD  # the bundled encoder lacks exactly BERT's head
    assert metrics["num_train_passages"] > 1000 and metrics["num_heldout_masked_tokens"] > 100
    assert math.isfinite(metrics["heldout_mlm_loss"])
    assert metrics["heldout_mlm_loss"] < metrics["heldout_mlm_loss_initial"]
    model_dir = tmp_path / "pretrain" / "model"
    train = resolve_config(
        "default",
        model=str(model_dir),
        train_file=str(contexts),
        output_dir=str(tmp_path / "t"),
        num_registers=TAU,
    )
    model = build_model(train)
    tokens = load_file(model_dir / "model.safetensors")["bert.registers.tokens"]
    assert torch.equal(get_register_module(model).tokens, tokens)
