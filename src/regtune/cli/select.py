"""``regtune select``: a pre-registered study's screening picks and its confirmation table."""

from __future__ import annotations

import argparse
from pathlib import Path

from regtune.cli.common import at_least

_EPILOG = """\
The plan file fixes, before any run, the arms (each a sweep folder under ROOT/TASK and its control),
the rule that picks levers (Δ > 0 on the held-out split, at most 2, ties to fewer trainable parameters)
and each task's dev files. What this command writes:
  ROOT/TASK/selection/screening.{json,md}  every arm against its control on the screening split
  ROOT/TASK/selection/confirm.tsv          once screening is complete: the sweeps to confirm (NAME FLAGS)
  OUTPUT/confirmation.{json,md}            the picks against their controls on the official dev sets,
                                           from ROOT/TASK/confirm/NAME, Holm across all of them
A complete screening's picks are frozen: a later call that would pick differently is refused, and one
without the screening runs (say, a fresh checkout with only the published screening.json copied into
ROOT/TASK/selection/) keeps them and rewrites confirm.tsv.
Example (the levers study of docs/results/register-levers/):
  regtune select docs/results/register-levers/plan.json --root runs/levers --task tydi
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "select",
        help="a pre-registered study: pick arms by the plan's rule, then tabulate their confirmation",
        description="Screen every arm of a plan against its control on the held-out split (paired Δ, "
        "95 % CI, smallest detectable effect, register similarity), pick levers by the plan's rule, and "
        "tabulate the picks' confirmation runs with Holm across all of them. Trains nothing: the runs "
        "are regtune sweep folders.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("plan", help="the plan file (JSON; see the epilog)")
    p.add_argument("--root", required=True, help="folder with one subfolder of sweeps per task")
    p.add_argument("--task", action="append", help="screen only this task (repeatable; default: all)")
    p.add_argument("--output", help="where confirmation.{json,md} go (default: ROOT/confirmation)")
    p.add_argument(
        "--n-boot", type=at_least(100), default=10_000, help="bootstrap replicates (default: 10000)"
    )
    p.add_argument("--seed", type=at_least(0), default=0, help="seed of the bootstrap (default: 0)")


def run(args: argparse.Namespace) -> int:
    from regtune.reporting import selection

    plan = selection.load_plan(args.plan)
    root = Path(args.root)
    for task in args.task or list(plan.tasks):
        result = selection.freeze(
            plan, root, selection.screen(plan, root, task, n_boot=args.n_boot, seed=args.seed)
        )
        done = sum(row["status"] == "done" for row in result["rows"])
        picks = result["picks"]
        state = "incomplete" if picks is None else f"picks {[plan.arm(i).name for i in picks]}"
        table = root / task / selection.SELECTION_DIR / "screening.md"
        # Only screening.json where the picks were restored on a machine without the screening runs.
        restored = result["complete"] and not table.is_file()
        print(f"{task}: {done} of {len(result['rows'])} comparisons screened, {state}")
        print(f"  {table.with_suffix('.json')} (frozen; runs not here)" if restored else f"  {table}")
    confirmed = selection.confirm(plan, root, n_boot=args.n_boot, seed=args.seed)
    if confirmed["rows"]:
        out = Path(args.output) if args.output else root / "confirmation"
        selection.write_confirmation(plan, confirmed, out)
        state = "complete" if confirmed["complete"] else "incomplete"
        print(f"confirmation ({state}): {out / 'confirmation.md'}")
    return 0
