"""`regtune explain`: attribute one model (or two, compared) on a fixed sample of dev examples.

The pipeline is: pick the examples (:func:`select_examples`) -> fix one token sequence per example (the
task's ``explain_inputs``: a window per QA question, the sentence for classification) -> for each model
and method, attribute and score every example (:func:`explain_model`) -> summarise with CIs and paired
tests (:func:`summarize`). Questions and sentences are both "questions" in the result files' keys.

Explaining a few hundred questions with Integrated Gradients takes minutes per model, so per-question
results are appended to a JSON-lines cache in the output folder as they are made; a rerun with the same
settings skips what is done, and a rerun with different settings is refused instead of mixing results.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from regtune.core.errors import ConfigError, RegtuneError, check_known_fields
from regtune.experiments.stats import mean_interval, paired_difference
from regtune.explain.methods import (
    TARGETS,
    AttentionGradient,
    Attribution,
    AttributionMethod,
    IntegratedGradients,
)
from regtune.explain.metrics import agreement, question_metrics
from regtune.tasks import Task, task_of_model
from regtune.tasks.inputs import ExplainInput

#: Attribution methods by CLI name.
METHODS: dict[str, Callable[..., AttributionMethod]] = {}

#: The issue's floor for a comparison sample (the whole dev set is used when it is smaller).
MIN_COMPARE_QUESTIONS = 200

#: Per-question numbers summarised for every method, in display order.
METRICS: tuple[str, ...] = (
    "entropy",
    "gini",
    "top10_mass",
    "comprehensiveness",
    "sufficiency",
    "plausibility",
    "register_share",
)


def _methods() -> dict[str, Callable[..., AttributionMethod]]:
    if not METHODS:
        from regtune.explain.lrp import LRP

        METHODS.update({"ig": IntegratedGradients, "attn-grad": AttentionGradient, "lrp": LRP})
    return METHODS


@dataclass
class ExplainConfig:
    """Everything that fixes an explanation run; identical across the compared models by construction."""

    methods: tuple[str, ...] = field(
        default=("ig", "attn-grad", "lrp"), metadata={"help": "Attribution methods: ig, attn-grad, lrp."}
    )
    target: str = field(
        default="span",
        metadata={"help": "Explained logit: QA start, end or span (start+end); classification class."},
    )
    num_examples: int | None = field(
        default=200, metadata={"help": "Questions sampled from the dev file (None: all)."}
    )
    sample_seed: int = field(default=0, metadata={"help": "Seed of the fixed question sample."})
    n_steps: int = field(default=50, metadata={"help": "IG path steps."})
    internal_batch_size: int = field(default=16, metadata={"help": "IG interpolation steps per forward."})
    register_baseline: str = field(
        default="learned", metadata={"help": "IG baseline registers: learned, zero or mean."}
    )
    lrp_rule: str = field(default="attnlrp", metadata={"help": "LRP attention rule: attnlrp or cp."})
    n_boot: int = field(default=2000, metadata={"help": "Bootstrap replicates for the CIs."})
    pad_token_id: int | None = field(
        default=None,
        metadata={"help": "IG baseline token for the text: the tokenizer's pad (None: the model config's)."},
    )

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)
        unknown = [m for m in self.methods if m not in ("ig", "attn-grad", "lrp")]
        if not self.methods or unknown:
            raise ConfigError(f"methods must be some of ig, attn-grad, lrp; got {list(self.methods)}")
        if self.target not in TARGETS:
            raise ConfigError(f"target must be one of {list(TARGETS)}, got {self.target!r}")
        if self.num_examples is not None and self.num_examples < 1:
            raise ConfigError(f"num_examples must be at least 1, got {self.num_examples}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["methods"] = list(self.methods)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExplainConfig:
        check_known_fields(cls, data, "explain settings")
        return cls(**data)


def make_method(name: str, model: PreTrainedModel, config: ExplainConfig) -> AttributionMethod:
    """The attribution method ``name`` for ``model``, with the run's settings."""
    cls = _methods()[name]
    if name == "ig":
        return cls(
            model,
            n_steps=config.n_steps,
            internal_batch_size=config.internal_batch_size,
            register_baseline=config.register_baseline,
            pad_id=config.pad_token_id,
        )
    if name == "lrp":
        return cls(model, rule=config.lrp_rule)
    return cls(model)


