"""A pre-registered two-stage study: screen arms on held-out data, pick by a fixed rule, confirm on dev.

A study of many arms that reports its best arm on the dev set is optimistic by construction: the best of
thirteen noisy differences is large even when every true difference is zero. So the rule that decides which
arms go on is written in a plan file *before* any run, screening reads only the held-out part of each
training file, and the confirmation on the official dev sets is Holm-corrected across everything it tests.
The runs are ordinary ``regtune sweep`` folders; this module does the bookkeeping between them:

* :func:`screen`: every arm with a control is compared with it on the screening split
  (:func:`regtune.reporting.compare.compare_arms`: paired by seed and example), and :func:`pick` applies
  the rule. Once a task's screening is complete its picks are frozen in ``selection/screening.json``;
  a later complete call that would pick differently is refused, and one that is not complete (its
  runs gone, e.g. on a fresh checkout with only the published file) keeps the frozen picks.
* :func:`confirm`: each pick against its control in the confirmation sweeps, Holm across all tasks'
  picks, with the smallest effect each comparison could have detected.

Plan file (JSON)::

    {"rule": {"min_delta": 0.0, "max_picks": 2, "tie": 0.01, "seeds": 3},
     "tasks": {"tydi": {"metric": "f1", "screen_dev": "validation", "confirm_dev": "en"}},
     "arms": [{"id": 1, "name": "control", "arm": "init:num_registers=0", "flags": "--registers 0"},
              {"id": 5, "name": "deep", "arm": "depth", "control": 1, "lever": true,
               "flags": "--registers 8 --register-depth all"}]}

``arm`` is an arm of :mod:`regtune.reporting.compare` relative to the task's screening folder
``ROOT/TASK``. ``flags`` are the ``regtune sweep`` options that rebuild the arm for confirmation;
``{screen}`` in them stands for that folder (e.g. a model pretrained during screening). Arms with
``"lever": false`` (comparators) are reported but never picked.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scipy import stats as scipy_stats

from regtune.core.errors import ConfigError, RegtuneError
from regtune.core.io import atomic_write_json, atomic_write_text
from regtune.experiments import stats
from regtune.reporting.compare import ArmSpec, NoFinishedRun, compare_arms

SELECTION_DIR = "selection"
CONFIRM_DIR = "confirm"
#: The smallest detectable effect's test: two-sided α = 0.05, power 80 %.
MDE_ALPHA = 0.05
MDE_POWER = 0.80
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class Arm:
    id: int
    name: str  # also the confirmation sweep's folder name
    arm: str  # compare's arm spec, relative to ROOT/TASK
    flags: str = ""  # regtune sweep options that rebuild it for confirmation
    control: int | None = None
    lever: bool = False


@dataclass(frozen=True)
class TaskPlan:
    name: str
    metric: str
    screen_dev: str
    confirm_dev: str


@dataclass(frozen=True)
class Rule:
    min_delta: float = 0.0  # a pick must beat its control by more than this (points)
    max_picks: int = 2
    tie: float = 0.01  # Δs equal at this resolution tie; fewer trainable parameters, then lower id, win
    seeds: int = 3  # screening is complete when every compared arm has this many paired seeds
    confirm_seeds: int = 5  # and the confirmation when every pick has this many


@dataclass(frozen=True)
class Plan:
    path: Path
    rule: Rule
    tasks: dict[str, TaskPlan]
    arms: list[Arm] = field(default_factory=list)
    digest: str = ""  # sha256 of the bytes that were parsed (not of the file as it is later)

    def arm(self, arm_id: int) -> Arm:
        return next(a for a in self.arms if a.id == arm_id)

    def sha256(self) -> str:
        return self.digest


# --- the plan file ----------------------------------------------------------------------------------------


def load_plan(path: str | Path) -> Plan:
    """Read and check a plan file; every mistake is one line naming the file and the arm or task."""
    path = Path(path)
    try:
        raw = path.read_bytes()  # hashed and parsed from the same bytes
        data = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise RegtuneError(f"{path}: no such plan file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RegtuneError(f"{path}: not a readable JSON plan ({err})") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("arms"), list)
        or not isinstance(data.get("tasks"), dict)
        or not data["tasks"]
    ):
        raise ConfigError(f"{path}: a plan needs 'tasks' (an object) and 'arms' (a list)")
    where = "rule"
    try:
        rule = Rule(**data.get("rule", {}))
        tasks = {}
        for name, spec in data["tasks"].items():
            where = f"task '{name}'"
            tasks[name] = TaskPlan(name=name, **spec)
        arms = []
        for i, spec in enumerate(data["arms"], start=1):
            where = f"arm #{i} of 'arms'"
            arms.append(Arm(**spec))
    except TypeError as err:
        raise ConfigError(f"{path}: {where}: {err}") from None
    _check_rule(path, rule)
    _check_arms(path, arms)
    return Plan(path, rule, tasks, arms, hashlib.sha256(raw).hexdigest())


def _check_rule(path: Path, rule: Rule) -> None:
    numbers = (rule.min_delta, rule.tie)
    counts = (rule.max_picks, rule.seeds, rule.confirm_seeds)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
        raise ConfigError(f"{path}: rule: min_delta and tie are numbers")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in counts):
        raise ConfigError(f"{path}: rule: max_picks, seeds and confirm_seeds are whole numbers >= 1")
    if rule.tie <= 0:
        raise ConfigError(f"{path}: rule: tie must be > 0 (the resolution at which Δs tie)")


def _check_arms(path: Path, arms: Sequence[Arm]) -> None:
    ids = [a.id for a in arms]
    names = [a.name for a in arms]
    for arm in arms:
        where = f"{path}: arm {arm.id} ({arm.name})"
        if not isinstance(arm.id, int) or not all(isinstance(v, str) for v in (arm.name, arm.arm, arm.flags)):
            raise ConfigError(f"{where}: 'id' is a whole number; 'name', 'arm' and 'flags' are strings")
        if ids.count(arm.id) > 1 or names.count(arm.name) > 1:
            raise ConfigError(f"{where}: its id or name is used twice")
        if not _NAME.match(arm.name):
            raise ConfigError(f"{where}: a name is lower-case letters, digits and '-' (it names a folder)")
        if arm.control is not None and (arm.control not in ids or arm.control == arm.id):
            raise ConfigError(f"{where}: control {arm.control} is not another arm of the plan")
        if arm.lever and arm.control is None:
            raise ConfigError(f"{where}: a lever needs a control to be screened against")


# --- stage 1: screening -----------------------------------------------------------------------------------


def screen(plan: Plan, root: Path, task: str, *, n_boot: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Every arm with a control against it on the task's screening split, and the rule's picks.

    Arms whose sweep has not started or finished no run yet are listed as not run. Picks are made only
    when every compared arm has ``rule.seeds`` paired seeds; until then ``picks`` is None.
    """
    spec = _task(plan, task)
    folder = root / task
    compared = [arm for arm in plan.arms if arm.control is not None]
    rows = [_screen_row(plan, folder, spec, arm, n_boot, seed) for arm in compared]
    complete = all(row.get("n_seeds") == plan.rule.seeds for row in rows)
    result = {
        "task": task,
        "dev": spec.screen_dev,
        "metric": spec.metric,
        "plan": str(plan.path),
        "plan_sha256": plan.sha256(),
        "rule": plan.rule.__dict__,
        "complete": complete,
        "rows": rows,
        "picks": pick(rows, plan.rule) if complete else None,
    }
    return result


