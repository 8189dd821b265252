"""The PEFT arms of the few-parameter comparison (``regtune train --peft lora|prompt``, issue #14 §1.1).

First what the real ``peft`` library does on its own (prompt tuning misplaces QA labels and the classifier's
[CLS]; its QA wrapper drops token types), then regtune's alignment, then the arms through ``train_model``:
what trains, how much, what is saved, and that a reloaded model scores exactly as the run did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, PromptTuningConfig, TaskType, get_peft_model
from transformers import TrainerCallback, set_seed

from regtune.core.errors import ConfigError, RegtuneError
from regtune.core.peft_adapter import PEFT_CONFIG_FILE, align_with_text, is_peft_model
from regtune.core.registers import add_registers, get_register_module, load_model
from tiny_models import ARCHS, HIDDEN, LAYERS, tiny_batch, tiny_model

N_VIRTUAL = 3
#: Start and end labels, as text-token indices, for the two rows of tiny_batch (its last row has 6 tokens).
STARTS, ENDS = torch.tensor([2, 5]), torch.tensor([4, 5])


def _qa_cross_entropy(start_logits: torch.Tensor, end_logits: torch.Tensor, shift: int = 0) -> float:
    """HF's QA loss, (CE(start) + CE(end)) / 2, with the labels moved ``shift`` positions on."""
    start = F.cross_entropy(start_logits, STARTS + shift)
    end = F.cross_entropy(end_logits, ENDS + shift)
    return ((start + end) / 2).item()


