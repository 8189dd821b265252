"""Registers under the real ``peft`` library's LoRA, in either order: registers first, then
``get_peft_model`` with ``modules_to_save=["registers"]``; or LoRA first, then ``add_registers`` on the
``PeftModel``, which lists the registers in ``modules_to_save`` itself. PEFT trains and saves a copy of
the register module; the register hooks look the module up at every call, so that copy is the one in use."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from regtune.core.registers import add_registers, get_register_module, register_parameters
from tiny_causal import tiny_lm, tiny_prompts
from tiny_models import tiny_batch, tiny_model

TAU = 4
#: (builder, batch, LoRA target modules) for a causal LM and an encoder QA model.
CASES = {
    "llama": (lambda: tiny_lm("llama"), lambda: tiny_prompts(left_pad=False), ["q_proj", "v_proj"]),
    "bert-qa": (lambda: tiny_model("bert", "qa"), lambda: tiny_batch("bert"), ["query", "value"]),
}


def _loss(model, batch: dict) -> torch.Tensor:
    out = model(**batch)
    return out.logits.float().pow(2).mean() if hasattr(out, "logits") else out.start_logits.pow(2).mean()


def _outputs(model, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        out = model(**batch)
    return out.logits if hasattr(out, "logits") else torch.stack([out.start_logits, out.end_logits])


@pytest.mark.parametrize("order", ["registers-first", "lora-first"])
@pytest.mark.parametrize("case", list(CASES))
def test_lora_and_registers_train_save_and_load(case: str, order: str, tmp_path: Path) -> None:
    build, make_batch, targets = CASES[case]
    torch.manual_seed(0)
    if order == "registers-first":
        model = add_registers(build(), TAU)
        peft = get_peft_model(model, LoraConfig(r=4, target_modules=targets, modules_to_save=["registers"]))
    else:
        peft = add_registers(get_peft_model(build(), LoraConfig(r=4, target_modules=targets)), TAU)
        assert "registers" in peft.peft_config["default"].modules_to_save
    registers = get_register_module(peft)
    assert registers.tokens.requires_grad
    assert register_parameters(peft) == [registers.tokens]  # what regtune's optimizer groups will see
    start = registers.tokens.detach().clone()
    lora_b = [p for n, p in peft.named_parameters() if "lora_B" in n]
    batch = make_batch()
    optimizer = torch.optim.SGD([p for p in peft.parameters() if p.requires_grad], lr=0.5)
    peft.train()
    for _ in range(3):
        optimizer.zero_grad()
        _loss(peft, batch).backward()
        optimizer.step()
    peft.eval()
    assert (registers.tokens - start).abs().max() > 1e-4  # the registers in use trained
    assert all(p.abs().max() > 0 for p in lora_b)  # LoRA's B starts at zero: non-zero means it moved
    trained = _outputs(peft, batch)

    peft.save_pretrained(tmp_path)
    torch.manual_seed(123)  # a fresh base whose own register init differs from the trained values
    fresh = add_registers(build(), TAU)
    fresh_tokens = get_register_module(fresh).tokens.detach().clone()
    loaded = PeftModel.from_pretrained(fresh, tmp_path).eval()
    assert torch.equal(get_register_module(loaded).tokens, registers.tokens)
    assert (_outputs(loaded, batch) - trained).abs().max() <= 1e-6
    with loaded.disable_adapter():  # no adapter: the base's own registers are in use again
        assert torch.equal(get_register_module(loaded).tokens, fresh_tokens)
        assert (_outputs(loaded, batch) - trained).abs().max() > 1e-4


def test_registers_frozen_by_peft_are_not_dropped_silently() -> None:
    from regtune.core.errors import RegtuneWarning
    from regtune.training.trainer import optimizer_param_groups

    # Registers first, but not listed in modules_to_save: PEFT freezes them.
    peft = get_peft_model(add_registers(tiny_lm("llama"), TAU), LoraConfig(r=4, target_modules=["q_proj"]))
    assert not get_register_module(peft).tokens.requires_grad
    with pytest.warns(RegtuneWarning, match="registers are frozen .* modules_to_save"):
        optimizer_param_groups(peft, lr=1e-3, weight_decay=0.0)
