"""Register ablations: a grid of ``regtune train`` runs (τ × seed × other axes), resumable, every run
scored on every dev file, results gathered into ``DIR/results.csv``.

Layout of a sweep folder::

    DIR/sweep.json                         the resolved sweep (grid, fixed options, files) and versions
    DIR/data/{train,validation}.json       only with select_on='validation': the fixed held-out split
    DIR/runs/<run id>/                     one ``regtune train`` run folder (config, log, model, ...)
    DIR/runs/<run id>/evals/<dev name>/    metrics.json, per_question.json, predictions.json per dev file
    DIR/results.csv                        one row per run × dev file

A run id names the grid values that vary, e.g. ``tau8-seed2`` or ``lr0.0001-tau8-seed2``. A run is
finished when every dev file's ``metrics.json`` exists; those files are written last and atomically,
so a sweep killed at any moment loses at most the runs in progress, and running the same command again
continues them (from their last checkpoint) and skips the finished ones.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from regtune.core.errors import ConfigError, RegtuneError, check_known_fields
from regtune.core.io import atomic_write_json, atomic_write_text
from regtune.tasks import Task, get_task
from regtune.tasks.qa.data import TYDI_LANGUAGES
from regtune.training.config import (
    TrainConfig,
    environment_versions,
    last_checkpoint,
    preset_values,
    resolve_config,
    saved_run_config,
)

logger = logging.getLogger(__name__)

#: Axes a grid may span (TrainConfig field -> short name in run ids). τ and seed are always present.
GRID_AXES: dict[str, str] = {
    "model": "model",
    "lr": "lr",
    "register_lr": "rlr",
    "register_placement": "place",
    "register_init": "init",
    "register_depth": "depth",
    "register_identity": "ident",
    "train_only": "train",
    "peft": "peft",
    "num_registers": "tau",
    "seed": "seed",
}
#: Grid axes that change nothing at τ=0 (there are no registers to place, start, deepen, tag or give a
#: learning rate), so a sweep runs each τ=0 point once, at their first values, and the report compares every
#: value's τ>0 runs with that shared τ=0 run.
REGISTER_ONLY_AXES = (
    "register_lr",
    "register_placement",
    "register_init",
    "register_depth",
    "register_identity",
)
#: Options that only say how the runs are carried out; they may differ between invocations of one sweep.
EXECUTION_OPTIONS = ("save_steps", "logging_steps", "eval_batch_size", "report_to")
#: Name of the held-out split's scores under select_on='validation'.
VALIDATION = "validation"


@dataclass
class SweepConfig:
    """Everything that defines a sweep's results (saved as ``DIR/sweep.json``).

    Attributes:
        output_dir: The sweep folder.
        train_file: SQuAD-1.1 JSON training file.
        dev_files: Files every run is scored on; each gets a unique name (the TyDi language for
            ``<lang>/dev.json``, else the file stem).
        grid: Axis (a key of :data:`GRID_AXES`) -> its values, in order. Must include
            ``num_registers`` and ``seed``.
        preset: The ``regtune train`` preset every run starts from.
        options: Fixed ``TrainConfig`` options on top of the preset (the same for every run).
        select_on: None, or ``'validation'``: hold out ``validation_fraction`` of the training questions
            (a fixed split by question-id hash), train on the rest, and choose τ on the held-out part.
        validation_fraction: Share of training questions held out under ``select_on='validation'``.
    """

    output_dir: str
    train_file: str
    dev_files: list[str]
    grid: dict[str, list[Any]]
    preset: str = "default"
    options: dict[str, Any] = field(default_factory=dict)
    select_on: str | None = None
    validation_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not self.dev_files and not self.select_on:
            # Screening on the held-out split alone keeps every dev file unseen until a confirmation stage.
            raise ConfigError(
                "give at least one dev file (or select_on 'validation' to score only the held-out split)"
            )
        # Absolute paths: Ray workers and worker processes may run in another directory, and a rerun
        # from elsewhere must find (or be refused for) the very same files.
        self.output_dir = os.path.abspath(self.output_dir)
        self.train_file = os.path.abspath(self.train_file)
        self.dev_files = [os.path.abspath(f) for f in self.dev_files]
        if "model" in self.options and os.path.exists(self.options["model"]):
            self.options["model"] = os.path.abspath(self.options["model"])
        if "model" in self.grid:
            self.grid["model"] = [os.path.abspath(m) if os.path.exists(m) else m for m in self.grid["model"]]
        for axis in ("num_registers", "seed"):
            if not self.grid.get(axis):
                raise ConfigError(f"the grid needs at least one value of {axis}")
        for axis, values in self.grid.items():
            if axis not in GRID_AXES:
                raise ConfigError(f"unknown grid axis '{axis}'; choose from {', '.join(GRID_AXES)}")
            if len(set(map(str, values))) != len(values):
                raise ConfigError(f"grid axis '{axis}' repeats a value: {values}")
        for name in self.options:
            if name in self.grid:
                raise ConfigError(f"'{name}' is both a grid axis and a fixed option")
            if name in ("train_file", "dev_file", "output_dir", "preset"):
                raise ConfigError(f"'{name}' is set by the sweep itself, not as an option")
        if self.select_on not in (None, VALIDATION):
            raise ConfigError(f"select_on must be 'validation' or unset, got {self.select_on!r}")
        if not 0 < self.validation_fraction < 1:
            raise ConfigError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        preset_values(self.options.get("task", "qa"), self.preset)  # a one-line error for an unknown one
        dev_names(self.dev_files)  # unique names, or a clear error
        runs = self.runs()  # every run's TrainConfig must be valid before anything trains
        seen: dict[str, dict[str, Any]] = {}
        for spec in runs:
            if spec.run_id in seen:
                raise ConfigError(
                    f"grid points {seen[spec.run_id]} and {spec.point} would share the run id "
                    f"'{spec.run_id}'; change one of the values"
                )
            seen[spec.run_id] = spec.point

    @property
    def root(self) -> Path:
        return Path(self.output_dir)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepConfig:
        check_known_fields(cls, dict(data), "sweep keys")
        return cls(**data)

    def results_dict(self) -> dict[str, Any]:
        """The parts that decide the results: what must match when a sweep folder is reused."""
        data = self.to_dict()
        data["options"] = {k: v for k, v in self.options.items() if k not in EXECUTION_OPTIONS}
        data.pop("output_dir")
        if not self.select_on:
            data.pop("validation_fraction")  # does nothing without select_on
        return data

    @property
    def task(self) -> Task:
        """The task every run fine-tunes (``options['task']``; QA when absent, as in sweeps before tasks)."""
        return get_task(self.options.get("task", "qa"))

    def split_file(self, part: str) -> Path:
        """``DIR/data/<part><ext>``: one side of the held-out split, in the training file's format."""
        return self.root / "data" / f"{part}{self.task.split_suffix(self.train_file)}"

    def training_file(self) -> str:
        """What runs train on: the training file, or its part left after the held-out split."""
        return str(self.split_file("train")) if self.select_on else self.train_file

    def scored_files(self) -> dict[str, str]:
        """Dev name -> file, for every file each run is scored on (the held-out split first)."""
        names = dev_names(self.dev_files)
        if self.select_on:
            if VALIDATION in names:
                raise ConfigError(f"a dev file may not be named '{VALIDATION}' with select_on")
            return {VALIDATION: str(self.split_file(VALIDATION)), **names}
        return names

    def runs(self) -> list[RunSpec]:
        """One run per grid point, in grid order (the first axis varies slowest)."""
        axes = list(self.grid)
        varying = [a for a in GRID_AXES if len(self.grid.get(a, [])) > 1 or a in ("num_registers", "seed")]
        scored = self.scored_files()
        specs, merged = [], []
        for values in itertools.product(*(self.grid[a] for a in axes)):
            point = dict(zip(axes, values, strict=True))
            if point["num_registers"] == 0:  # one τ=0 run for all values of the register-only axes
                point.update({a: self.grid[a][0] for a in REGISTER_ONLY_AXES if a in point})
                if point in merged:
                    continue
                merged.append(point)
            run_id = "-".join(_id_part(a, point[a]) for a in varying if a in point)
            config = resolve_config(
                self.preset,
                **{
                    **self.options,
                    **point,
                    "train_file": self.training_file(),
                    "dev_file": next(iter(scored.values())),
                    "output_dir": str(self.root / "runs" / run_id),
                },
            )
            specs.append(RunSpec(run_id=run_id, point=point, config=config))
        return specs


