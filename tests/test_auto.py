"""Saved register models carry a ``regtune_<family>`` model type: with ``import regtune`` the Auto classes
load them with their registers; without it, plain transformers refuses them loudly (regtune.core.auto)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
)

from regtune.core.registers import add_registers, get_register_module, load_model
from tiny_causal import FAMILIES, tiny_lm, tiny_prompts
from tiny_models import ARCHS, tiny_batch, tiny_model

TAU = 3


def _saved(model, folder: Path) -> dict:
    model.save_pretrained(folder)
    return json.loads((folder / "config.json").read_text())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(
    ("task", "auto"), [("qa", AutoModelForQuestionAnswering), ("cls", AutoModelForSequenceClassification)]
)
def test_auto_classes_load_an_encoder_with_its_registers(arch: str, task: str, auto, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = add_registers(tiny_model(arch, task), TAU).eval()
    config = _saved(model, tmp_path)
    assert config["model_type"] == "regtune_" + arch.replace("-", "_")
    loaded = auto.from_pretrained(tmp_path).eval()
    assert torch.equal(get_register_module(loaded).tokens, get_register_module(model).tokens)
    batch = tiny_batch(arch)
    with torch.no_grad():
        out, ref = loaded(**batch), model(**batch)
    first = "start_logits" if task == "qa" else "logits"
    assert (getattr(out, first) - getattr(ref, first)).abs().max() <= 1e-5
    bare = AutoModel.from_pretrained(tmp_path)  # the base model alone keeps its registers too
    assert get_register_module(bare).num_registers == TAU


@pytest.mark.parametrize("family", FAMILIES)
def test_auto_classes_load_a_causal_lm_with_its_registers(family: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = add_registers(tiny_lm(family), TAU).eval()
    assert _saved(model, tmp_path)["model_type"] == f"regtune_{family}"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    batch = tiny_prompts(left_pad=True)
    greedy = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        assert torch.equal(loaded.generate(**batch, **greedy), model.generate(**batch, **greedy))
    assert torch.equal(get_register_module(load_model(tmp_path)).tokens, get_register_module(model).tokens)


def test_zero_registers_save_the_stock_type(tmp_path: Path) -> None:
    assert _saved(add_registers(tiny_model("bert", "qa"), 0), tmp_path)["model_type"] == "bert"


def test_plain_transformers_refuses_a_register_model_loudly(tmp_path: Path) -> None:
    _saved(add_registers(tiny_model("bert", "qa"), TAU), tmp_path)
    code = (
        f"from transformers import AutoModelForQuestionAnswering as A; A.from_pretrained({str(tmp_path)!r})"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "regtune_bert" in result.stderr  # never a silent stock model


def test_folders_saved_before_the_regtune_type_still_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = add_registers(tiny_model("bert", "qa"), TAU)
    config = _saved(model, tmp_path)
    config["model_type"] = "bert"  # the format of earlier releases
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert torch.equal(get_register_module(load_model(tmp_path)).tokens, get_register_module(model).tokens)
