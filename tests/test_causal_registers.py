"""Registers on tiny random decoder-only LMs of every supported family, with sdpa and eager attention.

Each claim of ``regtune.core.causal``'s docstring is checked against the stock model with the same
weights: τ=0 is the stock model; the KV cache, a cache-free run and a full recompute agree; left-padded
batches agree with prompts alone; registers go in once per sequence; text positions are unchanged;
registers never reach the logits but do get gradients; the saved model loads back identical.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from transformers import OPTConfig, OPTForCausalLM, PreTrainedModel

from regtune.core.causal import REGISTER_POSITION
from regtune.core.errors import ConfigError, RegtuneError
from regtune.core.registers import (
    add_registers,
    get_register_module,
    load_model,
    register_intervention,
)
from tiny_causal import FAMILIES, HIDDEN, PAD, VOCAB, tiny_lm, tiny_prompts

ATTNS = ("eager", "sdpa")
TAU = 4
NEW_TOKENS = 6
#: Two equivalent float computations differ by ~1e-7 here; registers move logits by ~1e-1.
TOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models gain nothing from threads; see test_registers.py
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(1234)


def _pair(family: str, attn: str, tau: int = TAU) -> tuple[PreTrainedModel, PreTrainedModel]:
    """(stock model, the same weights with ``tau`` registers)."""
    return tiny_lm(family, attn), add_registers(tiny_lm(family, attn), tau)


def _generate(model: PreTrainedModel, batch: dict, **kwargs) -> torch.Tensor:
    """Greedy continuation tokens only, (B, NEW_TOKENS); no early stop, so every row has all of them."""
    with torch.no_grad():
        out = model.generate(
            **batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
            pad_token_id=PAD, **kwargs,
        )  # fmt: skip
    return out[:, batch["input_ids"].shape[1] :]


def _logits(model: PreTrainedModel, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def _real(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    """The logits of real (non-pad) tokens, flattened to (tokens, V)."""
    return logits[batch["attention_mask"].bool()]


families = pytest.mark.parametrize("family", FAMILIES)
attns = pytest.mark.parametrize("attn", ATTNS)


@families
@attns
@pytest.mark.parametrize("left_pad", [True, False])
def test_zero_registers_is_the_stock_model(family: str, attn: str, left_pad: bool) -> None:
    stock, zero = _pair(family, attn, tau=0)
    batch = tiny_prompts(left_pad=left_pad)
    assert (_logits(zero, batch) - _logits(stock, batch)).abs().max() <= TOL
    if left_pad:
        assert torch.equal(_generate(zero, batch), _generate(stock, batch))


@families
@attns
def test_registers_change_logits_but_never_their_shape(family: str, attn: str) -> None:
    stock, model = _pair(family, attn)
    batch = tiny_prompts(left_pad=False)
    logits = _logits(model, batch)
    assert logits.shape == (3, 7, VOCAB)  # text tokens only: no register ever gets a logit
    assert (_real(logits, batch) - _real(_logits(stock, batch), batch)).abs().max() > 1e-3


@families
@attns
def test_masked_out_registers_give_the_stock_model(family: str, attn: str) -> None:
    # With every register masked out of attention, only the text's positions and mask remain: equal
    # logits prove that text tokens keep exactly their stock positions, with either padding side.
    stock, model = _pair(family, attn)
    for left_pad in (True, False):
        batch = tiny_prompts(left_pad=left_pad)
        with register_intervention(model, keep=[False] * TAU):
            masked = _logits(model, batch)
            tokens = _generate(model, batch) if left_pad else None
        assert (_real(masked, batch) - _real(_logits(stock, batch), batch)).abs().max() <= TOL
        if left_pad:
            assert torch.equal(tokens, _generate(stock, batch))


def _recompute(model: PreTrainedModel, batch: dict) -> torch.Tensor:
    """Greedy decoding by running the whole sequence again at every step, without any cache."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    for _ in range(NEW_TOKENS):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # generate()'s rule for left padding
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    return ids[:, batch["input_ids"].shape[1] :]


@families
@attns
def test_cache_no_cache_and_recompute_agree(family: str, attn: str) -> None:
    _, model = _pair(family, attn)
    batch = tiny_prompts(left_pad=True)
    cached = _generate(model, batch)
    assert torch.equal(cached, _generate(model, batch, use_cache=False))
    assert torch.equal(cached, _recompute(model, batch))


@families
@attns
def test_left_padded_batch_matches_each_prompt_alone(family: str, attn: str) -> None:
    _, model = _pair(family, attn)
    batch = tiny_prompts(left_pad=True)
    together = _generate(model, batch)
    for row in range(batch["input_ids"].shape[0]):
        real = batch["attention_mask"][row].bool()
        alone = {k: v[row : row + 1, real] for k, v in batch.items()}
        assert torch.equal(together[row : row + 1], _generate(model, alone)), f"prompt {row}"


@families
def test_registers_go_in_once_per_sequence(family: str) -> None:
    _, model = _pair(family, "sdpa")
    module = get_register_module(model)
    calls = []
    original = module.insert
    module.insert = lambda hidden: calls.append(hidden.shape[1]) or original(hidden)
    batch = tiny_prompts(left_pad=True)
    with torch.no_grad():
        out = model.generate(
            **batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
            pad_token_id=PAD, return_dict_in_generate=True,
        )  # fmt: skip
    assert calls == [batch["input_ids"].shape[1]]  # the prefill only, never a decode step
    cache = out.past_key_values
    # The cache holds R + prompt + all generated tokens but the last (which is never fed back).
    assert cache.get_seq_length() == TAU + batch["input_ids"].shape[1] + NEW_TOKENS - 1
    calls.clear()
    _generate(model, batch, use_cache=False)  # no cache: every step is a fresh prefill
    assert len(calls) == NEW_TOKENS