@dataclass(frozen=True)
class RunSpec:
    """One training run of a sweep: its id, its grid values and its resolved config."""

    run_id: str
    point: dict[str, Any]
    config: TrainConfig

    @property
    def dir(self) -> Path:
        return Path(self.config.output_dir)

    def eval_dir(self, dev_name: str) -> Path:
        return self.dir / "evals" / dev_name

    @property
    def resumes(self) -> bool:
        """Whether training restarts from a checkpoint (:func:`~regtune.training.config.last_checkpoint`)."""
        return last_checkpoint(self.dir) is not None


def _id_part(axis: str, value: Any) -> str:
    text = str(value)
    if axis == "model":
        # The folder or repo name, plus a short hash of the whole path or id, so that two models both
        # called ".../model" (or "a/bert" and "b/bert") get distinct run folders.
        text = f"{Path(text).name}_{hashlib.sha256(text.encode()).hexdigest()[:6]}"
    safe = "".join(c if c.isalnum() or c in "._" else "_" for c in text)
    return f"{GRID_AXES[axis]}{safe}"


def dev_names(dev_files: Sequence[str]) -> dict[str, str]:
    """Dev name -> file: ``xx/dev.json`` is named by its folder (a TyDi language), other files by stem.

    Raises:
        ConfigError: two files would get the same name.
    """
    names: dict[str, str] = {}
    for path in dev_files:
        p = Path(path)
        name = p.parent.name if p.stem == "dev" and p.parent.name else p.stem
        if name in names:
            raise ConfigError(f"dev files {names[name]} and {path} would both be named '{name}'; rename one")
        names[name] = path
    return names


