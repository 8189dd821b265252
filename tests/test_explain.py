"""Explanation core: windows, register interventions, the recording attention, IG, attention-gradient,
the comparison metrics, the run cache and the `regtune explain` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForQuestionAnswering

from conftest import TINY_BERT
from regtune.core.errors import ConfigError, RegtuneError
from regtune.core.hub import load_tokenizer
from regtune.core.registers import add_registers, full_position, get_register_module, register_intervention
from regtune.experiments.stats import mean_interval, paired_difference
from regtune.explain.attention import explain_attention
from regtune.explain.methods import (
    AttentionGradient,
    Attribution,
    IntegratedGradients,
    attention_gradient_rollout,
)
from regtune.explain.metrics import agreement, faithfulness, focus, plausibility
from regtune.explain.run import ExplainConfig, explain_model, prepare_output_dir, select_examples, summarize
from regtune.tasks.inputs import ExplainInput
from regtune.tasks.qa.data import Answer, QAExample
from regtune.tasks.qa.explain import build_explain_inputs, predicted_span
from tiny_models import ARCHS, tiny_batch, tiny_model


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm-l6")


def _example(qid: str = "q1") -> QAExample:
    context = "Ada built violins in Lisbon in 1901. Bruno built boats in Oslo. Chen drew maps in Quito."
    return QAExample(
        qid, "Where did Ada build violins?", context, (Answer("Lisbon", context.index("Lisbon")),)
    )


def _tiny_qa(tokenizer, num_registers: int, *, seed: int = 0, placement: str = "prepend"):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, initializer_range=0.1, **TINY_BERT
    )
    model = BertForQuestionAnswering(config)
    add_registers(model, num_registers, placement=placement)
    return model.eval()


def _hand_input(arch: str, n_question: int = 3, n_context: int = 6) -> ExplainInput:
    """A window for the vocab-99 tiny models: [CLS] q q q [SEP] c c c c c c [SEP]."""
    _pad, cls, sep = {"roberta": (1, 0, 2), "xlm-roberta": (1, 0, 2)}.get(arch, (0, 2, 3))
    rng = np.random.default_rng(0)
    words = [int(i) for i in rng.integers(5, 99, size=n_question + n_context)]
    ids = (cls, *words[:n_question], sep, *words[n_question:], sep)
    kinds = ("cls", *["question"] * n_question, "sep", *["context"] * n_context, "sep")
    offsets = tuple((i, i + 1) if k == "context" else None for i, k in enumerate(kinds))
    start = 1 + n_question + 1 + 2
    return ExplainInput(
        example=QAExample("h1", "q", "c" * 40, (Answer("c", 0),)),
        input_ids=ids,
        token_type_ids=None
        if arch in ("distilbert",)
        else tuple(0 if i <= n_question + 1 else 1 for i in range(len(ids))),
        tokens=tuple(f"t{i}" for i in ids),
        kinds=kinds,  # type: ignore[arg-type]
        offsets=offsets,
        gold_span=(start, start + 1),
    )


# --- windows ---------------------------------------------------------------------------------------------


def test_explain_inputs_mark_kinds_and_gold_span(tokenizer) -> None:
    [item] = build_explain_inputs([_example()], tokenizer)
    assert item.kinds[0] == "cls" and item.kinds[-1] == "sep"
    assert item.kinds.count("sep") == 2
    first_context = item.kinds.index("context")
    assert set(item.kinds[1 : first_context - 1]) == {"question"}
    start, end = item.gold_span
    assert "".join(t.removeprefix("##") for t in item.tokens[start : end + 1]) == "lisbon"
    assert item.context_mask().sum() == item.kinds.count("context")


def test_explain_inputs_pick_the_window_holding_the_answer(tokenizer) -> None:
    filler = " ".join(["The river runs north past the hills."] * 12)
    context = f"{filler} Ada built violins in Lisbon."
    example = QAExample(
        "far", "Where did Ada build violins?", context, (Answer("Lisbon", context.index("Lisbon")),)
    )
    [item] = build_explain_inputs([example], tokenizer, max_length=48, doc_stride=16)
    assert len(item) <= 48
    assert item.gold_span is not None
    start, _ = item.gold_span
    assert item.offsets[start][0] == context.index("Lisbon")


# --- register interventions and the recording attention --------------------------------------------------


def test_register_intervention_replaces_masks_and_restores() -> None:
    model = tiny_model("bert", task="qa", attn="eager")
    add_registers(model, 3)
    model.eval()
    batch = tiny_batch("bert")
    with torch.no_grad():
        ref = model(**batch).start_logits
        with register_intervention(model, keep=[True, True, True]):
            same = model(**batch).start_logits
        with register_intervention(model, values=torch.zeros(3, 32)):
            zeroed = model(**batch).start_logits
        with register_intervention(model, keep=[False, False, False]):
            masked = model(**batch).start_logits
        with pytest.raises(RuntimeError), register_intervention(model, values=torch.zeros(3, 32)):
            raise RuntimeError("inside")
        after = model(**batch).start_logits
    assert torch.equal(same, ref) and torch.equal(after, ref)
    assert (zeroed - ref).abs().max() > 1e-3 and (masked - ref).abs().max() > 1e-3
    assert get_register_module(model).values_override is None
    with pytest.raises(RegtuneError, match="shape"), register_intervention(model, values=torch.zeros(2, 32)):
        pass
    with (
        pytest.raises(RegtuneError, match="one flag per register"),
        register_intervention(model, keep=[True]),
    ):
        pass


def test_register_intervention_refuses_a_model_without_registers() -> None:
    model = tiny_model("bert", task="qa")
    with pytest.raises(RegtuneError, match="no registers"), register_intervention(model, keep=[False]):
        pass


def test_masking_every_register_equals_the_stock_model() -> None:
    """Masked-out registers are invisible to the text: the logits of the same weights without registers."""
    stock = tiny_model("bert", task="qa", attn="eager").eval()
    with_regs = tiny_model("bert", task="qa", attn="eager").eval()
    add_registers(with_regs, 2)
    batch = tiny_batch("bert")
    with torch.no_grad(), register_intervention(with_regs, keep=[False, False]):
        masked = with_regs(**batch).start_logits
    torch.testing.assert_close(masked, stock(**batch).start_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_explain_attention_matches_eager_and_restores(arch: str) -> None:
    model = tiny_model(arch, task="qa", attn="sdpa")
    add_registers(model, 2)
    model.eval()
    batch = tiny_batch(arch)
    with torch.no_grad():
        ref = model(**batch).start_logits
        with explain_attention(model, record=True) as state:
            out = model(**batch).start_logits
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert len(state.probs) == 2
    seq = batch["input_ids"].shape[1] + 2
    assert state.probs[0].shape == (2, 4, seq, seq)
    torch.testing.assert_close(state.probs[0].sum(-1), torch.ones(2, 4, seq))
    assert model.config._attn_implementation == "sdpa"


# --- Integrated Gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("num_registers", [0, 3])
def test_ig_completeness(arch: str, num_registers: int) -> None:
    model = tiny_model(arch, task="qa", attn="eager")
    add_registers(model, num_registers)
    item = _hand_input(arch)
    result = IntegratedGradients(model, n_steps=64).attribute(item, target="span")
    gap = result.output - result.extra["baseline_output"]
    assert abs(gap) > 1e-3
    assert result.text.shape == (len(item),) and result.registers.shape == (num_registers,)
    assert result.convergence_delta < 0.02
    np.testing.assert_allclose(result.text.sum() + result.registers.sum(), gap, rtol=0.02, atol=1e-4)
    # Learned registers sit in the baseline too: they cannot take attribution.
    assert np.all(result.registers == 0)


def test_ig_baseline_uses_the_given_pad_token_over_the_config(tokenizer) -> None:
    # A converted model's config can name the wrong pad token (e5's says 0, XLM-R's <s>): the baseline
    # must then be built from the pad id the caller gives (the tokenizer's), not from the config.
    import warnings

    model = _tiny_qa(tokenizer, 0)
    [item] = build_explain_inputs([_example()], tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.config.pad_token_id = 0
        default = IntegratedGradients(model, n_steps=8).attribute(item).extra["baseline_output"]
        given = IntegratedGradients(model, n_steps=8, pad_id=5).attribute(item).extra["baseline_output"]
        model.config.pad_token_id = 5
        via_config = IntegratedGradients(model, n_steps=8).attribute(item).extra["baseline_output"]
    assert given == pytest.approx(via_config, rel=1e-6)
    assert given != pytest.approx(default, rel=1e-3)


def test_ig_register_baseline_measures_the_registers(tokenizer) -> None:
    model = _tiny_qa(tokenizer, 3)
    [item] = build_explain_inputs([_example()], tokenizer)
    learned = IntegratedGradients(model, n_steps=32).attribute(item)
    zero = IntegratedGradients(model, n_steps=32, register_baseline="zero").attribute(item)
    assert np.abs(zero.registers).sum() > 0 and zero.register_share > 0
    assert learned.register_share == 0
    # Completeness now covers the registers as well.
    gap = zero.output - zero.extra["baseline_output"]
    np.testing.assert_allclose(zero.text.sum() + zero.registers.sum(), gap, rtol=0.05, atol=1e-4)


def test_ig_warns_when_the_completeness_gap_is_large(tokenizer, monkeypatch) -> None:
    from regtune.core.errors import RegtuneWarning
    from regtune.explain import methods

    model = _tiny_qa(tokenizer, 0)
    [item] = build_explain_inputs([_example()], tokenizer)
    coarse = IntegratedGradients(model, n_steps=2).attribute(item)
    monkeypatch.setattr(methods, "MAX_RELATIVE_DELTA", coarse.convergence_delta / 2)
    with pytest.warns(RegtuneWarning, match="completeness gap"):
        IntegratedGradients(model, n_steps=2).attribute(item)


def test_methods_check_their_options(tokenizer) -> None:
    model = _tiny_qa(tokenizer, 0)
    [item] = build_explain_inputs([_example()], tokenizer)
    with pytest.raises(ConfigError, match="target"):
        AttentionGradient(model).attribute(item, target="middle")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="outside the window"):
        AttentionGradient(model).attribute(item, span=(0, 999))
    with pytest.raises(ConfigError, match="register_baseline"):
        IntegratedGradients(model, register_baseline="noise")  # type: ignore[arg-type]


# --- attention-gradient relevance -------------------------------------------------------------------------


def test_attention_gradient_rule_by_hand() -> None:
    """Two layers, two heads, three tokens; the expected matrix is worked out entry by entry."""
    a1 = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]], [[1.0, 0.0, 0.0]] * 3])
    g1 = torch.tensor([[[2.0, -1.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]], [[1.0, 0.0, 0.0]] * 3])
    a2 = torch.full((2, 3, 3), 1 / 3)
    g2 = torch.tensor([[[3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, -3.0]], [[0.0, 0.0, 0.0]] * 3])
    # Layer 1: clamp(g1*a1) per head, mean over heads.
    # head 0: [[1, 0, 0], [0, 1, 0], [.2, .3, .5]]; head 1: [[1, 0, 0]] * 3
    cam1 = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.6, 0.15, 0.25]])
    r1 = torch.eye(3) + cam1  # R = I + cam1 @ I
    # Layer 2: head 0 gives [[1, 0, 0], 0, 0] after the clamp, head 1 zero; mean: 0.5 at (0, 0).
    cam2 = torch.zeros(3, 3)
    cam2[0, 0] = 0.5
    expected = r1 + cam2 @ r1
    got = attention_gradient_rollout([a1, a2], [g1, g2])
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got[0], torch.tensor([3.0, 0.0, 0.0]))  # row 0: 2 from r1, +0.5*2 from layer 2


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("num_registers", [0, 3])
def test_attention_gradient_runs_everywhere(arch: str, num_registers: int) -> None:
    model = tiny_model(arch, task="qa", attn="sdpa")
    add_registers(model, num_registers)
    item = _hand_input(arch)
    for target in ("start", "end", "span"):
        result = AttentionGradient(model).attribute(item, target=target)
        assert result.text.shape == (len(item),) and result.registers.shape == (num_registers,)
        assert np.isfinite(result.text).all() and (result.text >= 0).all()
        assert result.text.sum() > 0
    assert model.config._attn_implementation == "sdpa"


def test_attention_gradient_reads_the_predicted_token_row(tokenizer) -> None:
    """Recompute the rule from recorded attentions and check which row the method returns."""
    model = _tiny_qa(tokenizer, 2)
    [item] = build_explain_inputs([_example()], tokenizer)
    span = predicted_span(model, item)
    with torch.enable_grad(), explain_attention(model, record=True) as state:
        out = model(**item.batch())
        grads = torch.autograd.grad(out.start_logits[0, span[0]], state.probs)
    rollout = attention_gradient_rollout([p[0].detach() for p in state.probs], [g[0] for g in grads])
    row = full_position(model, span[0])
    expected = (rollout - torch.eye(rollout.shape[0]))[row]
    result = AttentionGradient(model).attribute(item, target="start")
    np.testing.assert_allclose(result.registers, expected[0:2].numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result.text, expected[2:].numpy(), rtol=1e-5, atol=1e-7)


def test_attention_gradient_on_deep_registers_adds_nothing_through_replaced_rows(tokenizer) -> None:
    """Deep registers: the register rows a layer computes are replaced before the next layer reads them,
    so the score's gradient on their attention is zero and the rollout needs no special case."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, initializer_range=0.1, **TINY_BERT
    )
    model = add_registers(BertForQuestionAnswering(config), 2, depth="all", init="orthogonal").eval()
    [item] = build_explain_inputs([_example()], tokenizer)
    span = predicted_span(model, item)
    with torch.enable_grad(), explain_attention(model, record=True) as state:
        out = model(**item.batch())
        grads = torch.autograd.grad(out.start_logits[0, span[0]], state.probs)
    # (1, heads, S, S) per layer; register query rows are 0 and 1 (prepended).
    assert torch.count_nonzero(grads[0][0, :, :2]) == 0  # layer 0's register outputs are discarded
    assert torch.count_nonzero(grads[-1][0, :, :2]) == 0  # the last layer's feed no head
    assert torch.count_nonzero(grads[0][0, :, 2:]) > 0  # the text rows do carry gradient
    result = AttentionGradient(model).attribute(item, target="start")
    assert np.isfinite(result.registers).all() and result.registers.sum() > 0  # later layers read them


