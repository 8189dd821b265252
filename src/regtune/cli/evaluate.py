"""``regtune evaluate``: score a saved model on a data file of its task."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from regtune.cli.common import TASK_CHECK_HELP, add_task_argument, check_task
from regtune.core.errors import RegtuneError
from regtune.core.precision import PRECISIONS
from regtune.tasks import TASKS

#: Evaluation options that override the model's saved settings: the shared ones, then every task's own.
_OVERRIDES = ("max_length", "precision", *(name for task in TASKS.values() for name in task.option_names()))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a trained model on a data file of its task",
        description="Score a saved model (DIR/model) on a file: QA with SQuAD v1.1 EM/F1 (max over all "
        "references), classification with accuracy and macro-F1. The task, featurization, decoding and "
        "columns default to those the model was trained with.",
    )
    p.add_argument("--model", required=True, help="folder written by regtune train (DIR/model)")
    p.add_argument("--dev", required=True, help="file to score, in the format of the model's task")
    add_task_argument(p, TASK_CHECK_HELP)
    p.add_argument(
        "--output-dir", help="also write metrics.json, predictions.json and per-example scores here"
    )
    p.add_argument("--batch-size", type=int, default=64, help="sequences per inference batch (default: 64)")
    p.add_argument("--max-length", type=int, help="text tokens per sequence (default: as trained)")
    # Each task's own options (QA windows and decoding, classification columns), as `regtune train` has them.
    for task in TASKS.values():
        for option in fields(task.options):
            if "flag" in option.metadata:
                help_text = option.metadata["help"].rstrip(".")
                p.add_argument(
                    option.metadata["flag"],
                    dest=option.name,
                    type=option.metadata["type"],
                    help=f"{help_text} (default: as trained)",
                )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="'auto' (bf16 on bf16 GPUs and AMX CPUs), 'bf16' or 'fp32' (default: as trained)",
    )
    p.add_argument("--strict", action="store_true", help="fail on the first bad record instead of skipping")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from regtune.core.hub import load_tokenizer
    from regtune.core.registers import load_model
    from regtune.tasks import task_of_model
    from regtune.training.trainer import write_evaluation

    check_task(args.task, args.model)
    model = load_model(args.model)
    tokenizer = load_tokenizer(args.model)
    task = task_of_model(model.config)
    overrides = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None}
    data = task.read_for_model(args.dev, model, strict=args.strict, overrides=overrides)
    if not data.examples:
        raise RegtuneError(f"{args.dev}: no usable {task.unit}s ({len(data.skipped)} skipped)")
    evaluation = task.evaluate(
        model, tokenizer, data, batch_size=args.batch_size, progress=not args.no_progress, overrides=overrides
    )
    extra = {"task": task.name, "dev_file": args.dev, f"skipped_dev_{task.unit}s": len(data.skipped)}
    metrics = {**evaluation.metrics, **extra}
    print(json.dumps(metrics, indent=2))
    if args.output_dir:
        write_evaluation(Path(args.output_dir), task, evaluation, extra)
    return 0
