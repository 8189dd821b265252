"""What the 250k-row embedding matrix of multilingual-e5-small costs a training step, and what
``--freeze-embeddings`` saves (issue #13 §2).

multilingual-e5-small has 117.5M parameters, 96.0M of them in its token-embedding matrix (250,037 × 384),
against MiniLM-L6's 11.7M of 22.7M. A dense AdamW step reads and writes every one of them, and the
backward pass writes a dense 96M gradient (384 MB), though a batch of 16 windows uses a few thousand rows.
This benchmark measures what that costs, on real TyDi QA windows:

=====================  =====================================================================
stock                  stock ``AutoModelForQuestionAnswering`` (no regtune hooks), every tensor trained
tau0 / tau8            regtune with 0 and 8 registers, every tensor trained
tau0_frozen / ..._     the same with ``--freeze-embeddings``: the token matrix needs no gradient and
tau8_frozen            no AdamW state (its rows still feed the forward)
=====================  =====================================================================

Every arm trains the same weights on the same batches (the default preset's length-grouped batches of
16, up to 384 tokens, fp32, sdpa, fused AdamW, grad-norm clipping as HF Trainer does), interleaved step
by step in rounds as in ``train_throughput.py`` (whose workload, arms and timing loop this reuses), so
background load hits every arm alike. Each step is split into its two phases:
*forward + backward*, and *update* (grad-norm clip + AdamW step + zeroing the gradients). The ratios are
paired: medians over rounds of one arm's round time over another's, on the same batches.

Run from the repository root::

    .venv/bin/python benchmarks/embedding_cost.py            # about 4.5 min on 2 idle cores
    .venv/bin/python benchmarks/embedding_cost.py --quick    # about 2 min; noisier

The last line of stdout is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import sys
import time
from typing import Any

import torch
from tqdm import tqdm
from transformers.utils import logging as hf_logging

from regtune.core.hub import load_tokenizer
from regtune.core.precision import describe_hardware
from regtune.tasks.qa.data import load_examples
from regtune.training.config import resolve_config

# The sibling benchmark, importable because Python puts a script's folder first on sys.path.
from train_throughput import (
    MATMUL_SIZES,
    Arm,
    Batch,
    Trainee,
    batch_flops,
    build_workload,
    load_stock_model,
    non_embedding_parameters,
    paired_total_ratio,
    run_rounds,
    tydi_file,
)

MODEL = "multilingual-e5-small"
FULL_PLAN = {"steps": 4, "rounds": 3, "warmup": 1, "matmul_repeats": 3}
QUICK_PLAN = {"steps": 2, "rounds": 2, "warmup": 1, "matmul_repeats": 2}
#: name -> (registers or None for the stock model, freeze the token embeddings)
ARMS = {
    "stock": (None, False),
    "tau0": (0, False),
    "tau0_frozen": (0, True),
    "tau8": (8, False),
    "tau8_frozen": (8, True),
}


class PhasedTrainee(Trainee):
    """A :class:`Trainee` whose steps record forward+backward and update time apart."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phases: dict[str, list[float]] = {"forward_backward": [], "update": []}

    def step(self, batch: Batch | list[Batch]) -> None:
        assert isinstance(batch, Batch)
        began = time.perf_counter()
        loss = self.model(**batch.tensors).loss
        loss.backward()
        middle = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.phases["forward_backward"].append(middle - began)
        self.phases["update"].append(time.perf_counter() - middle)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 steps (default: 3 of 4)")
    parser.add_argument("--model", default=MODEL, help=f"encoder to measure (default: {MODEL})")
    parser.add_argument(
        "--data-dir", default=None, help="TyDi QA GoldP folder (default: as train_throughput)"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)
    for name, value in (QUICK_PLAN if args.quick else FULL_PLAN).items():
        setattr(args, name, value)
    return args