# --- alignment, sanity --------------------------------------------------------------------------------------


@pytest.mark.parametrize("placement", ["prepend", "after_cls"])
def test_attributions_align_by_text_index_across_tau(tokenizer, placement: str) -> None:
    [item] = build_explain_inputs([_example()], tokenizer)
    stock = _tiny_qa(tokenizer, 0, seed=3)
    regs = _tiny_qa(tokenizer, 4, seed=3, placement=placement)
    with torch.no_grad(), register_intervention(regs, keep=[False] * 4):
        masked = regs(**item.batch()).start_logits
    torch.testing.assert_close(masked, stock(**item.batch()).start_logits, atol=1e-5, rtol=1e-5)
    span = predicted_span(stock, item)
    a = AttentionGradient(stock).attribute(item, span=span)
    b = AttentionGradient(regs).attribute(item, span=span)
    assert a.text.shape == b.text.shape == (len(item),)
    assert b.registers.shape == (4,)
    # Same weights, registers present: the text maps differ, but they describe the same tokens.
    assert agreement(a, b) > 0.3


def test_model_randomisation_changes_attributions(tokenizer) -> None:
    """Adebayo et al. 2018: a re-initialised model must not explain like the original."""
    [item] = build_explain_inputs([_example()], tokenizer)
    model = _tiny_qa(tokenizer, 2, seed=0)
    span = predicted_span(model, item)
    again = IntegratedGradients(model, n_steps=16).attribute(item, span=span)
    same = IntegratedGradients(model, n_steps=16).attribute(item, span=span)
    assert agreement(again, same) == pytest.approx(1.0)
    randomised = _tiny_qa(tokenizer, 2, seed=1)
    other = IntegratedGradients(randomised, n_steps=16).attribute(item, span=span)
    assert agreement(again, other) < 0.5


