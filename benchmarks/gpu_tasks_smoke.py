"""GPU smoke check of every task's CUDA-only code paths, with a tiny random BERT (a few minutes on any GPU).

On a GPU, training uses paths that CPU runs never take: bf16 autocast on CUDA, collation in two
persistent DataLoader worker processes (the collators must pickle), pinned memory, and inference and
attributions on the device. This script runs each task through them end to end: train → evaluate →
predict, and for classification explain (IG, attention-gradient, LRP) and analyze of a τ=0/τ=4 pair. It
fails loudly at the first problem, and writes what it measured to ``OUT/gpu_tasks_smoke.json``.

Usage (DATA holds ``tokenizer/``, ``sst2/{train,dev}.tsv`` and ``squad/{train,dev}.json``; any small
slices will do)::

    python benchmarks/gpu_tasks_smoke.py --data DATA --out OUT
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch


def _tiny_bert(folder: Path, tokenizer_dir: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _cli(*argv: str) -> None:
    from regtune.cli.main import main

    code = main(list(argv))
    if code != 0:
        raise SystemExit(f"regtune {' '.join(argv)} exited {code}")


def _train(
    model: Path, train: Path, dev: Path, out: Path, registers: int, extra: list[str]
) -> dict[str, Any]:
    began = time.perf_counter()
    _cli(
        "train", "--model", str(model), "--train", str(train), "--dev", str(dev), "--output-dir", str(out),
        "--registers", str(registers), "--max-steps", "30", "--batch-size", "16", "--lr", "1e-3",
        "--save-steps", "15", "--no-progress", *extra,
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["wall_seconds"] = round(time.perf_counter() - began, 2)
    return metrics


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--allow-cpu", action="store_true", help="dry run of the script itself on a CPU")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu_tasks_smoke: no CUDA device", file=sys.stderr)
        return 2
    work = args.out / "work"
    model = _tiny_bert(work / "tiny-bert", args.data / "tokenizer")
    sst2, squad = args.data / "sst2", args.data / "squad"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    report: dict[str, Any] = {"device": device, "torch": torch.__version__}

    for tau in (0, 4):
        report[f"classification_tau{tau}"] = _train(
            model, sst2 / "train.tsv", sst2 / "dev.tsv", work / f"cls{tau}", tau, []
        )
    report["qa_tau4"] = _train(
        model,
        squad / "train.json",
        squad / "dev.json",
        work / "qa4",
        4,
        ["--doc-stride", "64", "--max-length", "192"],
    )
    for name in ("classification_tau4", "qa_tau4"):
        if device != "cpu":
            assert report[name]["precision"] == "bf16", report[name]  # 'auto' on a bf16 GPU

    _cli("evaluate", "--model", str(work / "cls4" / "model"), "--dev", str(sst2 / "dev.tsv"),
         "--output-dir", str(work / "eval"), "--no-progress")  # fmt: skip
    evaluated = json.loads((work / "eval" / "metrics.json").read_text())
    report["evaluate_matches_training"] = (
        abs(evaluated["accuracy"] - report["classification_tau4"]["accuracy"]) < 1e-9
    )
    _cli("predict", "--model", str(work / "cls4" / "model"), "--file", str(sst2 / "dev.tsv"),
         "--output", str(work / "pred.jsonl"), "--no-progress")  # fmt: skip
    report["predicted_rows"] = len((work / "pred.jsonl").read_text().splitlines())

    pair = [
        "--model",
        str(work / "cls0" / "model"),
        "--compare",
        str(work / "cls4" / "model"),
        "--dev",
        str(sst2 / "dev.tsv"),
    ]
    _cli("explain", *pair, "--output-dir", str(work / "explain"), "--num-examples", "8", "--n-steps", "16",
         "--n-boot", "200", "--no-progress")  # fmt: skip
    summary = json.loads((work / "explain" / "summary.json").read_text())
    report["explain_rows"] = len(summary["rows"])
    report["explain_ig_convergence_delta_mean"] = next(
        r["tau4_mean"] for r in summary["rows"] if r["method"] == "ig" and r["metric"] == "convergence_delta"
    )
    _cli("analyze", *pair, "--output-dir", str(work / "analyze"), "--num-examples", "8", "--no-progress")
    ablation = json.loads((work / "analyze" / "tau4" / "ablation.json").read_text())
    report["ablation_baseline_accuracy"] = ablation["baseline"]["accuracy"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_tasks_smoke.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
