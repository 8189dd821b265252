"""Slow: every explanation method and the artifact analysis on the bundled MiniLM and real TyDi en questions.

The QA head is untrained (fine-tuning takes minutes), but the encoder is the real pre-trained MiniLM, so
this checks what tiny random models cannot: completeness and conservation at real depth and scale, and
that a trained encoder explains unlike a randomised one (Adebayo et al. 2018's cascading randomisation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import squad_slice
from regtune.core.hub import load_tokenizer, resolve_model_name
from regtune.core.registers import add_registers
from regtune.explain.artifacts import analyze_model
from regtune.explain.lrp import LRP
from regtune.explain.methods import AttentionGradient, IntegratedGradients
from regtune.explain.metrics import agreement
from regtune.tasks.qa.data import read_squad
from regtune.tasks.qa.explain import build_explain_inputs, predicted_span

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _minilm_qa(num_registers: int):
    from transformers import AutoModelForQuestionAnswering

    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_pretrained(resolve_model_name("minilm-l6"))
    return add_registers(model, num_registers).eval()


@pytest.fixture(scope="module")
def real_inputs(data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    dev = squad_slice(data_dir / "en/dev.json", tmp_path_factory.mktemp("dev") / "dev.json", articles=3)
    tokenizer = load_tokenizer("minilm-l6")
    return build_explain_inputs(read_squad(dev).examples, tokenizer, max_length=192, doc_stride=64)


def test_methods_on_minilm_with_registers(real_inputs) -> None:
    model = _minilm_qa(4)
    for item in real_inputs:
        span = predicted_span(model, item)
        ig = IntegratedGradients(model, n_steps=50, register_baseline="zero").attribute(item, span=span)
        assert ig.convergence_delta < 0.05
        assert ig.registers.shape == (4,) and ig.register_share > 0
        cp = LRP(model, rule="cp").attribute(item, span=span)
        total = cp.buckets["text"] + cp.buckets["special"] + cp.buckets["registers"] + cp.buckets["leak"]
        assert total == pytest.approx(cp.output, rel=1e-4, abs=1e-4)
        grad = AttentionGradient(model).attribute(item, span=span)
        assert np.isfinite(grad.text).all() and grad.text.sum() > 0


def test_randomised_encoder_explains_differently(real_inputs) -> None:
    trained = _minilm_qa(0)
    randomised = _minilm_qa(0)
    # Cascading randomisation from the top: the last three layers get fresh weights.
    for layer in randomised.bert.encoder.layer[3:]:
        for module in layer.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=0.02)
    correlations = []
    for item in real_inputs:
        span = predicted_span(trained, item)
        a = IntegratedGradients(trained, n_steps=32).attribute(item, span=span)
        b = IntegratedGradients(randomised, n_steps=32).attribute(item, span=span)
        correlations.append(agreement(a, b))
    assert float(np.mean(correlations)) < 0.6


def test_artifact_analysis_on_minilm(real_inputs) -> None:
    plain = analyze_model(_minilm_qa(0), real_inputs).to_dict()
    regs = analyze_model(_minilm_qa(4), real_inputs).to_dict()
    assert plain["settings"]["num_registers"] == 0 and regs["settings"]["num_registers"] == 4
    for data in (plain, regs):
        masses = np.array([data["attention"]["mass"][c] for c in data["settings"]["categories"]], dtype=float)
        np.testing.assert_allclose(np.nansum(masses, axis=0), 1.0, atol=1e-4)
    # Pre-trained BERT-style encoders pile attention onto special tokens (Clark et al. 2019); in this
    # MiniLM it is [CLS] (about 40x its uniform share in layers 2-5), more than [SEP].
    cls_sink = np.array(plain["attention"]["per_token"]["cls"], dtype=float)
    sep_sink = np.array(plain["attention"]["per_token"]["sep"], dtype=float)
    assert np.nanmax(cls_sink) > 10.0 and np.nanmax(cls_sink) > np.nanmax(sep_sink)