def select_examples(examples: Sequence[Any], num: int | None, seed: int) -> list[Any]:
    """A fixed random sample of ``num`` examples (all when ``num`` is None or larger), in file order."""
    if num is None or num >= len(examples):
        return list(examples)
    chosen = sorted(random.Random(seed).sample(range(len(examples)), num))
    return [examples[i] for i in chosen]


@dataclass
class QuestionResult:
    """One model's attribution of one question by one method, and its single-model numbers."""

    attribution: Attribution
    metrics: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {**self.attribution.to_dict(), "metrics": self.metrics}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuestionResult:
        attribution = Attribution(
            question_id=data["question_id"],
            method=data["method"],
            target=data["target"],
            span=tuple(data["span"]),  # type: ignore[arg-type]
            label=data.get("label"),
            text=np.asarray(data["text"], dtype=np.float64),
            registers=np.asarray(data["registers"], dtype=np.float64),
            output=data["output"],
            convergence_delta=data.get("convergence_delta"),
            buckets=data.get("buckets"),
        )
        return cls(attribution, data["metrics"])


def _read_cache(path: Path) -> dict[str, QuestionResult]:
    """Finished questions from a JSON-lines cache; a line torn by a kill is dropped (and redone)."""
    done: dict[str, QuestionResult] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            result = QuestionResult.from_dict(json.loads(line))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
        done[result.attribution.question_id] = result
    return done


def explain_model(
    model: PreTrainedModel,
    inputs: Sequence[ExplainInput],
    config: ExplainConfig,
    *,
    replace_id: int,
    cache_dir: Path | None = None,
    label: str = "model",
    progress: bool = True,
) -> dict[str, list[QuestionResult]]:
    """Attribute every question with every method; method -> results in the order of ``inputs``.

    With ``cache_dir``, each result is appended to ``cache_dir/<label>.<method>.jsonl`` as soon as it
    exists, and results already there are reused.
    """
    model.eval()
    results: dict[str, list[QuestionResult]] = {}
    # The prediction (span, class): one forward per example, not per method.
    predictions: dict[str, tuple[tuple[int, int], int | None]] = {}
    for name in config.methods:
        method = make_method(name, model, config)
        cache = cache_dir / f"{label}.{name}.jsonl" if cache_dir is not None else None
        done = _read_cache(cache) if cache is not None else {}
        handle = cache.open("a", encoding="utf-8") if cache is not None else None
        try:
            out: list[QuestionResult] = []
            for item in tqdm(inputs, desc=f"{label} {name}", unit="q", disable=not progress, leave=False):
                result = done.get(item.question_id)
                if result is None:
                    if item.question_id not in predictions:
                        predictions[item.question_id] = method.prediction(item)
                    span, class_id = predictions[item.question_id]
                    attribution = method.attribute(
                        item,
                        target=config.target,  # type: ignore[arg-type]
                        span=span,
                        label=class_id,
                    )
                    metrics = question_metrics(model, item, attribution, replace_id=replace_id)
                    metrics.update(_diagnostics(attribution))
                    record = QuestionResult(attribution, metrics).to_dict()
                    # Keep what the cache keeps (scores at 5 significant digits), so a resumed run
                    # summarises exactly like an uninterrupted one.
                    result = QuestionResult.from_dict(record)
                    if handle is not None:
                        handle.write(json.dumps(record) + "\n")
                        handle.flush()
                out.append(result)
        finally:
            if handle is not None:
                handle.close()
        results[name] = out
    return results


def _diagnostics(attribution: Attribution) -> dict[str, float]:
    """Method-specific checks kept per question: IG's completeness gap, LRP's buckets as shares of F(x)."""
    out: dict[str, float] = {}
    if attribution.convergence_delta is not None:
        out["convergence_delta"] = attribution.convergence_delta
    if attribution.buckets:
        scale = abs(attribution.output) or 1.0
        for bucket in ("text", "special", "registers", "leak"):
            if bucket in attribution.buckets:
                out[f"lrp_{bucket}_share"] = attribution.buckets[bucket] / scale
    return out