# --- the held-out split (select_on='validation') ------------------------------------------------------


def _held_out(question_id: str, fraction: float) -> bool:
    """A fixed, order-independent split: the question id's hash decides, not the file order or a seed."""
    digest = int.from_bytes(hashlib.sha256(question_id.encode("utf-8")).digest()[:8], "big")
    return digest / 2**64 < fraction


def write_validation_split(sweep: SweepConfig) -> tuple[int, int]:
    """Write ``DIR/data/train.*`` and ``DIR/data/validation.*``; returns their example counts."""
    task, config = sweep.task, sweep.runs()[0].config
    data = task.read(sweep.train_file, config)
    fraction = sweep.validation_fraction
    held = [ex for ex in data.examples if _held_out(task.split_key(ex), fraction)]
    kept = [ex for ex in data.examples if not _held_out(task.split_key(ex), fraction)]
    if not held or not kept:
        raise ConfigError(
            f"{sweep.train_file}: a {fraction:.0%} held-out split of "
            f"{len(data.examples)} {task.unit}s leaves one side empty; change validation_fraction"
        )
    # Validation first: the training part's presence marks a complete split.
    task.write_examples(held, sweep.split_file(VALIDATION), config)
    task.write_examples(kept, sweep.split_file("train"), config)
    return len(kept), len(held)


# --- the sweep folder -----------------------------------------------------------------------------------


