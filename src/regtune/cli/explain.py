"""``regtune explain``: attributions of a model's predictions (IG, attention-gradient, LRP)."""

from __future__ import annotations

import argparse
from pathlib import Path

from regtune.cli.common import TASK_CHECK_HELP, add_task_argument, at_least, check_task, comma_list
from regtune.tasks import TASKS

#: Every task's explanation targets.
TARGETS = tuple(dict.fromkeys(t for task in TASKS.values() for t in task.explain_targets))

_EPILOG = """\
Methods: 'ig' (Integrated Gradients on the embedding output, Captum), 'attn-grad' (Chefer et al. 2021
attention-gradient relevance) and 'lrp' (AttnLRP-style LRP with a conservation check). The task comes
from the model. QA: every method explains the predicted span's logit in one fixed window per question
(the one holding the gold answer). Classification: the predicted class's logit on the sentence (or
pair); faithfulness masks sentence tokens only, never [CLS], [SEP] or a register. Generative QA (causal
LMs): log p(first generated answer token) at the prompt's last position, with ig and attn-grad (LRP is
refused: decoders would need AttnLRP's RMSNorm, gated-MLP and rotary rules); faithfulness masks passage
tokens only. Models of one base with different register counts align token by token. Examples:

  regtune explain --model runs/tau0/model --compare runs/tau8/model \\
      --dev ../shared/data/tydiqa-goldp/en/dev.json --num-examples 200 --output-dir runs/explain
  regtune explain --model runs/sst2-tau0/model --compare runs/sst2-tau8/model \\
      --dev ../shared/data/sst2/dev.tsv --num-examples 300 --output-dir runs/explain-sst2

Writes summary.json/.csv (means, 95 % bootstrap CIs, paired B-A tests), attributions.json, PNG plots,
index.html (heat maps) and, with --compare, compare.html. Rerun the same command to resume.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="attribution heat maps and their focus/faithfulness numbers, for one model or two",
        description="Attribute a model's predictions on dev examples (IG, attention-gradient, LRP): QA "
        "spans or classes. Measures focus, faithfulness (AOPC), plausibility (QA) and register share; with "
        "--compare, "
        "the same for a second model, their agreement, and paired tests of B against A.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="model A: a folder written by regtune train (DIR/model)")
    p.add_argument("--compare", metavar="MODEL", help="model B, compared against A on the same questions")
    p.add_argument("--dev", required=True, help="a data file of the model's task (SQuAD JSON; TSV/CSV/JSONL)")
    add_task_argument(p, TASK_CHECK_HELP)
    p.add_argument("--output-dir", required=True, help="where results go (rerun the same command to resume)")
    p.add_argument(
        "--method",
        type=comma_list(str),
        default=["ig", "attn-grad", "lrp"],
        help="comma-separated methods: ig, attn-grad, lrp (default: all three)",
    )
    p.add_argument(
        "--num-examples",
        type=at_least(0),
        default=200,
        help="examples in the fixed random sample; 0 = the whole file (default: 200)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the question sample and bootstrap (default: 0)"
    )
    p.add_argument(
        "--target",
        choices=list(TARGETS),
        help="explained logit: QA start, end, or span = start + end (default: span); classification: "
        "class, the predicted class's logit (its only target)",
    )
    p.add_argument("--n-steps", type=at_least(2), default=50, help="IG path steps (default: 50)")
    p.add_argument(
        "--internal-batch-size", type=at_least(1), default=16, help="IG steps per forward pass (default: 16)"
    )
    p.add_argument(
        "--register-baseline",
        choices=["learned", "zero", "mean"],
        default="learned",
        help="IG baseline registers: 'learned' (default) keeps them, so completeness covers "
        "text; 'zero'/'mean' measure the registers' own contribution",
    )
    p.add_argument(
        "--lrp-rule",
        choices=["attnlrp", "cp"],
        default="attnlrp",
        help="LRP through attention: 'attnlrp' (Achtibat et al. 2024) or 'cp' (probabilities "
        "held constant, Ali et al. 2022; exactly conservative) (default: attnlrp)",
    )
    p.add_argument(
        "--labels",
        type=comma_list(str),
        help="names of A and B on pages and plots (default: tau<R> of each model)",
    )
    p.add_argument("--n-boot", type=at_least(100), default=2000, help="bootstrap replicates (default: 2000)")
    p.add_argument(
        "--page-questions",
        type=at_least(1),
        default=50,
        help="questions drawn as heat maps on the HTML pages; all are scored (default: 50)",
    )
    p.add_argument("--strict", action="store_true", help="fail on the first bad record instead of skipping")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from regtune.explain.run import run_explain

    labels = tuple(args.labels) if args.labels else None  # checked with the models (run.check_labels)
    check_task(args.task, args.model, args.compare)
    out = run_explain(
        model=args.model,
        compare=args.compare,
        dev=args.dev,
        output_dir=Path(args.output_dir),
        methods=args.method,
        num_examples=args.num_examples or None,
        seed=args.seed,
        target=args.target,
        n_steps=args.n_steps,
        internal_batch_size=args.internal_batch_size,
        register_baseline=args.register_baseline,
        lrp_rule=args.lrp_rule,
        labels=labels,
        n_boot=args.n_boot,
        page_questions=args.page_questions,
        strict=args.strict,
        progress=not args.no_progress,
    )
    for name, path in out.items():
        print(f"{name}: {path}")
    return 0
