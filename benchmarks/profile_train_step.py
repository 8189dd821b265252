"""Where a training step's time goes: torch.profiler over regtune's default-preset steps (issue #3).

Profiles ``--steps`` steps of the bundled MiniLM with ``--registers`` registers on real TyDi en batches
(the same stratified batches as ``train_throughput.py``) and sums self CPU time into buckets: matmuls
(forward and backward GEMMs), attention (SDPA kernels), the word-embedding gradient, the optimizer,
grad-norm clipping, element-wise/normalisation work, and the rest. Collation is timed apart, since in
training it runs in the data loader.

Run from the repository root::

    .venv/bin/python benchmarks/profile_train_step.py --registers 8 --steps 6             # today's default
    .venv/bin/python benchmarks/profile_train_step.py --precision fp32 --attention-dropout 0.1 \
        --attn-implementation sdpa                                                      # issue 2's
    .venv/bin/python benchmarks/profile_train_step.py --compile      # the same under torch.compile

The last line of stdout is one JSON object: seconds per step and each bucket's share.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package

from regtune.core.hub import load_tokenizer
from regtune.core.precision import ATTN_IMPLEMENTATIONS, PRECISIONS, describe_hardware
from regtune.tasks.qa.data import load_examples
from regtune.tasks.qa.features import QACollator
from regtune.training.config import resolve_config
from train_throughput import Arm, Trainee, build_workload, load_stock_model, train_file

# Self-time buckets by operator name; first match wins. Names are ATen ops as the profiler reports them.
BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("optimizer", ("_fused_adamw", "adamw", "_foreach_")),
    ("embedding_grad", ("embedding_dense_backward", "embedding_backward", "index_add", "index_put")),
    ("attention", ("scaled_dot_product", "_flash_attention", "_efficient_attention", "_scaled_dot")),
    ("matmul", ("addmm", "mm", "bmm", "matmul", "linear")),
    ("grad_clip", ("norm", "_foreach_norm", "linalg_vector_norm")),
    ("layernorm_gelu_dropout", ("layer_norm", "gelu", "dropout", "native_dropout", "bernoulli")),
    ("elementwise_copy", ("add", "mul", "copy_", "cat", "fill_", "zero_", "to", "clone", "div", "sum")),
)


def bucket_of(name: str) -> str:
    lowered = name.lower()
    for bucket, needles in BUCKETS:
        if any(needle in lowered for needle in needles):
            return bucket
    return "other"


def unpad_rows(tensors: dict[str, torch.Tensor]) -> list[dict[str, object]]:
    """Turn a collated batch back into the per-window rows a collator receives."""
    lengths = tensors["attention_mask"].sum(dim=1).tolist()
    rows = []
    for i, length in enumerate(lengths):
        row: dict[str, object] = {}
        for name, values in tensors.items():
            row[name] = values[i, :length].tolist() if values.dim() == 2 else int(values[i])
        rows.append(row)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--registers", type=int, default=8, help="registers to add (default: 8)")
    parser.add_argument("--steps", type=int, default=6, help="profiled steps (default: 6)")
    parser.add_argument("--warmup", type=int, default=2, help="unprofiled steps first (default: 2)")
    parser.add_argument(
        "--model", default="minilm-l6", help="model short name or folder (default: minilm-l6)"
    )
    parser.add_argument(
        "--data-dir", default=None, help="TyDi folder (default: $REGTUNE_DATA_DIR or ../shared)"
    )
    parser.add_argument("--seed", type=int, default=42, help="seed for batches and init (default: 42)")
    parser.add_argument("--top", type=int, default=15, help="operators to list (default: 15)")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model (inductor, dynamic shapes); the warm-up then includes compilation",
    )
    current = resolve_config("default")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=current.precision,
        help=f"'auto' resolves as regtune train does on this CPU (default: {current.precision})",
    )
    parser.add_argument(
        "--attn-implementation",
        choices=ATTN_IMPLEMENTATIONS,
        default=current.attn_implementation,
        help=f"attention; 'auto' resolves as regtune train does (default: {current.attn_implementation})",
    )
    parser.add_argument(
        "--attention-dropout",
        type=float,
        default=current.attention_dropout,
        help=f"attention-probability dropout (default: {current.attention_dropout}, the default preset's)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hf_logging.set_verbosity_error()
    config = resolve_config("default")
    tokenizer = load_tokenizer(args.model)
    examples = load_examples(train_file(args.data_dir)).examples
    workload = build_workload(examples, tokenizer, config, args.warmup + args.steps, args.seed)
    stock = load_stock_model(args.model, args.seed)
    arm = Arm(
        "profiled",
        "default",
        args.registers,
        args.precision,
        args.attention_dropout,
        args.attn_implementation,
    )
    trainee = Trainee(arm, stock, config, workload.batches, args.seed)
    if args.compile:
        # In place, hooks included; dynamic shapes because every batch has its own padded width.
        trainee.model.compile(dynamic=True)

    # Collation cost on the same windows, unpadded back into rows (the Trainer collates in its data loader).
    collator = QACollator(tokenizer)
    batches_of_rows = [unpad_rows(batch.tensors) for batch in workload.batches]
    began = time.perf_counter()
    for rows in batches_of_rows:
        collator(rows)
    collate_seconds = (time.perf_counter() - began) / len(batches_of_rows)

    began = time.perf_counter()
    for batch in workload.batches[: args.warmup]:
        trainee.step(batch)
    warmup_seconds = time.perf_counter() - began
    timed = workload.batches[args.warmup :]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        began = time.perf_counter()
        for batch in timed:
            with record_function("train_step"):
                trainee.step(batch)
        wall = time.perf_counter() - began

    buckets: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key == "train_step":
            continue
        buckets[bucket_of(event.key)] += event.self_cpu_time_total / 1e6
    total = sum(buckets.values())
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    print(
        f"wall per step: {wall / len(timed):.3f} s over {len(timed)} steps, τ={args.registers}, "
        f"{trainee.precision}, {trainee.attn} attention, attention dropout {args.attention_dropout}"
        f"{', torch.compile' if args.compile else ''}; warm-up {warmup_seconds:.1f} s for {args.warmup} steps"
    )
    print(
        f"collation per batch: {collate_seconds * 1e3:.2f} ms "
        f"({collate_seconds / (wall / len(timed)):.2%} of a step)"
    )
    for name, seconds in sorted(buckets.items(), key=lambda kv: -kv[1]):
        print(f"{name:<24} {seconds / len(timed):8.3f} s/step  {seconds / total:6.1%}")
    summary = {
        "seconds_per_step": round(wall / len(timed), 4),
        "registers": args.registers,
        "precision": trainee.precision,
        "attn_implementation": trainee.attn,
        "attention_dropout": args.attention_dropout,
        "compile": args.compile,
        "warmup_seconds": round(warmup_seconds, 2),
        "steps": len(timed),
        "collate_seconds_per_batch": round(collate_seconds, 5),
        "threads": torch.get_num_threads(),
        "share": {name: round(seconds / total, 4) for name, seconds in buckets.items()},
    }
    summary["hardware"] = describe_hardware()  # what the numbers above were measured on
    print(f"hardware: {summary['hardware']}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