def _screen_row(plan: Plan, folder: Path, spec: TaskPlan, arm: Arm, n_boot: int, seed: int) -> dict[str, Any]:
    control = plan.arm(arm.control)  # type: ignore[arg-type]
    row: dict[str, Any] = {"id": arm.id, "name": arm.name, "control": control.id, "lever": arm.lever}
    treated_spec, control_spec = _spec(folder, arm), _spec(folder, control)
    if not all((s.sweep / "sweep.json").is_file() for s in (treated_spec, control_spec)):
        return {**row, "status": "not run"}
    try:
        result = compare_arms(treated_spec, control_spec, spec.screen_dev, n_boot=n_boot, seed=seed)
        return {**row, **_comparison_row(result, spec.metric, treated_spec, control_spec)}
    except NoFinishedRun:
        return {**row, "status": "not run"}
    except RegtuneError as err:
        raise RegtuneError(f"{plan.path}: task '{spec.name}', arm {arm.id} ({arm.name}): {err}") from None


def _comparison_row(
    result: Mapping[str, Any], metric: str, treated: ArmSpec, control: ArmSpec
) -> dict[str, Any]:
    if metric not in result["metrics"]:
        raise ConfigError(f"metric '{metric}' is not one of the task's {sorted(result['metrics'])}")
    m = result["metrics"][metric]
    return {
        "status": "done",
        **{k: m[k] for k in ("delta", "ci_low", "ci_high", "p_value", "n_seeds")},
        "mde": minimum_detectable_effect(m["ci_low"], m["ci_high"], m["n_seeds"]),
        "score": m.get("treated"),  # {mean, ci_low, ci_high}: each side on the paired seeds and examples
        "control_score": m.get("control"),
        "seeds": result["seeds"],
        "trainable_parameters": _run_mean(treated.sweep, result["runs"]["treated"], "trainable_parameters"),
        "register_similarity": _run_mean(treated.sweep, result["runs"]["treated"], "register_similarity"),
        "control_register_similarity": _run_mean(
            control.sweep, result["runs"]["control"], "register_similarity"
        ),
    }


