"""Compare two arms that live in different sweeps, paired by seed and example.

``regtune report`` compares every τ with τ=0 inside one sweep. A study of levers also needs arms that
cannot share a grid: register tuning against PEFT prompt tuning at the same number of trainable
parameters, or fine-tuning from an MLM-pretrained folder with registers against one without. Both sides
were scored on the same file, by the same seeds, so the comparison is the report's own: Δ on the seeds
and examples both arms have, with the seed-and-example bootstrap of :func:`regtune.experiments.stats.compare`.

An arm is written ``SWEEP_DIR`` or ``SWEEP_DIR:axis=value,axis=value`` (grid axes of that sweep, e.g.
``runs/levers-tydi:num_registers=8,register_init=orthogonal``); every finished run that matches belongs
to it, one per seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from regtune.core.errors import RegtuneError
from regtune.experiments import stats
from regtune.reporting.report import (
    CONFIDENCE,
    _common_questions,
    _finite,
    _load_sweep,
    _matrix,
    _read_json,
    _rng,
)


class NoFinishedRun(RegtuneError):
    """An arm none of whose runs has finished (a study stage that has not run yet)."""


@dataclass(frozen=True)
class ArmSpec:
    """A sweep folder and the grid values its runs must have."""

    sweep: Path
    where: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> ArmSpec:
        folder, _, filters = text.partition(":")
        where = {}
        for item in filter(None, (part.strip() for part in filters.split(","))):
            axis, sep, value = item.partition("=")
            if not sep or not axis or not value:
                raise RegtuneError(f"arm '{text}': write filters as axis=value, e.g. num_registers=8")
            where[axis.strip()] = value.strip()
        return cls(Path(folder), where)

    def label(self) -> str:
        return f"{self.sweep}" + (
            ":" + ",".join(f"{k}={v}" for k, v in self.where.items()) if self.where else ""
        )


def _arm_scores(arm: ArmSpec, dev: str) -> tuple[Any, dict[Any, tuple[str, Mapping[str, Any]]]]:
    """The arm's task and, per seed, (run id, per-example scores on ``dev``)."""
    from regtune.experiments.sweep import run_finished

    sweep, _ = _load_sweep(arm.sweep)
    scored = sweep.scored_files()
    if dev not in scored:
        raise RegtuneError(
            f"{arm.sweep}: its runs were not scored on '{dev}' (they were on {', '.join(scored)})"
        )
    unknown = sorted(set(arm.where) - set(sweep.grid))
    if unknown:
        raise RegtuneError(
            f"arm '{arm.label()}': {', '.join(unknown)} not among its grid axes {list(sweep.grid)}"
        )
    by_seed: dict[Any, tuple[str, Mapping[str, Any]]] = {}
    for spec in sweep.runs():
        if any(str(spec.point[axis]) != value for axis, value in arm.where.items()):
            continue
        if not run_finished(spec, scored):
            continue
        seed = spec.point["seed"]
        if seed in by_seed:
            raise RegtuneError(
                f"arm '{arm.label()}': runs {by_seed[seed][0]} and {spec.run_id} share seed {seed}; "
                "add filters until one run per seed is left"
            )
        path = spec.eval_dir(dev) / sweep.task.per_example_file
        by_seed[seed] = (spec.run_id, _read_json(path, f"per-{sweep.task.unit} scores"))
    if not by_seed:
        raise NoFinishedRun(f"arm '{arm.label()}': no finished run matches")
    return sweep.task, by_seed


def compare_arms(
    treated: ArmSpec, control: ArmSpec, dev: str, *, n_boot: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Δ = treated − control of every task metric on ``dev``, paired by seed and example, with a 95 % CI."""
    task, treated_runs = _arm_scores(treated, dev)
    control_task, control_runs = _arm_scores(control, dev)
    if task.name != control_task.name:
        raise RegtuneError(f"the arms fine-tune different tasks ({task.name}, {control_task.name})")
    seeds = [s for s in treated_runs if s in control_runs]
    if not seeds:
        raise RegtuneError(f"the arms share no seed ({sorted(treated_runs)} against {sorted(control_runs)})")
    runs = [treated_runs[s][1] for s in seeds] + [control_runs[s][1] for s in seeds]
    examples = _common_questions(runs)
    if not examples:
        raise RegtuneError(f"the arms' runs share no {task.unit} of '{dev}'")
    result: dict[str, Any] = {
        "treated": treated.label(),
        "control": control.label(),
        "dev": dev,
        "seeds": seeds,
        "seeds_left_out": sorted(set(treated_runs) ^ set(control_runs), key=str),
        # Run ids per seed, so a reader can find each side's runs (their metrics.json, register diversity).
        "runs": {
            "treated": [treated_runs[s][0] for s in seeds],
            "control": [control_runs[s][0] for s in seeds],
        },
        "metrics": {},
    }
    for metric in task.metrics:
        a = _matrix(
            treated.sweep, dev, [treated_runs[s][0] for s in seeds], runs[: len(seeds)], metric, examples
        )
        b = _matrix(
            control.sweep, dev, [control_runs[s][0] for s in seeds], runs[len(seeds) :], metric, examples
        )
        rng = _rng(seed, "compare", treated.label(), control.label(), dev, metric)
        comparison = stats.compare(a, b, n_boot=n_boot, confidence=CONFIDENCE, rng=rng)
        result["metrics"][metric] = {
            "delta": _finite(comparison.delta),
            "ci_low": _finite(comparison.ci_low),
            "ci_high": _finite(comparison.ci_high),
            "p_value": _finite(comparison.p_value),
            "n_seeds": int(comparison.n_seeds),
            f"n_{task.unit}s": int(comparison.n_questions),
            # Each side's own score on the paired seeds and examples, so Δ can be read against its level.
            "treated": _side(a, n_boot, _rng(seed, "side", treated.label(), dev, metric)),
            "control": _side(b, n_boot, _rng(seed, "side", control.label(), dev, metric)),
        }
    return result


def _side(scores: np.ndarray, n_boot: int, rng: np.random.Generator) -> dict[str, float | None]:
    """One arm's mean over seeds and its 95 % CI (seeds and examples resampled); scores: (seeds, examples)."""
    cell = stats.summarize(scores, n_boot=n_boot, confidence=CONFIDENCE, rng=rng)
    return {"mean": _finite(cell.mean), "ci_low": _finite(cell.ci_low), "ci_high": _finite(cell.ci_high)}