# --- comparison metrics -------------------------------------------------------------------------------------


def _attr(text: list[float], registers: list[float] = ()) -> Attribution:
    return Attribution("q", "x", "span", (0, 0), np.asarray(text, float), np.asarray(registers, float), 1.0)


def test_focus_extremes() -> None:
    even = focus(_attr([1.0] * 10))
    assert even["entropy"] == pytest.approx(1.0) and even["gini"] == pytest.approx(0.0)
    assert even["top10_mass"] == pytest.approx(0.1)
    peaked = focus(_attr([0.0] * 9 + [-5.0]))
    assert peaked["entropy"] == pytest.approx(0.0) and peaked["gini"] == pytest.approx(1.0)
    assert peaked["top10_mass"] == pytest.approx(1.0)
    assert math.isnan(focus(_attr([0.0, 0.0]))["entropy"])


def test_plausibility_agreement_and_register_share() -> None:
    item = _hand_input("bert")
    start, _end = item.gold_span
    scores = np.zeros(len(item))
    scores[start] = 3.0
    scores[0] = -1.0
    assert plausibility(_attr(list(scores)), item) == pytest.approx(0.75)
    assert agreement(_attr([1, 2, 3]), _attr([10, 20, 30])) == pytest.approx(1.0)
    assert agreement(_attr([1, 2, 3]), _attr([3, 2, 1])) == pytest.approx(-1.0)
    assert math.isnan(agreement(_attr([1, 1, 1]), _attr([1, 2, 3])))
    assert _attr([1.0, -1.0], [2.0]).register_share == pytest.approx(0.5)
    np.testing.assert_allclose(_attr([1.0, -3.0]).normalized(), [0.25, -0.75])


