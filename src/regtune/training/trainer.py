"""Fine-tune an encoder with registers for any task, on HF Trainer.

``train_model`` is the whole pipeline behind ``regtune train``: read and validate data, featurize,
build the model and its registers, train with checkpoints, then save the model and score the dev
file. Everything that depends on the task (reader, features, model class, metric) comes from the task
(:mod:`regtune.tasks`); every piece is importable and tested on its own.

Run folder layout::

    DIR/config.json        resolved config, versions, data files (written before training)
    DIR/train_log.jsonl    loss and learning rate every --logging-steps
    DIR/trainer/           HF Trainer checkpoints (removed when the run finishes) and TensorBoard events
    DIR/model/             save_pretrained output: safetensors, config (with registers), tokenizer
    DIR/metrics.json       the task's metrics on 0-100, counts, timings (written last: marks a finished run)
    DIR/predictions.json   example id -> prediction (QA: answer text; classification: label)
    DIR/per_question.json  per-example scores (QA; classification writes per_example.json)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.integrations import is_tensorboard_available
from transformers.trainer_callback import PrinterCallback

from regtune.core.adapter import base_reference, freeze_all_but_registers_and_head, save_trained_only
from regtune.core.allocator import keep_freed_memory, release_freed_memory
from regtune.core.errors import RegtuneError, RegtuneWarning
from regtune.core.hub import load_tokenizer, resolve_model_name
from regtune.core.io import atomic_write_json, atomic_write_text
from regtune.core.peft_adapter import save_peft_adapter
from regtune.core.precision import resolve_attn_implementation, resolve_precision
from regtune.core.registers import (
    CONFIG_KEY,
    MODULE_NAME,
    RegisterConfig,
    add_registers_with,
    get_register_module,
    register_parameters,
)
from regtune.tasks import TASK_KEY, Evaluation, Task, TaskData, get_task
from regtune.training.config import TrainConfig, environment_versions, last_checkpoint, saved_run_config
from regtune.training.diagnostics import measure_register_similarity
from regtune.training.model_card import build_card, write_model_card
from regtune.training.peft_arms import apply_peft, trainable_parameters

logger = logging.getLogger(__name__)


def optimizer_param_groups(
    model: nn.Module, *, lr: float, weight_decay: float, register_lr: float | None = None
) -> list[dict[str, Any]]:
    """AdamW parameter groups: matrices decay; biases, norms and registers do not.

    Registers are excluded from weight decay (decay would pull them toward zero, the failure timm
    users reported) and may get their own learning rate: at a fine-tuning LR of 2e-5 they barely
    move from their init in a few thousand steps.
    """
    register_ids = {id(p) for p in register_parameters(model)}
    decay, no_decay = [], []
    for _name, param in model.named_parameters():
        if not param.requires_grad or id(param) in register_ids:
            continue
        # 1-D tensors are biases and LayerNorm gains; decaying them hurts and HF excludes them too.
        (decay if param.ndim >= 2 else no_decay).append(param)
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    registers = [p for p in register_parameters(model) if p.requires_grad]
    frozen = [p for p in register_parameters(model) if not p.requires_grad and p.numel()]
    if frozen:
        # The usual cause: get_peft_model froze them. Training on would leave them at their init silently.
        warnings.warn(
            "the registers are frozen (requires_grad=False) and will not train; under PEFT, list "
            "'registers' in modules_to_save (or call add_registers on the PeftModel)",
            RegtuneWarning,
            stacklevel=2,
        )
    if registers:
        groups.append({"params": registers, "weight_decay": 0.0, "lr": register_lr or lr})
    return groups


def _train_resuming(trainer: Trainer, checkpoint: str | None, trainer_dir: Path) -> Any:
    """``trainer.train``, with a one-line error when a checkpoint's optimizer state cannot be restored."""
    try:
        return trainer.train(resume_from_checkpoint=checkpoint)
    except ValueError as err:
        # torch's message when the saved parameter groups differ from this model's: the checkpoint was
        # written by another regtune version or with other options (registers, --train-only, ...).
        if checkpoint is None or "parameter group" not in str(err):
            raise
        raise RegtuneError(
            f"{checkpoint}: its optimizer state does not fit this model's trainable tensors ({err}); it was "
            f"written with other options or by an older regtune: delete {trainer_dir} to restart the run"
        ) from err