@families
def test_registers_take_the_register_position(family: str) -> None:
    _, model = _pair(family, "eager")
    seen = {}
    first_layer = model.base_model.h[0] if family == "gpt2" else model.base_model.layers[0]
    first_layer.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.update(hidden=args[0] if args else kwargs["hidden_states"]),
        with_kwargs=True,
    )
    captured = {}
    model.base_model.register_forward_pre_hook(lambda _m, a, kw: captured.update(kw), with_kwargs=True)
    batch = tiny_prompts(left_pad=True)
    n = batch["input_ids"].shape[1]
    _logits(model, batch)
    assert seen["hidden"].shape[1] == TAU + n  # (B, R+N, H) enters layer 0
    # The hooks run in registration order, so this one saw the kwargs the register hook rewrote.
    positions = captured["position_ids"]  # (B, R+N)
    assert (positions[:, :TAU] == REGISTER_POSITION).all()
    # Without position ids the text gets what the stock model computes then: 0..N-1, pads included.
    assert torch.equal(positions[:, TAU:], torch.arange(n).expand(3, -1))
    given = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # generate()'s left-padding rule
    _logits(model, {**batch, "position_ids": given})
    assert torch.equal(captured["position_ids"][:, TAU:], given)
    assert (captured["position_ids"][:, :TAU] == REGISTER_POSITION).all()


@families
@attns
def test_gradients_reach_every_register_and_the_loss_is_text_only(family: str, attn: str) -> None:
    _, model = _pair(family, attn)
    model.train()
    batch = tiny_prompts(left_pad=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    out = model(**batch, labels=labels)
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1))
    assert torch.allclose(out.loss, expected, atol=1e-6)
    out.loss.backward()
    grad = get_register_module(model).tokens.grad
    assert grad is not None and grad.shape == (TAU, HIDDEN)
    assert (grad.abs().sum(-1) > 0).all()  # every register, not just the last


@families
def test_save_and_load_round_trip(family: str, tmp_path) -> None:
    _, model = _pair(family, "sdpa")
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path).eval()
    assert torch.equal(get_register_module(loaded).tokens, get_register_module(model).tokens)
    batch = tiny_prompts(left_pad=True)
    assert (_real(_logits(loaded, batch), batch) - _real(_logits(model, batch), batch)).abs().max() <= TOL
    assert torch.equal(_generate(loaded, batch), _generate(model, batch))


def test_unsupported_families_are_refused_with_the_list() -> None:
    config = OPTConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=1, ffn_dim=64,
                       num_attention_heads=4, word_embed_proj_dim=HIDDEN)  # fmt: skip
    with pytest.raises(RegtuneError, match=r"model_type 'opt'.*llama, mistral, qwen2"):
        add_registers(OPTForCausalLM(config), TAU)


def test_causal_registers_must_come_first() -> None:
    with pytest.raises(ConfigError, match="placement must be 'prepend'"):
        add_registers(tiny_lm("llama"), TAU, placement="after_cls")


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_vocab_init_copies_token_embeddings(family: str) -> None:
    model = add_registers(tiny_lm(family), TAU, init="vocab")
    tokens = get_register_module(model).tokens
    table = model.get_input_embeddings().weight
    # Each register is one row of the token embedding table, and no two are the same row.
    matches = [(table - row).abs().max(-1).values.argmin().item() for row in tokens]
    assert all((table[i] - row).abs().max() == 0 for i, row in zip(matches, tokens, strict=True))
    assert len(set(matches)) == TAU


@families
@pytest.mark.parametrize("left_pad", [True, False])
def test_classification_pools_the_last_real_text_token(family: str, left_pad: bool) -> None:
    # *ForSequenceClassification of a causal LM reads the last non-pad token of input_ids; the registers
    # are cut off before its head, so that index is the text's own, never a register or a pad.
    from transformers import AutoModelForSequenceClassification

    from tiny_causal import tiny_lm_config

    config = tiny_lm_config(family, "sdpa")
    config.num_labels = 3
    torch.manual_seed(0)
    model = add_registers(AutoModelForSequenceClassification.from_config(config).eval(), TAU)
    batch = tiny_prompts(left_pad=left_pad)
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    last_layer = out.hidden_states[-1][:, TAU:]  # (B, N, H): text part of the final (normed) states
    mask = batch["attention_mask"]
    width = mask.shape[1]
    last = torch.full((3,), width - 1) if left_pad else width - 1 - mask.flip(-1).argmax(-1)
    expected = model.score(last_layer[torch.arange(3), last])  # (B, 3)
    assert (out.logits - expected).abs().max() <= TOL


@families
def test_a_deep_copy_of_a_causal_model_uses_its_own_registers(family: str) -> None:
    import copy

    model = add_registers(tiny_lm(family), TAU, init="orthogonal").eval()
    twin = copy.deepcopy(model)
    batch = tiny_prompts()
    before = _logits(model, batch)
    with torch.no_grad():
        get_register_module(twin).tokens.zero_()
    assert not torch.allclose(_real(_logits(twin, batch), batch), _real(before, batch), atol=TOL)
    torch.testing.assert_close(_logits(model, batch), before, atol=0, rtol=0)