def pick(rows: Sequence[Mapping[str, Any]], rule: Rule) -> list[int]:
    """The rule: levers with Δ > min_delta, largest Δ first; Δs equal at ``tie`` resolution go to fewer
    trainable parameters, then to the lower arm id; at most ``max_picks``. Comparators never count."""
    candidates = [
        r for r in rows if r["lever"] and r.get("delta") is not None and r["delta"] > rule.min_delta
    ]

    def key(row: Mapping[str, Any]) -> tuple[float, float, int]:
        params = row.get("trainable_parameters")
        return (-round(row["delta"] / rule.tie), math.inf if params is None else params, row["id"])

    return [row["id"] for row in sorted(candidates, key=key)[: rule.max_picks]]


def minimum_detectable_effect(
    ci_low: float | None, ci_high: float | None, n_seeds: int | None
) -> float | None:
    """The true Δ a comparison detects with 80 % power at two-sided α = 0.05, read off its 95 % interval.

    The interval's seed level is a Student t with ``n_seeds - 1`` degrees of freedom (see
    :func:`regtune.experiments.stats.compare`), so its half-width is ``t(0.975, df) × SE`` and the
    smallest detectable effect is ``(t(0.975, df) + t(0.80, df)) × SE``: 5.4 SE with 3 seeds, 3.7 SE
    with 5, and 2.8 SE (the normal 1.96 + 0.84) as seeds grow. Exact when seed noise dominates the
    interval; when question noise (normal) does, the half-width is nearer 1.96 SE and this understates
    the MDE, by at most 13 % with 3 seeds and 6 % with 5.
    """
    if ci_low is None or ci_high is None or n_seeds is None or n_seeds < 2:
        return None
    df = n_seeds - 1
    t_alpha = float(scipy_stats.t.ppf(1 - MDE_ALPHA / 2, df))
    t_power = float(scipy_stats.t.ppf(MDE_POWER, df))
    standard_error = (ci_high - ci_low) / (2 * t_alpha)
    return (t_alpha + t_power) * standard_error


def _spec(folder: Path, arm: Arm) -> ArmSpec:
    return ArmSpec.parse(str(folder / arm.arm))


def _run_mean(sweep: Path, run_ids: Sequence[str], key: str) -> float | None:
    """Mean of ``key`` over the runs' metrics.json (the run's own, then its first dev file's); None where
    any run lacks it (τ < 2 has no register diversity; old runs lack trainable_parameters)."""
    values = []
    for run_id in run_ids:
        run = sweep / "runs" / run_id
        files = [run / "metrics.json", *sorted((run / "evals").glob("*/metrics.json"))]
        found = next((v for f in files if (v := _read(f).get(key)) is not None), None)
        if found is None:
            return None
        values.append(float(found))
    return sum(values) / len(values) if values else None


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _task(plan: Plan, task: str) -> TaskPlan:
    if task not in plan.tasks:
        raise ConfigError(f"{plan.path}: no task '{task}' (the plan has {', '.join(plan.tasks)})")
    return plan.tasks[task]


