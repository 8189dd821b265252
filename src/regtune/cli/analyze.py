"""``regtune analyze``: high-norm artifacts, attention sinks and the role of each register."""

from __future__ import annotations

import argparse
from pathlib import Path

from regtune.cli.common import TASK_CHECK_HELP, add_task_argument, at_least, check_task, comma_list


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="high-norm artifact tokens, attention sinks and per-register roles",
        description="Per layer: token output norms and high-norm outliers by token kind, the attention "
        "mass each kind receives (sinks) and attention entropy per head; per register: attention "
        "received, register-register similarity, most-attended tokens, and inference-time ablation "
        "(zero / mean / masked) with its change in the task's score (QA F1, classification accuracy). "
        "With --compare, the same for a second model "
        "side by side (e.g. tau=0 against tau=8).",
    )
    p.add_argument("--model", required=True, help="a folder written by regtune train (DIR/model)")
    p.add_argument("--compare", metavar="MODEL", help="a second model, shown side by side")
    p.add_argument("--dev", required=True, help="a data file of the model's task (SQuAD JSON; TSV/CSV/JSONL)")
    add_task_argument(p, TASK_CHECK_HELP)
    p.add_argument("--output-dir", required=True, help="where analysis.json, PNG plots and index.html go")
    p.add_argument(
        "--num-examples",
        type=at_least(0),
        default=200,
        help="examples for the norm/attention statistics; 0 = all (default: 200)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the question sample (default: 0)")
    p.add_argument(
        "--no-ablation",
        action="store_true",
        help="skip the register ablation (a full dev evaluation per register and mode)",
    )
    p.add_argument(
        "--labels",
        type=comma_list(str),
        help="names of the model (and of --compare) on folders, pages and plots (default: tau<R> of each)",
    )
    p.add_argument("--strict", action="store_true", help="fail on the first bad record instead of skipping")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from regtune.explain.analyze import run_analyze

    check_task(args.task, args.model, args.compare)
    out = run_analyze(
        model=args.model,
        compare=args.compare,
        dev=args.dev,
        output_dir=Path(args.output_dir),
        num_examples=args.num_examples or None,
        seed=args.seed,
        ablation=not args.no_ablation,
        labels=args.labels,
        strict=args.strict,
        progress=not args.no_progress,
    )
    for name, path in out.items():
        print(f"{name}: {path}")
    return 0