def prepare_sweep_dir(sweep: SweepConfig) -> None:
    """Create DIR or check that it holds this very sweep; write the held-out split if needed.

    Raises:
        ConfigError: DIR holds a sweep with another configuration (naming the keys that differ).
    """
    saved_file = sweep.root / "sweep.json"
    if sweep.root.exists() and not sweep.root.is_dir():
        raise ConfigError(f"{sweep.root}: exists and is not a folder; use a new --output-dir")
    if (sweep.root.parent.parent / "sweep.json").exists() and sweep.root.parent.name == "runs":
        raise ConfigError(f"{sweep.root}: is a run folder of another sweep; use a new --output-dir")
    if saved_file.exists():
        try:
            saved = json.loads(saved_file.read_text(encoding="utf-8"))["sweep"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(
                f"{saved_file}: not a regtune sweep file ({err}); use a new --output-dir"
            ) from err
        current = sweep.results_dict()
        if saved != current:
            differ = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
            raise ConfigError(
                f"{sweep.root}: holds a sweep with a different configuration ({', '.join(differ)}); "
                "use a new --output-dir"
            )
    elif sweep.root.exists() and any(sweep.root.iterdir()):
        raise ConfigError(f"{sweep.root}: exists and is not a sweep folder; use a new --output-dir")
    else:
        # Read every input first: a typo found after sweep.json is written would lock the folder to it.
        check_inputs(sweep)
        atomic_write_json(saved_file, {"sweep": sweep.results_dict(), "versions": environment_versions()})
    if sweep.select_on and not sweep.split_file("train").exists():
        kept, held = write_validation_split(sweep)
        logger.info("held out %d of %d training %ss for validation", held, kept + held, sweep.task.unit)


def check_inputs(sweep: SweepConfig) -> None:
    """Read the training and dev files and resolve every model, so that bad input fails before any run."""
    from regtune.core.hub import load_tokenizer

    task, config = sweep.task, sweep.runs()[0].config
    labels = None
    for path in [sweep.train_file, *sweep.dev_files]:
        data = task.read(path, config, labels=labels)
        if not data.examples:
            raise ConfigError(f"{path}: no usable {task.unit}s")
        labels = labels or task.label_names(data)  # dev labels must be among the training labels
    models = sweep.grid.get("model") or [sweep.options.get("model", resolve_config(sweep.preset).model)]
    for model in models:
        load_tokenizer(model)


def run_finished(spec: RunSpec, scored: Mapping[str, str]) -> bool:
    return all((spec.eval_dir(name) / "metrics.json").exists() for name in scored)


def run_one(spec: RunSpec, scored: Mapping[str, str], *, progress: bool = False) -> None:
    """Train (or resume, or skip) one run, then score it on every file in ``scored`` not yet scored."""
    from regtune.core.hub import load_tokenizer
    from regtune.core.registers import load_model
    from regtune.training.trainer import train_model, write_evaluation

    if run_finished(spec, scored):
        return
    task = get_task(spec.config.task)
    metrics = train_model(_resumable_config(spec), resume=True, progress=progress)
    first = next(iter(scored))
    model = tokenizer = None
    for name, path in scored.items():
        out = spec.eval_dir(name)
        if (out / "metrics.json").exists():
            continue
        if name == first:
            # train_model has just scored this file: reuse its results rather than score it twice.
            for result in ("predictions.json", task.per_example_file):
                atomic_write_text(out / result, (spec.dir / result).read_text(encoding="utf-8"))
            atomic_write_json(out / "metrics.json", {**metrics, "dev_name": name})
            continue
        if model is None:
            model = load_model(spec.dir / "model")
            tokenizer = load_tokenizer(str(spec.dir / "model"))
        data = task.read(path, spec.config, labels=task.model_labels(model))
        evaluation = task.evaluate(
            model, tokenizer, data, batch_size=spec.config.eval_batch_size, progress=progress
        )
        extra = {
            "dev_file": path,
            "dev_name": name,
            f"skipped_dev_{task.unit}s": len(data.skipped),
            **{k: metrics[k] for k in RUN_METRICS if k in metrics},
        }
        write_evaluation(out, task, evaluation, extra)


def _resumable_config(spec: RunSpec) -> TrainConfig:
    """The run's config, taking over from an interrupted run the options that do not change its results.

    train_model refuses a run folder whose config.json differs in any key; a rerun of the sweep with another
    checkpoint interval (or the same files named by another path) must still continue the run.
    """
    saved_file = spec.dir / "config.json"
    if not saved_file.exists():
        return spec.config
    saved = saved_run_config(saved_file)
    current = spec.config.to_dict()
    adopt = {k: saved[k] for k in EXECUTION_OPTIONS if k in saved}
    for key in ("output_dir", "train_file", "dev_file"):
        if key in saved and os.path.realpath(saved[key]) == os.path.realpath(current[key]):
            adopt[key] = saved[key]
    return TrainConfig.from_dict({**current, **adopt})


# --- results --------------------------------------------------------------------------------------------

#: What every dev file's metrics.json copies from the run's own (training) metrics.
RUN_METRICS = ("train_steps", "train_seconds", "precision", "register_similarity", "trainable_parameters")
#: results.csv columns before the grid axes.
RESULT_HEAD = ("run_id", "dev", "language")
RESULT_TRAILER = (
    "register_similarity",  # the run's register diversity figure, measured on its first dev file
    "trainable_parameters",  # what the few-parameter arms (--train-only, --peft) are matched on
    "train_steps",
    "train_seconds",
    "eval_seconds",
    "precision",
    "dev_file",
)


def collect_results(sweep: SweepConfig) -> list[dict[str, Any]]:
    """One row per finished run × dev file, in grid order (unfinished runs are left out)."""
    scored = sweep.scored_files()
    rows = []
    for spec in sweep.runs():
        if not run_finished(spec, scored):
            continue
        for name in scored:
            metrics = json.loads((spec.eval_dir(name) / "metrics.json").read_text(encoding="utf-8"))
            # TyDi's dev files are named by language; other dev files have no language column value.
            row = {"run_id": spec.run_id, "dev": name, "language": name if name in TYDI_LANGUAGES else ""}
            row.update({k: metrics.get(k) for k in result_metrics(sweep.task)})
            row.update({axis: spec.config.to_dict()[axis] for axis in GRID_AXES})
            row.update({k: metrics.get(k) for k in RESULT_TRAILER})
            row["dev_file"] = scored[name]
            rows.append(row)
    return rows


def result_metrics(task: Task) -> tuple[str, ...]:
    """The metrics.json values results.csv has for ``task``: its scores, then its example count."""
    return (*task.result_metrics, task.count_key)


def write_results_csv(sweep: SweepConfig, rows: Sequence[Mapping[str, Any]]) -> Path:
    columns = [*RESULT_HEAD, *result_metrics(sweep.task), *GRID_AXES, *RESULT_TRAILER]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(sweep.root / "results.csv", buffer.getvalue())


# --- launchers ------------------------------------------------------------------------------------------


def _run_job(spec_data: dict[str, Any], scored: dict[str, str], threads: int | None) -> str:
    """Entry point of a worker process or Ray task: plain data in, the run id out."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    # Bars of parallel workers would interleave on one terminal; the sweep's own bar counts finished runs.
    hf_logging.disable_progress_bar()
    spec = RunSpec(spec_data["run_id"], spec_data["point"], TrainConfig.from_dict(spec_data["config"]))
    run_one(spec, scored)
    return spec.run_id


def _spec_data(spec: RunSpec) -> dict[str, Any]:
    return {"run_id": spec.run_id, "point": spec.point, "config": spec.config.to_dict()}


def run_sweep(
    sweep: SweepConfig,
    *,
    launcher: str = "local",
    jobs: int = 1,
    threads: int | None = None,
    ray_address: str | None = None,
    gpus_per_run: float = 0.0,
    progress: bool = True,
    on_run_done: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every unfinished run of ``sweep`` and write ``DIR/results.csv``; returns its rows.

    Args:
        launcher: ``'local'`` (in this process, or ``jobs`` worker processes) or ``'ray'`` (one Ray task
            per run, on the cluster at ``ray_address``, or a new local Ray instance when it is None).
        jobs: Parallel worker processes for the local launcher.
        threads: torch threads per run (default: torch's own for one job; cores / jobs for ``jobs``
            processes, more for the runs of a last, partial wave (:func:`wave_threads`); 1 per Ray
            task). On Ray it is also the CPUs each task reserves.
        gpus_per_run: GPUs each Ray task reserves (e.g. 1, or 0.25 to share a GPU between four runs).
        on_run_done: Called with each run id as it finishes (progress reporting, tests).
    """
    if launcher not in ("local", "ray"):
        raise ConfigError(f"launcher must be 'local' or 'ray', got {launcher!r}")
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    if gpus_per_run < 0:
        raise ConfigError(f"gpus_per_run must be >= 0, got {gpus_per_run}")
    prepare_sweep_dir(sweep)
    scored = sweep.scored_files()
    specs = sweep.runs()
    todo = [s for s in specs if not run_finished(s, scored)]

    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(specs), initial=len(specs) - len(todo), desc="sweep runs", unit="run", disable=not progress
    )
    began = time.perf_counter()

    def done(run_id: str) -> None:
        bar.update()
        bar.set_postfix_str(f"last: {run_id}")
        # Rewritten after every run: results so far are there even if a later run fails or is killed.
        write_results_csv(sweep, collect_results(sweep))
        if on_run_done is not None:
            on_run_done(run_id)

    try:
        if launcher == "ray":
            _run_on_ray(todo, scored, threads or 1, gpus_per_run, ray_address, done)
        elif jobs == 1:
            for spec in todo:
                if threads:
                    import torch

                    torch.set_num_threads(threads)
                run_one(spec, scored, progress=False)
                done(spec.run_id)
        else:
            _run_in_processes(todo, scored, jobs, threads, done)
    finally:
        bar.close()
        rows = collect_results(sweep)
        write_results_csv(sweep, rows)
    logger.info("sweep: %d runs finished in %.0f s", len(todo), time.perf_counter() - began)
    return rows