def _token_types(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Segment 0 for [CLS] and a 3-token 'question', segment 1 after: (B, N)."""
    types = torch.zeros_like(batch["input_ids"])
    types[:, 4:] = 1
    return types


def _prompt_qa(arch: str = "bert") -> Any:
    torch.manual_seed(0)
    config = PromptTuningConfig(task_type=TaskType.QUESTION_ANS, num_virtual_tokens=N_VIRTUAL)
    return get_peft_model(tiny_model(arch), config).eval()


# --- what peft does on its own --------------------------------------------------------------------------


@torch.no_grad()
def test_peft_prompt_tuning_scores_qa_labels_n_virtual_tokens_too_early() -> None:
    """PEFT's own behaviour, documented (peft 0.21): prompt tuning's QA model returns n+N logits, the n
    virtual tokens first, and scores the text-index labels against them unshifted, so label s is read at
    text token s-n. This test must fail once a peft release shifts the labels or cuts the logits; then
    regtune.core.peft_adapter.align_with_text, which cuts the virtual rows itself, must be revisited (it
    would cut twice)."""
    model = _prompt_qa()
    batch = tiny_batch("bert")
    out = model(**batch, start_positions=STARTS, end_positions=ENDS)
    text_length = batch["input_ids"].shape[1]
    assert out.start_logits.shape == out.end_logits.shape == (2, N_VIRTUAL + text_length)
    unshifted = _qa_cross_entropy(out.start_logits, out.end_logits)
    correct = _qa_cross_entropy(out.start_logits, out.end_logits, shift=N_VIRTUAL)  # text token s is at s+n
    assert out.loss.item() == pytest.approx(unshifted, abs=1e-6)
    assert abs(out.loss.item() - correct) > 1e-2


@pytest.mark.parametrize("method", ["lora", "prompt"])
@torch.no_grad()
def test_peft_question_answering_drops_token_type_ids(method: str) -> None:
    """PEFT's own behaviour, documented (peft 0.21): PeftModelForQuestionAnswering.forward takes
    token_type_ids as a named argument and passes it on in neither branch, so BERT reads question and
    context as one segment. Fails once peft passes them; then align_with_text's token-type hooks are moot."""
    batch = tiny_batch("bert")
    types = _token_types(batch)
    if method == "lora":
        torch.manual_seed(0)
        config = LoraConfig(task_type=TaskType.QUESTION_ANS, r=2, target_modules=["query", "value"])
        model = get_peft_model(tiny_model("bert"), config).eval()  # LoRA's B starts at 0: the stock model
        stock = tiny_model("bert")
        assert not torch.equal(stock(**batch, token_type_ids=types).start_logits, stock(**batch).start_logits)
    else:
        model = _prompt_qa()
    assert torch.equal(model(**batch, token_type_ids=types).start_logits, model(**batch).start_logits)


# --- regtune's alignment --------------------------------------------------------------------------------


@torch.no_grad()
def test_aligned_prompt_tuning_reads_each_qa_label_at_its_text_token() -> None:
    model = _prompt_qa()
    batch = tiny_batch("bert")
    raw = model(**batch)  # (B, n+N): PEFT's own output, virtual tokens first
    align_with_text(model)
    out = model(**batch, start_positions=STARTS, end_positions=ENDS)
    assert out.start_logits.shape == batch["input_ids"].shape  # (B, N): text tokens only
    assert torch.equal(out.start_logits, raw.start_logits[:, N_VIRTUAL:])
    assert torch.equal(out.end_logits, raw.end_logits[:, N_VIRTUAL:])
    # Label s is scored at text token s, which sits at position s+n of the sequence the encoder saw.
    want = _qa_cross_entropy(raw.start_logits[:, N_VIRTUAL:], raw.end_logits[:, N_VIRTUAL:])
    assert out.loss.item() == pytest.approx(want, abs=1e-6)


@torch.no_grad()
def test_aligned_peft_qa_model_reads_the_token_types() -> None:
    """By hand: the virtual tokens, then the text, with type 0 for the virtual tokens."""
    model = align_with_text(_prompt_qa())
    batch = tiny_batch("bert")
    types = _token_types(batch)
    out = model(**batch, token_type_ids=types)
    inner = model.get_base_model()
    prompts = model.get_prompt(batch_size=2)  # (B, n, H)
    embeds = torch.cat([prompts, inner.get_input_embeddings()(batch["input_ids"])], dim=1)
    ones = torch.ones(2, N_VIRTUAL, dtype=torch.long)
    by_hand = inner.qa_outputs(
        inner.bert(
            inputs_embeds=embeds,
            attention_mask=torch.cat([ones, batch["attention_mask"]], dim=1),
            token_type_ids=torch.cat([0 * ones, types], dim=1),
        ).last_hidden_state[:, N_VIRTUAL:]
    )
    torch.testing.assert_close(out.start_logits, by_hand[..., 0], rtol=0, atol=1e-6)
    assert not torch.allclose(out.start_logits, model(**batch).start_logits)


def _head_on_first_row(model: Any, arch: str, rows: torch.Tensor) -> torch.Tensor:
    """The stock classification head applied as if ``rows[:, 0]`` were [CLS]: logits (B, labels)."""
    if arch in ("roberta", "xlm-roberta", "electra"):
        return model.classifier(rows)  # these heads read [:, 0] themselves
    if arch == "distilbert":
        return model.classifier(torch.relu(model.pre_classifier(rows[:, 0])))
    return model.classifier(model.bert.pooler(rows))


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_prompt_tuned_classifier_reads_a_virtual_token_in_peft_and_cls_in_regtune(arch: str) -> None:
    """PEFT's classifier pools row 0 of the n+N rows: the first virtual token, not [CLS] (peft 0.21;
    a fix in peft fails the first assertion). Aligned, it pools the first text row, [CLS]."""
    torch.manual_seed(0)
    base = tiny_model(arch, "cls")
    config = PromptTuningConfig(
        task_type=TaskType.SEQ_CLS,
        num_virtual_tokens=N_VIRTUAL,
        token_dim=base.get_input_embeddings().embedding_dim,
        num_layers=LAYERS,
        num_attention_heads=base.config.num_attention_heads,
    )
    model = get_peft_model(base, config).eval()
    head = model.get_base_model()
    batch = tiny_batch(arch)
    raw = model(**batch, output_hidden_states=True)
    last = raw.hidden_states[-1]  # (B, n+N, H)
    torch.testing.assert_close(raw.logits, _head_on_first_row(head, arch, last), rtol=0, atol=1e-6)
    align_with_text(model)
    out = model(**batch, output_hidden_states=True)
    assert torch.equal(out.hidden_states[-1], last)  # the same encoder pass: only the head's rows differ
    text = last[:, N_VIRTUAL:]  # row 0 is [CLS]
    torch.testing.assert_close(out.logits, _head_on_first_row(head, arch, text), rtol=0, atol=1e-6)
    assert not torch.allclose(out.logits, raw.logits)


# --- the arms through train_model -----------------------------------------------------------------------

HEAD = 2 * HIDDEN + 2  # qa_outputs: (2, H) weight and 2 biases
#: arm -> (options, trainable values by hand on the tiny BERT: H=32, 2 layers, query and value targeted)
ARMS: dict[str, tuple[dict[str, Any], int]] = {
    "lora-r2": ({"peft": "lora", "peft_size": 2, "num_registers": 0}, LAYERS * 2 * (2 * 2 * HIDDEN) + HEAD),
    "prompt-n3": ({"peft": "prompt", "peft_size": 3, "num_registers": 0}, 3 * HIDDEN + HEAD),
    "lora-r1-tau4": (
        {"peft": "lora", "peft_size": 1, "num_registers": 4},
        4 * HIDDEN + LAYERS * 2 * (2 * 1 * HIDDEN) + HEAD,
    ),
}


def _adapter_part(name: str) -> bool:
    return any(part in name for part in ("lora_", "modules_to_save.", "prompt_encoder."))


@pytest.mark.parametrize("arm", list(ARMS))
def test_peft_arm_trains_adapter_and_head_only_and_reloads_to_the_same_scores(
    arm: str, make_config: Any, tmp_path: Path, one_thread: None
) -> None:
    from regtune.core.hub import load_tokenizer
    from regtune.tasks import get_task
    from regtune.tasks.qa.data import read_squad
    from regtune.training.trainer import build_model, train_model

    options, expected = ARMS[arm]
    config = make_config(tmp_path / "run", **options)
    set_seed(config.seed)  # as train_model does: the same head, adapter and register init as the run's
    before = build_model(config)
    assert is_peft_model(before)
    trainable = {n for n, p in before.named_parameters() if p.requires_grad}
    assert trainable and all(_adapter_part(n) for n in trainable)
    assert any("qa_outputs.modules_to_save" in n for n in trainable)  # PEFT's QA wrapper saves the head
    assert sum(p.numel() for p in before.parameters() if p.requires_grad) == expected
    start = {k: v.clone() for k, v in before.state_dict().items()}
    trained: dict[str, torch.Tensor] = {}

    class Capture(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):  # the model as trained
            trained.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    metrics = train_model(config, progress=False, callbacks=[Capture()])
    assert metrics["trainable_parameters"] == expected
    for name, value in start.items():
        if not _adapter_part(name):
            assert torch.equal(trained[name], value), name  # the encoder and the original head: untouched
    moved = [n for n in trainable if not torch.equal(trained[n], start[n])]
    assert sorted(moved) == sorted(trainable)  # every adapter tensor, the head's copy and registers moved

    folder = tmp_path / "run" / "model"
    assert (folder / PEFT_CONFIG_FILE).is_file() and (folder / "adapter_model.safetensors").is_file()
    assert not (folder / "model.safetensors").exists()
    saved = json.loads((folder / "config.json").read_text())
    assert saved["architectures"] == ["BertForQuestionAnswering"] and saved["regtune_task"] == "qa"
    loaded = load_model(folder)
    assert is_peft_model(loaded) and not any(p.requires_grad for p in loaded.parameters())
    if options["num_registers"]:
        assert torch.equal(get_register_module(loaded).tokens, trained[_register_key(trained)])
    task = get_task("qa")
    again = task.evaluate(loaded, load_tokenizer(str(folder)), read_squad(config.dev_file), progress=False)
    assert (again.metrics["f1"], again.metrics["exact_match"]) == (metrics["f1"], metrics["exact_match"])


def _register_key(state: dict[str, torch.Tensor]) -> str:
    return next(k for k in state if k.endswith("registers.modules_to_save.default.tokens"))


def test_prompt_tuned_classifier_trains_saves_and_reloads(
    tiny_model_dir: Path, sst2_slice: Any, tmp_path: Path, one_thread: None
) -> None:
    from regtune.core.hub import load_tokenizer
    from regtune.tasks import get_task
    from regtune.training.config import resolve_config
    from regtune.training.trainer import train_model

    config = resolve_config(
        "default",
        task="classification",
        model=str(tiny_model_dir),
        train_file=str(sst2_slice.train),
        dev_file=str(sst2_slice.dev),
        output_dir=str(tmp_path / "run"),
        peft="prompt",
        peft_size=4,
        max_steps=4,
        batch_size=8,
        max_length=64,
        lr=1e-2,
        precision="fp32",
        logging_steps=1,
    )
    metrics = train_model(config, progress=False)
    labels = 2  # SST-2's first rows hold both labels; BERT's classifier is (labels, H) and its bias
    assert metrics["trainable_parameters"] == 4 * HIDDEN + labels * HIDDEN + labels
    folder = tmp_path / "run" / "model"
    task = get_task("classification")
    model = load_model(folder)
    data = task.read_for_model(str(sst2_slice.dev), model)
    again = task.evaluate(model, load_tokenizer(str(folder)), data, progress=False)
    assert again.metrics["accuracy"] == metrics["accuracy"]


class _StopAtFirstSave(TrainerCallback):
    def on_save(self, *args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt  # as a user's Ctrl-C right after checkpoint-3 was written


@pytest.mark.parametrize("arm", ["lora-r1-tau4", "prompt-n3"])
def test_an_interrupted_peft_run_resumes_to_the_uninterrupted_result(
    arm: str, make_config: Any, tmp_path: Path, one_thread: None
) -> None:
    from regtune.training.trainer import train_model

    options = ARMS[arm][0]
    reference = train_model(make_config(tmp_path / "whole", **options), progress=False)
    config = make_config(tmp_path / "run", **options)
    with pytest.raises(KeyboardInterrupt):
        train_model(config, progress=False, callbacks=[_StopAtFirstSave()])
    assert (tmp_path / "run" / "trainer" / "checkpoint-3" / PEFT_CONFIG_FILE).is_file()  # PEFT's checkpoint
    resumed = train_model(config, resume=True, progress=False)
    assert resumed["resumed_from_step"] == 3
    assert (resumed["f1"], resumed["exact_match"]) == (reference["f1"], reference["exact_match"])


def test_a_sweep_scores_other_dev_files_with_the_reloaded_peft_model(
    make_config: Any, tiny_squad: Any, tmp_path: Path, one_thread: None
) -> None:
    """run_one scores the first dev file in train_model and reloads the saved model for the others: the
    same questions under another name must get the same scores."""
    from regtune.experiments.sweep import SweepConfig, run_sweep

    other = tmp_path / "other" / "dev.json"
    other.parent.mkdir()
    other.write_text(Path(tiny_squad.dev).read_text(encoding="utf-8"), encoding="utf-8")
    base = make_config(tmp_path / "unused")
    fixed = ("model", "max_steps", "batch_size", "max_length", "doc_stride", "lr", "warmup_ratio")
    sweep = SweepConfig(
        output_dir=str(tmp_path / "sweep"),
        train_file=str(tiny_squad.train),
        dev_files=[str(tiny_squad.dev), str(other)],
        grid={"num_registers": [0], "seed": [1]},
        options={"peft": "lora", **{name: getattr(base, name) for name in fixed}},
    )
    rows = run_sweep(sweep, progress=False)
    assert [row["dev"] for row in rows] == [Path(tiny_squad.dev).parent.name, "other"]
    first, second = rows
    assert (second["f1"], second["exact_match"]) == (first["f1"], first["exact_match"])
    lora_r8 = LAYERS * 2 * (2 * 8 * HIDDEN) + HEAD  # --peft-size's default, 8
    assert first["trainable_parameters"] == second["trainable_parameters"] == lora_r8


def test_every_run_records_its_trainable_parameters(
    finished_run: Any, make_config: Any, tmp_path: Path, one_thread: None
) -> None:
    from regtune.training.trainer import build_model, train_model

    everything = sum(p.numel() for p in build_model(finished_run.config).parameters())
    assert finished_run.metrics["trainable_parameters"] == everything  # the default: every weight trains
    config = make_config(tmp_path / "run", train_only="registers+head", max_steps=1)
    assert train_model(config, progress=False)["trainable_parameters"] == 4 * HIDDEN + HEAD


# --- configuration, sweep axis, what refuses PEFT models ------------------------------------------------


def test_peft_options_are_checked_in_one_line(make_config: Any, tmp_path: Path) -> None:
    from regtune.training.trainer import build_model

    cases = [
        ({"peft": "ia3"}, r"peft must be one of \['none', 'lora', 'prompt'\], got 'ia3'"),
        ({"peft": "lora", "peft_size": 0}, "peft_size must be >= 1"),
        ({"peft": "lora", "train_only": "registers+head"}, "two ways of freezing the encoder; give one"),
        ({"peft": "prompt", "num_registers": 4}, "run it with --registers 0"),
    ]
    for options, message in cases:
        with pytest.raises(ConfigError, match=message):
            make_config(tmp_path / "bad", **options)
    # The tiny BERT has 512 positions: 8 virtual tokens and 510 text tokens do not fit.
    config = make_config(tmp_path / "bad", peft="prompt", peft_size=8, num_registers=0, max_length=510)
    with pytest.raises(ConfigError, match="exceed the model's 512 positions; lower --max-length to 504"):
        build_model(config)


def test_run_folders_from_before_peft_load_with_no_adapter(tmp_path: Path) -> None:
    from regtune.training.config import saved_run_config

    (tmp_path / "config.json").write_text(json.dumps({"config": {"task": "qa"}}))
    saved = saved_run_config(tmp_path / "config.json")
    assert (saved["peft"], saved["peft_size"]) == ("none", 8)


def test_sweep_spans_the_peft_axis(tmp_path: Path) -> None:
    from regtune.experiments.sweep import SweepConfig

    def sweep(peft: list[str], taus: list[int]) -> SweepConfig:
        return SweepConfig(
            output_dir=str(tmp_path),
            train_file="train.json",
            dev_files=["dev.json"],
            grid={"peft": peft, "num_registers": taus, "seed": [1]},
        )

    ids = [spec.run_id for spec in sweep(["none", "lora", "prompt"], [0]).runs()]
    assert ids == ["peftnone-tau0-seed1", "peftlora-tau0-seed1", "peftprompt-tau0-seed1"]
    with pytest.raises(ConfigError, match="run it with --registers 0"):
        sweep(["lora", "prompt"], [0, 8])


def test_explain_refuses_peft_models_in_one_line() -> None:
    from regtune.explain.run import check_same_task

    model = align_with_text(_prompt_qa())
    with pytest.raises(RegtuneError, match="do not read PEFT models"):
        check_same_task([model])
    assert not is_peft_model(add_registers(tiny_model("bert"), 2))
