"""The register mechanism on tiny random encoders of every supported architecture.

Every claim in ``regtune.core.registers``' docstring is checked against the stock model with the same
weights: τ=0 is the stock model, registers change the logits but never their shape, hidden states and
attentions keep the registers, padding and placement do not matter, the pooler reads [CLS], gradients
reach the registers, and the saved model loads back identical.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from regtune.core.errors import ConfigError, RegtuneError
from regtune.core.registers import (
    CONFIG_KEY,
    RegisterConfig,
    RegisterPlacement,
    RegisterTokens,
    add_registers,
    get_register_config,
    get_register_module,
    load_model,
    register_parameters,
    register_slice,
    split_registers,
)
from tiny_models import ARCHS, HEADS, HIDDEN, LAYERS, NUM_LABELS, pad_id, tiny_batch, tiny_model

ATTNS = ("eager", "sdpa")
PLACEMENTS = ("prepend", "after_cls")
TAU = 4
#: Float noise between two equivalent computations is ~1e-7 here; the registers move logits by ~1e-2.
EFFECT = 1e-3


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Tiny models gain nothing from intra-op threads, and on a busy 2-core machine two threads
    # contending with other work make this file ~4x slower. Restored for the tests that follow.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(1234)  # register inits draw from the global generator


def _forward(model: PreTrainedModel, batch: dict[str, torch.Tensor], **kwargs):
    with torch.no_grad():
        return model(**batch, **kwargs)


def _with_registers(arch: str, task: str = "qa", attn: str = "eager", tau: int = TAU, **kwargs):
    return add_registers(tiny_model(arch, task, attn), tau, **kwargs)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# --- τ = 0 is the stock model -------------------------------------------------------------------------


@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("arch", ARCHS)
def test_zero_registers_is_the_stock_model(arch: str, attn: str) -> None:
    batch = tiny_batch(arch)
    for task, keys in (("qa", ("start_logits", "end_logits")), ("cls", ("logits",))):
        stock = _forward(tiny_model(arch, task, attn), batch, output_hidden_states=True)
        model = _with_registers(arch, task, attn, tau=0)
        assert model.num_registers == 0
        assert register_parameters(model)[0].shape == (0, HIDDEN)
        out = _forward(model, batch, output_hidden_states=True)
        for key in keys:
            torch.testing.assert_close(out[key], stock[key], atol=1e-6, rtol=0)
        for got, want in zip(out.hidden_states, stock.hidden_states, strict=True):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


# --- τ > 0: different logits, same shapes ------------------------------------------------------------


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("arch", ARCHS)
def test_registers_change_logits_but_not_shapes(arch: str, attn: str, placement: str) -> None:
    batch = tiny_batch(arch)
    b, n = batch["input_ids"].shape
    stock = _forward(tiny_model(arch, "qa", attn), batch)
    out = _forward(_with_registers(arch, "qa", attn, placement=placement), batch)
    for key in ("start_logits", "end_logits"):
        assert out[key].shape == (b, n)  # text tokens only: a register can never be predicted
        assert torch.isfinite(out[key]).all()
        assert _max_diff(out[key], stock[key]) > EFFECT

    stock_cls = _forward(tiny_model(arch, "cls", attn), batch)
    out_cls = _forward(_with_registers(arch, "cls", attn, placement=placement), batch)
    assert out_cls.logits.shape == (b, NUM_LABELS)
    assert torch.isfinite(out_cls.logits).all()
    assert _max_diff(out_cls.logits, stock_cls.logits) > EFFECT


# --- hidden states and attentions keep the registers ---------------------------------------------------


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("arch", ARCHS)
def test_hidden_states_and_attentions_include_registers(arch: str, attn: str, placement: str) -> None:
    batch = tiny_batch(arch)
    b, n = batch["input_ids"].shape
    real = int(batch["attention_mask"][-1].sum())
    model = _with_registers(arch, "qa", attn, placement=placement)
    eager = attn == "eager"
    out = _forward(model, batch, output_hidden_states=True, output_attentions=eager)

    assert len(out.hidden_states) == LAYERS + 1
    for hidden in out.hidden_states:
        assert hidden.shape == (b, TAU + n, HIDDEN)
        assert torch.isfinite(hidden).all()
        regs, text = split_registers(hidden, model)
        assert regs.shape == (b, TAU, HIDDEN)
        assert text.shape == (b, n, HIDDEN)

    # The first hidden state is the entry module's output with the registers inserted as they are.
    tokens = register_parameters(model)[0]
    first_regs = out.hidden_states[0][:, register_slice(TAU, placement)]
    torch.testing.assert_close(first_regs, tokens.expand(b, -1, -1), atol=0, rtol=0)

    # The heads see the text part of the last hidden state, and nothing else.
    text_last = split_registers(out.hidden_states[-1], model)[1]
    base_last = _forward(model.base_model, batch).last_hidden_state
    assert base_last.shape == (b, n, HIDDEN)
    torch.testing.assert_close(base_last, text_last, atol=1e-6, rtol=0)

    if not eager:
        return
    assert len(out.attentions) == LAYERS
    for attention in out.attentions:
        assert attention.shape == (b, HEADS, TAU + n, TAU + n)
        assert torch.isfinite(attention).all()
        torch.testing.assert_close(attention.sum(-1), torch.ones(b, HEADS, TAU + n))
        reg_keys, text_keys = split_registers(attention, model, dim=-1)
        assert reg_keys.shape == (b, HEADS, TAU + n, TAU)
        assert text_keys.shape == (b, HEADS, TAU + n, n)
        reg_queries, text_queries = split_registers(attention, model, dim=-2)
        assert reg_queries.shape == (b, HEADS, TAU, TAU + n)
        assert text_queries.shape == (b, HEADS, n, TAU + n)
        # Every query, padded row included, attends to every register; nobody attends to padding.
        assert (reg_keys > 0).all()
        assert (text_keys[-1, :, :, real:] == 0).all()
        assert (text_keys[-1, :, :, :real] > 0).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_other_call_styles_give_the_same_logits(arch: str) -> None:
    batch = tiny_batch(arch, pad_last=0)  # no padding, so a missing mask means the same thing
    model = _with_registers(arch, "qa", "sdpa")
    want = _forward(model, batch).start_logits
    no_mask = _forward(model, {"input_ids": batch["input_ids"]}).start_logits
    as_tuple = _forward(model, batch, return_dict=False)[0]
    embeds = {"inputs_embeds": model.get_input_embeddings()(batch["input_ids"])}
    from_embeds = _forward(model, {**embeds, "attention_mask": batch["attention_mask"]}).start_logits
    for got in (no_mask, as_tuple, from_embeds):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    with torch.no_grad():  # the mask as the base model's 2nd positional argument
        positional = model.base_model(batch["input_ids"], batch["attention_mask"])[0]
    assert positional.shape == (*batch["input_ids"].shape, HIDDEN)
    torch.testing.assert_close(positional, _forward(model.base_model, batch).last_hidden_state)


def test_split_registers_accepts_model_config_or_count() -> None:
    full = torch.arange(2 * 7).reshape(2, 7)
    for placement, reg_cols in (("prepend", [0, 1, 2]), ("after_cls", [1, 2, 3])):
        config = RegisterConfig(num_registers=3, placement=placement)
        regs, text = split_registers(full, config)
        assert regs.tolist() == full[:, reg_cols].tolist()
        assert text.tolist() == full[:, [c for c in range(7) if c not in reg_cols]].tolist()
        assert full[:, register_slice(3, placement)].tolist() == regs.tolist()
    regs, text = split_registers(full, 3)  # a bare count means prepend
    assert regs.tolist() == full[:, :3].tolist()
    assert text.tolist() == full[:, 3:].tolist()
    model = _with_registers("bert", tau=3, placement="after_cls")
    assert split_registers(full, model)[0].tolist() == full[:, 1:4].tolist()
    with pytest.raises(ValueError, match="fewer than"):
        split_registers(full, 8)


# --- gradients, padding, placement ---------------------------------------------------------------------


@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_reach_the_registers(arch: str, attn: str) -> None:
    batch = tiny_batch(arch)
    model = _with_registers(arch, "qa", attn)
    positions = torch.tensor([1, 2])
    loss = model(**batch, start_positions=positions, end_positions=positions + 2).loss
    loss.backward()
    params = register_parameters(model)
    assert len(params) == 1
    grad = params[0].grad
    assert grad is not None and grad.shape == (TAU, HIDDEN)
    assert torch.isfinite(grad).all()
    assert (grad.abs().sum(-1) > 0).all()  # every register, not just some


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("arch", ARCHS)
def test_extra_padding_does_not_change_real_tokens(arch: str, attn: str, placement: str) -> None:
    batch = tiny_batch(arch)
    extra = 5
    longer = {
        "input_ids": F.pad(batch["input_ids"], (0, extra), value=pad_id(arch)),
        "attention_mask": F.pad(batch["attention_mask"], (0, extra), value=0),
    }
    model = _with_registers(arch, "qa", attn, placement=placement)
    out, out_long = _forward(model, batch), _forward(model, longer)
    n = batch["input_ids"].shape[1]
    real = batch["attention_mask"].bool()
    for key in ("start_logits", "end_logits"):
        assert out_long[key].shape == (2, n + extra)
        torch.testing.assert_close(out_long[key][:, :n][real], out[key][real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("attn", ATTNS)
@pytest.mark.parametrize("arch", ARCHS)
def test_placement_changes_layout_not_logits(arch: str, attn: str) -> None:
    batch = tiny_batch(arch)
    b, n = batch["input_ids"].shape
    prepend = _with_registers(arch, "qa", attn, placement="prepend")
    after_cls = _with_registers(arch, "qa", attn, placement="after_cls")
    with torch.no_grad():
        register_parameters(after_cls)[0].copy_(register_parameters(prepend)[0])
    out_p = _forward(prepend, batch, output_hidden_states=True)
    out_a = _forward(after_cls, batch, output_hidden_states=True)
    # Registers have no position, so where they sit only changes the layout.
    for key in ("start_logits", "end_logits"):
        torch.testing.assert_close(out_a[key], out_p[key], atol=1e-5, rtol=0)

    assert register_slice(TAU, "prepend") == slice(0, TAU)
    assert register_slice(TAU, "after_cls") == slice(1, 1 + TAU)
    tokens = register_parameters(prepend)[0]
    full_p, full_a = out_p.hidden_states[0], out_a.hidden_states[0]
    torch.testing.assert_close(full_p[:, 0], tokens[0].expand(b, -1), atol=0, rtol=0)  # a register first
    torch.testing.assert_close(full_a[:, 1], tokens[0].expand(b, -1), atol=0, rtol=0)
    text_p = split_registers(full_p, prepend)[1]
    text_a = split_registers(full_a, after_cls)[1]
    torch.testing.assert_close(full_a[:, 0], text_a[:, 0], atol=0, rtol=0)  # [CLS] first
    torch.testing.assert_close(full_p[:, TAU], text_p[:, 0], atol=0, rtol=0)
    torch.testing.assert_close(text_a, text_p, atol=0, rtol=0)  # the same embeddings either way
    last_p = split_registers(out_p.hidden_states[-1], prepend)[1]
    last_a = split_registers(out_a.hidden_states[-1], after_cls)[1]
    assert last_p.shape == last_a.shape == (b, n, HIDDEN)
    torch.testing.assert_close(last_a, last_p, atol=1e-5, rtol=0)


# --- classification reads [CLS] -----------------------------------------------------------------------


def _cls_head(model: PreTrainedModel, arch: str, sequence: torch.Tensor) -> torch.Tensor:
    """The stock classification head of ``arch`` applied by hand to ``sequence`` (B, N, H), eval mode."""
    first = sequence[:, 0]
    if arch == "bert":
        pooler = model.bert.pooler
        return model.classifier(pooler.activation(pooler.dense(first)))
    if arch == "distilbert":
        return model.classifier(torch.relu(model.pre_classifier(first)))
    return model.classifier(sequence)  # RoBERTa / XLM-R / ELECTRA heads take [:, 0] themselves


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_classification_reads_cls_not_a_register(arch: str, placement: str) -> None:
    batch = tiny_batch(arch)
    model = _with_registers(arch, "cls", placement=placement)
    out = _forward(model, batch, output_hidden_states=True)
    full = out.hidden_states[-1]  # (B, R+N, H)
    text = split_registers(full, model)[1]  # (B, N, H), [CLS] at 0
    with torch.no_grad():
        want = _cls_head(model, arch, text)
        wrong = _cls_head(model, arch, full)  # what a head reading index 0 of the full sequence gives
    torch.testing.assert_close(out.logits, want, atol=1e-6, rtol=0)
    if placement == "prepend":  # there index 0 of the full sequence is a register, so this can fail
        assert _max_diff(out.logits, wrong) > EFFECT


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_bert_pooler_reads_cls(placement: str) -> None:
    batch = tiny_batch("bert")
    model = _with_registers("bert", "cls", placement=placement)
    out = _forward(model.bert, batch, output_hidden_states=True)
    full = out.hidden_states[-1]
    text = split_registers(full, model)[1]
    pooler = model.bert.pooler
    with torch.no_grad():
        want = pooler.activation(pooler.dense(text[:, 0]))
        register = pooler.activation(pooler.dense(full[:, register_slice(TAU, placement)][:, 0]))
    torch.testing.assert_close(out.last_hidden_state, text, atol=0, rtol=0)
    torch.testing.assert_close(out.pooler_output, want, atol=1e-6, rtol=0)
    assert _max_diff(out.pooler_output, register) > EFFECT


# --- labels ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("arch", ARCHS)
def test_losses_match_hand_computed(arch: str, placement: str) -> None:
    batch = tiny_batch(arch)
    start, end = torch.tensor([1, 3]), torch.tensor([4, 5])  # text indices; row 1 has 6 real tokens
    model = _with_registers(arch, "qa", placement=placement)
    out = _forward(model, batch, start_positions=start, end_positions=end)
    want = (F.cross_entropy(out.start_logits, start) + F.cross_entropy(out.end_logits, end)) / 2
    assert torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, want, atol=1e-6, rtol=0)
    # Labels one position off give another loss, so the comparison above can fail.
    shifted = (F.cross_entropy(out.start_logits, start + 1) + F.cross_entropy(out.end_logits, end + 1)) / 2
    assert abs(out.loss.item() - shifted.item()) > EFFECT

    labels = torch.tensor([0, 2])
    cls = _with_registers(arch, "cls", placement=placement)
    out_cls = _forward(cls, batch, labels=labels)
    torch.testing.assert_close(out_cls.loss, F.cross_entropy(out_cls.logits, labels), atol=1e-6, rtol=0)


# --- save / load -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tau", "placement", "init"), [(0, "prepend", "trunc_normal"), (3, "after_cls", "vocab")]
)
@pytest.mark.parametrize("arch", ARCHS)
def test_save_and_load_round_trip(arch: str, tau: int, placement: str, init: str, tmp_path: Path) -> None:
    batch = tiny_batch(arch)
    model = _with_registers(arch, "qa", tau=tau, placement=placement, init=init)
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files
    assert "pytorch_model.bin" not in files
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved[CONFIG_KEY] == get_register_config(model).to_dict()

    loaded = load_model(tmp_path, attn_implementation="eager")
    assert type(loaded) is type(model)
    assert not loaded.training
    assert loaded.num_registers == tau
    assert get_register_config(loaded) == get_register_config(model)
    torch.testing.assert_close(register_parameters(loaded)[0], register_parameters(model)[0], atol=0, rtol=0)
    want, got = _forward(model, batch), _forward(loaded, batch)
    for key in ("start_logits", "end_logits"):
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=0)


def test_load_rejects_unknown_register_setting(tmp_path: Path) -> None:
    _with_registers("bert", tau=2).save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    saved = json.loads(config_file.read_text())
    saved[CONFIG_KEY]["num_regs"] = 2
    config_file.write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match="num_regs"):
        load_model(tmp_path)


def test_load_rejects_a_folder_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(RegtuneError, match="not a saved model folder"):
        load_model(tmp_path)


# --- inits -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("init", ["trunc_normal", "tiny_normal", "vocab"])
@pytest.mark.parametrize("arch", ARCHS)
def test_registers_start_distinct(arch: str, init: str) -> None:
    tokens = register_parameters(_with_registers(arch, tau=8, init=init))[0].detach()
    assert torch.isfinite(tokens).all()
    scale = tokens.norm(dim=-1).median()
    distances = torch.cdist(tokens, tokens) + torch.eye(8) * 1e9
    assert distances.min() > 0.1 * scale  # pairwise distinct, at every init's own scale
    for i in range(8):
        for j in range(i + 1, 8):
            assert not torch.allclose(tokens[i], tokens[j], rtol=1e-3, atol=0)


@pytest.mark.parametrize(
    ("init", "init_std", "std"),
    [("tiny_normal", None, 1e-6), ("trunc_normal", None, 0.02), ("trunc_normal", 0.1, 0.1)],
)
def test_normal_inits_have_their_scale(init: str, init_std: float | None, std: float) -> None:
    tokens = register_parameters(_with_registers("bert", tau=64, init=init, init_std=init_std))[0].detach()
    # A normal truncated at ±2 std has std ≈ 0.88 std; 2048 samples pin it to a few percent.
    assert 0.75 * std < tokens.std().item() < 1.0 * std
    assert tokens.abs().max().item() <= 2 * std
    assert abs(tokens.mean().item()) < 0.1 * std


@pytest.mark.parametrize("arch", ARCHS)
def test_vocab_init_has_the_scale_of_real_tokens(arch: str) -> None:
    model = tiny_model(arch)
    base = model.base_model
    ids = torch.randint(5, model.config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # before add_registers, so no hook inserts anything yet
        real = base.embeddings(input_ids=ids)
        if hasattr(base, "embeddings_project"):
            real = base.embeddings_project(real)  # ELECTRA: the registers live at hidden_size
    real_norm = real.norm(dim=-1).median().item()
    tokens = register_parameters(add_registers(model, 64, init="vocab"))[0].detach()
    assert tokens.shape == (64, HIDDEN)
    reg_norm = tokens.norm(dim=-1).median().item()
    assert real_norm / 2 < reg_norm < real_norm * 2
    small = register_parameters(_with_registers(arch, tau=64, init="trunc_normal"))[0]
    assert small.norm(dim=-1).median().item() < real_norm / 2  # the test tells the inits apart


# --- bad settings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "kwargs", "match"),
    [
        (-1, {}, "num_registers must be >= 0"),
        (1.5, {}, "must be an integer"),
        (True, {}, "must be an integer"),
        (2, {"placement": "middle"}, "placement must be one of"),
        (2, {"init": "zeros"}, "init must be one of"),
        (2, {"init_std": 0.0}, "init_std must be > 0"),
        (2, {"init_std": -0.1}, "init_std must be > 0"),
    ],
)
def test_bad_settings_raise_config_error(count, kwargs: dict, match: str) -> None:
    model = tiny_model("bert")
    with pytest.raises(ConfigError, match=match):
        add_registers(model, count, **kwargs)
    assert get_register_module(model) is None  # nothing half-attached
    assert not hasattr(model.config, CONFIG_KEY)


def test_config_from_dict() -> None:
    config = RegisterConfig.from_dict({"num_registers": 2, "placement": "after_cls", "init": "vocab"})
    assert config.placement is RegisterPlacement.AFTER_CLS
    assert RegisterConfig.from_dict(config.to_dict()) == config
    assert json.loads(json.dumps(config.to_dict())) == config.to_dict()
    with pytest.raises(ConfigError, match="unknown register settings"):
        RegisterConfig.from_dict({"num_registers": 2, "registers": 4})
    with pytest.raises(ConfigError):
        register_slice(-1)
    assert issubclass(ConfigError, ValueError)


def test_adding_registers_twice_raises() -> None:
    model = _with_registers("bert")
    with pytest.raises(RegtuneError, match="already has registers"):
        add_registers(model, 2)
    assert model.num_registers == TAU
    assert isinstance(get_register_module(model), RegisterTokens)
    stock_like = add_registers(tiny_model("bert"), 0)  # τ=0 attaches too
    with pytest.raises(RegtuneError, match="already has registers"):
        add_registers(stock_like, 2)


def test_unsupported_encoders_are_refused_with_the_list() -> None:
    # DeBERTa-v2 computes relative positions inside its layers, which the encoder hooks do not handle.
    from transformers import DebertaV2Config, DebertaV2ForQuestionAnswering

    config = DebertaV2Config(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                             intermediate_size=64)  # fmt: skip
    with pytest.raises(RegtuneError, match=r"model_type 'deberta-v2'\) is not supported.*bert, distilbert"):
        add_registers(DebertaV2ForQuestionAnswering(config), TAU)


def test_load_model_reads_every_file_from_one_revision_of_one_subfolder(tmp_path: Path, monkeypatch) -> None:
    import transformers.utils

    model = _with_registers("bert")
    model.save_pretrained(tmp_path / "sub")
    loaded = load_model(tmp_path, subfolder="sub")  # config, weights and register tensor from sub/
    assert torch.equal(get_register_module(loaded).tokens, get_register_module(model).tokens)
    # Every file read gets the same revision, token and cache: none is left to its default.
    calls = []
    real = transformers.utils.cached_file

    def recording(path, filename, *args, **kwargs):
        calls.append((filename, kwargs.get("revision"), kwargs.get("token"), kwargs.get("subfolder")))
        return real(path, filename, *args, **kwargs)

    monkeypatch.setattr(transformers.utils, "cached_file", recording)
    load_model(tmp_path, subfolder="sub", revision="main", token="hf_fake")
    assert {f for f, *_ in calls} >= {"model.safetensors.index.json", "model.safetensors"}
    assert all(tuple(rest) == ("main", "hf_fake", "sub") for _, *rest in calls), calls


def _replicate_on_cpu(model: torch.nn.Module, shift: float) -> torch.nn.Module:
    """What ``torch.nn.parallel.replicate`` builds for another GPU, on the CPU: shallow copies of every module
    that share the original's hook objects, with each parameter set as a plain tensor attribute (here the
    original's plus ``shift``) and ``_parameters`` left empty, as replicate does."""
    copies = {module: module._replicate_for_data_parallel() for module in model.modules()}
    for module, replica in copies.items():
        for name, child in module._modules.items():
            replica._modules[name] = copies[child] if child is not None else None
        for name, parameter in module._parameters.items():
            if parameter is not None:
                setattr(replica, name, parameter.detach() + shift)
    return copies[model]