def test_faithfulness_perturbs_only_context_tokens() -> None:
    model = tiny_model("bert", task="qa", attn="eager")
    add_registers(model, 2)
    model.eval()
    item = _hand_input("bert")
    seen: list[torch.Tensor] = []
    hook = model.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw["input_ids"]), with_kwargs=True)
    scores = np.arange(len(item), dtype=float)
    result = faithfulness(model, item, _attr(list(scores)), replace_id=1)
    hook.remove()
    ids = seen[0]
    assert ids.shape[0] == 1 + 2 * 5
    changed = (ids != ids[0]).any(dim=0)
    assert not changed[~torch.from_numpy(item.context_mask())].any()
    # The highest-scored context token goes first in comprehensiveness, last in sufficiency.
    top = int(np.flatnonzero(item.context_mask())[-1])
    assert ids[1, top] == 1 and ids[2, top] != 1
    assert {"comprehensiveness", "sufficiency", "p_span"} <= set(result)
    assert 0.0 <= result["p_span"] <= 1.0


def test_question_bootstrap_helpers() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0.5, 0.1, 300)
    b = a + 0.05 + rng.normal(0, 0.01, 300)
    summary = mean_interval(a, rng=1)
    assert summary.ci_low < summary.mean < summary.ci_high and summary.n == 300
    diff = paired_difference(b, a, rng=1)
    assert diff.ci_low < 0.05 < diff.ci_high and diff.p_value < 0.01
    null = paired_difference(a + rng.normal(0, 0.01, 300), a, rng=1)
    assert null.p_value > 0.01 or null.ci_low < 0 < null.ci_high
    with_nan = paired_difference([0.1, np.nan, 0.3, 0.4], [0.0, 0.2, np.nan, 0.1], n_boot=200, rng=0)
    assert with_nan.n == 2
    assert mean_interval([np.nan, np.nan]).n == 0