def wave_threads(runs: int, jobs: int, cores: int, *, resuming: bool = False) -> list[int]:
    """Torch threads for each of ``runs`` similar runs on ``jobs`` workers sharing ``cores``.

    The runs go in waves of ``jobs``; each gets cores // jobs threads, except the last, partial wave,
    whose runs split the cores among fewer: a sweep of 3 runs with 2 jobs on 2 cores runs its third run
    alone, which on 1 thread would leave a core idle for a whole run.

    With ``resuming`` (some run restarts from a checkpoint) the waves do not line up: a resumed run ends
    early and the "last wave" starts beside a run that has hours left. Every run then gets cores // jobs,
    since oversubscribed cores cost more than an idle one (2026-12-01: a 2-thread run beside a 1-thread
    one on 2 cores slowed both from 4.7 to 6.5-6.7 s a step).
    """
    tail = 0 if resuming else runs % jobs
    full, partial = max(1, cores // jobs), max(1, cores // tail) if tail else 0
    return [full if i < runs - tail else partial for i in range(runs)]


def _run_in_processes(
    todo: Sequence[RunSpec],
    scored: dict[str, str],
    jobs: int,
    threads: int | None,
    done: Callable[[str], None],
) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    cores, resuming = os.cpu_count() or 1, any(spec.resumes for spec in todo)
    per_run = [threads] * len(todo) if threads else wave_threads(len(todo), jobs, cores, resuming=resuming)
    # spawn, not fork: torch's thread pools and tokenizers' threads do not survive a fork.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [
            pool.submit(_run_job, _spec_data(spec), scored, n) for spec, n in zip(todo, per_run, strict=True)
        ]
        try:
            for future in as_completed(futures):
                done(future.result())
        except BaseException:
            # Stop at the first failure rather than train for hours before saying so.
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def check_ray_resources(nodes: Sequence[Mapping[str, Any]], cpus: float, gpus: float) -> None:
    """Fail now, not hang: Ray never schedules a task that asks for more than its largest node has.

    Args:
        nodes: ``ray.nodes()``: one mapping per node, with ``Alive`` and ``Resources`` (e.g. ``CPU``).
    """
    alive = [node.get("Resources", {}) for node in nodes if node.get("Alive", True)]
    for name, wanted, flag in (("CPU", cpus, "--threads"), ("GPU", gpus, "--gpus-per-run")):
        largest = max((float(r.get(name, 0)) for r in alive), default=0.0)
        if wanted > largest:
            raise ConfigError(
                f"each run asks Ray for {wanted:g} {name}(s), but the largest live node has {largest:g}; "
                f"lower {flag}"
            )


