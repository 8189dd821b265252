"""Register similarity before training, for every finished run of a levers sweep.

metrics.json records ``register_similarity`` after training (mean off-diagonal cosine of the registers'
last hidden states on the first 64 held-out examples). Whether a lever *kept registers apart* needs the
same figure at step 0: the study's trunc-normal registers start 26x below token scale and already read
alike (see README.md, "Changes"). This rebuilds each run's model exactly as `regtune train` did before
its first step (same config, same seed, so the same register and head init) and measures it there.

    .venv/bin/python docs/results/register-levers/similarity_at_init.py runs/levers/tydi/init [...]

prints one line per run (run id, similarity at init, after training); ``--plot FILE.png`` also draws each
arm's seeds as a move from init to trained (one row per arm, the seed suffix dropped from the run id).
"""

from __future__ import annotations

import argparse
import json
import re
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


def plot_moves(rows: list[tuple[str, float, float]], out: Path) -> None:
    """One row per arm: each seed an arrow from its similarity at init to the one after training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms: dict[str, list[tuple[float, float]]] = {}
    for run, before, after in rows:
        arms.setdefault(re.sub(r"-seed\d+$", "", run), []).append((before, after))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(arms) + 1.2))
    for y, moves in enumerate(arms.values()):
        for k, (before, after) in enumerate(moves):
            dy = y + (k - (len(moves) - 1) / 2) * 0.15  # seeds side by side within the arm's row
            ax.annotate("", (after, dy), (before, dy), arrowprops={"arrowstyle": "->", "color": "C0"})
            ax.plot([before], [dy], "o", color="C7", markersize=3)
    ax.set_yticks(range(len(arms)), list(arms))
    ax.set_xlim(0, 1.02)
    ax.set_ylim(-0.7, len(arms) - 0.3)
    ax.invert_yaxis()
    ax.set_xlabel("register similarity (mean off-diagonal cosine, last layer; 1 = copies)")
    ax.set_title("Register similarity at init (dot) and after training (arrow head), per seed")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep folders (each with runs/)")
    parser.add_argument("--plot", type=Path, help="also draw the moves to this PNG")
    args = parser.parse_args(argv)
    hf_logging.set_verbosity_error()  # the load report of every rebuilt model would bury the table
    cache: dict[tuple[str, str], tuple[TaskData, TaskData]] = {}
    rows: list[tuple[str, float, float]] = []
    print("run\tat_init\tafter_training")
    for sweep in args.sweeps:
        for run_dir in sorted((sweep / "runs").iterdir()):
            metrics_file = run_dir / "metrics.json"
            if not metrics_file.is_file():
                continue  # unfinished
            after = json.loads(metrics_file.read_text("utf-8")).get("register_similarity")
            before = similarity_at_init(run_dir, cache)
            if before is not None and after is not None:
                rows.append((f"{sweep.name}/{run_dir.name}", before, after))
                print(f"{rows[-1][0]}\t{before:.4f}\t{after:.4f}", flush=True)
    if args.plot and rows:
        plot_moves(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