def freeze(plan: Plan, root: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Write the screening atomically; once complete, its picks never change.

    A complete screening already on disk keeps its picks: a recomputation that would pick differently
    (more seeds added, runs redone, the plan edited) is refused rather than silently re-deciding. One that
    is not complete cannot re-decide, so the frozen picks stand: that is how a fresh checkout, which has
    only the published ``screening.json`` copied into ``ROOT/TASK/selection/``, goes on to confirmation
    (except for a pick whose flags read the screening folder, ``{screen}``: that folder must be there).
    """
    out = root / result["task"] / SELECTION_DIR
    old = _read(out / "screening.json")
    if old.get("complete"):
        frozen = (
            f"{out / 'screening.json'}: the picks {old.get('picks')} were frozen from a complete screening"
        )
        if old.get("plan_sha256") != result["plan_sha256"]:
            raise RegtuneError(
                f"{frozen} under another version of {plan.path} (sha256 {str(old.get('plan_sha256'))[:12]}); "
                "restore that plan, or move the folder away to start a new study"
            )
        if result["complete"] and old.get("picks") != result["picks"]:
            raise RegtuneError(
                f"{frozen}; this one would pick {result['picks']}. Keep the first decision, or move the "
                "folder away to start a new study"
            )
        if not (out / "confirm.tsv").is_file():  # deleted, or only screening.json restored: picks still say
            atomic_write_text(out / "confirm.tsv", confirm_list(plan, root, old))
        return old
    atomic_write_json(out / "screening.json", result)
    title = f"{result['task']}: arm − control on {result['dev']} ({result['metric']})"
    plot_differences(result["rows"], result["picks"] or [], title, out, "screening")
    atomic_write_text(out / "screening.md", screening_markdown(plan, result))
    if result["complete"]:
        atomic_write_text(out / "confirm.tsv", confirm_list(plan, root, result))
    return result


def confirm_list(plan: Plan, root: Path, result: Mapping[str, Any]) -> str:
    """``NAME FLAGS`` lines: each pick and its control, the sweeps the confirmation runs (controls first)."""
    names: list[Arm] = []
    for arm_id in result["picks"]:
        arm = plan.arm(arm_id)
        for needed in (plan.arm(arm.control), arm):  # type: ignore[arg-type]
            if needed not in names:
                names.append(needed)
    screen_folder = str(root / result["task"])
    return "".join(f"{a.name} {a.flags.replace('{screen}', screen_folder)}\n" for a in names)


# --- stage 2: confirmation --------------------------------------------------------------------------------


def confirm(plan: Plan, root: Path, *, n_boot: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Each frozen pick against its control on the task's official dev set, Holm across all of them.

    The sweeps are ``ROOT/TASK/confirm/NAME`` (what ``confirm.tsv`` lists). Picks whose sweeps have not
    finished a run are listed as not run; ``complete`` is true when every pick has ``rule.confirm_seeds``.
    """
    rows: list[dict[str, Any]] = []
    screened: dict[str, Any] = {}
    for task, spec in plan.tasks.items():
        frozen = _read(root / task / SELECTION_DIR / "screening.json")
        if frozen.get("complete") and frozen.get("plan_sha256") != plan.sha256():
            raise RegtuneError(
                f"{root / task / SELECTION_DIR / 'screening.json'}: its picks were frozen under another "
                f"version of {plan.path}; restore that plan to tabulate their confirmation"
            )
        screened[task] = frozen.get("picks") if frozen.get("complete") else None
        for arm_id in screened[task] or []:
            rows.append(_confirm_row(plan, root / task / CONFIRM_DIR, task, spec, arm_id, n_boot, seed))
    adjusted = stats.holm({f"{r['task']}/{r['name']}": r.get("p_value") for r in rows})
    for row in rows:
        row["p_holm"] = _nan_to_none(adjusted[f"{row['task']}/{row['name']}"])
    return {
        "plan": str(plan.path),
        "plan_sha256": plan.sha256(),
        "picks": screened,
        "complete": all(p is not None for p in screened.values())
        and all(r.get("n_seeds") == plan.rule.confirm_seeds for r in rows),
        "rows": rows,
    }


def _confirm_row(
    plan: Plan, folder: Path, task: str, spec: TaskPlan, arm_id: int, n_boot: int, seed: int
) -> dict[str, Any]:
    arm = plan.arm(arm_id)
    control = plan.arm(arm.control)  # type: ignore[arg-type]
    row: dict[str, Any] = {"task": task, "id": arm.id, "name": arm.name, "control": control.id}
    treated_spec, control_spec = ArmSpec(folder / arm.name), ArmSpec(folder / control.name)
    if not all((s.sweep / "sweep.json").is_file() for s in (treated_spec, control_spec)):
        return {**row, "status": "not run"}
    try:
        result = compare_arms(treated_spec, control_spec, spec.confirm_dev, n_boot=n_boot, seed=seed)
        compared = _comparison_row(result, spec.metric, treated_spec, control_spec)
    except NoFinishedRun:
        return {**row, "status": "not run"}
    except RegtuneError as err:
        where = f"{plan.path}: task '{task}', confirming arm {arm.id} ({arm.name})"
        raise RegtuneError(f"{where}: {err}") from None
    return {**row, "dev": spec.confirm_dev, **compared}


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


# --- tables -----------------------------------------------------------------------------------------------


def _num(value: float | None, fmt: str = "+.2f") -> str:
    return "–" if value is None else format(value, fmt)


def _score(side: Mapping[str, Any] | None) -> str:
    if not side or side.get("mean") is None:
        return "–"
    return f"{side['mean']:.2f} [{_num(side['ci_low'], '.2f')}, {_num(side['ci_high'], '.2f')}]"


def _arm_cells(row: Mapping[str, Any]) -> list[str]:
    if row["status"] != "done":
        return [row["status"]] + ["–"] * 5
    arm, control = (_num(row[k], ".2f") for k in ("register_similarity", "control_register_similarity"))
    params = row["trainable_parameters"]
    return [
        f"{row['delta']:+.2f} [{_num(row['ci_low'])}, {_num(row['ci_high'])}]",
        _num(row["p_value"], ".3g"),
        str(row["n_seeds"]),
        _num(row["mde"], ".2f"),
        "–" if params is None else f"{params:,.0f}",
        f"{arm} / {control}",
    ]


def screening_markdown(plan: Plan, result: Mapping[str, Any]) -> str:
    """The screening table, the rule, and what it picked (or why nothing yet)."""
    rule = plan.rule
    head = (
        f"Screening of task **{result['task']}** on `{result['dev']}` (held-out part of the training file), "
        f"metric {result['metric']}: Δ = arm − control, paired by seed and example, 95 % CI. MDE: the "
        f"smallest Δ each comparison could detect (80 % power, α 0.05). Register similarity: arm / control "
        f"(1 = copies). Rule ({plan.path.name}): levers with Δ > {rule.min_delta:g}, at most "
        f"{rule.max_picks}, ties at {rule.tie:g} to fewer trainable parameters.\n\n"
    )
    lines = [
        "| # | arm | vs | Δ [95 % CI] | p | seeds | MDE | trainable | register similarity | role |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    picks = result["picks"] or []
    for row in result["rows"]:
        role = "**picked**" if row["id"] in picks else ("lever" if row["lever"] else "comparator")
        cells = [str(row["id"]), row["name"], str(row["control"]), *_arm_cells(row), role]
        lines.append("| " + " | ".join(cells) + " |")
    if any(row["status"] == "done" for row in result["rows"]):
        lines.insert(0, "![Δ of every arm against its control, with 95 % CIs](screening.png)\n")
    if result["picks"] is None:
        short = [
            f"{r['name']} ({r.get('n_seeds', 0)})" for r in result["rows"] if r.get("n_seeds") != rule.seeds
        ]
        tail = (
            f"\nScreening incomplete: no picks until every arm has exactly {rule.seeds} paired seeds; "
            f"not yet: {', '.join(short)}.\n"
        )
    elif not picks:
        tail = "\n**No lever beat its control; nothing goes on to confirmation for this task.**\n"
    else:
        tail = "\nPicked for confirmation: " + ", ".join(plan.arm(i).name for i in picks) + ".\n"
    return head + "\n".join(lines) + "\n" + tail


def confirmation_markdown(plan: Plan, result: Mapping[str, Any]) -> str:
    """The confirmation table: each pick against its control on the official dev set, Holm across all."""
    lines = [
        "| task | # | arm | score [95 % CI] | vs | control's score | Δ [95 % CI] | p | seeds | MDE "
        "| trainable | register similarity | p Holm |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        scores = [_score(row.get("score")), str(row["control"]), _score(row.get("control_score"))]
        cells = [row["task"], str(row["id"]), row["name"], *scores, *_arm_cells(row)]
        lines.append("| " + " | ".join([*cells, _num(row["p_holm"], ".3g")]) + " |")
    notes = [
        f"- {task}: screening not complete, nothing confirmed yet"
        if picks is None
        else f"- {task}: no lever passed screening"
        if not picks
        else f"- {task} ({plan.tasks[task].metric} on `{plan.tasks[task].confirm_dev}`): picks "
        + ", ".join(f"{i} {plan.arm(i).name}" for i in picks)
        for task, picks in result["picks"].items()
    ]
    status = "complete" if result["complete"] else "**incomplete** (p Holm provisional)"
    if any(row["status"] == "done" for row in result["rows"]):
        lines.insert(0, "![Δ of every pick against its control, with 95 % CIs](confirmation.png)\n")
    return (
        f"Confirmation on the official dev sets ({status}); Holm across every row.\n\n"
        + "\n".join(lines)
        + "\n\n"
        + "\n".join(notes)
        + "\n"
    )


def write_confirmation(plan: Plan, result: Mapping[str, Any], out: Path) -> None:
    atomic_write_json(out / "confirmation.json", result)
    rows = [{**row, "name": f"{row['task']}: {row['name']}"} for row in result["rows"]]
    plot_differences(rows, [], "picks − controls on the official dev sets", out, "confirmation")
    atomic_write_text(out / "confirmation.md", confirmation_markdown(plan, result))


def plot_differences(
    rows: Sequence[Mapping[str, Any]], picks: Sequence[int], title: str, folder: Path, stem: str
) -> list[str]:
    """A forest plot: one line per finished comparison, Δ with its 95 % CI against the zero line; picks
    in colour. Written as ``folder/stem.png`` and ``.svg``; nothing when no comparison has finished."""
    from regtune.reporting.plots import colours, new_figure, save_png_and_svg

    done = [row for row in rows if row.get("status") == "done"]
    if not done:
        return []
    figure = new_figure(6.4, 0.9 + 0.32 * len(done))
    axes = figure.add_subplot()
    palette = dict(zip(("picked", "lever", "comparator"), [*colours(2), "grey"], strict=True))
    for y, row in enumerate(reversed(done)):
        low, high = row["ci_low"], row["ci_high"]
        kind = "picked" if row["id"] in picks else ("lever" if row.get("lever", True) else "comparator")
        if low is not None and high is not None:
            axes.plot([low, high], [y, y], color=palette[kind], linewidth=2)
        axes.plot(row["delta"], y, "o", color=palette[kind], label=kind)
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))  # one legend entry per kind present
    if len(unique) > 1:
        axes.legend(unique.values(), unique.keys(), fontsize="small", loc="best")
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set_yticks(range(len(done)), [f"{row['id']} {row['name']}" for row in reversed(done)])
    axes.set_xlabel("Δ (points), 95 % CI over seeds and examples")
    axes.set_title(title, fontsize="medium")
    return save_png_and_svg(figure, folder, stem)
