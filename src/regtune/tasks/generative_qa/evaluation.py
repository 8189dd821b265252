"""Generative QA inference: left-padded batches, greedy decoding with a cap, official SQuAD v1.1 EM/F1."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from regtune.core.batching import length_sorted_batches
from regtune.core.errors import ConfigError
from regtune.core.precision import autocast_context, check_precision
from regtune.tasks.base import Evaluation
from regtune.tasks.generative_qa.features import pad_id
from regtune.tasks.generative_qa.prompt import Prompt, build_prompt
from regtune.tasks.qa.data import QAExample
from regtune.tasks.qa.metrics import references_from_examples, squad_scores

if TYPE_CHECKING:
    from regtune.training.config import TrainConfig

#: Key in the saved model config holding the settings inference must reproduce.
SETTINGS_KEY = "regtune_generative_qa"


@dataclass
class GenerativeQASettings:
    """Prompt length and decoding settings; travel with the saved model."""

    max_length: int = 512
    max_new_tokens: int = 32
    #: 'auto', 'bf16' or 'fp32' (see regtune.core.precision); resolved on the device that runs inference.
    precision: str = "auto"

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if not 0 < self.max_new_tokens < self.max_length:
            raise ConfigError(
                f"max_new_tokens must be in (0, max_length={self.max_length}), got {self.max_new_tokens}"
            )

    @classmethod
    def from_train_config(cls, config: TrainConfig) -> GenerativeQASettings:
        return cls(config.max_length, config.max_new_tokens, config.precision)

    @classmethod
    def from_model(cls, model: PreTrainedModel) -> GenerativeQASettings:
        return cls(**(getattr(model.config, SETTINGS_KEY, None) or {}))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def first_line(text: str) -> str:
    """The answer part of a generation: its first non-empty line, stripped (models may ramble on)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _left_padded(prompts: Sequence[Prompt], pad: int) -> dict[str, torch.Tensor]:
    """(B, L) ids and mask, padded on the left so that every prompt ends where generation starts."""
    width = max(len(p.input_ids) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        n = len(prompt.input_ids)
        ids[i, width - n :] = torch.tensor(prompt.input_ids)
        mask[i, width - n :] = 1
    return {"input_ids": ids, "attention_mask": mask}


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[QAExample],
    settings: GenerativeQASettings,
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[list[str], list[Prompt]]:
    """The greedy answer to each example, in order, and each example's prompt (truncation recorded)."""
    model.eval()
    device = next(model.parameters()).device
    budget = settings.max_length - settings.max_new_tokens
    prompts = [build_prompt(tokenizer, e.question, e.context, budget=budget) for e in examples]
    pad = pad_id(tokenizer)
    answers = [""] * len(examples)
    batches = length_sorted_batches([len(p.input_ids) for p in prompts], batch_size)
    for indices in tqdm(batches, desc="generate", unit="batch", disable=not progress, leave=False):
        batch = _left_padded([prompts[i] for i in indices], pad)
        with autocast_context(device, settings.precision):
            out = model.generate(
                **{k: v.to(device) for k, v in batch.items()},
                max_new_tokens=settings.max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
        new = out[:, batch["input_ids"].shape[1] :]  # (B, <= max_new_tokens): the continuation only
        for i, text in zip(indices, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
            answers[i] = first_line(text)
    return answers, prompts


def evaluate_generative_qa(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[QAExample],
    settings: GenerativeQASettings,
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> Evaluation:
    """EM and F1 (0..100) of the generated answers against every reference, the official v1.1 way."""
    began = time.perf_counter()
    answers, prompts = generate_answers(
        model, tokenizer, examples, settings, batch_size=batch_size, progress=progress
    )
    predictions = {e.id: a for e, a in zip(examples, answers, strict=True)}
    result = squad_scores(predictions, references_from_examples(examples))
    metrics = {
        **result.to_dict(),
        "num_truncated_prompts": sum(p.truncated for p in prompts),
        "max_new_tokens": settings.max_new_tokens,
        "eval_seconds": round(time.perf_counter() - began, 3),
    }
    per_example = {qid: {"exact_match": em, "f1": f1} for qid, (em, f1) in result.per_question.items()}
    return Evaluation(metrics=metrics, per_example=per_example, predictions=predictions)
