"""Continue masked-language-model pretraining with registers on unlabelled text (``regtune pretrain``).

``pretrain_model`` reads passages (plain text, one passage per line; a SQuAD JSON file's unique contexts;
a TSV/CSV/JSONL file's text column, through the tasks' own readers), holds out a fixed slice of them, cuts
the rest into windows of at most ``--max-length`` tokens, and trains ``AutoModelForMaskedLM`` plus
registers with HF ``Trainer`` and ``DataCollatorForLanguageModeling``. ``regtune train --model DIR/model
--registers N`` then fine-tunes the result, starting from the trained encoder *and* the trained registers.

**The MLM head** (:func:`build_mlm_model`). A sentence encoder such as the bundled ``minilm-l6`` ships as a
bare ``BertModel``, without BERT's ``cls.predictions.*``. Loading it as ``BertForMaskedLM``:

* the decoder (hidden -> vocabulary) is **tied** to the word-embedding matrix (``tie_word_embeddings``),
  so it is the pretrained embedding matrix itself, not a new layer;
* the **transform** (dense H -> H, GELU, LayerNorm) and the decoder's **output bias** are the only new
  weights; ``from_pretrained`` initialises them with the model's own ``_init_weights``, as for any new
  head: dense ~ N(0, ``initializer_range``) with zero bias, LayerNorm weight 1 and bias 0, output bias 0.

Anything else missing from the checkpoint (an encoder weight, or an untied decoder) is a one-line error;
the new and the unused weights (BERT's pooler, which the MLM model does not have) are named in
``metrics.json``. Registers are cut off before the head by the register hooks, so the MLM logits cover
the text tokens only, (B, N, V), and line up with the collator's labels.

Run folder (the same layout as ``regtune train``)::

    DIR/config.json        resolved config, versions, text files and their hashes (written before training)
    DIR/train_log.jsonl    loss and learning rate every --logging-steps
    DIR/trainer/           HF Trainer checkpoints (removed when the run finishes) and TensorBoard events
    DIR/model/             save_pretrained output: safetensors (registers included), config, tokenizer, card
    DIR/metrics.json       held-out MLM loss with its counts, training numbers (written last)

The held-out loss is one run's number: ``metrics.json`` gives its n (windows, masked tokens), no interval.
Its masks are fixed (seed :data:`HELDOUT_MASK_SEED`, drawn per window), so runs on the same text with the
same ``--max-length`` and held-out fraction are scored on the same masked tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelCardData
from torch.nn.utils.rnn import pad_sequence
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    DataCollatorForLanguageModeling,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    set_seed,
)
from transformers.trainer_callback import PrinterCallback

from regtune.core.errors import DataError, RegtuneError
from regtune.core.hub import load_tokenizer, resolve_model_name
from regtune.core.io import atomic_write_json, read_utf8_text
from regtune.core.registers import CONFIG_KEY, _quiet_transformers, add_registers_with
from regtune.tasks import get_task, infer_task
from regtune.training.config import environment_versions, last_checkpoint
from regtune.training.model_card import base_model_id, write_model_card
from regtune.training.pretrain_config import PretrainConfig
from regtune.training.trainer import (
    JsonlLogCallback,
    RegisterTrainer,
    _checkpoint_step,
    _file_digest,
    _is_main_process,
    _prepare_log,
    _save_model_atomically,
    _train_resuming,
    check_saved_run,
    report_destinations,
    training_arguments,
    training_attn_implementation,
)

logger = logging.getLogger(__name__)

#: Seed of the held-out masks: fixed, so that every run on the same text is scored on the same tokens.
HELDOUT_MASK_SEED = 0
#: Held-out windows per forward pass when scoring (the masks are drawn per window, so it changes nothing).
HELDOUT_BATCH = 16


# --- text ----------------------------------------------------------------------------------------------


def read_plain_text(path: str | Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped: one passage each."""
    text = read_utf8_text(path)
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_passages(sources: Sequence[str], text_columns: Sequence[str] = ("sentence",)) -> list[str]:
    """Every passage of ``sources``, each once, in order: a SQuAD JSON file (or ``hub:tydiqa:...``) gives
    its unique contexts and a TSV/CSV/JSONL file its text column(s), through the task's own reader; any
    other file is plain text, one passage per line.

    Raises:
        RegtuneError: no files; a file the reader refuses, or one with no passage (named in the message).
    """
    if not sources:
        raise RegtuneError("no --text file given")
    passages: list[str] = []
    for source in sources:
        task = infer_task(source)
        if task is None:
            found = read_plain_text(source)
        else:
            if not source.startswith("hub:") and not Path(source).is_file():
                raise DataError(f"{source}: no such file")
            found = get_task(task).read_texts(source, text_columns=text_columns)
        if not found:
            raise DataError(f"{source}: no text to pretrain on (empty, or every record was left out)")
        passages.extend(found)
    return list(dict.fromkeys(passages))