# --- runs ---------------------------------------------------------------------------------------------------


def test_explain_config_and_sampling() -> None:
    with pytest.raises(ConfigError, match="methods"):
        ExplainConfig(methods=("ig", "shap"))
    with pytest.raises(ConfigError, match="target"):
        ExplainConfig(target="middle")
    examples = [_example(f"q{i}") for i in range(30)]
    first = select_examples(examples, 10, seed=4)
    assert [e.id for e in first] == [e.id for e in select_examples(examples, 10, seed=4)]
    assert [e.id for e in first] == sorted((e.id for e in first), key=lambda q: int(q[1:]))
    assert len(select_examples(examples, None, seed=4)) == 30


def test_explain_model_caches_and_resumes(tokenizer, tmp_path: Path, monkeypatch) -> None:
    model = _tiny_qa(tokenizer, 2)
    inputs = build_explain_inputs([_example("a"), _example("b")], tokenizer)
    config = ExplainConfig(methods=("attn-grad",), n_boot=200)
    first = explain_model(
        model, inputs, config, replace_id=tokenizer.mask_token_id, cache_dir=tmp_path, progress=False
    )
    assert len((tmp_path / "model.attn-grad.jsonl").read_text().splitlines()) == 2

    def refuse(*_args, **_kwargs):
        raise AssertionError("a cached question was recomputed")

    monkeypatch.setattr(AttentionGradient, "_attribute", refuse)
    again = explain_model(
        model, inputs, config, replace_id=tokenizer.mask_token_id, cache_dir=tmp_path, progress=False
    )
    np.testing.assert_allclose(
        again["attn-grad"][1].attribution.text, first["attn-grad"][1].attribution.text, rtol=1e-4
    )
    rows = summarize(first, again, labels=("A", "B"), n_boot=200)
    entropy = next(r for r in rows if r["method"] == "attn-grad" and r["metric"] == "entropy")
    assert entropy["delta"] == pytest.approx(0.0, abs=1e-6)
    assert any(r["metric"] == "agreement" for r in rows)


