"""The model card (``README.md``) of every saved model folder, with Hugging Face metadata.

The card is what a user of the Hub reads first, so it carries what the folder alone does not say: the
base model, that the model has registers and how to load it with them, the training recipe, and the
dev scores with their uncertainty. Built with ``huggingface_hub``'s ``ModelCard`` so that the metadata
block is the Hub's own format (``tests/test_model_card.py`` parses it back).

Scores: a single training run has one seed, so its interval covers dev-example sampling only (question
or sentence bootstrap) and says ``n_seeds = 1``. ``regtune report`` rewrites the cards of a sweep's
models with the sweep cell's interval over seeds and examples.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from regtune.core.io import atomic_write_text
from regtune.experiments.stats import mean_interval
from regtune.tasks.base import Task

#: Hub ids of the bundled models' originals (regtune's short names resolve to packaged copies).
BASE_MODELS = {
    "minilm-l6": "sentence-transformers/all-MiniLM-L6-v2",
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "multilingual-e5-small": "intfloat/multilingual-e5-small",
}
#: Hub datasets recognised in a data file's path.
DATASETS = {"tydiqa": "google-research-datasets/tydiqa", "sst2": "nyu-mll/glue"}
PIPELINE_TAGS = {"qa": "question-answering", "classification": "text-classification"}
PIPELINE_TAGS["generative-qa"] = "text-generation"


def base_model_id(model: str) -> str | None:
    """The Hub id of the model that was fine-tuned, or None for a local folder."""
    if model in BASE_MODELS:
        return BASE_MODELS[model]
    looks_local = model.startswith((".", "/", "~")) or Path(model).expanduser().exists()
    return None if looks_local else model


def score_lines(
    task: Task, metrics: Mapping[str, Any], per_example: Mapping[str, Mapping[str, float]]
) -> list[str]:
    """One line per per-example metric: mean, 95 % interval over dev examples, n_seeds = 1."""
    lines = []
    for name in task.metrics:
        values = [scores[name] for scores in per_example.values()]
        interval = mean_interval(values, rng=0)
        lines.append(
            f"- **{task.metric_labels[name]}**: {100 * interval.mean:.2f} "
            f"[{100 * interval.ci_low:.2f}, {100 * interval.ci_high:.2f}] (95 % bootstrap over "
            f"{interval.n} dev {task.unit}s; n_seeds = 1, so seed-to-seed variation is not in it)"
        )
    return lines


def build_card(
    config: Any,
    task: Task,
    metrics: Mapping[str, Any],
    per_example: Mapping[str, Mapping[str, float]] | None,
    *,
    scores: list[str] | None = None,
) -> ModelCard:
    """The card of one trained model (``config``: its TrainConfig; ``scores``: lines that replace the
    single-run score lines, e.g. a sweep cell's)."""
    base = base_model_id(config.model)
    datasets = sorted(
        {hub for key, hub in DATASETS.items() if key in f"{config.train_file} {config.dev_file}"}
    )
    data = ModelCardData(
        base_model=base,
        library_name="regtune",
        tags=["regtune", "registers", "transformers", task.name],
        datasets=datasets or None,
        metrics=list(dict.fromkeys(m if m != "macro_f1" else "f1" for m in task.result_metrics)),
        pipeline_tag=PIPELINE_TAGS.get(task.name),
    )
    if scores is None:
        scores = (
            score_lines(task, metrics, per_example)
            if per_example
            else ["- not scored (trained without --dev)"]
        )
    body = _body(config, task, metrics, scores, base)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _body(config: Any, task: Task, metrics: Mapping[str, Any], scores: list[str], base: str | None) -> str:
    registers = config.registers()
    steps = f"{metrics.get('train_steps', '?')} steps"
    recipe = [
        ("task", task.name),
        ("base model", base or config.model),
        ("registers (τ)", registers.num_registers),
        ("placement, init", f"{registers.placement.value}, {registers.init.value}"),
        ("learning rate (registers)", f"{config.lr} ({config.register_lr or config.lr})"),
        (
            "training",
            f"{steps}, batch {config.batch_size}, max length {config.max_length}, seed {config.seed}",
        ),
        ("precision", metrics.get("precision", config.precision)),
        ("training file", config.train_file),
        ("dev file", config.dev_file or "none"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in recipe)
    name = Path(config.output_dir).name or "regtune model"
    title = f"{name}: {task.name} with {registers.num_registers} registers"
    return f"""# {title}

Fine-tuned with regtune (register-augmented fine-tuning): {registers.num_registers} learned register
tokens sit after the embedding layer (Darcet et al. 2024, "Vision Transformers Need
Registers"); task outputs, losses and generated text cover the text tokens only.

## Load it (registers included)

```python
import regtune

model = regtune.load_model("PATH_OR_REPO_ID")  # the transformers model, with its registers attached
```

`config.json` names the model type `regtune_<family>`: after `import regtune`, the `transformers` Auto
classes (`AutoModelForQuestionAnswering.from_pretrained(...)` and the like) load it with its registers
too. Without regtune installed, `transformers` refuses the folder rather than load a different model
without them.

## Dev scores

{chr(10).join(scores)}

## Training

| setting | value |
|---|---|
{table}
"""


def write_model_card(folder: Path, card: ModelCard) -> Path:
    """Write ``folder/README.md`` atomically."""
    path = Path(folder) / "README.md"
    atomic_write_text(path, str(card))
    return path


def sweep_score_lines(task: Task, cell: Mapping[str, Any], own: Mapping[str, Any]) -> list[str]:
    """Score lines of a model from a sweep: its cell's mean and 95 % interval over seeds and dev examples
    (from ``summary.json``), the paired Δ against τ=0 where there is one, and the model's own scores."""
    lines = []
    for name in task.metrics:
        m = cell["metrics"][name]
        label = task.metric_labels[name]
        # One finished seed has no interval over seeds (the report leaves its bounds empty).
        interval = f"{m['ci_low']:.2f}, {m['ci_high']:.2f}" if m["ci_low"] is not None else "one seed: no CI"
        line = (
            f"- **{label}**: {m['mean']:.2f} [{interval}] over n_seeds = "
            f"{m['n_seeds']} runs of this configuration (95 % interval over seeds and {cell['n_questions']} "
            f"dev {task.unit}s); this model alone: {own.get(name, float('nan')):.2f}"
        )
        delta = (cell.get("vs_tau0") or {}).get(name)
        if delta and delta.get("delta") is not None and delta.get("ci_low") is not None:
            line += (
                f"; Δ vs τ=0 {delta['delta']:+.2f} [{delta['ci_low']:+.2f}, {delta['ci_high']:+.2f}], "
                f"Holm p {delta['p_holm']:.3g}"
            )
        lines.append(line)
    return lines
