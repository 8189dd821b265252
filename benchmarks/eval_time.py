"""Wall time of evaluating the full TyDi en dev set with MiniLM (issue #3 §2: at most 20 s).

One evaluation = what ``regtune evaluate`` and the end of ``regtune train`` do: featurize all 440 dev
questions into windows, no-grad inference in length-sorted batches, vectorised n-best span search,
official SQuAD v1.1 EM/F1. The model is the bundled MiniLM with ``--registers`` registers and an
untrained QA head (``--model DIR`` takes a trained ``regtune train`` model instead): timing needs no
trained weights, since every window is scored and post-processed the same way. Each precision runs
``--repeats`` times, interleaved, after one untimed warm-up; the median counts.

Run from the repository root::

    .venv/bin/python benchmarks/eval_time.py
    .venv/bin/python benchmarks/eval_time.py --model runs/demo-minilm-tau8/model

The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package

from regtune.core.errors import RegtuneError
from regtune.core.hub import load_tokenizer
from regtune.core.precision import describe_hardware, resolve_precision
from regtune.core.registers import add_registers, load_model
from regtune.tasks.qa.data import load_examples
from regtune.tasks.qa.evaluation import QASettings, evaluate_qa
from train_throughput import DEFAULT_DATA_DIR, load_stock_model, tydi_file

TARGET_SECONDS = 20.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="a regtune train model folder (default: MiniLM)")
    parser.add_argument("--registers", type=int, default=8, help="registers without --model (default: 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed evaluations per precision (default: 3)")
    parser.add_argument("--batch-size", type=int, default=64, help="windows per batch (default: 64)")
    parser.add_argument(
        "--dev",
        default=None,
        help=f"dev file (default: $REGTUNE_DATA_DIR/en/dev.json, else {DEFAULT_DATA_DIR}/en/dev.json)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hf_logging.set_verbosity_error()
    try:
        examples = load_examples(Path(args.dev) if args.dev else tydi_file(None, "dev.json")).examples
        if args.model:
            model, tokenizer = load_model(args.model), load_tokenizer(args.model)
        else:
            model, tokenizer = load_stock_model("minilm-l6", 42), load_tokenizer("minilm-l6")
            add_registers(model, args.registers)
    except RegtuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # Both precisions where bf16 is what 'auto' picks; otherwise fp32 alone.
    precisions = sorted({"fp32", resolve_precision("auto", "cpu")})
    settings = {name: QASettings.from_model(model) for name in precisions}
    for name in precisions:
        settings[name].precision = name
    seconds: dict[str, list[float]] = {name: [] for name in precisions}
    scores: dict[str, dict[str, float]] = {}
    for repeat in range(args.repeats + 1):
        for name in precisions:
            began = time.perf_counter()
            result = evaluate_qa(
                model, tokenizer, examples, settings[name], batch_size=args.batch_size, progress=False
            )
            if repeat:  # the first round warms up allocators and thread pools
                seconds[name].append(time.perf_counter() - began)
            scores[name] = {k: result.metrics[k] for k in ("exact_match", "f1", "num_windows")}
    summary = {
        "median_seconds": {name: round(statistics.median(s), 3) for name, s in seconds.items()},
        "seconds": {name: [round(x, 3) for x in s] for name, s in seconds.items()},
        "scores": scores,
        "num_questions": len(examples),
        "registers": model.num_registers,
        "threads": torch.get_num_threads(),
        "target_seconds": TARGET_SECONDS,
    }
    default = resolve_precision("auto", "cpu")
    summary["pass"] = summary["median_seconds"][default] <= TARGET_SECONDS
    for name in precisions:
        print(
            f"{name}: median {summary['median_seconds'][name]:.2f} s over {args.repeats} runs "
            f"({scores[name]['num_windows']} windows, {len(examples)} questions; F1 {scores[name]['f1']:.2f})"
        )
    verdict = "PASS" if summary["pass"] else "FAIL"
    print(f"{verdict} full en dev evaluation ({default}, the default) <= {TARGET_SECONDS:.0f} s")
    summary["hardware"] = describe_hardware()  # what the numbers above were measured on
    print(f"hardware: {summary['hardware']}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
