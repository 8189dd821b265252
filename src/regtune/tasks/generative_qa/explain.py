"""Explained inputs of generative QA: the prompt, with each token's kind, and the first answer token.

Every model of one base sees the same prompt tokens (the prompt is built with the model's saved
``max_length`` and ``max_new_tokens``). What is explained is the **log-probability of the first answer
token the model generates** (greedy), read at the prompt's last position. The first token is chosen
over the whole answer because it is one output of one forward pass, like QA's start logit: attributing
the whole answer would need one backward pass per generated token, each conditioned on the model's own
earlier tokens, which differ between the models being compared.

Token kinds (:data:`regtune.tasks.inputs.TokenKind`):

* ``cls``: the first token. In a decoder it is the position every later token can see, where pretrained
  LLMs keep their attention sink and massive activations (Xiao et al. 2024; Sun et al. 2024);
* ``sep``: the tokenizer's other special tokens (chat-turn markers such as ``<|im_end|>``);
* ``context``: the passage (the only tokens faithfulness masks; offsets are into the passage);
* ``question``: every other prompt token: the instruction, a chat template's system turn, the question.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from regtune.tasks.generative_qa.prompt import build_prompt, prompt_text, user_text
from regtune.tasks.inputs import ExplainInput, SourceSpan, TokenKind, structural_token_ids
from regtune.tasks.qa.data import QAExample
from regtune.tasks.qa.explain import token_span

#: What a generative-QA attribution explains: the first generated answer token's log-probability.
TARGETS: tuple[str, ...] = ("first_token",)


def _passage_range(text: str, question: str, context: str) -> range:
    """Character range of the passage inside the full prompt ``text``."""
    user = user_text(question, context)
    start = text.index(user) + user.index("Passage: ") + len("Passage: ")  # the template wraps it unchanged
    return range(start, start + len(context))


def build_explain_inputs(
    examples: Sequence[QAExample], tokenizer: PreTrainedTokenizerBase, *, max_length: int, max_new_tokens: int
) -> list[ExplainInput]:
    """One :class:`ExplainInput` per question: its prompt as generation would see it."""
    special = structural_token_ids(tokenizer) | set(tokenizer.all_special_ids)
    inputs = []
    for example in examples:
        prompt = build_prompt(
            tokenizer, example.question, example.context, budget=max_length - max_new_tokens
        )
        context = example.context[: prompt.context_chars]
        text = prompt_text(tokenizer, example.question, context)
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if list(encoded["input_ids"]) != prompt.input_ids:  # tokenising the same text twice must agree
            raise RuntimeError(f"question {example.id}: the prompt tokenises differently with offsets")
        passage = _passage_range(text, example.question, context)
        kinds: list[TokenKind] = []
        offsets: list[tuple[int, int] | None] = []
        spans: list[SourceSpan | None] = []  # into the whole prompt: instruction, question and passage
        for position, (token, (start, end)) in enumerate(
            zip(prompt.input_ids, encoded["offset_mapping"], strict=True)
        ):
            inside = start < passage.stop and end > passage.start
            offsets.append(
                (max(start, passage.start) - passage.start, min(end, passage.stop) - passage.start)
                if inside
                else None
            )
            if position == 0:
                kinds.append("cls")
            elif inside:
                kinds.append("context")
            elif token in special:
                kinds.append("sep")
            else:
                kinds.append("question")
            spans.append(None if kinds[-1] in ("cls", "sep") else (0, start, end))
        span = None
        if example.answers:
            answer = example.answers[0]
            span = token_span(offsets, answer.start, answer.start + len(answer.text))
        inputs.append(
            ExplainInput(
                example=example,
                input_ids=tuple(prompt.input_ids),
                token_type_ids=None,
                tokens=tuple(tokenizer.convert_ids_to_tokens(prompt.input_ids)),
                kinds=tuple(kinds),
                offsets=tuple(offsets),
                gold_span=span,
                sources=(text,),
                source_spans=tuple(spans),
            )
        )
    return inputs


def last_position(item: ExplainInput) -> tuple[int, int]:
    """The prompt's last position, where the first answer token is predicted, as a one-token span."""
    return (len(item) - 1, len(item) - 1)


@torch.no_grad()
def first_answer_token(model: PreTrainedModel, item: ExplainInput) -> int:
    """The token id greedy decoding generates first after this prompt."""
    device = next(model.parameters()).device
    return int(model(**item.batch(device)).logits[0, -1].argmax())


def token_log_probability(out: object, span: tuple[int, int], token: int) -> torch.Tensor:
    """log p(token) at the span's position, per row: logits (B, N, V) -> (B,)."""
    return torch.log_softmax(out.logits[:, span[0]].float(), dim=-1)[:, token]
