"""``regtune evaluate``: score a saved model on a data file of its task."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from regtune.cli.common import column_list
from regtune.core.precision import PRECISIONS

#: Evaluation options -> the setting they override (QA: windows and decoding; classification: columns).
_OVERRIDES = (
    "max_length",
    "doc_stride",
    "n_best",
    "max_answer_length",
    "precision",
    "text_columns",
    "label_column",
)


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
    p.add_argument(
        "--output-dir", help="also write metrics.json, predictions.json and per-example scores here"
    )
    p.add_argument("--batch-size", type=int, default=64, help="sequences per inference batch (default: 64)")
    p.add_argument("--max-length", type=int, help="text tokens per sequence (default: as trained)")
    p.add_argument("--doc-stride", type=int, help="QA: window overlap in tokens (default: as trained)")
    p.add_argument("--n-best", type=int, help="QA: start/end candidates per window (default: as trained)")
    p.add_argument("--max-answer-length", type=int, help="QA: longest answer in tokens (default: as trained)")
    p.add_argument(
        "--text-column",
        dest="text_columns",
        type=column_list,
        help="classification: text column(s), comma-separated for pairs (default: as trained)",
    )
    p.add_argument("--label-column", help="classification: the label column (default: as trained)")
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

    model = load_model(args.model)
    tokenizer = load_tokenizer(args.model)
    task = task_of_model(model.config)
    overrides = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None}
    data = task.read_for_model(args.dev, model, strict=args.strict, overrides=overrides)
    evaluation = task.evaluate(
        model, tokenizer, data, batch_size=args.batch_size, progress=not args.no_progress, overrides=overrides
    )
    extra = {"task": task.name, "dev_file": args.dev, f"skipped_dev_{task.unit}s": len(data.skipped)}
    metrics = {**evaluation.metrics, **extra}
    print(json.dumps(metrics, indent=2))
    if args.output_dir:
        write_evaluation(Path(args.output_dir), task, evaluation, extra)
    return 0
