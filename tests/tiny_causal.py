"""Tiny random decoder-only LMs of every supported causal family, for tests.

Each model is built from a config (no download): hidden 32, 2 layers, 4 attention heads (2 key/value
heads where the family has grouped-query attention), intermediate 64, vocabulary 99, weight std 0.1
so that attention is far from uniform. Ids 0, 1, 2 are pad, eos and bos.

Usage::

    from tiny_causal import FAMILIES, tiny_lm, tiny_prompts

    model = tiny_lm("llama", attn="sdpa")
    batch = tiny_prompts(left_pad=True)
    logits = model(**batch).logits  # (3, 7, 99)
"""

from __future__ import annotations

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

#: Every causal family the register mechanism supports: RoPE (llama, mistral, qwen2, qwen3) and learned
#: absolute positions (gpt2).
FAMILIES = ("gpt2", "llama", "mistral", "qwen2", "qwen3")

VOCAB = 99
HIDDEN = 32
LAYERS = 2
HEADS = 4
PAD, EOS, BOS = 0, 1, 2
FIRST_TEXT_ID = 3

_CLASSES: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel]]] = {
    "gpt2": (GPT2Config, GPT2LMHeadModel),
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
}


def tiny_lm_config(family: str, attn: str = "eager") -> PretrainedConfig:
    """The config of :func:`tiny_lm`."""
    config_cls = _CLASSES[family][0]
    special = {"pad_token_id": PAD, "eos_token_id": EOS, "bos_token_id": BOS}
    if family == "gpt2":
        return config_cls(
            vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=2 * HIDDEN,
            n_positions=128, initializer_range=0.1, attn_implementation=attn, **special,
        )  # fmt: skip
    return config_cls(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        num_key_value_heads=2, intermediate_size=2 * HIDDEN, max_position_embeddings=128,
        initializer_range=0.1, tie_word_embeddings=False, attn_implementation=attn, **special,
    )  # fmt: skip


def tiny_lm(family: str, attn: str = "eager", seed: int = 0) -> PreTrainedModel:
    """A tiny random ``*ForCausalLM`` of ``family`` in eval mode; the same seed gives the same weights."""
    if family not in _CLASSES:
        raise ValueError(f"unknown family {family!r}; known: {FAMILIES}")
    torch.manual_seed(seed)
    model = _CLASSES[family][1](tiny_lm_config(family, attn))
    assert model.config._attn_implementation == attn, model.config._attn_implementation
    return model.eval()


def tiny_prompts(lengths: tuple[int, ...] = (7, 4, 5), left_pad: bool = True, seed: int = 0) -> dict:
    """``input_ids`` and ``attention_mask`` (len(lengths), max(lengths)) of random prompts, padded with
    PAD on the left (as for ``generate()``) or on the right; every prompt starts with BOS."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), PAD)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        text = torch.randint(FIRST_TEXT_ID, VOCAB, (n,), generator=generator)
        text[0] = BOS
        span = slice(width - n, width) if left_pad else slice(0, n)
        ids[row, span], mask[row, span] = text, 1
    return {"input_ids": ids, "attention_mask": mask}
