"""What dropout costs a CPU training step: default dropout vs attention dropout 0 vs all dropout 0.

Same stratified TyDi en batches as ``train_throughput.py`` (default preset, MiniLM, τ=8); the three arms
run step by step on the same batches, and each ratio is the median of per-step time ratios against the
default. Run from the repository root::

    .venv/bin/python benchmarks/dropout_cost.py
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

from regtune.core.hub import load_tokenizer
from regtune.core.precision import describe_hardware
from regtune.tasks.qa.data import load_examples
from regtune.training.config import resolve_config
from train_throughput import Arm, Trainee, build_workload, load_stock_model, set_attention_dropout, train_file

#: arm -> (attention-probability dropout, every other dropout)
VARIANTS = {"default": (0.1, 0.1), "attention_dropout_0": (0.0, 0.1), "all_dropout_0": (0.0, 0.0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--registers", type=int, default=8, help="registers (default: 8)")
    parser.add_argument("--steps", type=int, default=6, help="timed batches per round (default: 6)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the batches (default: 2)")
    parser.add_argument(
        "--data-dir", default=None, help="TyDi folder (default: $REGTUNE_DATA_DIR or ../shared)"
    )
    args = parser.parse_args(argv)
    hf_logging.set_verbosity_error()
    config = resolve_config("default")
    tokenizer = load_tokenizer("minilm-l6")
    workload = build_workload(
        load_examples(train_file(args.data_dir)).examples, tokenizer, config, args.steps + 2, 42
    )
    warmup, timed = workload.batches[:2], workload.batches[2:]
    trainees = {}
    for name, (attention, other) in VARIANTS.items():
        stock = load_stock_model("minilm-l6", 42)
        for module in stock.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = other
        set_attention_dropout(stock, attention)
        trainees[name] = Trainee(Arm(name, "default", args.registers), stock, config, timed, 42)
        for batch in warmup:
            trainees[name].step(batch)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for batch in timed:
            for name, trainee in trainees.items():
                began = time.perf_counter()
                trainee.step(batch)
                times[name].append(time.perf_counter() - began)
    summary = {}
    for name in VARIANTS:
        ratio = statistics.median(t / d for t, d in zip(times[name], times["default"], strict=True))
        summary[name] = {
            "seconds_per_step": round(statistics.fmean(times[name]), 3),
            "ratio": round(ratio, 3),
        }
        print(f"{name:<22} {summary[name]['seconds_per_step']:.3f} s/step  paired ratio {ratio:.3f}")
    summary["hardware"] = describe_hardware()  # what the numbers above were measured on
    print(f"hardware: {summary['hardware']}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