@pytest.mark.parametrize("depth", ["input", "all"])
def test_data_parallel_replicas_use_their_own_registers(depth: str) -> None:
    """nn.DataParallel (what Trainer does on 2+ GPUs) runs replicas, each in its own thread, whose hooks
    still hold the original base: every hook must read the registers of the replica that runs."""
    import copy
    import threading

    model = add_registers(tiny_model("bert"), 3, init="orthogonal", depth=depth).eval()
    batch = tiny_batch("bert")
    shifts = (1.0, 2.0)
    replicas = [_replicate_on_cpu(model, shift) for shift in shifts]
    outputs: dict[float, torch.Tensor] = {}
    barrier = threading.Barrier(len(shifts))

    def run(replica: torch.nn.Module, shift: float) -> None:
        barrier.wait()  # both passes at once, as parallel_apply runs them
        with torch.no_grad():
            outputs[shift] = replica(**batch).start_logits

    with torch.no_grad():
        before = model(**batch).start_logits
    threads = [threading.Thread(target=run, args=pair) for pair in zip(replicas, shifts, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with torch.no_grad():
        for shift in shifts:
            expected = copy.deepcopy(model)
            for parameter in expected.parameters():
                parameter.add_(shift)
            torch.testing.assert_close(outputs[shift], expected(**batch).start_logits)
        torch.testing.assert_close(model(**batch).start_logits, before, atol=0, rtol=0)  # the original's own


def test_a_pass_that_raises_leaves_no_register_module_behind() -> None:
    """The hooks' per-pass record is cleared even when the forward raises (the close hook always runs)."""
    from regtune.core import registers as core

    model = add_registers(tiny_model("bert"), 2, depth="all").eval()
    batch = tiny_batch("bert")

    def fail(*_args: object) -> None:
        raise RuntimeError("a layer failed")

    handle = model.bert.encoder.layer[1].register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError, match="a layer failed"):
        model(**batch)
    assert core._RUNNING.stacks == {}
    handle.remove()
    with torch.no_grad():
        model(**batch)
    assert core._RUNNING.stacks == {}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("depth", ["input", "all"])
def test_a_deep_copy_uses_its_own_registers(arch: str, depth: str) -> None:
    """copy.deepcopy (EMA, model soups) must not leave the copy's hooks on the original's registers."""
    import copy

    model = add_registers(tiny_model(arch), 3, init="orthogonal", depth=depth).eval()
    twin = copy.deepcopy(model)
    batch = tiny_batch(arch)
    with torch.no_grad():
        before = model(**batch).start_logits
        torch.testing.assert_close(twin(**batch).start_logits, before, atol=0, rtol=0)
        for tensor in register_parameters(twin):
            tensor.zero_()
        assert not torch.allclose(twin(**batch).start_logits, before)  # the copy reads its own zeros
        torch.testing.assert_close(model(**batch).start_logits, before, atol=0, rtol=0)  # untouched
