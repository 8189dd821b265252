"""``regtune compare``: one arm against another across sweep folders, paired by seed and example."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from regtune.cli.common import at_least

_EPILOG = """\
An arm is a sweep folder, optionally followed by ':' and grid values that pick its runs, one per seed:
  runs/levers:num_registers=24,train_only=registers+head
Example (register tuning against PEFT prompt tuning with the same number of trainable parameters):
  regtune compare runs/reg-tuning:num_registers=24 runs/prompt-tuning --dev validation
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="one arm against another, across sweep folders (paired Δ with a 95 %% CI)",
        description="Δ = TREATED − CONTROL of every task metric on one dev file, on the seeds and examples "
        "both arms have, with a 95 % CI over seeds and examples and a two-sided p-value (the report's "
        "bootstrap). For arms a single sweep grid cannot hold side by side.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("treated", help="SWEEP_DIR[:axis=value,...]")
    p.add_argument("control", help="SWEEP_DIR[:axis=value,...]")
    p.add_argument("--dev", required=True, help="the dev name both sweeps scored (e.g. en, validation)")
    p.add_argument(
        "--n-boot", type=at_least(100), default=10_000, help="bootstrap replicates (default: 10000)"
    )
    p.add_argument("--seed", type=at_least(0), default=0, help="seed of the bootstrap (default: 0)")
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON (atomically)")


def run(args: argparse.Namespace) -> int:
    from regtune.core.io import atomic_write_json
    from regtune.reporting.compare import ArmSpec, compare_arms

    result = compare_arms(
        ArmSpec.parse(args.treated), ArmSpec.parse(args.control), args.dev, n_boot=args.n_boot, seed=args.seed
    )
    print(f"{result['treated']}  minus  {result['control']}  on {result['dev']}")
    for metric, r in result["metrics"].items():
        count = next(v for k, v in r.items() if k.startswith("n_") and k != "n_seeds")
        print(
            f"{metric}: Δ {r['delta']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}] p {r['p_value']:.3g} "
            f"({r['n_seeds']} seeds, {count} examples, 95 % CI)"
        )
        print(f"  treated {_score(r['treated'])}, control {_score(r['control'])}")
    if result["seeds_left_out"]:
        print(f"seeds only one arm has, left out: {', '.join(map(str, result['seeds_left_out']))}")
    if args.json:
        atomic_write_json(args.json, result)
    return 0


def _score(side: Mapping[str, Any]) -> str:
    """``mean [low, high]``; one seed has no interval (its seed-to-seed spread is unknown)."""
    if side["mean"] is None:
        return "n/a"
    if side["ci_low"] is None:
        return f"{side['mean']:.2f} (one seed, no CI)"
    return f"{side['mean']:.2f} [{side['ci_low']:.2f}, {side['ci_high']:.2f}]"
