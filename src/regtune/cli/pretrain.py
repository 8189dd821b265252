"""``regtune pretrain``: continue masked-LM pretraining with registers on unlabelled text."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from regtune.cli.common import CHOICES, column_list

_EPILOG = """\
Text: plain text files (one passage per line), SQuAD JSON (each context once, e.g. TyDi QA GoldP) or
TSV/CSV/JSONL (the --text-column, SST-2's 'sentence' by default); several files are pooled. A fixed
--heldout-fraction of the passages (by a hash of the text) is held out and scored at the end
(metrics.json: MLM loss, perplexity and their n).

The bundled minilm-l6 ships without an MLM head: its decoder is tied to the word embeddings, and only
the head's transform (dense + LayerNorm) and output bias start new, initialised as transformers does
(metrics.json lists them). Then fine-tune the result with its registers:

  regtune pretrain --model minilm-l6 --registers 8 \\
      --text ../shared/data/tydiqa-goldp/en/train.json --output-dir runs/pretrain-tau8
  regtune train --model runs/pretrain-tau8/model --registers 8 \\
      --train ../shared/data/tydiqa-goldp/en/train.json \\
      --dev ../shared/data/tydiqa-goldp/en/dev.json --output-dir runs/tau8-pretrained
"""

#: Command-line flag -> (PretrainConfig field, type); help texts come from the field metadata.
PRETRAIN_FLAGS: dict[str, tuple[str, Any]] = {
    "--registers": ("num_registers", int),
    "--placement": ("register_placement", str),
    "--register-init": ("register_init", str),
    "--register-lr": ("register_lr", float),
    "--epochs": ("epochs", float),
    "--max-steps": ("max_steps", int),
    "--batch-size": ("batch_size", int),
    "--lr": ("lr", float),
    "--weight-decay": ("weight_decay", float),
    "--warmup-ratio": ("warmup_ratio", float),
    "--seed": ("seed", int),
    "--max-length": ("max_length", int),
    "--mlm-probability": ("mlm_probability", float),
    "--heldout-fraction": ("heldout_fraction", float),
    "--save-steps": ("save_steps", int),
    "--logging-steps": ("logging_steps", int),
    "--report-to": ("report_to", str),
    "--precision": ("precision", str),
    "--attn-implementation": ("attn_implementation", str),
    "--text-column": ("text_columns", column_list),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    from regtune.training.pretrain_config import pretrain_field_help

    p = sub.add_parser(
        "pretrain",
        help="continue masked-LM pretraining with registers on unlabelled text",
        description="Continue masked-language-model training of an encoder with N registers on unlabelled "
        "text, and save it (HF save_pretrained, safetensors) for regtune train --model.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", default="minilm-l6", help="short name, local folder or Hub id (default: minilm-l6)"
    )
    p.add_argument(
        "--text",
        nargs="+",
        required=True,
        metavar="FILE",
        help="text files: plain text (one passage per line), SQuAD JSON (its contexts) or TSV/CSV/JSONL",
    )
    p.add_argument("--output-dir", required=True, help="run folder for config, log, model and metrics")
    for flag, (name, type_) in PRETRAIN_FLAGS.items():
        p.add_argument(
            flag,
            dest=name,
            type=type_,
            default=None,
            choices=CHOICES.get(flag),
            help=pretrain_field_help(name),
        )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output-dir")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from regtune.training.pretrain import PretrainConfig, pretrain_model

    explicit = {name: getattr(args, name) for name, _ in PRETRAIN_FLAGS.values()}
    config = PretrainConfig.from_dict(
        {
            "model": args.model,
            "text_files": list(args.text),
            "output_dir": args.output_dir,
            **{k: v for k, v in explicit.items() if v is not None},
        }
    )
    metrics = pretrain_model(config, resume=args.resume, progress=not args.no_progress)
    if metrics:
        out = Path(config.output_dir)
        print(
            f"held-out MLM loss {metrics['heldout_mlm_loss']}  perplexity {metrics['heldout_perplexity']}  "
            f"({metrics['num_heldout_masked_tokens']} masked tokens in {metrics['num_heldout_windows']} "
            "windows)"
        )
        print(f"model: {out / 'model'}")
        print(f"metrics: {out / 'metrics.json'}")
        print(
            f"fine-tune it: regtune train --model {out / 'model'} --registers {config.num_registers} "
            "--train FILE --output-dir DIR"
        )
    return 0