def _metric_names(results: Sequence[QuestionResult]) -> list[str]:
    extra = sorted(
        {k for r in results for k in r.metrics if k == "convergence_delta" or k.startswith("lrp_")}
    )
    return [*METRICS, *extra]


def _interval(values: Sequence[float], n_boot: int, seed: int) -> dict[str, float]:
    summary = mean_interval(values, n_boot=n_boot, rng=seed)
    return {"mean": summary.mean, "ci_low": summary.ci_low, "ci_high": summary.ci_high, "n": summary.n}


def summarize(
    results_a: Mapping[str, Sequence[QuestionResult]],
    results_b: Mapping[str, Sequence[QuestionResult]] | None = None,
    *,
    labels: tuple[str, str] = ("A", "B"),
    n_boot: int = 2000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per (method, metric): each model's mean with a 95 % CI, and B − A with CI and p-value.

    For a comparison, each method also gets an ``agreement`` row: the Spearman correlation of the two
    models' attributions, per question, with its mean and CI.
    """
    rows: list[dict[str, Any]] = []
    for method, a_list in results_a.items():
        for metric in _metric_names(a_list):
            a_values = [r.metrics.get(metric, math.nan) for r in a_list]
            row: dict[str, Any] = {"method": method, "metric": metric}
            row.update({f"{labels[0]}_{k}": v for k, v in _interval(a_values, n_boot, seed).items()})
            if results_b is not None and any(metric in r.metrics for r in results_b[method]):
                b_values = [r.metrics.get(metric, math.nan) for r in results_b[method]]
                row.update({f"{labels[1]}_{k}": v for k, v in _interval(b_values, n_boot, seed).items()})
                diff = paired_difference(b_values, a_values, n_boot=n_boot, rng=seed)
                row.update(
                    delta=diff.delta,
                    delta_ci_low=diff.ci_low,
                    delta_ci_high=diff.ci_high,
                    p_value=diff.p_value,
                    n_pairs=diff.n,
                )
            rows.append(row)
        if results_b is not None:
            values = [
                agreement(a.attribution, b.attribution)
                for a, b in zip(a_list, results_b[method], strict=True)
            ]
            rows.append({"method": method, "metric": "agreement", **_interval(values, n_boot, seed)})
    return rows


def fingerprint(path: str | Path) -> str:
    """Size and modification time of a file, or of a model folder's weights and config: a retrained model
    or an edited dev file must not reuse cached results."""
    path = Path(path)
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.glob("*") if p.suffix in (".safetensors", ".json"))
    )
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def check_labels(labels: Sequence[str], count: int) -> None:
    """Labels name files and cache entries: one per model, distinct, and safe as file names."""
    import re

    if len(labels) != count:
        raise RegtuneError(f"--labels needs {count} comma-separated names, got {list(labels)}")
    if len(set(labels)) != len(labels):
        raise RegtuneError(f"--labels must differ, got {list(labels)}")
    for label in labels:
        if not re.fullmatch(r"[\w.+-]+", label) or label in (".", ".."):
            raise RegtuneError(
                f"label {label!r} must be a plain file name (letters, digits, '.', '_', '+', '-')"
            )
        if re.search(r"\.(json|csv|png|svg|html|gz)$", label, flags=re.IGNORECASE):
            # a label names a folder beside the output's own files (analyze_config.json, index.html, ...)
            raise RegtuneError(f"label {label!r} looks like a file name; a label names a folder")


def check_same_task(models: Sequence[PreTrainedModel]) -> Task:
    """The one task of the models; explaining a QA model beside a classifier compares nothing.

    PEFT models (``regtune train --peft``) are refused: the attributions and the register analyses hook
    the encoder's own embeddings and layers, which PEFT wraps (LoRA) or feeds virtual tokens (prompt
    tuning), and that path is not built or tested. Models with per-layer registers are read: their
    ablations replace every layer's register rows (see ``register_intervention``).
    """
    from regtune.core.peft_adapter import is_peft_model

    if any(is_peft_model(m) for m in models):
        raise RegtuneError(
            "explain and analyze do not read PEFT models (--peft runs); explain a --train-only or fully "
            "fine-tuned run"
        )
    tasks = [task_of_model(m.config) for m in models]
    if len({task.name for task in tasks}) > 1:
        raise RegtuneError(f"--compare needs models of one task, got {', '.join(t.name for t in tasks)}")
    return tasks[0]


def check_explainable(
    models: Sequence[PreTrainedModel], methods: Sequence[str], register_baseline: str = "learned"
) -> None:
    """Refuse, before any work, the methods whose numbers would look right and be wrong.

    - LRP on causal LMs: AttnLRP (Achtibat et al., ICML 2024) needs rules for RMSNorm, gated MLPs and
      rotary attention that regtune's encoder LRP does not have. IG and attention-gradient work there.
    - LRP on per-layer registers (deep registers, the slot identity): relevance reaching the vectors a
      later layer adds to the register rows flows into them, not back to the input, so the registers'
      share would be understated (it would show up as leak).
    - IG with zero or mean registers in the baseline on deep registers: IG interpolates the embedding
      output, and the rows later layers read do not pass through it.
    """
    from regtune.core.registers import get_register_config, is_causal_model

    causal = [type(m).__name__ for m in models if is_causal_model(m)]
    if causal and "lrp" in methods:
        raise RegtuneError(
            f"LRP is not available for causal LMs ({causal[0]}): it would need AttnLRP rules for RMSNorm, "
            "gated MLPs and rotary attention; use --method ig,attn-grad"
        )
    configs = [get_register_config(m) for m in models]
    if "lrp" in methods and any(c.per_layer for c in configs):
        raise RegtuneError(
            "LRP is not available for per-layer registers (--register-depth all, --register-identity "
            "learned): relevance reaching what a later layer adds to the register rows never returns to "
            "the input; use --method ig,attn-grad"
        )
    if "ig" in methods and register_baseline != "learned" and any(c.deep for c in configs):
        raise RegtuneError(
            f"--register-baseline {register_baseline} is not available for deep registers (--register-depth "
            "all): IG interpolates the embedding output, which later layers' register rows do not pass; "
            "use --register-baseline learned"
        )


def check_same_inputs(model_a: PreTrainedModel, model_b: PreTrainedModel) -> None:
    """Refuse to compare models whose tokens differ: attributions align by text-token index."""
    va, vb = model_a.config.vocab_size, model_b.config.vocab_size
    if va != vb:
        raise RegtuneError(f"--compare needs models with one tokenizer; vocabularies differ ({va} vs {vb})")
    task = task_of_model(model_a.config)
    la, lb = task.model_labels(model_a), task.model_labels(model_b)
    if la != lb:  # class ids, gold labels and ablation scores would not mean the same in both
        raise RegtuneError(f"--compare needs classifiers with the same labels; got {la} and {lb}")


def prepare_output_dir(out: Path, settings: dict[str, Any], *, kind: str = "explain") -> None:
    """Create ``out`` or check that it holds a ``kind`` run with the same ``settings``; never mix runs.

    The settings are saved as ``out/<kind>_config.json``; an explain run also gets its ``cache`` folder.
    """
    saved = out / f"{kind}_config.json"
    if out.exists() and not out.is_dir():
        raise RegtuneError(f"--output-dir {out} is a file, not a folder")
    if saved.exists():
        try:
            previous = json.loads(saved.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise RegtuneError(
                f"{saved}: unreadable ({err.__class__.__name__}); use a new --output-dir"
            ) from err
        if previous != settings:
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            raise RegtuneError(
                f"{out} holds an {kind} run with other settings ({', '.join(changed)} differ); "
                "use a new --output-dir or the same options"
            )
    elif out.exists() and any(out.iterdir()):
        raise RegtuneError(f"{out} is not empty and holds no {kind} run; choose a new --output-dir")
    from regtune.core.io import atomic_write_json

    atomic_write_json(saved, settings)
    if kind == "explain":
        (out / "cache").mkdir(parents=True, exist_ok=True)


def plot_summary(rows: Sequence[Mapping[str, Any]], labels: Sequence[str], path: Path) -> Path:
    """One panel per metric: each method's mean per model with its 95 % CI, as a PNG."""
    from regtune.reporting.plots import new_figure, save_png

    methods = list(dict.fromkeys(r["method"] for r in rows))
    metrics = [m for m in METRICS if any(r["metric"] == m for r in rows)]
    cols = 4
    nrows = math.ceil(len(metrics) / cols)
    fig = new_figure(4 * cols, 3.2 * nrows)
    axes = fig.subplots(nrows, cols, squeeze=False)
    width = 0.8 / len(labels)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for j, label in enumerate(labels):
            means, errs = [], [[], []]
            for method in methods:
                row = next(r for r in rows if r["method"] == method and r["metric"] == metric)
                mean, low, high = row[f"{label}_mean"], row[f"{label}_ci_low"], row[f"{label}_ci_high"]
                means.append(mean)
                errs[0].append(mean - low if math.isfinite(low) else 0.0)
                errs[1].append(high - mean if math.isfinite(high) else 0.0)
            x = np.arange(len(methods)) + (j - (len(labels) - 1) / 2) * width
            ax.bar(x, means, width, yerr=errs, capsize=3, label=label)
        ax.set_xticks(np.arange(len(methods)), methods)
        ax.set_title(metric)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Attribution metrics per method: mean over questions, 95 % bootstrap CI")
    return save_png(fig, path)


