"""Issue #14's register levers in the core: orthogonal init, deep registers (depth 'all'), the per-slot
identity. Each changes what it should and nothing else; τ=0 stays the stock model."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModelForQuestionAnswering, TrainerCallback

from regtune.core.errors import ConfigError, RegtuneError
from regtune.core.registers import (
    IDENTITY_SCALE,
    RegisterConfig,
    _entry_module,
    _layers,
    add_registers,
    get_register_module,
    load_model,
    register_intervention,
    register_parameters,
    register_slice,
)
from regtune.explain.ablation import ablation_overrides
from tiny_causal import tiny_lm
from tiny_models import ARCHS, HIDDEN, LAYERS, VOCAB, tiny_batch, tiny_model


def _all_token_norms(model: nn.Module) -> torch.Tensor:
    """The norm of every vocabulary token as the first layer reads it, alone at position 0: (VOCAB,)."""
    base = model.base_model
    entry = _entry_module(base)
    ids = torch.arange(VOCAB).unsqueeze(1)  # (V, 1)
    with torch.no_grad():
        rows = base.embeddings(input_ids=ids)
        rows = entry(rows) if entry is not base.embeddings else rows
    return rows[:, 0].norm(dim=-1)


@pytest.mark.parametrize("arch", ARCHS)
def test_orthogonal_init_gives_orthogonal_registers_at_the_norm_of_real_tokens(arch: str) -> None:
    model = tiny_model(arch)
    expected = _all_token_norms(model).mean().item()  # the tiny vocabulary is smaller than the sample
    add_registers(model, 8, init="orthogonal")
    tokens = get_register_module(model).tokens.detach()  # (8, H)
    gram = tokens @ tokens.T
    torch.testing.assert_close(gram, expected**2 * torch.eye(8), atol=1e-4 * expected**2, rtol=0)
    # Not the scale of the default init: real token vectors are far longer than std-0.02 ones.
    assert expected > 5 * 0.02 * HIDDEN**0.5


def test_orthogonal_init_on_a_causal_lm_uses_the_embedding_rows() -> None:
    model = tiny_lm("llama")
    expected = model.get_input_embeddings().weight.norm(dim=-1).mean().item()
    add_registers(model, 4, init="orthogonal")
    tokens = get_register_module(model).tokens.detach()
    torch.testing.assert_close(tokens.norm(dim=-1), torch.full((4,), expected), atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("depth", "identity"), [("all", False), ("input", True), ("all", True)])
def test_tau0_with_deep_registers_or_identity_is_the_stock_model(
    arch: str, depth: str, identity: bool
) -> None:
    stock, model = tiny_model(arch), tiny_model(arch)
    add_registers(model, 0, depth=depth, slot_identity=identity)
    batch = tiny_batch(arch)
    with torch.no_grad():
        a, b = stock(**batch), model(**batch)
    assert torch.equal(a.start_logits, b.start_logits) and torch.equal(a.end_logits, b.end_logits)
    assert register_parameters(model) == [get_register_module(model).tokens]  # nothing else to train


def _layer_inputs(model: nn.Module) -> list[torch.Tensor]:
    """Record the hidden states every encoder layer reads (after the register hooks), (B, R+N, H) each."""
    seen: list[torch.Tensor] = []
    for layer in _layers(model.base_model):
        layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    return seen


@pytest.mark.parametrize("arch", ARCHS)
def test_deep_registers_put_each_layers_own_vectors_in_the_register_rows(arch: str) -> None:
    model = add_registers(tiny_model(arch), 4, depth="all", placement="after_cls")
    module = get_register_module(model)
    assert module.layer_tokens.shape == (LAYERS - 1, 4, HIDDEN)
    seen = _layer_inputs(model)  # registered after add_registers: runs after the register hooks
    batch = tiny_batch(arch)
    model(**batch)
    rows = register_slice(4, "after_cls")
    for index, hidden in enumerate(seen[1:], start=1):
        expected = module.layer_tokens[index - 1].detach().expand(hidden.shape[0], -1, -1)
        assert torch.equal(hidden[:, rows], expected)
    # The text rows are what the previous layer produced, untouched: only the register rows change.
    plain = add_registers(tiny_model(arch), 4, placement="after_cls")
    with torch.no_grad():
        get_register_module(plain).tokens.copy_(module.tokens)
    plain_seen = _layer_inputs(plain)
    plain(**batch)
    assert torch.equal(plain_seen[0], seen[0])  # the first layer reads the same thing
    assert not torch.equal(plain_seen[1][:, rows], seen[1][:, rows])


def test_deep_register_vectors_get_gradients_and_change_the_output() -> None:
    model = add_registers(tiny_model("bert"), 4, depth="all")
    batch = tiny_batch("bert")
    out = model(**batch)
    (out.start_logits.sum() + out.end_logits.sum()).backward()
    module = get_register_module(model)
    assert module.layer_tokens.grad is not None and module.layer_tokens.grad.abs().sum() > 0
    assert {id(p) for p in register_parameters(model)} == {id(module.tokens), id(module.layer_tokens)}
    before = out.start_logits.detach()
    with torch.no_grad():
        module.layer_tokens.add_(1.0)
        assert not torch.allclose(model(**batch).start_logits, before)


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_slot_identity_is_added_to_the_register_rows_before_every_layer(arch: str) -> None:
    model = add_registers(tiny_model(arch), 4, slot_identity=True)
    identity = get_register_module(model).slot_identity.detach()  # (4, H)
    # Orthonormal rows at a small norm: a std-0.02 vector's length.
    norm = IDENTITY_SCALE * HIDDEN**0.5
    torch.testing.assert_close(identity @ identity.T, norm**2 * torch.eye(4), atol=1e-6, rtol=0)
    layer_outputs: list[torch.Tensor] = []
    layers = _layers(model.base_model)
    for layer in layers:
        layer.register_forward_hook(
            lambda _m, _a, out: layer_outputs.append(out[0] if isinstance(out, tuple) else out)
        )
    seen = _layer_inputs(model)
    model(**tiny_batch(arch))
    rows = register_slice(4)
    tokens = get_register_module(model).tokens.detach()
    torch.testing.assert_close(seen[0][:, rows], (tokens + identity).expand(seen[0].shape[0], -1, -1))
    torch.testing.assert_close(seen[1][:, rows], layer_outputs[0].detach()[:, rows] + identity)
    torch.testing.assert_close(seen[1][:, 4:], layer_outputs[0].detach()[:, 4:])  # text rows untouched


@pytest.mark.parametrize(("depth", "identity"), [("all", True), ("all", False), ("input", True)])
def test_deep_registers_and_identity_survive_save_and_load(
    tmp_path: Path, depth: str, identity: bool
) -> None:
    model = add_registers(tiny_model("bert"), 4, depth=depth, slot_identity=identity, init="orthogonal")
    batch = tiny_batch("bert")
    with torch.no_grad():
        expected = model(**batch).start_logits
    model.save_pretrained(tmp_path)
    for loaded in (load_model(tmp_path), AutoModelForQuestionAnswering.from_pretrained(tmp_path)):
        loaded.eval()
        config = get_register_module(loaded).config
        assert (config.depth.value, config.slot_identity) == (depth, identity)
        with torch.no_grad():
            # Loading picks sdpa where the tiny model runs eager: equal up to float rounding.
            torch.testing.assert_close(loaded(**batch).start_logits, expected, atol=1e-5, rtol=0)


def test_a_register_config_saved_before_the_levers_loads_with_their_defaults() -> None:
    old = {"num_registers": 8, "placement": "prepend", "init": "trunc_normal", "init_std": None}
    config = RegisterConfig.from_dict(old)
    assert (config.depth.value, config.slot_identity, config.per_layer) == ("input", False, False)


def test_causal_models_refuse_per_layer_levers() -> None:
    with pytest.raises(ConfigError, match="depth 'all' and the slot identity are for encoders"):
        add_registers(tiny_lm("llama"), 4, depth="all")
    with pytest.raises(ConfigError, match="for encoders"):
        add_registers(tiny_lm("gpt2"), 4, slot_identity=True)


def test_bad_lever_values_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"depth must be one of \['input', 'all'\], got 'deep'"):
        RegisterConfig(num_registers=2, depth="deep")
    with pytest.raises(ConfigError, match="slot_identity must be true or false"):
        RegisterConfig(num_registers=2, slot_identity="yes")


def test_train_applies_the_levers_and_the_saved_model_keeps_them(make_config, tmp_path: Path) -> None:
    from regtune.training.trainer import build_model, train_model

    config = make_config(
        tmp_path / "run",
        register_init="orthogonal",
        register_depth="all",
        register_identity="learned",
        max_steps=2,
    )
    module = get_register_module(build_model(config))
    assert module.layer_tokens is not None and module.slot_identity is not None
    train_model(config, progress=False)
    saved = get_register_module(load_model(tmp_path / "run" / "model")).config
    assert (saved.init.value, saved.depth.value, saved.slot_identity) == ("orthogonal", "all", True)


def test_sweep_spans_depth_and_identity_axes(tmp_path: Path) -> None:
    from regtune.experiments.sweep import SweepConfig

    sweep = SweepConfig(
        output_dir=str(tmp_path),
        train_file="train.json",
        dev_files=["dev.json"],
        grid={
            "register_depth": ["input", "all"],
            "register_identity": ["none", "learned"],
            "num_registers": [0, 8],
            "seed": [1],
        },
    )
    ids = [spec.run_id for spec in sweep.runs()]
    # τ=0 is the stock model whatever the depth and identity: one τ=0 run, at their first values.
    assert ids == [
        "depthinput-identnone-tau0-seed1",
        "depthinput-identnone-tau8-seed1",
        "depthinput-identlearned-tau8-seed1",
        "depthall-identnone-tau8-seed1",
        "depthall-identlearned-tau8-seed1",
    ]
    with pytest.raises(ConfigError, match="register_identity must be one of"):
        make = SweepConfig(
            output_dir=str(tmp_path / "bad"),
            train_file="train.json",
            dev_files=["dev.json"],
            grid={"register_identity": ["none", "maybe"], "num_registers": [8], "seed": [1]},
        )
        [spec.config for spec in make.runs()]


def test_register_similarity_is_one_for_copies_and_zero_for_orthogonal_registers() -> None:
    from regtune.core.registers import register_similarity

    text = torch.randn(2, 5, 8)
    copies = torch.ones(2, 3, 8) * torch.tensor([1.0, 2.0])[:, None, None]  # one direction per row
    orthogonal = torch.eye(8)[:3].expand(2, -1, -1) * 4.0
    torch.testing.assert_close(register_similarity(torch.cat([copies, text], 1), 3), torch.ones(2))
    torch.testing.assert_close(register_similarity(torch.cat([orthogonal, text], 1), 3), torch.zeros(2))
    # after_cls: the registers sit after [CLS]; the text rows never count.
    mixed = torch.cat([text[:, :1], orthogonal, text[:, 1:]], 1)
    config = RegisterConfig(num_registers=3, placement="after_cls")
    torch.testing.assert_close(register_similarity(mixed, config), torch.zeros(2))
    with pytest.raises(ValueError, match="at least 2 registers"):
        register_similarity(text, 1)


def test_metrics_record_the_register_similarity_of_the_trained_model(make_config, tmp_path: Path) -> None:
    import json

    from regtune.core.registers import register_similarity
    from regtune.tasks import get_task
    from regtune.tasks.qa.data import read_squad
    from regtune.training.diagnostics import SIMILARITY_EXAMPLES, measure_register_similarity
    from regtune.training.trainer import train_model

    config = make_config(tmp_path / "run", max_steps=2)
    metrics = train_model(config, progress=False)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["register_similarity"] == metrics["register_similarity"]
    assert -1 <= saved["register_similarity"] <= 1
    # Recomputed independently: one window at a time, no padding.
    model = load_model(tmp_path / "run" / "model").eval()
    from regtune.core.hub import load_tokenizer

    tokenizer = load_tokenizer(str(tmp_path / "run" / "model"))
    dev = read_squad(config.dev_file)
    items = get_task("qa").explain_inputs(dev.examples[:SIMILARITY_EXAMPLES], tokenizer, model)
    assert saved["register_similarity_examples"] == len(items)
    values = []
    with torch.no_grad():
        for item in items:
            ids, types = torch.tensor([item.input_ids]), torch.tensor([item.token_type_ids])
            hidden = model.base_model(input_ids=ids, token_type_ids=types, output_hidden_states=True)
            hidden = hidden.hidden_states[-1]
            values.append(register_similarity(hidden, model))
    assert saved["register_similarity"] == pytest.approx(torch.cat(values).mean().item(), abs=1e-3)
    assert (
        measure_register_similarity(add_registers(tiny_model("bert"), 1), get_task("qa"), tokenizer, dev)
        == {}
    )


# --- register tuning: --train-only registers+head ------------------------------------------------------


def test_register_tuning_trains_registers_and_head_and_leaves_every_encoder_weight_bit_identical(
    make_config, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from regtune.core.adapter import ADAPTER_FILE, ADAPTER_WEIGHTS
    from regtune.training.trainer import build_model, train_model

    config = make_config(tmp_path / "run", train_only="registers+head")
    before = build_model(config)
    trainable = sorted(n for n, p in before.named_parameters() if p.requires_grad)
    assert trainable == ["bert.registers.tokens", "qa_outputs.bias", "qa_outputs.weight"]
    start = {k: v.clone() for k, v in before.state_dict().items()}
    trained: dict[str, torch.Tensor] = {}

    class Capture(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):  # the model as trained
            trained.update({k: v.detach().clone() for k, v in model.state_dict().items()})

    metrics = train_model(config, progress=False, callbacks=[Capture()])
    for name, value in start.items():
        if name.startswith("bert.") and not name.startswith("bert.registers"):
            assert torch.equal(trained[name], value), name  # the encoder did not move by one bit

    folder = tmp_path / "run" / "model"
    assert (folder / ADAPTER_FILE).is_file() and not (folder / "model.safetensors").exists()
    saved = load_file(folder / ADAPTER_WEIGHTS)
    assert sorted(saved) == trainable  # only the trained tensors: registers and head
    after = load_model(folder).state_dict()
    assert all(torch.equal(after[name], value) for name, value in trained.items())  # loads as trained
    assert not torch.equal(after["bert.registers.tokens"], start["bert.registers.tokens"])
    assert not torch.equal(after["qa_outputs.weight"], start["qa_outputs.weight"])
    # The loaded adapter is the trained model: scoring it again gives the run's own numbers.
    from regtune.core.hub import load_tokenizer
    from regtune.tasks import get_task
    from regtune.tasks.qa.data import read_squad

    model = load_model(folder).eval()
    task = get_task("qa")
    again = task.evaluate(model, load_tokenizer(str(folder)), read_squad(config.dev_file), progress=False)
    assert (again.metrics["f1"], again.metrics["exact_match"]) == (metrics["f1"], metrics["exact_match"])


def test_register_tuning_at_tau0_trains_the_head_alone(make_config, tmp_path: Path) -> None:
    from regtune.training.trainer import build_model

    model = build_model(make_config(tmp_path / "run", num_registers=0, train_only="registers+head"))
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad) == [
        "qa_outputs.bias",
        "qa_outputs.weight",
    ]


def test_an_adapter_whose_base_is_gone_is_refused_in_one_line(make_config, tmp_path: Path) -> None:
    import json

    from regtune.core.adapter import ADAPTER_FILE
    from regtune.training.trainer import train_model

    train_model(make_config(tmp_path / "run", train_only="registers+head", max_steps=1), progress=False)
    meta_file = tmp_path / "run" / "model" / ADAPTER_FILE
    meta = json.loads(meta_file.read_text())
    meta["base_model"] = str(tmp_path / "no-such-base")
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(RegtuneError, match="no-such-base"):
        load_model(tmp_path / "run" / "model")
    with pytest.raises(ConfigError, match=r"train_only must be one of \['all', 'registers\+head'\]"):
        make_config(tmp_path / "bad", train_only="registers")


def test_orthogonal_init_and_identity_work_on_a_bf16_model() -> None:
    model = tiny_model("bert").to(torch.bfloat16)
    add_registers(model, 4, init="orthogonal", slot_identity=True)
    module = get_register_module(model)
    assert module.tokens.dtype == torch.bfloat16
    gram = module.tokens.float() @ module.tokens.float().T
    off_diagonal = gram - torch.diag(torch.diagonal(gram))
    assert off_diagonal.abs().max() < 0.02 * torch.diagonal(gram).min()  # orthogonal up to bf16 rounding


def test_an_adapter_saved_from_a_model_whose_config_names_the_base_class_loads(tmp_path: Path) -> None:
    from regtune.core.adapter import freeze_all_but_registers_and_head, save_trained_only

    model = add_registers(tiny_model("bert"), 2)
    model.config.architectures = ["BertModel"]  # what a folder saved before any Trainer checkpoint holds
    base = tmp_path / "base"
    model.save_pretrained(base)  # the base the adapter names (its head is not what the adapter holds)
    freeze_all_but_registers_and_head(model)
    save_trained_only(model, tmp_path / "adapter", str(base))
    loaded = load_model(tmp_path / "adapter").eval()
    assert type(loaded).__name__ == "BertForQuestionAnswering"
    batch = tiny_batch("bert")
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(**batch).start_logits, model.eval()(**batch).start_logits, atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("arch", ARCHS)
def test_a_values_override_on_deep_registers_reaches_every_layer(arch: str) -> None:
    """Layer d reads row set d of an override, in every shape; zeros equal a model with zero registers."""
    model = add_registers(tiny_model(arch), 3, depth="all", init="orthogonal").eval()
    module = get_register_module(model)
    learned = module.learned_rows()  # (D, R, H)
    assert module.rows_shape == (LAYERS, 3, HIDDEN) == tuple(learned.shape)
    torch.testing.assert_close(learned[1:], module.layer_tokens.detach())
    seen = _layer_inputs(model)
    batch = tiny_batch(arch)  # (B, N)
    rows = register_slice(3)
    with torch.no_grad():
        reference = model(**batch).start_logits
        # The learned rows as an override, shared or one set per example, change nothing.
        for values in (learned, learned[None], learned.expand(batch["input_ids"].shape[0], -1, -1, -1)):
            with register_intervention(model, values=values.clone()):
                torch.testing.assert_close(model(**batch).start_logits, reference, atol=1e-6, rtol=0)
        # Distinct row sets, one per depth: layer d reads set d, not another depth's.
        marked = torch.stack([torch.full((3, HIDDEN), float(d + 1)) for d in range(LAYERS)])  # (D, R, H)
        seen.clear()
        with register_intervention(model, values=marked):
            ablated = model(**batch).start_logits
        for d, hidden in enumerate(seen):
            assert torch.equal(hidden[:, rows], marked[d].expand(hidden.shape[0], -1, -1))
        assert not torch.allclose(ablated, reference)
        torch.testing.assert_close(model(**batch).start_logits, reference, atol=0, rtol=0)  # gone again
        # Zeros at every depth are the model whose every register vector is zero.
        with register_intervention(model, values=torch.zeros_like(learned)):
            zeroed_override = model(**batch).start_logits
        twin = copy.deepcopy(model)
        for tensor in register_parameters(twin):
            tensor.zero_()
        torch.testing.assert_close(zeroed_override, twin(**batch).start_logits, atol=1e-6, rtol=0)
    # One row set for a model that reads one per layer is a shape error, not a silent first-layer edit.
    with (
        pytest.raises(RegtuneError, match=r"\(D, R, H\), one set per layer"),
        register_intervention(model, values=torch.zeros(3, HIDDEN)),
    ):
        pass


def test_an_override_keeps_the_slot_identity() -> None:
    """With the slot identity, an override replaces the registers' content; the identity is still added."""
    model = add_registers(tiny_model("bert"), 3, slot_identity=True).eval()
    identity = get_register_module(model).slot_identity.detach()  # (R, H)
    seen = _layer_inputs(model)
    with torch.no_grad(), register_intervention(model, values=torch.zeros(3, HIDDEN)):
        model(**tiny_batch("bert"))
    first = seen[0][:, register_slice(3)]  # (B, R, H): what layer 0 reads in the register rows
    assert torch.equal(first, identity.expand(first.shape[0], -1, -1))


