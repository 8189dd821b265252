"""``regtune sweep``: a grid of training runs (registers × seeds × ...), resumable."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from regtune.cli.common import (
    CHOICES,
    add_switches,
    add_task_argument,
    at_least,
    choose_task,
    comma_list,
    field_help,
)
from regtune.core.errors import RegtuneError
from regtune.training.config import GRID_FLAGS, TRAIN_FLAGS, preset_names

_EPILOG = """\
Grid axes take comma-separated values: --registers and --seeds always, and --model, --lr,
--register-lr, --placement, --register-init, --register-depth, --register-identity, --train-only and
--peft when given several values. τ=0 runs once for all values of the axes that change nothing without
registers (--register-lr, --placement, --register-init, --register-depth, --register-identity), and the
report compares each of their τ>0 runs with it. Every other regtune train
option is fixed for all runs. Each run is a regtune train folder under DIR/runs/<run id>/, scored on
every --dev file (DIR/runs/<id>/evals/<name>/); DIR/results.csv has one row per run and dev file.
Run the same command again to resume: finished runs are skipped, interrupted ones continue from
their last checkpoint. The task (qa or classification) is inferred from --train, as for regtune
train. Examples (train on en, score zero-shot on all nine TyDi languages; SST-2 with 5 seeds):

  regtune sweep --registers 0,8,32 --seeds 1,2,3 \\
      --train ../shared/data/tydiqa-goldp/en/train.json \\
      --dev ../shared/data/tydiqa-goldp/*/dev.json --output-dir runs/sweep-en
  regtune sweep --registers 0,8 --seeds 1,2,3,4,5 --train ../shared/data/sst2/train.tsv \\
      --dev ../shared/data/sst2/dev.tsv --output-dir runs/sweep-sst2
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="train and score a grid of runs (registers × seeds × ...), resumable",
        description="Register ablation: one regtune train run per grid point, every run scored on every "
        "dev file, results gathered in DIR/results.csv.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", type=comma_list(str), default=["minilm-l6"], help="model(s), comma-separated")
    p.add_argument("--registers", type=comma_list(int), required=True, help="τ values, e.g. 0,4,8,16,32")
    p.add_argument("--seeds", type=comma_list(int), required=True, help="seeds, e.g. 1,2,3")
    add_task_argument(p)
    p.add_argument("--train", required=True, help="training file (SQuAD-1.1 JSON; TSV/CSV/JSONL)")
    p.add_argument(
        "--dev",
        nargs="+",
        default=[],
        help="dev files to score every run on (space- or comma-separated; quoted globs are expanded); may be "
        "left out with --select-on validation, to screen on the held-out split without touching any dev file",
    )
    p.add_argument("--output-dir", required=True, help="sweep folder")
    p.add_argument("--preset", default="default", choices=preset_names(), help="recipe every run starts from")
    for flag, (name, type_) in TRAIN_FLAGS.items():
        if name in ("num_registers", "seed"):
            continue
        grid = flag in GRID_FLAGS
        p.add_argument(
            flag,
            dest=name,
            type=comma_list(type_) if grid else type_,
            default=None,
            choices=None if grid else CHOICES.get(flag),
            help=field_help(name) + (" Comma-separated values span a grid axis." if grid else ""),
        )
    add_switches(p)
    p.add_argument(
        "--select-on",
        choices=["validation"],
        help="hold out a fixed part of --train, choose τ on it, and report the dev result of that τ",
    )
    p.add_argument(
        "--validation-fraction",
        type=float,
        default=0.1,
        help="share of training questions held out with --select-on validation (default: 0.1)",
    )
    p.add_argument(
        "--launcher", choices=["local", "ray"], default="local", help="where runs execute (default: local)"
    )
    p.add_argument(
        "--jobs", type=at_least(1), default=1, help="parallel worker processes, local launcher (default: 1)"
    )
    p.add_argument(
        "--threads",
        type=at_least(1),
        help="torch threads per run; on Ray also the CPUs each task reserves (default: torch's own for "
        "one job, cores / jobs for several, 1 per Ray task)",
    )
    p.add_argument(
        "--ray-address",
        help="Ray cluster to join, e.g. auto or ray://HOST:10001 (default: start a local Ray instance); "
        "its nodes must share this filesystem and have regtune installed",
    )
    p.add_argument(
        "--gpus-per-run",
        type=float,
        default=0.0,
        help="GPUs each Ray task reserves, e.g. 1, or 0.25 to run four per GPU (default: 0)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from regtune.experiments.sweep import SweepConfig, run_sweep

    grid: dict[str, list[Any]] = {}
    if len(args.model) > 1:
        grid["model"] = args.model
    grid_names = list(GRID_FLAGS.values())  # in order: the grid's order names the runs
    for name in grid_names:
        values = getattr(args, name)
        if values is not None and len(values) > 1:
            grid[name] = values
    # Seeds before τ: τ varies fastest, so a sweep stopped part-way has finished τ's of the same seeds,
    # which the paired comparison with τ=0 needs.
    grid["seed"] = args.seeds
    grid["num_registers"] = args.registers
    options: dict[str, Any] = {}
    task = choose_task(args.task, args.train)
    if task != "qa":  # QA is the default: sweep folders from before tasks existed stay resumable
        options["task"] = task
    if len(args.model) == 1:
        options["model"] = args.model[0]
    for name, _ in TRAIN_FLAGS.values():
        if name in ("num_registers", "seed") or name in grid:
            continue
        value = getattr(args, name)
        if name in grid_names and isinstance(value, list):  # a grid flag given one value: a fixed option
            value = value[0]
        if value is not None:
            options[name] = value
    for name in ("pad_to_max_length", "group_by_length", "freeze_embeddings", "strict"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    sweep = SweepConfig(
        output_dir=args.output_dir,
        train_file=args.train,
        dev_files=dev_files(args.dev),
        grid=grid,
        preset=args.preset,
        options=options,
        select_on=args.select_on,
        validation_fraction=args.validation_fraction,
    )
    rows = run_sweep(
        sweep,
        launcher=args.launcher,
        jobs=args.jobs,
        threads=args.threads,
        ray_address=args.ray_address,
        gpus_per_run=args.gpus_per_run,
        progress=not args.no_progress,
    )
    print(f"{len(rows)} results ({len(sweep.runs())} runs): {Path(args.output_dir) / 'results.csv'}")
    return 0


def dev_files(items: Sequence[str]) -> list[str]:
    import glob

    files: list[str] = []
    for item in items:
        for part in (x.strip() for x in item.split(",")):
            if not part:
                continue
            if glob.has_magic(part):
                matches = sorted(glob.glob(part))
                if not matches:
                    raise RegtuneError(f"--dev {part}: matches no file")
                files.extend(matches)
            else:
                files.append(part)
    # A file named first and matched again by a glob (en/dev.json, then */dev.json) is scored once, in
    # its first place: the first dev file is the one each run's own metrics.json reports.
    unique: dict[str, str] = {}
    for path in files:
        unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())