def test_every_method_of_every_model_has_its_own_cache(tokenizer, tmp_path: Path) -> None:
    """Two models and two methods in one cache folder: four files, and model B never reads model A's."""
    inputs = build_explain_inputs([_example("a"), _example("b")], tokenizer)
    config = ExplainConfig(methods=("ig", "attn-grad"), n_steps=8, n_boot=200)
    results = {}
    for label, tau in (("A", 0), ("B", 2)):
        results[label] = explain_model(
            _tiny_qa(tokenizer, tau), inputs, config, replace_id=tokenizer.mask_token_id,
            cache_dir=tmp_path, label=label, progress=False,
        )  # fmt: skip
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["A.attn-grad.jsonl", "A.ig.jsonl", "B.attn-grad.jsonl", "B.ig.jsonl"]
    a, b = results["A"]["attn-grad"][0].attribution, results["B"]["attn-grad"][0].attribution
    assert a.registers.size == 0 and b.registers.size == 2
    assert not np.allclose(a.text, b.text)


def test_output_dir_refuses_other_settings(tmp_path: Path) -> None:
    prepare_output_dir(tmp_path / "x", {"a": 1})
    prepare_output_dir(tmp_path / "x", {"a": 1})
    with pytest.raises(RegtuneError, match="other settings"):
        prepare_output_dir(tmp_path / "x", {"a": 2})
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "f").write_text("x")
    with pytest.raises(RegtuneError, match="not empty"):
        prepare_output_dir(tmp_path / "busy", {"a": 1})