def split_heldout(passages: Sequence[str], fraction: float) -> tuple[list[str], list[str]]:
    """(train, held-out) passages: a passage is held out when a hash of its text falls below ``fraction``,
    so the split does not depend on file order or the seed. At least one passage goes each way."""
    if len(passages) < 2:
        raise RegtuneError(
            f"{len(passages)} passage(s): pretraining holds some text out to score it; give at least two "
            "passages (plain text: one per line)"
        )
    keys = [int.from_bytes(hashlib.sha256(p.encode("utf-8")).digest()[:8], "big") / 2**64 for p in passages]
    held = [k < fraction for k in keys]
    if not any(held):
        held[min(range(len(keys)), key=keys.__getitem__)] = True
    if all(held):
        held[max(range(len(keys)), key=keys.__getitem__)] = False
    return [p for p, h in zip(passages, held, strict=True) if not h], [
        p for p, h in zip(passages, held, strict=True) if h
    ]


def make_windows(
    passages: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> list[dict[str, list[int]]]:
    """Tokenise ``passages`` into windows of at most ``max_length`` tokens, special tokens included: a long
    passage becomes consecutive windows (the fast tokenizer's overflow), each ``[CLS] ... [SEP]``.

    Returns one dict per window with ``input_ids``, ``attention_mask``, ``special_tokens_mask`` (what the
    collator must never mask) and ``token_type_ids`` where the tokenizer makes them.
    """
    windows: list[dict[str, list[int]]] = []
    chunk = 1000  # passages per tokenizer call: bounded memory on big files
    for start in range(0, len(passages), chunk):
        encoded = tokenizer(
            list(passages[start : start + chunk]),
            truncation=True,
            max_length=max_length,
            return_overflowing_tokens=True,
            return_special_tokens_mask=True,
        )
        keys = [k for k in encoded if k != "overflow_to_sample_mapping"]
        windows.extend({k: encoded[k][i] for k in keys} for i in range(len(encoded["input_ids"])))
    return windows


# --- the model -----------------------------------------------------------------------------------------


def build_mlm_model(config: PretrainConfig) -> tuple[PreTrainedModel, dict[str, list[str]]]:
    """``AutoModelForMaskedLM`` of ``config.model``, its head checked (see the module docstring), plus
    ``config.num_registers`` registers.

    Returns:
        The model, and ``{"new_head_weights": [...], "unused_checkpoint_weights": [...]}``: the head weights
        the checkpoint lacked (initialised by ``_init_weights``) and the checkpoint's weights the MLM model
        has no place for (BERT's pooler), for ``metrics.json``.
    """
    path = resolve_model_name(config.model)
    try:
        hf_config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise RegtuneError(
            f"model '{config.model}': cannot load its config ({err.__class__.__name__})"
        ) from err
    if (getattr(hf_config, CONFIG_KEY, None) or {}).get("num_registers"):
        raise RegtuneError(f"model '{config.model}' already has registers; pretrain from its base model")
    max_positions = getattr(hf_config, "max_position_embeddings", None)
    if max_positions is not None and config.max_length > max_positions:
        raise RegtuneError(f"--max-length {config.max_length} exceeds the model's {max_positions} positions")
    # transformers' own "newly initialized" report is replaced by the check below and metrics.json.
    with _quiet_transformers():
        try:
            model, loading = AutoModelForMaskedLM.from_pretrained(
                path,
                config=hf_config,
                attn_implementation=training_attn_implementation(config),
                output_loading_info=True,
            )
        except (ValueError, RuntimeError) as err:  # e.g. a family without a masked-LM head
            first = (str(err).strip().splitlines() or [err.__class__.__name__])[0]
            raise RegtuneError(
                f"model '{config.model}': cannot load it as a masked LM ({first[:200]})"
            ) from err
    report = check_mlm_head(model, loading, config.model)
    add_registers_with(model, config.registers())
    return model, report


def check_mlm_head(model: PreTrainedModel, loading: dict[str, Any], name: str) -> dict[str, list[str]]:
    """Accept a checkpoint that lacks only head weights, and whose decoder is tied or loaded.

    Raises:
        RegtuneError: an encoder weight is missing, or the decoder is neither in the checkpoint nor tied to
            the word embeddings (it would start from random).
    """
    missing = sorted(loading.get("missing_keys", ()))
    encoder = f"{model.base_model_prefix}."
    lost = [k for k in missing if k.startswith(encoder)]
    if lost:
        raise RegtuneError(f"model '{name}': its checkpoint lacks encoder weights ({', '.join(lost[:3])})")
    decoder = model.get_output_embeddings().weight
    tied = decoder is model.get_input_embeddings().weight
    decoder_names = {n for n, p in model.named_parameters(remove_duplicate=False) if p is decoder}
    if not tied and decoder_names & set(missing):
        raise RegtuneError(
            f"model '{name}': its checkpoint has no MLM decoder and the config does not tie it to the word "
            "embeddings (tie_word_embeddings=False); it would start from random"
        )
    # Tied aliases (BERT's decoder.bias is cls.predictions.bias) are named once, by their own name.
    own_names = {n for n, _ in model.named_parameters()}
    new = [k for k in missing if k in own_names and k not in decoder_names]
    if new:
        logger.info("%s: new MLM head weights, initialised as transformers does: %s", name, ", ".join(new))
    return {"new_head_weights": new, "unused_checkpoint_weights": sorted(loading.get("unexpected_keys", ()))}


# --- masking and scoring -------------------------------------------------------------------------------


@dataclass
class BatchSeededMLMCollator(DataCollatorForLanguageModeling):
    """``DataCollatorForLanguageModeling`` whose masks depend on the batch's windows and ``mask_seed`` only.

    The stock collator draws its masks from the global RNG. HF Trainer (through accelerate) collates one
    batch ahead of the step it trains, so a checkpoint's saved RNG state already holds the next batch's
    draws, and a resumed run would mask that batch differently. Seeding each batch's generator from its
    token ids makes a resumed run mask every batch as the uninterrupted run did; the same windows in
    another batch (another epoch, another order) get other masks.
    """

    mask_seed: int = 0

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        key = f"{self.mask_seed}:{[example['input_ids'] for example in examples]}".encode()
        self.generator = torch.Generator().manual_seed(
            int.from_bytes(hashlib.sha256(key).digest()[:8], "big")
        )
        return super().torch_call(examples)


def mask_heldout(
    windows: Sequence[dict[str, list[int]]], tokenizer: PreTrainedTokenizerBase, mlm_probability: float
) -> list[dict[str, torch.Tensor]]:
    """Mask each held-out window once, with the collator's own rule (80 % [MASK], 10 % random, 10 % kept)
    and a fixed seed, one window at a time so that the masks do not depend on batching."""
    masker = DataCollatorForLanguageModeling(
        tokenizer, mlm_probability=mlm_probability, seed=HELDOUT_MASK_SEED
    )
    return [{k: v[0] for k, v in masker([window]).items()} for window in windows]


@torch.no_grad()
def heldout_loss(
    model: PreTrainedModel, masked: Sequence[dict[str, torch.Tensor]], pad_id: int
) -> dict[str, Any]:
    """Mean cross-entropy over every masked held-out token (not a mean of batch means), in eval mode.

    ``masked``: windows from :func:`mask_heldout`, each ``input_ids``/``labels`` (N,), labels -100 where
    nothing is predicted. Logits are (B, N, V): the registers never reach the MLM head.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    try:
        for start in range(0, len(masked), HELDOUT_BATCH):
            rows = masked[start : start + HELDOUT_BATCH]
            pad = {"input_ids": pad_id, "labels": -100}
            batch = {
                k: pad_sequence([r[k] for r in rows], batch_first=True, padding_value=pad.get(k, 0)).to(
                    device
                )
                for k in rows[0]
            }
            labels = batch.pop("labels")  # (B, N)
            logits = model(**batch).logits  # (B, N, V)
            total += torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, reduction="sum"
            ).item()
            count += int((labels != -100).sum())
    finally:
        model.train(was_training)
    loss = total / count if count else None
    return {
        "heldout_mlm_loss": round(loss, 6) if loss is not None else None,
        "heldout_perplexity": round(math.exp(loss), 4) if loss is not None else None,
        "num_heldout_windows": len(masked),
        "num_heldout_masked_tokens": count,
    }


# --- the run -------------------------------------------------------------------------------------------


def check_pretrain_dir(run_dir: Path, config: PretrainConfig, resume: bool) -> dict[str, Any] | None:
    """Refuse a folder holding another run (or this one without ``resume``); a finished run's metrics."""
    config_file = run_dir / "config.json"
    if not config_file.exists():
        return None
    saved = json.loads(config_file.read_text(encoding="utf-8")).get("config", {})
    return check_saved_run(run_dir, saved, config.to_dict(), resume)


def _write_pretrain_config(run_dir: Path, config: PretrainConfig) -> None:
    """``DIR/config.json``: the resolved config, library versions, and the text files with their hashes."""
    atomic_write_json(
        run_dir / "config.json",
        {
            "config": config.to_dict(),
            "versions": environment_versions(),
            "data": {"text_files": [{"file": f, "sha256_16": _file_digest(f)} for f in config.text_files]},
        },
    )


def prepare_text(
    config: PretrainConfig, tokenizer: PreTrainedTokenizerBase
) -> tuple[list[dict[str, list[int]]], list[dict[str, torch.Tensor]], dict[str, int]]:
    """The training windows, the masked held-out windows (see :func:`mask_heldout`), and their counts."""
    if tokenizer.mask_token is None:
        raise RegtuneError(f"model '{config.model}': its tokenizer has no mask token for MLM")
    passages = read_passages(config.text_files, config.text_columns)
    train_text, heldout_text = split_heldout(passages, config.heldout_fraction)
    train = make_windows(train_text, tokenizer, config.max_length)
    heldout = mask_heldout(
        make_windows(heldout_text, tokenizer, config.max_length), tokenizer, config.mlm_probability
    )
    counts = {
        "num_heldout_passages": len(heldout_text),
        "num_heldout_tokens": sum(int(w["attention_mask"].sum()) for w in heldout),
        "num_train_passages": len(train_text),
        "num_train_windows": len(train),
        "num_train_tokens": sum(len(w["input_ids"]) for w in train),
    }
    return train, heldout, counts


def pretrain_model(
    config: PretrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    callbacks: Sequence[TrainerCallback] = (),
) -> dict[str, Any]:
    """Continue MLM pretraining of ``config.model`` with registers; returns what ``DIR/metrics.json`` holds.

    Args:
        config: the run's settings.
        resume: continue from the last checkpoint in ``config.output_dir`` (or return the saved metrics
            if that run already finished).
        progress: show progress bars.
        callbacks: extra ``TrainerCallback`` objects.
    """
    if not config.output_dir:
        raise RegtuneError("no --output-dir given")
    run_dir = Path(config.output_dir)
    report_destinations(config.report_to)  # a missing integration fails now, not after tokenising
    finished = check_pretrain_dir(run_dir, config, resume)
    if finished is not None:
        logger.info("%s already finished; returning its metrics", run_dir)
        return finished

    tokenizer = load_tokenizer(config.model)
    train_windows, heldout, counts = prepare_text(config, tokenizer)
    set_seed(config.seed)  # before the model: the new head weights and the registers are initialised here
    model, head = build_mlm_model(config)
    # The starting point, for comparison: a resumed run rebuilds the same step-0 model (same seed) before
    # the Trainer loads its checkpoint, so this number is the same whether or not the run was interrupted.
    initial = heldout_loss(model, heldout, tokenizer.pad_token_id)["heldout_mlm_loss"]
    run_dir.mkdir(parents=True, exist_ok=True)
    if _is_main_process() and not (run_dir / "config.json").exists():
        _write_pretrain_config(run_dir, config)
    trainer_dir = run_dir / "trainer"
    checkpoint = last_checkpoint(run_dir) if resume else None
    log_file = run_dir / "train_log.jsonl"
    if _is_main_process():
        _prepare_log(log_file, checkpoint)
    trainer = RegisterTrainer(
        model=model,
        args=training_arguments(config, trainer_dir, progress=progress),  # type: ignore[arg-type]
        train_dataset=train_windows,
        data_collator=BatchSeededMLMCollator(
            tokenizer, mlm_probability=config.mlm_probability, mask_seed=config.seed
        ),
        callbacks=[JsonlLogCallback(log_file), *callbacks],
        register_lr=config.register_lr,
    )
    if not progress:
        trainer.remove_callback(PrinterCallback)  # train_log.jsonl keeps every record
    began = time.perf_counter()
    output = _train_resuming(trainer, checkpoint, trainer_dir)
    train_seconds = time.perf_counter() - began
    if not trainer.is_world_process_zero():
        return {}

    _save_model_atomically(trainer.model, tokenizer, run_dir / "model")
    metrics = {
        **heldout_loss(trainer.model, heldout, tokenizer.pad_token_id),
        "heldout_mlm_loss_initial": initial,
        **counts,
        "num_registers": config.num_registers,
        "seed": config.seed,
        "precision": "bf16" if trainer.args.bf16 else "fp32",
        "train_steps": output.global_step,
        "train_loss": round(float(output.training_loss), 6),
        "train_seconds": round(train_seconds, 3),
        "resumed_from_step": _checkpoint_step(checkpoint),
        **head,
    }
    write_model_card(run_dir / "model", build_pretrain_card(config, metrics))
    atomic_write_json(run_dir / "metrics.json", metrics)  # last: its presence marks a finished run
    for stale in trainer_dir.glob("checkpoint-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return metrics


def build_pretrain_card(config: PretrainConfig, metrics: dict[str, Any]) -> ModelCard:
    """The model card of a pretrained folder: what it is, its held-out loss with the n, how to fine-tune."""
    base = base_model_id(config.model)
    data = ModelCardData(
        base_model=base,
        library_name="regtune",
        tags=["regtune", "registers", "transformers", "fill-mask"],
        pipeline_tag="fill-mask",
    )
    tau = config.num_registers
    loss = metrics.get("heldout_mlm_loss")
    recipe = (
        f"{metrics.get('train_steps')} steps, batch {config.batch_size}, max length {config.max_length}, "
        f"lr {config.lr} ({config.register_lr or config.lr} for the registers), seed {config.seed}"
    )
    body = f"""# {Path(config.output_dir).name or "regtune model"}: masked-LM pretraining with {tau} registers

{base or config.model}, pretrained further with regtune's masked-language-model objective and {tau} learned
register tokens after the embedding layer (Darcet et al. 2024, "Vision Transformers Need Registers").
The MLM logits cover the text tokens only.

## Held-out masked-LM loss

**{loss if loss is not None else "not scored"}** (perplexity {metrics.get("heldout_perplexity")}), over
{metrics.get("num_heldout_masked_tokens")} masked tokens in {metrics.get("num_heldout_windows")} held-out
windows ({metrics.get("num_heldout_passages")} passages; {metrics.get("heldout_mlm_loss_initial")} before
pretraining); one run, so no interval.

## Fine-tune it, registers included

```bash
regtune train --model PATH/model --registers {tau} --train TRAIN_FILE --dev DEV_FILE --output-dir runs/x
```

## Training

| setting | value |
|---|---|
| text files | {", ".join(config.text_files)} |
| training | {recipe} |
| masking | {config.mlm_probability} of the tokens (80 % [MASK], 10 % random, 10 % kept) |
| new head weights | {", ".join(metrics.get("new_head_weights", [])) or "none"} |
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