class RegisterTrainer(Trainer):
    """HF Trainer whose optimizer treats registers apart (see :func:`optimizer_param_groups`)."""

    def __init__(self, *args: Any, register_lr: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_lr = register_lr
        if self.args.device.type == "cpu":
            keep_freed_memory()  # no page faults on every step's activations; results unchanged

    def train(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().train(*args, **kwargs)
        finally:
            release_freed_memory()  # the peak heap kept for the steps goes back to the OS

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            groups = optimizer_param_groups(
                opt_model,
                lr=self.args.learning_rate,
                weight_decay=self.args.weight_decay,
                register_lr=self.register_lr,
            )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer


class JsonlLogCallback(TrainerCallback):
    """Appends every Trainer log record (loss, learning rate, ...) to a JSONL file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args: TrainingArguments, state: Any, control: Any, logs: dict | None = None, **kw: Any):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, **logs}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def truncate_log(path: Path, last_step: int) -> None:
    """Drop records logged after ``last_step``: a resumed run repeats those steps and logs them again."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the torn last line of a run killed mid-write
        if isinstance(record, dict) and record.get("step", 0) <= last_step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def build_model(config: TrainConfig, train: TaskData | None = None) -> PreTrainedModel:
    """The stock model of ``config.model`` for the task (its ``Auto*`` class) plus registers, and, with
    ``--peft``, wrapped in PEFT's adapter (a ``PeftModel``; see regtune.training.peft_arms).

    ``train`` is the training data, which tasks with labels read the label set from.
    """
    task = get_task(config.task)
    path = resolve_model_name(config.model)
    try:
        hf_config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise RegtuneError(
            f"model '{config.model}': cannot load its config ({err.__class__.__name__})"
        ) from err
    saved_registers = _saved_register_count(hf_config, config)
    if config.attention_dropout is not None:
        # BERT, RoBERTa, XLM-R and ELECTRA call it attention_probs_dropout_prob; DistilBERT attention_dropout.
        names = [n for n in ("attention_probs_dropout_prob", "attention_dropout") if hasattr(hf_config, n)]
        if names:
            setattr(hf_config, names[0], config.attention_dropout)
        elif config.attention_dropout > 0:
            # 0 (the default preset) just means "none"; a model without the setting is fine with that.
            raise RegtuneError(f"model '{config.model}': its config has no attention dropout to set")
    if train is not None:
        task.configure_model(hf_config, train)
    setattr(hf_config, TASK_KEY, task.name)
    try:
        model, loading = task.auto_model.from_pretrained(
            path,
            config=hf_config,
            attn_implementation=training_attn_implementation(config),
            output_loading_info=True,
        )
    except RuntimeError as err:  # e.g. a fine-tuned head whose size does not match the new labels
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise RegtuneError(f"model '{config.model}': cannot load it for {task.name} ({first[:200]})") from err
    if saved_registers:
        _check_loaded_registers(model, loading, config.model, saved_registers)
    else:
        add_registers_with(model, config.registers())
    if config.freeze_embeddings:
        # After add_registers: the registers live in their own module and keep training. The optimizer
        # skips frozen tensors (optimizer_param_groups), so a frozen matrix costs no AdamW state or update.
        model.get_input_embeddings().weight.requires_grad_(False)
    if config.train_only != "all":
        freeze_all_but_registers_and_head(model)
    if config.peft != "none":
        return apply_peft(model, config, task)
    return model


def _saved_register_count(hf_config: Any, config: TrainConfig) -> int:
    """How many registers the folder of ``config.model`` was saved with (0: a stock model, or τ=0).

    Such a folder (e.g. ``regtune pretrain``'s model) trains with those registers, loaded from its weights
    and never re-initialised; ``--registers`` must name their count, and the other register options must
    be the saved ones, so that the run's config.json says what it trained.
    """
    stored = getattr(hf_config, CONFIG_KEY, None) or {}
    saved = int(stored.get("num_registers", 0))
    if saved and config.num_registers != saved:
        raise RegtuneError(
            f"model '{config.model}' has {saved} trained registers; train it with --registers {saved}, "
            f"not {config.num_registers}"
        )
    if saved:
        ours, theirs = config.registers().to_dict(), RegisterConfig.from_dict(stored).to_dict()
        differ = [key for key in ours if key != "init_std" and ours[key] != theirs[key]]
        if differ:
            given = ", ".join(f"{key} {ours[key]!r} (saved: {theirs[key]!r})" for key in differ)
            raise RegtuneError(f"model '{config.model}' has trained registers with other settings: {given}")
    return saved


def _check_loaded_registers(model: PreTrainedModel, loading: dict[str, Any], name: str, count: int) -> None:
    """The task's Auto class built the folder's ``regtune_<family>`` class, which attached ``count``
    registers (uninitialised); make sure their tensor came from the file."""
    module = get_register_module(model)
    # Every register tensor (tokens, and layer_tokens / slot_identity) must have come from the file.
    missing = [k for k in loading.get("missing_keys", ()) if f"{MODULE_NAME}." in k]
    if module is None or module.num_registers != count or missing:
        raise RegtuneError(
            f"model '{name}': its {count} registers did not load (a folder saved by an older regtune? "
            "load it with regtune.load_model and save it again)"
        )


def training_device_type() -> str:
    """Where HF Trainer will train: CUDA if present, else MPS on a Mac, else the CPU."""
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def training_attn_implementation(config: TrainConfig) -> str:
    """``config.attn_implementation`` with 'auto' resolved for this machine (see regtune.core.precision)."""
    return resolve_attn_implementation(config.attn_implementation, training_device_type(), config.precision)


def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if Path(path).is_file() else ""


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def check_run_dir(run_dir: Path, config: TrainConfig, resume: bool) -> dict[str, Any] | None:
    """Refuse to mix runs: returns saved metrics if the run already finished and ``resume`` is set.

    Raises:
        RegtuneError: the folder holds a run with another config, or a run and no ``--resume``.
    """
    config_file = run_dir / "config.json"
    if not config_file.exists():
        return None
    return check_saved_run(run_dir, saved_run_config(config_file), config.to_dict(), resume)


def check_saved_run(
    run_dir: Path, saved: dict[str, Any], current: dict[str, Any], resume: bool
) -> dict[str, Any] | None:
    """:func:`check_run_dir` for any run whose folder holds its config (``saved``, from ``config.json``):
    refuse another config or a run without ``resume``; the saved metrics if the run finished."""
    for key in LOGGING_ONLY:  # where logs go changes no result: a resumed run may report elsewhere
        saved.pop(key, None)
        current.pop(key, None)
    if saved != current:
        diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        raise RegtuneError(
            f"{run_dir}: holds a run with a different config ({', '.join(diff)}); use a new folder"
        )
    # Under torchrun a late worker may find the config.json its rank 0 has just written: only rank 0
    # decides whether the folder is taken (its error stops the whole launch).
    if not resume and _is_main_process():
        raise RegtuneError(f"{run_dir}: already holds this run; pass --resume to continue or reuse it")
    metrics_file = run_dir / "metrics.json"
    return json.loads(metrics_file.read_text()) if metrics_file.exists() else None


def _load(task: Task, config: TrainConfig, source: str, role: str, **kwargs: Any) -> TaskData:
    if not source:
        raise RegtuneError(f"no {role} file given")
    data = task.read(source, config, **kwargs)
    if not data.examples:  # every record was skipped
        raise RegtuneError(f"{source}: no usable {task.unit}s in the {role} file")
    return data


def write_evaluation(
    folder: Path, task: Task, evaluation: Evaluation, extra: dict[str, Any]
) -> dict[str, Any]:
    """predictions.json, the per-example scores and, last (it marks the folder done), metrics.json."""
    metrics = {**evaluation.metrics, **extra}
    atomic_write_json(folder / "predictions.json", evaluation.predictions)
    atomic_write_json(folder / task.per_example_file, evaluation.per_example)
    atomic_write_json(folder / "metrics.json", metrics)
    return metrics


def _save_model_atomically(
    model: PreTrainedModel, tokenizer: Any, target: Path, config: TrainConfig | None = None
) -> None:
    """save_pretrained into a temporary folder, then rename: a killed run never leaves half a model.

    A ``--train-only registers+head`` run saves only its trained tensors (see regtune.core.adapter), a
    ``--peft`` run PEFT's adapter and its task model's config (see regtune.core.peft_adapter).
    """
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if config is not None and config.train_only != "all":
        save_trained_only(model, tmp, base_reference(config.model))
    elif config is not None and config.peft != "none":
        save_peft_adapter(model, tmp, base_reference(config.model))
    else:
        model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def train_model(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    callbacks: Sequence[TrainerCallback] = (),
) -> dict[str, Any]:
    """Fine-tune and evaluate one model; returns the metrics written to ``DIR/metrics.json``.

    Args:
        config: the resolved run config (see :func:`regtune.training.config.resolve_config`).
        resume: continue from the last checkpoint in ``config.output_dir`` (or return the saved
            metrics if that run already finished).
        progress: show progress bars.
        callbacks: extra ``TrainerCallback`` objects (early stopping, custom logging, ...).
    """
    if not config.output_dir:
        raise RegtuneError("no --output-dir given")
    run_dir = Path(config.output_dir)
    report_destinations(config.report_to)  # a missing integration fails now, not after featurising
    finished = check_run_dir(run_dir, config, resume)
    if finished is not None:
        logger.info("%s already finished; returning its metrics", run_dir)
        return finished

    task = get_task(config.task)
    train = _load(task, config, config.train_file, "train")
    # Without a dev file the run trains and saves; `regtune evaluate` scores the model later.
    dev = (
        _load(task, config, config.dev_file, "dev", labels=task.label_names(train))
        if config.dev_file
        else None
    )
    tokenizer = load_tokenizer(config.model)
    train_dataset = task.train_dataset(train, tokenizer, config)

    set_seed(config.seed)  # before the model: the task head and registers are initialised here
    model = build_model(config, train)
    trainable = trainable_parameters(model)  # the few-parameter arms compare at matched counts
    task.save_settings(model, config)

    run_dir.mkdir(parents=True, exist_ok=True)
    if _is_main_process() and not (run_dir / "config.json").exists():
        _write_run_config(run_dir, config)
    trainer_dir = run_dir / "trainer"
    checkpoint = last_checkpoint(run_dir) if resume else None
    trainer = _make_trainer(config, task, model, tokenizer, train_dataset, checkpoint, progress, callbacks)
    began = time.perf_counter()
    output = _train_resuming(trainer, checkpoint, trainer_dir)
    train_seconds = time.perf_counter() - began
    if not trainer.is_world_process_zero():
        return {}

    metrics, per_example = _save_and_score(trainer, task, config, tokenizer, dev, progress=progress)
    metrics = {
        **metrics,
        "train_steps": output.global_step,
        "train_loss": round(float(output.training_loss), 6),
        "train_seconds": round(train_seconds, 3),
        "trainable_parameters": trainable,
        "resumed_from_step": _checkpoint_step(checkpoint),
        f"num_train_{task.unit}s": len(train.examples),
        f"num_train_{task.sequence}s": len(train_dataset),
        f"skipped_train_{task.unit}s": len(train.skipped),
    }
    write_model_card(run_dir / "model", build_card(config, task, metrics, per_example))
    # metrics.json last: its presence marks a finished run.
    atomic_write_json(run_dir / "metrics.json", metrics)
    for stale in trainer_dir.glob("checkpoint-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return metrics


def _make_trainer(
    config: TrainConfig,
    task: Task,
    model: PreTrainedModel,
    tokenizer: Any,
    train_dataset: Any,
    checkpoint: str | None,
    progress: bool,
    callbacks: Sequence[TrainerCallback],
) -> RegisterTrainer:
    """The Trainer of one run, logging to ``DIR/train_log.jsonl`` (cut back to ``checkpoint`` on resume)."""
    run_dir = Path(config.output_dir)
    log_file = run_dir / "train_log.jsonl"
    if _is_main_process():
        _prepare_log(log_file, checkpoint)
    trainer = RegisterTrainer(
        model=model,
        args=training_arguments(config, run_dir / "trainer", progress=progress),
        train_dataset=train_dataset,
        data_collator=task.collator(tokenizer, config),
        callbacks=[JsonlLogCallback(log_file), *callbacks],
        register_lr=config.register_lr,
    )
    if not progress:
        # Without bars the Trainer prints every log record; train_log.jsonl already keeps them.
        trainer.remove_callback(PrinterCallback)
    return trainer


def _save_and_score(
    trainer: Trainer, task: Task, config: TrainConfig, tokenizer: Any, dev: TaskData | None, *, progress: bool
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Save the trained model atomically, score the dev file, write its predictions and scores.

    Returns the metrics so far (train_model adds the training numbers and writes metrics.json last) and
    the per-example scores (None without a dev file), which the model card summarises.
    """
    run_dir = Path(config.output_dir)
    model = trainer.model
    trained_attn = model.config._attn_implementation
    if config.attn_implementation == "auto" and trained_attn != "sdpa":
        # 'auto' picked eager for the bf16 backward on CPU; inference has no backward, and SDPA's forward
        # is the faster one there (en dev: 4.4 s against 15 s with eager).
        model.set_attn_implementation("sdpa")
    _save_model_atomically(model, tokenizer, run_dir / "model", config)
    run = {
        "task": task.name,
        "dev_file": config.dev_file or None,
        "num_registers": config.num_registers,
        "seed": config.seed,
        "precision": "bf16" if trainer.args.bf16 else "fp32",  # what 'auto' resolved to on this machine
        "attn_implementation": trained_attn,  # what training used
    }
    if dev is None:
        return run, None
    evaluation = task.evaluate(model, tokenizer, dev, batch_size=config.eval_batch_size, progress=progress)
    atomic_write_json(run_dir / "predictions.json", evaluation.predictions)
    atomic_write_json(run_dir / task.per_example_file, evaluation.per_example)
    return {
        **evaluation.metrics,
        **run,
        f"skipped_dev_{task.unit}s": len(dev.skipped),
        **measure_register_similarity(model, task, tokenizer, dev),
    }, evaluation.per_example


def _write_run_config(run_dir: Path, config: TrainConfig) -> None:
    """``DIR/config.json``: the resolved config, library versions, and the data files with their hashes."""
    atomic_write_json(
        run_dir / "config.json",
        {
            "config": config.to_dict(),
            "versions": environment_versions(),
            "data": {
                "train_file": config.train_file,
                "train_sha256_16": _file_digest(config.train_file),
                "dev_file": config.dev_file or None,
                "dev_sha256_16": _file_digest(config.dev_file) if config.dev_file else None,
            },
        },
    )


def _prepare_log(log_file: Path, checkpoint: str | None) -> None:
    """A fresh run starts a new log; a resumed one drops what was logged after its checkpoint."""
    if checkpoint is None:
        log_file.unlink(missing_ok=True)
    else:
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
        truncate_log(log_file, state["global_step"])


#: Options that only say where logs go; they never make two runs differ.
LOGGING_ONLY = ("report_to",)


def report_destinations(report_to: str) -> list[str] | str:
    """``--report-to`` as TrainingArguments takes it: 'none', or the integrations, checked to be installed.

    TensorBoard, the default, is left out quietly where it is not installed (train_log.jsonl always has
    the log); any other integration that is missing is an error that lists the installed ones.
    """
    from transformers.integrations import get_available_reporting_integrations

    names = [n.strip() for n in report_to.split(",") if n.strip()]
    if not names or names == ["none"]:
        return "none"
    if names == ["tensorboard"]:
        return ["tensorboard"] if is_tensorboard_available() else "none"
    available = get_available_reporting_integrations()
    missing = [n for n in names if n not in available]
    if missing:
        raise RegtuneError(
            f"--report-to {','.join(missing)}: not installed here; installed: "
            f"{', '.join(['none', *available]) if available else 'none'}"
        )
    return names


def training_arguments(config: TrainConfig, trainer_dir: Path, *, progress: bool) -> TrainingArguments:
    """HF ``TrainingArguments`` for ``config`` on this machine (device, precision, data loading)."""
    cuda = torch.cuda.is_available()
    device_type = training_device_type()  # on a Mac Trainer picks MPS, where 'auto' stays fp32
    use_bf16 = resolve_precision(config.precision, device_type) == "bf16"
    # Accelerate sets up CPU data parallelism (gloo) only when told to use the CPU: without this, each
    # torchrun worker on a GPU-less machine trains alone as rank 0 and all of them write the results.
    # Trainer also refuses bf16 without a GPU unless told to use the CPU.
    cpu_ddp = not cuda and int(os.environ.get("WORLD_SIZE", "1")) > 1
    use_cpu = cpu_ddp or (device_type == "cpu" and use_bf16)
    return TrainingArguments(
        output_dir=str(trainer_dir),
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        lr_scheduler_type="linear",
        seed=config.seed,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        report_to=report_destinations(config.report_to),
        disable_tqdm=not progress,
        remove_unused_columns=False,  # the collator drops the non-tensor columns itself
        bf16=use_bf16,
        # Its per-step isnan/isinf test is a host sync on GPUs, and it hides a diverging loss from the log.
        logging_nan_inf_filter=False,
        dataloader_pin_memory=cuda,
        # On a GPU, collate in worker processes so the step never waits for it; on a few CPU cores a
        # worker would only take cycles from the math (collation is ~0.1 % of a CPU step).
        dataloader_num_workers=2 if cuda else 0,
        dataloader_persistent_workers=cuda,
        ddp_find_unused_parameters=False,
        use_cpu=use_cpu,
    )


def _checkpoint_step(checkpoint: str | None) -> int:
    return int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else 0
