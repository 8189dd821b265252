"""Register similarity before training, for every finished run of a levers sweep.

metrics.json records ``register_similarity`` after training (mean off-diagonal cosine of the registers'
last hidden states on the first 64 held-out examples). Whether a lever *kept registers apart* needs the
same figure at step 0: the study's trunc-normal registers start 26x below token scale and already read
alike (see README.md, "Changes"). This rebuilds each run's model exactly as `regtune train` did before
its first step (same config, same seed, so the same register and head init) and measures it there.

    .venv/bin/python docs/results/register-levers/similarity_at_init.py runs/levers/tydi/init [...]

prints one line per run (run id, similarity at init, after training) and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from transformers import set_seed
from transformers.utils import logging as hf_logging

from regtune.core.hub import load_tokenizer
from regtune.tasks import TaskData, get_task
from regtune.training.config import TrainConfig, saved_run_config
from regtune.training.diagnostics import measure_register_similarity
from regtune.training.trainer import build_model


def _read_data(
    config: TrainConfig, cache: dict[tuple[str, str], tuple[TaskData, TaskData]]
) -> tuple[TaskData, TaskData]:
    """The run's training and held-out data, read once per sweep (all its runs share both files)."""
    key = (config.train_file, config.dev_file)
    if key not in cache:
        task = get_task(config.task)
        train = task.read(config.train_file, config)
        cache[key] = (train, task.read(config.dev_file, config, labels=task.label_names(train)))
    return cache[key]


def similarity_at_init(
    run_dir: Path, cache: dict[tuple[str, str], tuple[TaskData, TaskData]]
) -> float | None:
    """The run's register similarity at step 0 (None without registers)."""
    config = TrainConfig.from_dict(saved_run_config(run_dir / "config.json"))
    if config.num_registers < 2:
        return None
    task = get_task(config.task)
    train, dev = _read_data(config, cache)
    set_seed(config.seed)  # as regtune train: the seed is set right before the model is built
    model = build_model(config, train)
    return measure_register_similarity(model, task, load_tokenizer(config.model), dev).get(
        "register_similarity"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep folders (each with runs/)")
    args = parser.parse_args(argv)
    hf_logging.set_verbosity_error()  # the load report of every rebuilt model would bury the table
    cache: dict[tuple[str, str], tuple[TaskData, TaskData]] = {}
    for sweep in args.sweeps:
        for run_dir in sorted((sweep / "runs").iterdir()):
            metrics_file = run_dir / "metrics.json"
            if not metrics_file.is_file():
                continue  # unfinished
            after = json.loads(metrics_file.read_text("utf-8")).get("register_similarity")
            before = similarity_at_init(run_dir, cache)
            if before is not None:
                print(f"{sweep.name}/{run_dir.name}\t{before:.4f}\t{after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