def build_trainees(args: argparse.Namespace, batches: list[Batch]) -> list[PhasedTrainee]:
    config = resolve_config("default", model=args.model)
    stock = load_stock_model(args.model, args.seed)
    frozen = copy.deepcopy(stock)
    frozen.get_input_embeddings().weight.requires_grad_(False)  # what --freeze-embeddings does
    trainees = []
    for name, (registers, freeze) in ARMS.items():
        arm = Arm(name, "default", registers)  # fp32, sdpa, the model's attention dropout
        trainees.append(PhasedTrainee(arm, frozen if freeze else stock, config, batches, args.seed))
    return trainees


def summarise(
    trainees: list[PhasedTrainee],
    times: dict[str, list[list[float]]],
    peaks: dict[str, float],
    args: argparse.Namespace,
    epoch_batches: int,
) -> dict[str, Any]:
    model = trainees[0].model
    params = non_embedding_parameters(model)
    layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    rows = {}
    for t in trainees:
        seconds = statistics.median(sum(r) for r in times[t.arm.name])
        flops = sum(batch_flops(b, t.registers, params, layers, hidden) for b in t.batches)
        # Phases of the timed steps only (the warm-up steps come first): all arms ran the same batches,
        # so their means compare like for like.
        timed = {phase: values[args.warmup :] for phase, values in t.phases.items()}
        rows[t.arm.name] = {
            "seconds_per_step": seconds / len(t.batches),
            "forward_backward_s": statistics.fmean(timed["forward_backward"]),
            "update_s": statistics.fmean(timed["update"]),
            "real_tokens_per_s": sum(b.real_tokens for b in t.batches) / seconds,
            "epoch_seconds": seconds / len(t.batches) * epoch_batches,
            "trained_parameters": sum(p.numel() for p in t.model.parameters() if p.requires_grad),
            "fraction_of_fp32_peak": flops / seconds / 1e9 / peaks["fp32"],
        }
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hf_logging.set_verbosity_error()
    logging.getLogger("regtune").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(args.model)
    config = resolve_config("default", model=args.model)
    examples = load_examples(tydi_file(args.data_dir, "train.json")).examples
    workload = build_workload(examples, tokenizer, config, args.steps, args.seed)
    trainees = build_trainees(args, workload.batches)
    total = len(trainees) * (args.warmup + args.rounds * args.steps)
    with tqdm(total=total, desc="training steps", file=sys.stderr) as progress:
        times, peaks = run_rounds(trainees, args, progress)
    rows = summarise(trainees, times, peaks, args, workload.num_epoch_batches)
    print(
        f"{'arm':<12} {'trained':>11} {'s/step':>7} {'fwd+bwd s':>9} {'update s':>8} {'tok/s':>6} "
        f"{'epoch min':>9} {'of fp32 peak':>12}"
    )
    for name, r in rows.items():
        print(
            f"{name:<12} {r['trained_parameters']:>11,} {r['seconds_per_step']:>7.2f} "
            f"{r['forward_backward_s']:>9.2f} "
            f"{r['update_s']:>8.2f} {r['real_tokens_per_s']:>6.0f} {r['epoch_seconds'] / 60:>9.1f} "
            f"{r['fraction_of_fp32_peak']:>12.1%}"
        )
    ratios = {
        f"{a}_over_{b}": paired_total_ratio(times, a, b)
        for a, b in (("tau0", "stock"), ("tau0_frozen", "tau0"), ("tau8", "tau0"), ("tau8_frozen", "tau8"))
    }
    print(
        "paired time ratios (median over rounds, same batches): "
        + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items())
    )
    print(
        f"fp32 matmul peak {peaks['fp32']:.1f} GFLOP/s (sizes {MATMUL_SIZES}); torch threads "
        f"{torch.get_num_threads()}; epoch = {workload.num_epoch_batches} batches of {config.batch_size}"
    )
    print(f"hardware: {describe_hardware()}")
    print(
        json.dumps(
            {
                "model": args.model,
                "plan": {k: getattr(args, k) for k in FULL_PLAN},
                "rows": rows,
                "ratios": ratios,
                "fp32_peak_gflops": peaks["fp32"],
                "threads": torch.get_num_threads(),
                "hardware": describe_hardware(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
