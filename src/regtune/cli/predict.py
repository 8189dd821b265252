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
probability). --file IN --output OUT predicts every input of a file in batches and writes one JSON object
per input to OUT (JSONL): classification rows (TSV, CSV or JSONL, the model's text columns; labels are
ignored), or QA questions (SQuAD JSON, answers ignored, or JSONL with question, context and id). QA
--top-k K adds "answers": the K best distinct spans, best first, each with its score and offsets.
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
    p.add_argument(
        "--file",
        help="predict every input of this file: classification TSV/CSV/JSONL, or QA questions as SQuAD "
        "JSON or JSONL ({'question', 'context', 'id'} per line)",
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=1,
        help="QA: also list the k best distinct answer spans with their scores (default: 1)",
    )
    p.add_argument("--output", help="with --file: where the predictions go (JSONL, written atomically)")
    p.add_argument("--batch-size", type=int, default=64, help="rows per inference batch (default: 64)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar of --file")


def _predict_file(args: argparse.Namespace, task, model, tokenizer) -> int:
    from regtune.core.io import atomic_write_text

    if not args.output:
        raise RegtuneError("--file needs --output (where the predictions go)")
    data = task.read_for_prediction(args.file, model)
    if not data.examples:
        raise RegtuneError(f"{args.file}: no usable rows ({len(data.skipped)} skipped)")
    extra = {"top_k": args.top_k} if args.top_k > 1 else {}
    records = task.predict(
        model, tokenizer, data.examples, batch_size=args.batch_size, progress=not args.no_progress, **extra
    )
    atomic_write_text(args.output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    skipped = f", {len(data.skipped)} bad rows skipped" if data.skipped else ""
    print(f"{len(records)} predictions{skipped}: {Path(args.output)}")
    return 0


def run(args: argparse.Namespace) -> int:
    from regtune.core.hub import load_tokenizer
    from regtune.core.registers import load_model
    from regtune.tasks import task_of_model

    if args.batch_size < 1 or args.top_k < 1:
        raise RegtuneError(
            f"--batch-size and --top-k must be at least 1, got {args.batch_size}, {args.top_k}"
        )
    check_task(args.task, args.model)
    model = load_model(args.model)
    tokenizer = load_tokenizer(args.model)
    task = task_of_model(model.config)
    if args.top_k > 1 and task.name != "qa":
        raise RegtuneError(f"--top-k is for QA models; this model is {task.name}")
    if args.file:
        return _predict_file(args, task, model, tokenizer)
    inputs = {k: getattr(args, k) for k in ("question", "context", "text", "text_pair") if getattr(args, k)}
    example = task.example_from_inputs(inputs, model)
    extra = {"top_k": args.top_k} if args.top_k > 1 else {}
    record = task.predict(model, tokenizer, [example], **extra)[0]
    print(task.prediction_line(record))
    if args.json:
        record.pop("id", None)
        print(json.dumps(record, ensure_ascii=False))
    return 0