def _run_on_ray(
    todo: Sequence[RunSpec],
    scored: dict[str, str],
    threads: int,
    gpus: float,
    address: str | None,
    done: Callable[[str], None],
) -> None:
    """One Ray task per run. The workers must see the same filesystem (the sweep's absolute paths)."""
    try:
        import ray
    except ImportError as err:
        raise ConfigError("--launcher ray needs Ray: pip install 'regtune[ray]'") from err
    if not ray.is_initialized():
        # address=None starts a local instance; "auto" or "ray://host:10001" joins a running cluster.
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    check_ray_resources(ray.nodes(), threads, gpus)
    task = ray.remote(num_cpus=threads, num_gpus=gpus)(_run_job)
    specs = {spec.run_id: spec for spec in todo}
    pending = [task.remote(_spec_data(spec), scored, threads) for spec in todo]
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        try:
            run_id = ray.get(ready[0])
        except ray.exceptions.RayTaskError as err:
            for ref in pending:
                ray.cancel(ref)
            # The user's own mistake (a bad file, say) keeps its one-line message, not a remote traceback.
            if isinstance(err.cause, RegtuneError):
                raise err.cause from None
            raise
        if not run_finished(specs[run_id], scored):
            raise RegtuneError(
                f"run {run_id} finished on a Ray worker but its results are not in {specs[run_id].dir}: "
                "the Ray nodes must share this filesystem"
            )
        done(run_id)
