"""Artifacts, sinks and register roles (regtune.explain.artifacts) and their plots, on tiny encoders."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from regtune.core.errors import ConfigError, RegtuneError
from regtune.core.registers import add_registers, get_register_module, register_intervention
from regtune.explain.ablation import ablation_overrides, register_ablation
from regtune.explain.artifact_plots import (
    PLOT_FILES,
    plot_ablation,
    plot_comparison,
    plot_register_cosine,
    write_artifact_plots,
)
from regtune.explain.artifacts import CATEGORIES, analyze_model, mad_outliers, token_category
from regtune.tasks.inputs import ExplainInput
from regtune.tasks.qa.data import QAExample, read_squad
from regtune.tasks.qa.evaluation import QASettings
from tiny_models import ARCHS, tiny_batch, tiny_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REG = CATEGORIES.index("register")

#: One hand-made window: [CLS] question [SEP] context [SEP]; its categories are written out below.
TOKENS = (
    "[CLS]",
    "where",
    "was",
    "ada",
    "born",
    "?",
    "[SEP]",
    "ada",
    "was",
    "born",
    "in",
    "lis",
    "##bon",
    ".",
    "[SEP]",
)
KINDS = ("cls",) + ("question",) * 5 + ("sep",) + ("context",) * 7 + ("sep",)
EXPECTED = (
    "cls",
    "stopword",
    "stopword",
    "content",
    "content",
    "punct",
    "sep",
    "content",
    "stopword",
    "content",
    "stopword",
    "content",
    "content",
    "punct",
    "sep",
)


@pytest.fixture(autouse=True)
def _single_thread(one_thread: None) -> None:
    """Tiny models gain nothing from threads on a busy 2-core machine."""


def make_input(arch: str, length: int, seed: int) -> ExplainInput:
    """A window of ``length`` tokens with ids valid for the tiny models, and the hand-made token strings."""
    ids = tiny_batch(arch, batch=1, length=length, pad_last=0, seed=seed)["input_ids"][0].tolist()
    body = length - 2
    tokens = ("[CLS]", *(TOKENS[1:-1] * 3)[:body], "[SEP]")
    kinds = ("cls", *(KINDS[1:-1] * 3)[:body], "sep")
    example = QAExample(id=f"q{seed}", question="q", context="c", answers=())
    return ExplainInput(example, tuple(ids), None, tokens, kinds, (None,) * length, None)


def inputs_for(arch: str) -> list[ExplainInput]:
    # Different lengths, so batches are padded.
    return [make_input(arch, n, seed) for seed, n in enumerate((9, 15, 12, 20))]


@pytest.mark.parametrize(("kind", "token", "expected"), [*zip(KINDS, TOKENS, EXPECTED, strict=True)])
def test_token_category_on_a_hand_made_window(kind: str, token: str, expected: str) -> None:
    assert token_category(kind, token) == expected


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("Ġthe", "stopword"),
        ("▁The", "stopword"),
        ("▁", "punct"),
        ("Ġ,", "punct"),
        ("##s", "content"),
        ("1912", "content"),
    ],
)
def test_token_category_strips_bpe_and_sentencepiece_markers(token: str, expected: str) -> None:
    assert token_category("context", token) == expected
    assert token_category("register", "anything") == "register"
    with pytest.raises(ConfigError):
        token_category("pad", token)


def test_mad_rule_flags_the_one_outlier_and_nothing_in_a_flat_layer() -> None:
    values = np.array([5.0, 5.1, 4.9, 5.0, 5.2, 4.8, 50.0])
    flagged, rule = mad_outliers(values, k=3.5)
    assert flagged.tolist() == [False] * 6 + [True]
    assert rule.median == 5.0 and rule.mad == pytest.approx(0.1)
    assert rule.threshold == pytest.approx(5.0 + 3.5 * max(1.4826 * 0.1, 0.05 * 5.0))
    # A LayerNorm output has (almost) equal norms: the scale floor keeps float noise from being flagged.
    flat = 5.656854 + np.random.default_rng(0).normal(0, 1e-6, size=100)
    assert not mad_outliers(flat)[0].any()
    # The reference set defines median and MAD; low values are never flagged.
    flagged, _ = mad_outliers(np.array([1.0, 1.0, 1.0, 0.0, 9.0]), reference=np.array([1, 1, 1, 0, 0], bool))
    assert flagged.tolist() == [False, False, False, False, True]
    with pytest.raises(ConfigError):
        mad_outliers(values, k=0)


@pytest.mark.parametrize(("tau", "depth"), [(0, "input"), (3, "input"), (3, "all")])
@pytest.mark.parametrize("arch", ARCHS)
def test_analysis_on_every_architecture(arch: str, tau: int, depth: str) -> None:
    model = add_registers(tiny_model(arch), tau, depth=depth)
    inputs = inputs_for(arch)
    analysis = analyze_model(model, inputs, batch_size=3)
    layers, heads = 2, 4
    tokens = sum(len(item) + tau for item in inputs)
    assert analysis.norms.shape == (layers + 1, tokens) and np.isfinite(analysis.norms).all()
    assert (analysis.categories == REG).sum() == tau * len(inputs)
    assert analysis.attention_mass.shape == (layers, heads, len(CATEGORIES))
    np.testing.assert_allclose(analysis.attention_mass.sum(axis=-1), 1.0, atol=1e-6)
    assert np.isfinite(analysis.entropy).all()
    assert ((analysis.entropy_normalized > 0) & (analysis.entropy_normalized <= 1 + 1e-9)).all()
    assert analysis.register_attention.shape == (layers, tau)
    assert analysis.register_cosine.shape == (layers + 1, tau, tau)
    # The registers' share of the mass is the sum of what each register receives.
    np.testing.assert_allclose(
        analysis.attention_mass[:, :, REG].mean(axis=1), analysis.register_attention.sum(axis=1), atol=1e-9
    )
    if tau:
        for layer in range(layers + 1):
            np.testing.assert_allclose(np.diag(analysis.register_cosine[layer]), 1.0, atol=1e-6)
        np.testing.assert_allclose(analysis.register_to_category.sum(axis=-1), 1.0, atol=1e-6)
        assert all(len(top) > 0 for top in analysis.register_top_tokens)
    else:
        assert np.isnan(analysis.attention_per_token[:, :, REG]).all()  # no register keys at all
    data = analysis.to_dict()
    json.dumps(data, allow_nan=False)
    assert len(data["norms"]) == layers + 1 and data["settings"]["num_registers"] == tau
    # Padding changes nothing: one window per batch gives the same statistics.
    single = analyze_model(model, inputs, batch_size=1)
    np.testing.assert_allclose(single.norms, analysis.norms, atol=1e-5)
    np.testing.assert_allclose(single.attention_mass, analysis.attention_mass, atol=1e-6)
    np.testing.assert_allclose(single.entropy, analysis.entropy, atol=1e-5)
    np.testing.assert_allclose(single.register_cosine, analysis.register_cosine, atol=1e-6)


@pytest.mark.parametrize("placement", ["prepend", "after_cls"])
def test_register_positions_follow_the_placement(placement: str) -> None:
    model = add_registers(tiny_model("bert"), 3, placement=placement)
    item = make_input("bert", 9, 0)
    analysis = analyze_model(model, [item])
    first = 0 if placement == "prepend" else 1
    assert analysis.categories[first : first + 3].tolist() == [REG] * 3
    assert analysis.labels[first : first + 3].tolist() == ["[REG 0]", "[REG 1]", "[REG 2]"]
    text = [CATEGORIES[c] for i, c in enumerate(analysis.categories) if not first <= i < first + 3]
    assert text == [token_category(k, t) for k, t in zip(item.kinds, item.tokens, strict=True)]
    # Layer 0 holds the learned vectors themselves: their cosine matrix is known by hand.
    tokens = torch.nn.functional.normalize(get_register_module(model).tokens.detach().double(), dim=-1)
    np.testing.assert_allclose(analysis.register_cosine[0], (tokens @ tokens.T).numpy(), atol=1e-6)


def test_a_high_norm_register_is_flagged_and_nothing_else() -> None:
    model = add_registers(tiny_model("bert"), 3)
    learned = get_register_module(model).tokens.detach()
    values = learned.clone()
    values[1] = 100.0 * values[1] / values[1].norm()  # text tokens have norm sqrt(32) ≈ 5.7 at layer 0
    inputs = inputs_for("bert")
    with register_intervention(model, values=values):
        analysis = analyze_model(model, inputs, batch_size=2)
    flagged, rule = analysis.outliers(0)
    assert rule.threshold < 100.0
    assert set(analysis.labels[flagged].tolist()) == {"[REG 1]"}
    assert flagged.sum() == len(inputs)
    summary = analysis.to_dict()["norms"][0]
    assert summary["by_category"]["register"]["outliers"] == len(inputs)
    assert sum(entry["outliers"] for entry in summary["by_category"].values()) == len(inputs)
    assert summary["top_outlier_tokens"] == [{"token": "[REG 1]", "count": len(inputs)}]


@pytest.mark.parametrize("mode", ["zero", "mean", "mask"])
def test_ablation_overrides(mode: str) -> None:
    tokens = torch.arange(12.0).reshape(3, 4)
    values, keep = ablation_overrides(tokens, mode, 1)  # type: ignore[arg-type]
    if mode == "mask":
        assert values is None and keep == [True, False, True]
        assert ablation_overrides(tokens, "mask")[1] == [False] * 3
        return
    assert keep is None
    expected = torch.zeros(4) if mode == "zero" else tokens.mean(dim=0)
    torch.testing.assert_close(values[1], expected)
    torch.testing.assert_close(values[[0, 2]], tokens[[0, 2]])
    everything, _ = ablation_overrides(tokens, mode)  # type: ignore[arg-type]
    torch.testing.assert_close(everything, expected.expand(3, 4))


@pytest.fixture(scope="module")
def qa_setup(tiny_model_dir: Path, tiny_squad) -> tuple:
    from transformers import AutoTokenizer, BertForQuestionAnswering
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the fresh QA head is meant to be random here
    try:
        torch.manual_seed(0)
        model = BertForQuestionAnswering.from_pretrained(tiny_model_dir).eval()
    finally:
        hf_logging.set_verbosity(verbosity)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = read_squad(tiny_squad.dev).examples[:8]
    settings = QASettings(max_length=96, doc_stride=32, precision="fp32")
    return model, tokenizer, examples, settings


def test_register_ablation_reports_every_register_and_mode(qa_setup: tuple, tmp_path: Path) -> None:
    base, tokenizer, examples, settings = qa_setup

    with pytest.raises(RegtuneError, match="no registers"):
        register_ablation(base, tokenizer, examples, settings)
    model = add_registers(copy.deepcopy(base), 3, init="vocab")
    result = register_ablation(model, tokenizer, examples, settings, n_boot=200, rng=0)
    json.dumps(result, allow_nan=False)
    assert result["num_registers"] == 3 and len(result["question_ids"]) == len(examples)
    assert [(row["register"], row["mode"]) for row in result["single"]] == [
        (i, m) for i in range(3) for m in ("zero", "mean", "mask")
    ]
    assert [row["mode"] for row in result["all"]] == ["zero", "mean", "mask"]
    baseline = np.array(result["baseline"]["per_question_f1"])
    for row in [*result["single"], *result["all"]]:
        per_question = np.array(row["per_question_f1"])
        assert row["delta_f1"] == pytest.approx(100 * (per_question - baseline).mean())
        low, high = row["delta_f1_ci"]
        assert low <= row["delta_f1"] + 1e-9 and row["delta_f1"] <= high + 1e-9
        assert 0 < row["p_value"] <= 1
    # Masking every register changes what the model computes (float noise is ~1e-7; this model's weight
    # std of 0.02 keeps attention near uniform, so the change is small but far above the noise).
    batch = tokenizer(
        examples[0].question, examples[0].context, return_tensors="pt", truncation=True, max_length=96
    )
    with torch.no_grad():
        learned = model(**batch).start_logits
        with register_intervention(model, keep=[False] * 3):
            masked = model(**batch).start_logits
    assert (learned - masked).abs().max() > 1e-6
    with pytest.raises(ConfigError):
        register_ablation(model, tokenizer, examples, settings, registers=[3])
    with pytest.raises(ConfigError):
        register_ablation(model, tokenizer, examples, settings, modes=["drop"])  # type: ignore[list-item]

    # Deep registers: every mode runs with one row set per layer (a single (R, H) set would be refused
    # as a shape error; the core tests check that each layer reads its own set, logit by logit).
    deep = add_registers(copy.deepcopy(base), 2, init="orthogonal", depth="all")
    rows = register_ablation(deep, tokenizer, examples, settings, n_boot=100, rng=0)
    assert [(row["register"], row["mode"]) for row in rows["all"]] == [
        (None, m) for m in ("zero", "mean", "mask")
    ]
    assert len(rows["single"]) == 2 * 3

    # The ablation plot reads this dict.
    path = plot_ablation(json.loads(json.dumps(result)), tmp_path / PLOT_FILES["ablation"])
    assert path.name == PLOT_FILES["ablation"] and path.read_bytes().startswith(PNG_MAGIC)


def test_plots_are_valid_pngs_and_replot_from_json(tmp_path: Path) -> None:
    inputs = inputs_for("bert")
    with_registers = analyze_model(add_registers(tiny_model("bert"), 3), inputs)
    without = analyze_model(add_registers(tiny_model("bert"), 0), inputs)
    written = write_artifact_plots(with_registers, tmp_path / "tau3")
    assert sorted(p.name for p in written) == sorted(
        PLOT_FILES[k] for k in ("norms", "sinks", "entropy", "register_attention", "register_cosine")
    )
    # τ=0 gets no register plots; plots also work from the saved JSON.
    saved = json.loads(json.dumps(without.to_dict()))
    assert len(write_artifact_plots(saved, tmp_path / "tau0")) == 3
    with pytest.raises(ValueError, match="no registers"):
        plot_register_cosine(saved, tmp_path / "x.png")
    comparison = plot_comparison({"τ=0": saved, "τ=3": with_registers}, tmp_path / PLOT_FILES["comparison"])
    for path in [*written, comparison]:
        assert path.read_bytes().startswith(PNG_MAGIC)
    assert not list(tmp_path.rglob("*.tmp"))
