"""The prompt of generative QA: one documented template, and what happens when a context is too long.

Template (the user turn of the tokenizer's chat template when it has one, e.g. SmolLM2-Instruct's
``<|im_start|>user ... <|im_end|>``, then its generation prompt; a template that adds a default system
turn, as SmolLM2's does, keeps it)::

    Answer the question with a short span copied from the passage.

    Passage: {context}

    Question: {question}

Without a chat template the same text is followed by ``\\n\\nAnswer:``, and the answer by a space. The
target is the answer text then the end-of-sequence token, so a trained model learns to stop.

**Long contexts.** A prompt plus room for the answer must fit ``max_length`` tokens. When it does not,
the *context* is cut at a token boundary from its end (the instruction and the question are always
kept), and the prompt is counted as truncated. Room for the answer is ``max_new_tokens`` at evaluation
and the answer's own length (plus EOS) in training. A training question whose first reference answer
no longer lies inside the kept context is left out (a target the prompt cannot support teaches the
model to invent); the count goes into the run's log and ``metrics.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from regtune.core.errors import RegtuneError

INSTRUCTION = "Answer the question with a short span copied from the passage."
#: What follows the user text when the tokenizer has no chat template.
PLAIN_ANSWER_CUE = "\n\nAnswer:"


def user_text(question: str, context: str) -> str:
    return f"{INSTRUCTION}\n\nPassage: {context}\n\nQuestion: {question}"


def uses_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_text(tokenizer: PreTrainedTokenizerBase, question: str, context: str) -> str:
    """The whole prompt as text, ending where the answer starts."""
    text = user_text(question, context)
    if uses_chat_template(tokenizer):
        messages = [{"role": "user", "content": text}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + PLAIN_ANSWER_CUE


def answer_text(tokenizer: PreTrainedTokenizerBase, answer: str) -> str:
    """The target as text: the answer, then EOS (a leading space after the plain ``Answer:`` cue)."""
    if tokenizer.eos_token is None:
        raise RegtuneError("generative QA needs a tokenizer with an end-of-sequence token")
    lead = "" if uses_chat_template(tokenizer) else " "
    return f"{lead}{answer}{tokenizer.eos_token}"


def token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    # Chat templates write their own BOS/role tokens into the text, so no special tokens are added here.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@dataclass(frozen=True)
class Prompt:
    """One tokenised prompt: its ids, how many context characters it kept, and whether it cut any."""

    input_ids: list[int]
    context_chars: int
    truncated: bool


def build_prompt(tokenizer: PreTrainedTokenizerBase, question: str, context: str, *, budget: int) -> Prompt:
    """The prompt's token ids in at most ``budget`` tokens, cutting the context's end if needed.

    Raises:
        RegtuneError: when even an empty context leaves no room (the question alone is too long).
    """
    ids = token_ids(tokenizer, prompt_text(tokenizer, question, context))
    if len(ids) <= budget:
        return Prompt(ids, len(context), truncated=False)
    overhead = len(token_ids(tokenizer, prompt_text(tokenizer, question, "")))
    if overhead >= budget:
        raise RegtuneError(
            f"the prompt without its passage takes {overhead} tokens, no fewer than the {budget} left for it "
            "(raise --max-length or shorten the question)"
        )
    offsets = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    keep = budget - overhead
    # Tokens can merge across the cut, so the kept count is checked on the real prompt and lowered if needed.
    while keep > 0:
        chars = offsets[keep - 1][1]
        ids = token_ids(tokenizer, prompt_text(tokenizer, question, context[:chars]))
        if len(ids) <= budget:
            return Prompt(ids, chars, truncated=True)
        keep -= len(ids) - budget
    ids = token_ids(tokenizer, prompt_text(tokenizer, question, ""))
    return Prompt(ids, 0, truncated=True)