# --- the command --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_pair(tokenizer, tmp_path_factory) -> tuple[Path, Path]:
    folders = []
    for tau in (0, 2):
        folder = tmp_path_factory.mktemp(f"qa-tau{tau}")
        _tiny_qa(tokenizer, tau, seed=5).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(folder)
    return folders[0], folders[1]


def test_cli_explain_compare_end_to_end(
    saved_pair, tiny_squad, tmp_path: Path, restore_hf_logging, capsys
) -> None:
    from regtune.cli.main import main

    out = tmp_path / "explain"
    argv = [
        "explain",
        "--model",
        str(saved_pair[0]),
        "--compare",
        str(saved_pair[1]),
        "--dev",
        str(tiny_squad.dev),
        "--num-examples",
        "4",
        "--n-steps",
        "4",
        "--n-boot",
        "200",
        "--output-dir",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["num_questions"] == 4
    # IG's baseline token is the tokenizer's pad, recorded with the settings (a cache keyed on them).
    assert summary["settings"]["explain"]["pad_token_id"] == load_tokenizer(str(saved_pair[0])).pad_token_id
    methods = {r["method"] for r in summary["rows"]}
    assert methods == {"ig", "attn-grad", "lrp"}
    assert any(r["metric"] == "agreement" for r in summary["rows"])
    attributions = json.loads((out / "attributions.json").read_text())
    assert set(attributions) == {"tau0", "tau2"}
    assert len(attributions["tau2"]["ig"][0]["registers"]) == 2
    for page in ("tau0.html", "tau2.html", "compare.html", "summary.png", "summary.csv"):
        assert (out / page).stat().st_size > 0
    # Same command again: everything comes from the cache; other settings are refused.
    assert main(argv) == 0
    assert main([*argv[:-3], "--n-steps", "5", "--output-dir", str(out), "--no-progress"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_cli_explain_bad_input_is_one_line(saved_pair, tmp_path: Path, restore_hf_logging, capsys) -> None:
    from regtune.cli.main import main

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code = main(
        ["explain", "--model", str(saved_pair[0]), "--dev", str(bad), "--output-dir", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("regtune: error:") and str(bad) in err and len(err.splitlines()) == 1


def test_cli_analyze_compare_end_to_end(saved_pair, tiny_squad, tmp_path: Path, restore_hf_logging) -> None:
    from regtune.cli.main import main

    out = tmp_path / "analyze"
    argv = [
        "analyze",
        "--model",
        str(saved_pair[0]),
        "--compare",
        str(saved_pair[1]),
        "--dev",
        str(tiny_squad.dev),
        "--num-examples",
        "5",
        "--output-dir",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    tau0 = json.loads((out / "tau0" / "analysis.json").read_text())
    tau2 = json.loads((out / "tau2" / "analysis.json").read_text())
    assert tau0["settings"]["num_registers"] == 0 and tau2["settings"]["num_registers"] == 2
    ablation = json.loads((out / "tau2" / "ablation.json").read_text())
    assert len(ablation["single"]) == 2 * 3 and len(ablation["all"]) == 3
    assert not (out / "tau0" / "ablation.json").exists()
    for name in ("index.html", "compare_sinks.png", "tau2/register_cosine.png", "tau0/sinks.png"):
        assert (out / name).stat().st_size > 0
    page = (out / "index.html").read_text()
    assert "Register ablation" in page and page.count("<img") >= 8
    # A rerun reuses the saved analysis instead of recomputing it.
    stamp = (out / "tau2" / "analysis.json").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / "tau2" / "analysis.json").stat().st_mtime_ns == stamp
    # Other settings in the same folder are refused, not mixed in.
    assert main([*argv[:-5], "--num-examples", "4", "--output-dir", str(out), "--no-progress"]) == 2


def test_cli_analyze_names_the_models_by_their_labels(
    saved_pair, tiny_squad, tmp_path: Path, restore_hf_logging, capsys
) -> None:
    from regtune.cli.main import main

    out = tmp_path / "analyze"
    argv = ["analyze", "--model", str(saved_pair[0]), "--compare", str(saved_pair[1])]
    argv += ["--dev", str(tiny_squad.dev), "--num-examples", "3", "--no-ablation", "--no-progress"]
    argv += ["--output-dir", str(out)]
    assert main([*argv, "--labels", "plain,registers"]) == 0
    assert (out / "plain" / "analysis.json").is_file() and (out / "registers" / "sinks.png").is_file()
    assert not (out / "tau0").exists()
    config = json.loads((out / "analyze_config.json").read_text())
    assert list(config["models"]) == ["plain", "registers"]
    for bad in ("one", "same,same", "a/b,c", "a,analyze_config.json"):
        assert main([*argv[:-1], str(tmp_path / bad.replace("/", "_")), "--labels", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("regtune: error:") and "label" in err and len(err.splitlines()) == 1


# --- review fixes -------------------------------------------------------------------------------------------


def test_unknown_tokens_in_the_question_are_question_text(tokenizer) -> None:
    context = "Ada built violins in Lisbon."
    example = QAExample(
        "u", "Where did ☃ build violins?", context, (Answer("Lisbon", context.index("Lisbon")),)
    )
    [item] = build_explain_inputs([example], tokenizer)
    unknown = item.tokens.index(tokenizer.unk_token)
    assert item.kinds[unknown] == "question"
    assert item.kinds.count("cls") == 1 and item.kinds.count("sep") == 2


def test_attention_gradient_on_a_frozen_model_keeps_its_mode(tokenizer) -> None:
    model = _tiny_qa(tokenizer, 2)
    model.requires_grad_(False)
    model.train()
    [item] = build_explain_inputs([_example()], tokenizer)
    result = AttentionGradient(model).attribute(item)
    assert result.text.sum() > 0
    assert model.training  # attribute() ran in eval mode and gave the mode back


def test_ablation_table_formats_missing_intervals() -> None:
    from regtune.explain.analyze import ablation_table

    entry = {
        "register": None,
        "mode": "zero",
        "f1": 50.0,
        "delta_f1": 0.0,
        "delta_f1_ci": [None, None],
        "p_value": None,
    }
    [row] = ablation_table("tau2", {"all": [entry], "single": []})
    assert row["95% CI"] == "[n/a, n/a]" and row["p"] is None and row["register"] == "all"


def test_cli_explain_refuses_bad_labels_and_outputs(
    saved_pair, tiny_squad, tmp_path: Path, restore_hf_logging, capsys
) -> None:
    from regtune.cli.main import main

    base = [
        "explain",
        "--model",
        str(saved_pair[0]),
        "--compare",
        str(saved_pair[1]),
        "--dev",
        str(tiny_squad.dev),
    ]
    for labels in ("a,a", "a/b,c", "only"):
        assert (
            main([*base, "--labels", labels, "--output-dir", str(tmp_path / labels.replace("/", "_"))]) == 2
        )
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main([*base, "--output-dir", str(a_file)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 4 and all(line.startswith("regtune: error:") for line in errors)
    assert "must differ" in errors[0] and "plain file name" in errors[1] and "is a file" in errors[3]


def test_cli_explain_refuses_a_changed_dev_file(
    saved_pair, tiny_squad, tmp_path: Path, restore_hf_logging, capsys
) -> None:
    import os
    import shutil

    from regtune.cli.main import main

    dev = shutil.copy(tiny_squad.dev, tmp_path / "dev.json")
    argv = [
        "explain",
        "--model",
        str(saved_pair[0]),
        "--dev",
        str(dev),
        "--method",
        "attn-grad",
        "--num-examples",
        "2",
        "--n-boot",
        "200",
        "--output-dir",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    assert main(argv) == 0
    stat = os.stat(dev)
    os.utime(dev, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # "edited"
    assert main(argv) == 2
    assert "dev_fingerprint" in capsys.readouterr().err