def write_summary_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """The summary rows as CSV (columns: the union of the rows' keys, in first-seen order)."""
    import csv
    import io

    from regtune.core.io import atomic_write_text

    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return atomic_write_text(path, buffer.getvalue())


def default_labels(*models: PreTrainedModel) -> tuple[str, ...]:
    from regtune.core.registers import get_register_config

    names = tuple(f"tau{get_register_config(m).num_registers}" for m in models)
    if len(set(names)) < len(names):
        names = tuple(f"{letter}-{name}" for letter, name in zip("AB", names, strict=False))
    return names


def run_explain(
    *,
    model: str,
    dev: str,
    output_dir: Path,
    compare: str | None = None,
    methods: Sequence[str] = ("ig", "attn-grad", "lrp"),
    num_examples: int | None = 200,
    seed: int = 0,
    target: str | None = None,
    n_steps: int = 50,
    internal_batch_size: int = 16,
    register_baseline: str = "learned",
    lrp_rule: str = "attnlrp",
    labels: tuple[str, ...] | None = None,
    n_boot: int = 2000,
    page_questions: int = 50,
    strict: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """The whole ``regtune explain`` job; returns the files written, by name.

    Every question is attributed and scored; the HTML pages show the first ``page_questions`` of them
    (a 200-question, 3-method comparison page would be ~15 MB), and attributions.json holds them all.
    """
    from regtune.core.hub import load_tokenizer
    from regtune.core.registers import load_model

    models = [load_model(model)] + ([load_model(compare)] if compare else [])
    task = check_same_task(models)
    check_explainable(models, methods, register_baseline)
    tokenizer = load_tokenizer(model)
    config = ExplainConfig(
        methods=tuple(methods),
        target=target or task.explain_targets[-1],
        num_examples=num_examples,
        sample_seed=seed,
        n_steps=n_steps,
        internal_batch_size=internal_batch_size,
        register_baseline=register_baseline,
        lrp_rule=lrp_rule,
        n_boot=n_boot,
        pad_token_id=tokenizer.pad_token_id,
    )
    if config.target not in task.explain_targets:
        raise RegtuneError(f"--target {config.target}: a {task.name} model has {list(task.explain_targets)}")
    if compare:
        check_same_inputs(models[0], models[1])
    labels = labels or default_labels(*models)
    check_labels(labels, len(models))
    inputs = _sample_inputs(task, models[0], tokenizer, dev, config, compare=bool(compare), strict=strict)
    resolved = _resolved_settings(task, models[0], config, inputs, labels, model, compare, dev)
    prepare_output_dir(output_dir, resolved)
    replace_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.pad_token_id
    results = [
        _explain_quietly(m, inputs, config, replace_id, output_dir / "cache", label, progress)
        for label, m in zip(labels, models, strict=True)
    ]
    return _write_outputs(
        output_dir, resolved, task, models[0], config, labels, results, inputs, dev, page_questions
    )


def _write_outputs(
    output_dir: Path,
    resolved: dict[str, Any],
    task: Task,
    model: PreTrainedModel,
    config: ExplainConfig,
    labels: Sequence[str],
    results: Sequence[Mapping[str, Sequence[QuestionResult]]],
    inputs: Sequence[ExplainInput],
    dev: str,
    page_questions: int,
) -> dict[str, Path]:
    """Summarise one model's attributions (or two models' side by side) and write the files and pages."""
    compare = len(results) == 2
    rows = summarize(
        results[0],
        results[1] if compare else None,
        labels=tuple(labels[:2]) if compare else (labels[0], "B"),
        n_boot=config.n_boot,
        seed=config.sample_seed,
    )
    written = _write_results(output_dir, resolved, rows, labels, results)
    written.update(
        _write_pages(
            output_dir,
            task,
            model,
            config,
            labels,
            results,
            rows,
            inputs,
            written["plot"],
            dev,
            page_questions,
        )
    )
    return written


def _sample_inputs(
    task: Task,
    model: PreTrainedModel,
    tokenizer: Any,
    dev: str,
    config: ExplainConfig,
    *,
    compare: bool,
    strict: bool,
) -> list[ExplainInput]:
    """The fixed sample of ``dev``'s examples as the model's token sequences (one per example)."""
    import logging

    data = task.read_for_model(dev, model, strict=strict)
    if not data.examples:
        raise RegtuneError(f"{dev}: no usable {task.unit}s")
    examples = select_examples(data.examples, config.num_examples, config.sample_seed)
    if compare and len(examples) < min(MIN_COMPARE_QUESTIONS, len(data.examples)):
        logging.getLogger(__name__).warning(
            "comparing on %d questions; use at least %d (or --num-examples 0 for all) for results to report",
            len(examples),
            MIN_COMPARE_QUESTIONS,
        )
    return task.explain_inputs(examples, tokenizer, model)


def _resolved_settings(
    task: Task,
    model: PreTrainedModel,
    config: ExplainConfig,
    inputs: Sequence[ExplainInput],
    labels: Sequence[str],
    model_path: str,
    compare_path: str | None,
    dev: str,
) -> dict[str, Any]:
    """What fixes this run's results; a rerun into the same folder must match it (see prepare_output_dir)."""
    from regtune import __version__

    return {
        "regtune_version": __version__,
        "models": {
            label: str(Path(path).resolve())
            for label, path in zip(labels, [model_path, compare_path], strict=False)
        },
        "model_fingerprints": [fingerprint(p) for p in (model_path, compare_path) if p],
        "dev": str(Path(dev).resolve()),
        "dev_fingerprint": fingerprint(dev),
        "num_questions": len(inputs),
        "question_ids": [i.question_id for i in inputs],
        **task.input_settings(model),
        "explain": config.to_dict(),
    }


def _write_results(
    output_dir: Path,
    resolved: dict[str, Any],
    rows: list[dict[str, Any]],
    labels: Sequence[str],
    results: Sequence[Mapping[str, Sequence[QuestionResult]]],
) -> dict[str, Path]:
    """summary.json/.csv, attributions.json (every question) and the summary plot; returns them by name."""
    from regtune.core.io import atomic_write_json

    written: dict[str, Path] = {}
    written["summary"] = atomic_write_json(output_dir / "summary.json", {"settings": resolved, "rows": rows})
    write_summary_csv(rows, output_dir / "summary.csv")
    attributions = {
        label: {name: [r.to_dict() for r in items] for name, items in res.items()}
        for label, res in zip(labels, results, strict=True)
    }
    written["attributions"] = atomic_write_json(output_dir / "attributions.json", attributions)
    written["plot"] = plot_summary(rows, labels, output_dir / "summary.png")
    return written


def _explain_quietly(
    model: PreTrainedModel,
    inputs: Sequence[ExplainInput],
    config: ExplainConfig,
    replace_id: int,
    cache_dir: Path,
    label: str,
    progress: bool,
) -> dict[str, list[QuestionResult]]:
    """:func:`explain_model`, with one summary warning for IG's completeness gaps instead of one each."""
    import logging
    import warnings

    from regtune.core.errors import RegtuneWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RegtuneWarning)
        results = explain_model(
            model, inputs, config, replace_id=replace_id, cache_dir=cache_dir, label=label, progress=progress
        )
    gaps = [r.attribution.convergence_delta or 0.0 for r in results.get("ig", [])]
    high = [g for g in gaps if g > 0.05]
    if high:
        logging.getLogger(__name__).warning(
            "%s: IG completeness gap above 5%% of |F(x) - F(b)| on %d of %d examples (max %.1f%%); "
            "raise --n-steps",
            label,
            len(high),
            len(gaps),
            100 * max(high),
        )
    return results


