"""``regtune report``: statistics and the HTML report of a sweep folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from regtune.cli.common import at_least


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="statistics and an HTML report of a sweep folder",
        description="Summarise a regtune sweep folder: per cell mean, std and 95 % CI over seeds and "
        "questions; each τ against τ=0 (paired, Holm-corrected); plots. Writes DIR/summary.json, "
        "DIR/summary.csv and DIR/report/index.html (self-contained, viewable offline), and rewrites each "
        "run's model card (runs/<id>/model/README.md) with its cell's interval over seeds.",
    )
    p.add_argument("dir", help="the sweep folder (regtune sweep --output-dir)")
    p.add_argument(
        "--n-boot",
        type=at_least(100),
        default=2000,
        help="bootstrap replicates per interval (default: 2000)",
    )
    p.add_argument("--seed", type=at_least(0), default=0, help="seed of the bootstrap (default: 0)")
    p.add_argument(
        "--export",
        metavar="FOLDER",
        help="also copy the small result files (no weights, no checkpoints) to FOLDER, e.g. under docs/",
    )


def run(args: argparse.Namespace) -> int:
    from regtune.reporting.report import analyze_sweep, export_results, update_model_cards, write_report

    root = Path(args.dir)
    analysis = analyze_sweep(root, n_boot=args.n_boot, seed=args.seed)
    index = write_report(root, analysis)
    cards = update_model_cards(root, analysis)
    print(f"summary: {root / 'summary.json'}")
    print(f"report: {index}")
    print(f"model cards with the sweep's intervals: {len(cards)}")
    if args.export:
        files = export_results(root, Path(args.export))
        print(f"exported {len(files)} files to {args.export}")
    return 0
