"""Does ``regtune sweep --jobs 2`` (two runs at once, one thread each) beat ``--jobs 1`` (one run at a
time, every core to it) on this machine? The levers study (issue #14) is ~80 short MiniLM runs, so the
answer decides hours.

Both arms run the same two whole runs end to end through the real CLI (load, featurise, train, score the
held-out split, save): ``regtune sweep --select-on validation --registers 8 --seeds 1,2`` with
``--max-steps STEPS`` on TyDi en, in a fresh folder each time. The arms alternate in rounds (A B, then
B A, ...), so a background load that comes and goes hits both alike; the figure to quote is the median
over rounds of the paired ratio wall(jobs 2) / wall(jobs 1). Below 1, ``--jobs 2`` pays.

Run from the repository root on otherwise idle cores::

    .venv/bin/python benchmarks/sweep_jobs.py                 # 2 rounds of 60 steps: about 11 min
    .venv/bin/python benchmarks/sweep_jobs.py --rounds 1 --steps 20   # a smoke run

The last line of stdout is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from regtune.core.precision import describe_hardware

DATA = Path("../shared/data/tydiqa-goldp/en/train.json")


def sweep_seconds(jobs: int, steps: int, train: Path, model: str) -> float:
    """Wall seconds of one two-run sweep in a fresh folder."""
    with tempfile.TemporaryDirectory(prefix=f"jobs{jobs}-") as folder:
        command = [
            sys.executable, "-m", "regtune.cli", "sweep", "--select-on", "validation", "--registers", "8",
            "--seeds", "1,2", "--max-steps", str(steps), "--train", str(train), "--model", model,
            "--jobs", str(jobs), "--no-progress", "--report-to", "none", "--output-dir", folder,
        ]  # fmt: skip
        began = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60, help="training steps per run")
    parser.add_argument("--train", type=Path, default=DATA)
    parser.add_argument("--model", default="minilm-l6")
    args = parser.parse_args()
    if not args.train.is_file():
        sys.exit(f"sweep_jobs: {args.train}: no such training file (run from the repository root)")
    walls: dict[int, list[float]] = {1: [], 2: []}
    for round_ in range(args.rounds):
        for jobs in (1, 2) if round_ % 2 == 0 else (2, 1):
            walls[jobs].append(sweep_seconds(jobs, args.steps, args.train, args.model))
            print(f"round {round_ + 1}: --jobs {jobs}: {walls[jobs][-1]:.1f} s", flush=True)
    ratios = [two / one for one, two in zip(walls[1], walls[2], strict=True)]
    result = {
        "hardware": describe_hardware(),
        "cores": os.cpu_count(),
        "model": args.model,
        "steps_per_run": args.steps,
        "runs_per_sweep": 2,
        "wall_seconds": walls,
        "ratio_jobs2_over_jobs1": ratios,
        "median_ratio": statistics.median(ratios),
    }
    print(f"median wall(--jobs 2) / wall(--jobs 1): {result['median_ratio']:.3f} over {len(ratios)} rounds")
    print(f"hardware: {result['hardware']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