def _write_pages(
    output_dir: Path,
    task: Task,
    model: PreTrainedModel,
    config: ExplainConfig,
    labels: Sequence[str],
    results: Sequence[Mapping[str, Sequence[QuestionResult]]],
    rows: Sequence[Mapping[str, Any]],
    inputs: Sequence[ExplainInput],
    plot: Path,
    dev: str,
    page_questions: int,
) -> dict[str, Path]:
    """One heat-map page per model, and with two models the comparison page; returns them by name."""
    from regtune.explain.render import write_compare_page, write_explain_page

    written: dict[str, Path] = {}
    shown = min(page_questions, len(inputs))
    notes = [
        f"Scores and tests cover all {len(inputs)} {task.unit}s; the heat maps show the first {shown}. "
        "Every attribution is in attributions.json.",
        f"Method settings: target={config.target}, IG n_steps={config.n_steps} with "
        f"{config.register_baseline} registers in the baseline, LRP rule={config.lrp_rule}.",
    ]

    def maps(res: Mapping[str, Sequence[QuestionResult]]) -> dict[str, list[Attribution]]:
        return {name: [r.attribution for r in items[:shown]] for name, items in res.items()}

    for label, res in zip(labels, results, strict=True):
        written[f"page {label}"] = write_explain_page(
            output_dir / f"{label}.html",
            title=f"regtune explain: {label} ({Path(dev).name}, {len(inputs)} {task.unit}s)",
            inputs=inputs[:shown],
            attributions=maps(res),
            summary=[_page_row(r, label) for r in rows if f"{label}_mean" in r],
            images=[plot],
            notes=notes,
            label_names=task.model_labels(model),
            unit=task.unit,
        )
    if len(results) == 2:
        written["compare"] = write_compare_page(
            output_dir / "compare.html",
            title=f"regtune explain: {' vs '.join(labels)} ({Path(dev).name}, {len(inputs)} {task.unit}s)",
            inputs=inputs[:shown],
            attributions_a=maps(results[0]),
            attributions_b=maps(results[1]),
            labels=(labels[0], labels[1]),
            summary=[_compare_row(r, labels) for r in rows],
            images=[plot],
            notes=notes,
            label_names=task.model_labels(model),
            unit=task.unit,
        )
    return written


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) and math.isfinite(value) else "n/a"


def _page_row(row: Mapping[str, Any], label: str) -> dict[str, Any]:
    return {
        "method": row["method"],
        "metric": row["metric"],
        "mean": _fmt(row[f"{label}_mean"]),
        "95% CI": f"[{_fmt(row[f'{label}_ci_low'])}, {_fmt(row[f'{label}_ci_high'])}]",
        "n": row[f"{label}_n"],
    }


def _compare_row(row: Mapping[str, Any], labels: Sequence[str]) -> dict[str, Any]:
    if row["metric"] == "agreement":
        return {
            "method": row["method"],
            "metric": "agreement (Spearman A~B)",
            labels[0]: _fmt(row["mean"]),
            labels[1]: "",
            "B - A [95% CI]": f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]",
            "p": "",
        }
    out: dict[str, Any] = {"method": row["method"], "metric": row["metric"]}
    for label in labels:
        out[label] = _fmt(row.get(f"{label}_mean"))
    if "delta" in row:
        out["B - A [95% CI]"] = (
            f"{_fmt(row['delta'])} [{_fmt(row['delta_ci_low'])}, {_fmt(row['delta_ci_high'])}]"
        )
        out["p"] = _fmt(row["p_value"])
    return out
