"""What a run's metrics.json records about its registers besides the task scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from regtune.core.errors import RegtuneError
from regtune.core.registers import get_register_module, register_similarity
from regtune.tasks import Task, TaskData
from regtune.tasks.inputs import ExplainInput

#: Dev examples the register similarity is measured on (the first ones of the file, in file order).
SIMILARITY_EXAMPLES = 64
_BATCH = 16


def _batch(items: Sequence[ExplainInput], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask`` (and ``token_type_ids`` where the inputs have
    them), each (B, T)."""
    width = max(len(item.input_ids) for item in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    types = torch.zeros_like(ids)
    for row, item in enumerate(items):
        n = len(item.input_ids)
        ids[row, :n], mask[row, :n] = torch.tensor(item.input_ids), 1
        if item.token_type_ids is not None:
            types[row, :n] = torch.tensor(item.token_type_ids)
    batch = {"input_ids": ids, "attention_mask": mask}
    if all(item.token_type_ids is not None for item in items):
        batch["token_type_ids"] = types
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def measure_register_similarity(
    model: PreTrainedModel, task: Task, tokenizer: PreTrainedTokenizerBase, dev: TaskData | None
) -> dict[str, Any]:
    """The register diversity figure: mean off-diagonal cosine of the registers' last hidden states.

    Measured on the first :data:`SIMILARITY_EXAMPLES` dev examples, each as the one token sequence the
    task explains (a QA window with the answer, the sentence, the prompt), averaged over examples.
    Empty for fewer than 2 registers, without a dev file, or for a task without explained inputs.
    """
    module = get_register_module(model)
    if module is None or module.num_registers < 2 or dev is None or not dev.examples:
        return {}
    try:
        items = task.explain_inputs(dev.examples[:SIMILARITY_EXAMPLES], tokenizer, model)
    except RegtuneError:
        return {}
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    values = []
    try:
        for start in range(0, len(items), _BATCH):
            batch = _batch(items[start : start + _BATCH], pad_id, device)
            # The bare transformer: its hidden states include the registers, (B, R+N, H) per layer.
            hidden = model.base_model(**batch, output_hidden_states=True).hidden_states[-1]
            values.append(register_similarity(hidden, model))
    finally:
        model.train(was_training)
    return {
        "register_similarity": round(float(torch.cat(values).mean()), 4),
        "register_similarity_examples": len(items),
    }
