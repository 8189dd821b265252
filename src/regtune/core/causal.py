"""How the one register module attaches to a decoder-only (causal) language model.

The registers are the same :class:`~regtune.core.registers.RegisterTokens` as for encoders; only the
hooks differ, because a causal model has a KV cache, position ids that ``generate()`` computes, and
decode steps that see one new token at a time.

Layout of a prefill (the first forward pass of a sequence), with R registers and N text tokens::

    sequence      [REG]*R  t_0 ... t_{N-1}         (B, R+N, H) enters the first decoder layer
    position ids  0 ... 0  p_0 ... p_{N-1}         p = what the stock model would use
    2-D mask      1 ... 1  m_0 ... m_{N-1}         m = the caller's mask (0 on padding)

* **Registers go first.** Under the causal mask every text token can then attend to every register,
  and a register sees only the registers before it. So a register's hidden states never depend on the
  input: in a decoder the registers are a learned, input-independent prefix of the KV cache, which is
  what a learned attention sink (Xiao et al. 2024) is.
* **Register position:** :data:`REGISTER_POSITION` (0), the one definition. Text tokens keep exactly the
  positions they have without registers (0..N-1 with right padding; ``cumsum(mask) - 1`` with the left
  padding ``generate()`` uses), so RoPE angles and learned position rows of the text are unchanged.
  Position 0 is where a pretrained LLM keeps its attention sink (the first token), so registers start
  where the sink already is, and every query sees them at the same relative offset as its own first
  text token, whatever the padding.
* **Inserted once.** Only a prefill (an empty or absent cache) gets the registers; the cache then holds
  R+N entries, and later decode steps add R to nothing but the 2-D mask (R leading ones) so that its
  length matches the cache. Position ids stay in text coordinates throughout, so ``generate()``'s own
  bookkeeping (mask growth, position ids, input slicing) needs no change.
* **Never in the output.** The registers are cut off ``last_hidden_state`` (B, R+N, H) -> (B, N, H)
  before the LM head, so they never enter the logits, the loss or the generated text.
  ``output_hidden_states`` keeps them, as for encoders.

Not supported, and refused where they would be silently wrong: 4-D attention masks (static or
compiled caches build them without the registers) and ``token_type_ids`` on GPT-2, which embeds them
(the other families ignore them, and so do the hooks). Assisted decoding crops the
cache in text coordinates and is not supported either.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from regtune.core.errors import RegtuneError

#: The position id every register takes (RoPE angle 0 / learned position row 0). See the module docstring.
REGISTER_POSITION = 0


def _cache_length(cache: Any) -> int:
    """Entries already in the KV cache (registers included), 0 for no cache."""
    return int(cache.get_seq_length()) if cache is not None else 0


def _bind(forward: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The base model's positional arguments as keywords: families order them differently."""
    bound = inspect.signature(forward).bind_partial(*args, **kwargs)
    out = dict(bound.arguments)
    out.update(out.pop("kwargs", {}))  # the **kwargs bucket (past_key_values, output_* flags, ...)
    return out


def _text_positions(kwargs: dict, n: int, text_past: int, device: torch.device) -> torch.Tensor:
    """(B or 1, n) position ids of the new text tokens, as the stock model would compute them."""
    if kwargs.get("position_ids") is not None:
        return kwargs["position_ids"]
    return (torch.arange(n, device=device) + text_past).unsqueeze(0)


def attach_causal(base: nn.Module, live: Callable[[nn.Module], Any]) -> None:
    """Install the prefill and output hooks on causal ``base``; ``live(base)`` gives the ``RegisterTokens``
    in use at each call (PEFT may swap in its trainable copy after the hooks are installed). The hooks
    read the model through the module they are called on, not through ``base``, so that a
    ``copy.deepcopy`` of the model uses its own registers."""
    num = live(base).num_registers
    # Whether the current forward call put the registers in: kept on the module called, so that a deep
    # copy of the model has its own flag.
    flag = "_regtune_registers_inserted"

    def prefill_or_decode(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        setattr(module, flag, False)
        if num == 0:
            return args, kwargs  # τ=0 is the stock model, bit for bit
        kw = _bind(module.forward, args, kwargs)
        cache_key = "cache" if "cache" in kw else "past_key_values"
        seen = _cache_length(kw.get(cache_key))
        mask = kw.get("attention_mask")
        if mask is not None and mask.dim() != 2:
            raise RegtuneError(
                "registers need a 2-D attention mask (batch, length); 4-D masks (static or compiled "
                "caches) are built without the registers"
            )
        if kw.get("token_type_ids") is not None:
            if "token_type_ids" in inspect.signature(module.forward).parameters:  # GPT-2 embeds them
                raise RegtuneError("token_type_ids are not supported on a causal model with registers")
            kw.pop("token_type_ids")  # a BERT-style tokenizer's segment ids, which this family ignores
        if seen == 0:
            kw = _prefill(module, live(module), kw)
            setattr(module, flag, True)
        elif seen < num:
            raise RegtuneError(f"the KV cache holds {seen} entries, fewer than the {num} registers")
        else:  # a decode step: the cache already holds the registers; only the mask must count them
            text_past = seen - num
            embeds = kw.get("inputs_embeds")
            reference = embeds if embeds is not None else kw["input_ids"]
            kw["position_ids"] = _text_positions(kw, reference.shape[1], text_past, reference.device)
            if mask is not None:
                # (B, text_past+n) -> (B, R+text_past+n)
                kw["attention_mask"] = live(module).extend_mask(mask)
        return (), kw

    def drop_registers(module: nn.Module, _args: tuple, output: Any) -> Any:
        if not getattr(module, flag, False):
            return output
        if isinstance(output, tuple):
            return (output[0][:, num:], *output[1:])
        output.last_hidden_state = output.last_hidden_state[:, num:]  # (B, R+N, H) -> (B, N, H)
        return output

    base.register_forward_pre_hook(prefill_or_decode, with_kwargs=True)
    base.register_forward_hook(drop_registers)


def _prefill(base: nn.Module, module: nn.Module, kw: dict) -> dict:
    """Put the registers in front of a sequence's first pass: embeddings, positions and mask."""
    embeds = kw.pop("inputs_embeds", None)
    if embeds is None:
        embeds = base.get_input_embeddings()(kw.pop("input_ids"))  # (B, N, H)
    kw.pop("input_ids", None)
    batch, n = embeds.shape[:2]
    text_pos = _text_positions(kw, n, 0, embeds.device).expand(batch, -1)  # (B, N)
    reg_pos = text_pos.new_full((batch, module.num_registers), REGISTER_POSITION)
    mask = kw.get("attention_mask")
    if mask is None:  # an explicit mask also keeps HF from reading the position reset as packed sequences
        mask = torch.ones(batch, n, dtype=torch.long, device=embeds.device)
    kw["inputs_embeds"] = module.insert(embeds)  # (B, N, H) -> (B, R+N, H)
    kw["position_ids"] = torch.cat([reg_pos, text_pos], dim=1)  # (B, R+N)
    kw["attention_mask"] = module.extend_mask(mask)  # (B, N) -> (B, R+N)
    return kw
