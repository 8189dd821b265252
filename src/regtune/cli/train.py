"""``regtune train``: fine-tune one model with registers on a task, save it, score the dev file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from regtune.cli.common import CHOICES, add_switches, add_task_argument, choose_task, field_help, score_line
from regtune.training.config import TRAIN_FLAGS, preset_names

_EPILOG = """\
Tasks: 'qa' (extractive QA on SQuAD-1.1 JSON, SQuAD v1.1 EM/F1) and 'classification' (TSV, CSV or
JSONL; --text-column, or two for sentence pairs, and --label-column; accuracy and macro-F1). The task
is inferred from the training file's extension (.json: qa; .tsv/.csv/.jsonl: classification).

Presets: each task has its own. QA 'default' is our recipe for the bundled MiniLM (lr 1e-4, batch 16,
2 epochs, max length 384, dynamic padding, length-grouped batches, no attention dropout, bf16 autocast
on bf16 GPUs and AMX CPUs); QA 'seed' reproduces the original project (lr 2e-5, batch 8, 3 epochs,
every window padded to 434 tokens, max answer length 60, the model's attention dropout, fp32, seed 595).
Classification 'default' (lr 5e-5, batch 32, 1 epoch, 6 % warm-up, max length 128) was set for MiniLM
on SST-2 (docs/recipe.md). Options you give override the preset. Examples:

  regtune train --model minilm-l6 --registers 8 \\
      --train ../shared/data/tydiqa-goldp/en/train.json \\
      --dev ../shared/data/tydiqa-goldp/en/dev.json --output-dir runs/tau8
  regtune train --registers 8 --train ../shared/data/sst2/train.tsv \\
      --dev ../shared/data/sst2/dev.tsv --output-dir runs/sst2-tau8
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune a model (with registers) for QA or classification and score it",
        description="Fine-tune an encoder with N registers on a task's training file, save it (HF "
        "save_pretrained, safetensors), and score the dev file.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", default="minilm-l6", help="short name, local folder or Hub id (default: minilm-l6)"
    )
    add_task_argument(p)
    p.add_argument(
        "--train",
        required=True,
        help="training file: SQuAD-1.1 JSON or hub:tydiqa:LANG:train (qa); TSV/CSV/JSONL (classification)",
    )
    p.add_argument(
        "--dev",
        help="file scored after training, in the training file's format (without it the run trains and "
        "saves the model only; score it later with regtune evaluate)",
    )
    p.add_argument(
        "--output-dir", required=True, help="run folder for config, metrics, predictions and model"
    )
    p.add_argument(
        "--preset",
        default="default",
        choices=preset_names(),
        help="recipe to start from (per task, see below)",
    )
    for flag, (name, type_) in TRAIN_FLAGS.items():
        p.add_argument(
            flag, dest=name, type=type_, default=None, choices=CHOICES.get(flag), help=field_help(name)
        )
    add_switches(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output-dir")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from regtune.training.config import resolve_config
    from regtune.training.trainer import train_model

    explicit: dict[str, Any] = {name: getattr(args, name) for name, _ in TRAIN_FLAGS.values()}
    explicit.update(pad_to_max_length=args.pad_to_max_length, group_by_length=args.group_by_length)
    explicit.update(freeze_embeddings=args.freeze_embeddings)
    explicit.update(strict=args.strict)
    config = resolve_config(
        args.preset,
        task=choose_task(args.task, args.train),
        model=args.model,
        train_file=args.train,
        dev_file=args.dev,
        output_dir=args.output_dir,
        **explicit,
    )
    metrics = train_model(config, resume=args.resume, progress=not args.no_progress)
    if metrics:
        out = Path(config.output_dir)
        if args.dev:
            print(score_line(config.task, metrics))
        else:
            print(
                f"trained without --dev; score it with: regtune evaluate --model {out / 'model'} --dev FILE"
            )
        for name in ("model", "metrics.json", "predictions.json")[: 3 if args.dev else 2]:
            print(f"{name.split('.')[0]}: {out / name}")
    return 0