def test_deep_register_ablations_replace_each_layers_rows() -> None:
    stacked = torch.arange(24.0).reshape(2, 3, 4)  # (D, R, H)
    values, _ = ablation_overrides(stacked, "mean", 1)
    torch.testing.assert_close(values[:, 1], stacked.mean(dim=1))  # each layer's own mean
    torch.testing.assert_close(values[:, [0, 2]], stacked[:, [0, 2]])
    values, _ = ablation_overrides(stacked, "zero")
    assert torch.equal(values, torch.zeros_like(stacked))
    assert ablation_overrides(stacked, "mask", 2) == (None, [True, True, False])


def test_explain_reads_deep_registers_but_refuses_what_would_mislead() -> None:
    from regtune.explain.methods import IntegratedGradients
    from regtune.explain.run import check_explainable, check_same_task

    deep = add_registers(tiny_model("bert", task="qa"), 2, depth="all")
    identity = add_registers(tiny_model("bert", task="qa"), 2, slot_identity=True)
    assert check_same_task([deep, identity]).name == "qa"
    check_explainable([deep, identity], ["ig", "attn-grad"])
    check_explainable([identity], ["ig"], register_baseline="zero")  # its rows pass the embedding output
    for model in (deep, identity):
        with pytest.raises(RegtuneError, match="LRP is not available for per-layer registers"):
            check_explainable([model], ["attn-grad", "lrp"])
    # Refused before any work, for the pair as a whole, not when IG's turn comes.
    with pytest.raises(RegtuneError, match="--register-baseline zero is not available for deep registers"):
        check_explainable([identity, deep], ["attn-grad", "ig"], register_baseline="zero")
    IntegratedGradients(deep)  # the learned baseline holds every layer's registers fixed
    with pytest.raises(ConfigError, match="can only keep the learned registers"):
        IntegratedGradients(deep, register_baseline="zero")
