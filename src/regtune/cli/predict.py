"""``regtune predict``: a trained model's prediction for one input, or for every row of a file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from regtune.cli.common import TASK_CHECK_HELP, add_task_argument, check_task
from regtune.core.errors import RegtuneError

_EPILOG = """\
The input a model needs depends on its task (read from the saved model):
  QA:              --question "..." --context "..."   prints the answer span
  classification:  --text "..." [--text-pair "..."]   prints the label and its probability
--json adds a JSON line (QA: answer, score, character offsets; classification: every label's
probability). --file IN --output OUT predicts every row of a classification file (TSV, CSV or JSONL,
the model's text columns; labels, if present, are ignored) in batches and writes one JSON object per
row to OUT (JSONL).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="a trained model's prediction for one input, or for a whole file",
        description="Print a trained model's prediction on the first line: the answer span (QA) or the "
        "label and its probability (classification).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="folder written by regtune train (DIR/model)")
    add_task_argument(p, TASK_CHECK_HELP)
    p.add_argument("--question", help="QA: the question")
    p.add_argument("--context", help="QA: the passage that holds the answer")
    p.add_argument("--text", help="classification: the sentence")
    p.add_argument("--text-pair", help="classification: the second sentence, for a model trained on pairs")
    p.add_argument("--json", action="store_true", help="also print the prediction as a JSON object")
    p.add_argument("--file", help="classification: predict every row of this TSV/CSV/JSONL file")
    p.add_argument("--output", help="with --file: where the predictions go (JSONL, written atomically)")
    p.add_argument("--batch-size", type=int, default=64, help="rows per inference batch (default: 64)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar of --file")


def _predict_file(args: argparse.Namespace, task, model, tokenizer) -> int:
    from regtune.core.io import atomic_write_text

    if not args.output:
        raise RegtuneError("--file needs --output (where the predictions go)")
    if task.name != "classification":
        raise RegtuneError(f"--file works for classification models; this model is {task.name}")
    data = task.read_for_model(args.file, model, overrides={"label_column": None})
    if not data.examples:
        raise RegtuneError(f"{args.file}: no usable rows ({len(data.skipped)} skipped)")
    records = task.predict(
        model, tokenizer, data.examples, batch_size=args.batch_size, progress=not args.no_progress
    )
    atomic_write_text(args.output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    skipped = f", {len(data.skipped)} bad rows skipped" if data.skipped else ""
    print(f"{len(records)} predictions{skipped}: {Path(args.output)}")
    return 0


def run(args: argparse.Namespace) -> int:
    from regtune.core.hub import load_tokenizer
    from regtune.core.registers import load_model
    from regtune.tasks import task_of_model

    if args.batch_size < 1:
        raise RegtuneError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_task(args.task, args.model)
    model = load_model(args.model)
    tokenizer = load_tokenizer(args.model)
    task = task_of_model(model.config)
    if args.file:
        return _predict_file(args, task, model, tokenizer)
    inputs = {k: getattr(args, k) for k in ("question", "context", "text", "text_pair") if getattr(args, k)}
    example = task.example_from_inputs(inputs, model)
    record = task.predict(model, tokenizer, [example])[0]
    print(task.prediction_line(record))
    if args.json:
        record.pop("id", None)
        print(json.dumps(record, ensure_ascii=False))
    return 0
