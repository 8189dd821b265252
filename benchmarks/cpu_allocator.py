"""What glibc's default malloc costs a CPU training step, against ``keep_freed_memory()``.

Two worker processes (spawned, one torch thread each) train the same MiniLM QA model with AdamW on the
same batches: ``default`` keeps glibc's allocator as it is, ``kept`` calls ``keep_freed_memory()`` first,
as ``RegisterTrainer`` does on CPU. They take turns, one round of ``--steps`` steps each (A B, then B A),
so a background load that comes and goes hits both alike; only one works at a time. Each step's wall
time, user and system CPU time and minor page faults come from ``getrusage`` around it. The figure to
quote is ``speedup``: the median over rounds of the paired ratio of round times, default / kept.

The batch is the seed recipe's shape by default (8 windows padded to 434 tokens, every position real, so
the arithmetic is exactly that of a seed-preset step). FLOPs per step follow ``train_throughput.py``:
6·P·B·S + 3·L·B·4·S²·H; ``fraction_of_peak`` divides FLOP/s by the best fp32 ``torch.matmul`` rate the
same worker measured at the start of each of its rounds, under the load its steps then ran under (both
arms run fp32, the arithmetic of every CPU without AMX).

Run from the repository root::

    .venv/bin/python benchmarks/cpu_allocator.py                      # 3 rounds of 4 steps, ~3 min
    .venv/bin/python benchmarks/cpu_allocator.py --batch 16 --length 192   # the default preset's shape

The last line of stdout is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from regtune.core.precision import describe_hardware

ARMS = ("default", "kept")


def _step_timer(
    args: argparse.Namespace, kept: bool
) -> tuple[Callable[[], dict[str, float]], dict[str, Any]]:
    """Build the model, optimizer and batch in this worker; returns (one timed step, the worker's facts)."""
    import torch
    from transformers.utils import logging as hf_logging

    from regtune.core.allocator import keep_freed_memory
    from train_throughput import Batch, batch_flops, load_stock_model, non_embedding_parameters

    applied = keep_freed_memory() if kept else False
    torch.set_num_threads(1)
    hf_logging.set_verbosity_error()
    model = load_stock_model(args.model, seed=0)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=True)
    ids = torch.randint(1000, model.config.vocab_size, (args.batch, args.length))
    positions = torch.randint(0, args.length, (2, args.batch))
    # Every position is real (no padding), so the batch's FLOPs are train_throughput's formula as is.
    shape = Batch(tensors={}, real_tokens=ids.numel(), size=args.batch, width=args.length)
    c = model.config
    flops = batch_flops(shape, 0, non_embedding_parameters(model), c.num_hidden_layers, c.hidden_size)

    def step() -> dict[str, float]:
        before, began = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), start_positions=positions[0],
                    end_positions=positions[1])  # fmt: skip
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        after = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "wall": time.perf_counter() - began,
            "user": after.ru_utime - before.ru_utime,
            "sys": after.ru_stime - before.ru_stime,
            "faults": after.ru_minflt - before.ru_minflt,
        }

    return step, {"applied": applied, "flops_per_step": flops}


def _worker(args: argparse.Namespace, kept: bool, conn: Any) -> None:
    from train_throughput import matmul_gflops

    step, facts = _step_timer(args, kept)
    for _ in range(args.warmup):
        step()
    conn.send(facts)
    while conn.recv() == "round":
        # The peak is measured in the round, under the same load as the steps that follow it.
        peak = matmul_gflops((1024, 2048), 2)
        conn.send((peak, [step() for _ in range(args.steps)]))
    conn.send({"max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _summary(steps: list[dict[str, float]], facts: dict[str, Any], rss: float) -> dict[str, Any]:
    wall = statistics.median(s["wall"] for s in steps)
    gflops = facts["flops_per_step"] / wall / 1e9
    return {
        "applied": facts["applied"],
        "s_per_step": round(wall, 3),
        "user_s_per_step": round(statistics.median(s["user"] for s in steps), 3),
        "sys_s_per_step": round(statistics.median(s["sys"] for s in steps), 3),
        "faults_per_step": int(statistics.median(s["faults"] for s in steps)),
        "gflops": round(gflops, 1),
        "peak_fp32_gflops": round(facts["peak_gflops"], 1),
        "fraction_of_peak": round(gflops / facts["peak_gflops"], 3),
        "max_rss_mib": round(rss),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per arm and round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (optimizer state)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=434)
    parser.add_argument("--model", default="minilm-l6")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    pipes, workers = {}, []
    for arm in ARMS:
        pipes[arm], child = ctx.Pipe()
        workers.append(ctx.Process(target=_worker, args=(args, arm == "kept", child)))
        workers[-1].start()
    facts = {arm: pipes[arm].recv() for arm in ARMS}
    times: dict[str, list[list[dict[str, float]]]] = {arm: [] for arm in ARMS}
    for r in range(args.rounds):
        for arm in ARMS if r % 2 == 0 else ARMS[::-1]:
            pipes[arm].send("round")
            peak, steps = pipes[arm].recv()
            facts[arm]["peak_gflops"] = max(peak, facts[arm].get("peak_gflops", 0.0))
            times[arm].append(steps)
    rss = {}
    for arm in ARMS:
        pipes[arm].send("stop")
        rss[arm] = pipes[arm].recv()["max_rss_mib"]
    for w in workers:
        w.join()
    arms = {arm: _summary([s for rnd in times[arm] for s in rnd], facts[arm], rss[arm]) for arm in ARMS}
    paired = zip(times["default"], times["kept"], strict=True)
    ratios = [sum(s["wall"] for s in a) / sum(s["wall"] for s in b) for a, b in paired]
    for arm, row in arms.items():
        print(f"{arm:8s} {row['s_per_step']:6.2f} s/step  sys {row['sys_s_per_step']:5.2f} s  "
              f"{row['faults_per_step']:>8,} faults  {row['gflops']:5.1f} GFLOP/s = "
              f"{row['fraction_of_peak']:.0%} of fp32 peak  RSS {row['max_rss_mib']:,.0f} MiB")  # fmt: skip
    result = {
        "benchmark": "cpu_allocator",
        "hardware": describe_hardware(),
        "batch": args.batch,
        "length": args.length,
        "rounds": args.rounds,
        "steps": args.steps,
        "arms": arms,
        "speedup": round(statistics.median(ratios), 3),
        "round_ratios": [round(x, 3) for x in ratios],
    }
    print(f"speedup (default / kept, median of paired rounds): {result['speedup']:.2f}x")
    print(f"hardware: {result['hardware']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
