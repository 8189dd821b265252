"""Training and evaluation speed of generative QA on SmolLM2-135M, against the stock HF causal LM.

Arms, all training the same weights on the same batches of TyDi en prompts (batch 8, the generative-qa
``default`` preset; one step = forward + backward + grad-norm clip + AdamW, as HF Trainer does):

================  =============================================================================
stock             stock ``AutoModelForCausalLM``, no regtune hooks, HF's own loss: logits for every
                  position, labels -100 outside the answer.
regtune_tau0      ``add_registers(model, 0)`` and regtune's collator: logits only where the next token
                  is an answer token (``logits_to_keep`` + ``shift_labels``), the same loss.
regtune_tau8      the same with 8 registers.
================  =============================================================================

Method: ``--steps`` batches drawn at evenly spaced quantiles of batch length from the length-grouped epoch
order (a stratified sample of the epoch), ``--warmup`` untimed steps per arm, then ``--rounds`` rounds in
which the arms run interleaved step by step, so background load hits every arm alike. Throughput is the
median over rounds; ratios are medians of per-batch time ratios (paired). Tokens are *real* prompt and
answer tokens (no padding, no registers).

FLOP/s is reported against the peak of the arithmetic used (fp32 here, bf16 where autocast runs bf16),
measured in the same run with square ``torch.matmul``s of that dtype. FLOPs per step count the work each
arm does: ``6 · P · tokens + 6 · V · H · logits`` with P the non-embedding parameters, V × H the LM head,
``logits`` the positions projected onto the vocabulary, plus attention's ``3 · layers · 4 · S² · H`` per
row; the stock arm does more FLOPs for the same training signal, so its GFLOP/s can be higher while its
tokens/s is lower.

Evaluation: greedy generation (at most 32 new tokens) of ``--eval-questions`` en dev questions by the stock
and the τ=8 model, batch 16, timed once each after a warm-up batch.

Run from the repository root::

    .venv/bin/python benchmarks/llm_throughput.py --quick     # about 6 min on 2 idle cores
    .venv/bin/python benchmarks/llm_throughput.py --device cuda --precision bf16   # on a GPU

The last line of stdout is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.trainer_pt_utils import LengthGroupedSampler

from regtune.core.hub import resolve_model_name
from regtune.core.precision import autocast_context, describe_hardware, resolve_precision
from regtune.core.registers import add_registers
from regtune.tasks.generative_qa.evaluation import GenerativeQASettings, generate_answers
from regtune.tasks.generative_qa.features import CausalCollator, train_rows
from regtune.tasks.qa.data import load_examples

DATA = Path("../shared/data/tydiqa-goldp/en")


def matmul_peak(device: torch.device, dtype: torch.dtype, sizes: tuple[int, ...] = (1024, 2048)) -> float:
    """Best FLOP/s of square ``F.linear`` products of ``dtype`` on ``device`` (2·n³ FLOP each).

    ``F.linear``, the kernel of the model's linear layers: in bf16 on a CPU without native bf16 (AVX2),
    ``torch.matmul`` takes a reference path about 8× slower, which is not the arithmetic a step runs.
    """
    best = 0.0
    for n in sizes:
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        for _ in range(3):
            _sync(device)
            began = time.perf_counter()
            torch.nn.functional.linear(a, b)
            _sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - began))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def sample_batches(rows: dict, batch_size: int, steps: int, seed: int = 0) -> list[list[int]]:
    """``steps`` batches of the length-grouped epoch order, at evenly spaced quantiles of their length."""
    generator = torch.Generator().manual_seed(seed)
    order = list(LengthGroupedSampler(batch_size, lengths=rows["length"], generator=generator))
    batches = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    batches.sort(key=lambda b: sum(rows["length"][i] for i in b))
    return [batches[round(q * (len(batches) - 1) / max(steps - 1, 1))] for q in range(steps)]


def step_flops(model: torch.nn.Module, batch: dict, registers: int) -> float:
    """Training FLOPs of one step (see the module docstring)."""
    config = model.config
    hidden, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    embedding = vocab * hidden
    body = sum(p.numel() for p in model.parameters()) - embedding  # tied head: the table counts once
    rows, width = batch["input_ids"].shape
    tokens = int(batch["attention_mask"].sum()) + rows * registers
    keep = batch.get("logits_to_keep")
    logits = rows * width if keep is None else keep.numel()
    seq = width + registers
    return 6 * body * tokens + 6 * embedding * logits + 3 * layers * rows * 4 * seq * seq * hidden


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--eval-questions", type=int, default=48)
    parser.add_argument("--quick", action="store_true", help="--steps 3 --rounds 2 --eval-questions 32")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds, args.eval_questions = 3, 2, 32
    device = torch.device(args.device)
    precision = resolve_precision(args.precision, device.type)
    folder = resolve_model_name("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    train = load_examples(args.data / "train.json").examples
    rows, _ = train_rows(train, tokenizer, max_length=512)
    batches = sample_batches(rows, 8, args.steps)
    torch.manual_seed(0)
    stock = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").to(device)
    arms = {
        "stock": (stock, CausalCollator(tokenizer, answer_logits_only=False), 0),
        "regtune_tau0": (add_registers(copy.deepcopy(stock), 0), CausalCollator(tokenizer), 0),
        "regtune_tau8": (add_registers(copy.deepcopy(stock), 8), CausalCollator(tokenizer), 8),
    }
    times, flops = timed_rounds(arms, rows, batches, args, device, precision)
    peak_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    peak = matmul_peak(device, peak_dtype)
    real_tokens = sum(len(rows["input_ids"][i]) for b in batches for i in b)
    result: dict = {
        "device": str(device),
        "precision": precision,
        "steps": len(batches),
        "rounds": args.rounds,
        "batch_size": 8,
        f"{precision}_matmul_peak_gflops": peak / 1e9,
        "arms": {},
    }
    for name in arms:
        round_seconds = statistics.median(sum(t) for t in times[name])
        result["arms"][name] = {
            "seconds_per_step": round_seconds / len(batches),
            "real_tokens_per_second": real_tokens / round_seconds,
            "gflops": sum(flops[name]) / round_seconds / 1e9,
            f"fraction_of_{precision}_peak": sum(flops[name]) / round_seconds / peak,
        }
    for name in ("regtune_tau0", "regtune_tau8"):
        ratios = [
            times[name][r][k] / times["stock"][r][k] for r in range(args.rounds) for k in range(len(batches))
        ]
        result["arms"][name]["time_vs_stock_paired_median"] = statistics.median(ratios)
    result["eval"] = evaluate_speed(arms, tokenizer, args, device)
    print_table(result)
    result["hardware"] = describe_hardware()  # what the numbers above were measured on
    print(f"hardware: {result['hardware']}")
    print(json.dumps(result))


def timed_rounds(
    arms: dict,
    rows: dict,
    batches: list[list[int]],
    args: argparse.Namespace,
    device: torch.device,
    precision: str,
) -> tuple[dict, dict]:
    """Warm-up steps, then ``args.rounds`` rounds of every batch with the arms interleaved step by step.

    Returns per arm the seconds [round][batch] and the FLOPs [batch] of each step.
    """
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-6) for name, (m, _, _) in arms.items()}

    def step(name: str, indices: list[int]) -> tuple[float, dict]:
        model, collate, _ = arms[name]
        batch = {
            k: v.to(device)
            for k, v in collate([{k: rows[k][i] for k in ("input_ids", "labels")} for i in indices]).items()
        }
        _sync(device)
        began = time.perf_counter()
        with autocast_context(device, precision):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)
        _sync(device)
        return time.perf_counter() - began, batch

    for name in arms:
        for indices in batches[: args.warmup]:
            step(name, indices)
    times = {name: [[0.0] * len(batches) for _ in range(args.rounds)] for name in arms}
    flops = {name: [0.0] * len(batches) for name in arms}
    for r in range(args.rounds):
        for k, indices in enumerate(batches):
            for name in arms:
                seconds, batch = step(name, indices)
                times[name][r][k] = seconds
                flops[name][k] = step_flops(arms[name][0], batch, arms[name][2])
    return times, flops


def evaluate_speed(arms: dict, tokenizer, args: argparse.Namespace, device: torch.device) -> dict:
    """Seconds to generate answers for ``--eval-questions`` dev questions: stock vs τ=8."""
    dev = load_examples(args.data / "dev.json").examples[: args.eval_questions]
    settings = GenerativeQASettings(max_length=512, max_new_tokens=32, precision=args.precision)
    out = {"questions": len(dev)}
    for name in ("stock", "regtune_tau8"):
        model = arms[name][0]
        generate_answers(model, tokenizer, dev[:16], settings, batch_size=16, progress=False)  # warm-up
        _sync(device)
        began = time.perf_counter()
        generate_answers(model, tokenizer, dev, settings, batch_size=16, progress=False)
        _sync(device)
        out[f"{name}_seconds"] = time.perf_counter() - began
    return out


def print_table(result: dict) -> None:
    precision = result["precision"]
    print(f"device {result['device']}, {precision}; {result['steps']} batches x {result['rounds']} rounds; "
          f"{precision} matmul peak {result[f'{precision}_matmul_peak_gflops']:.1f} GFLOP/s")  # fmt: skip
    print(f"{'arm':14} {'s/step':>8} {'tokens/s':>9} {'GFLOP/s':>8} {'of peak':>8} {'vs stock':>9}")
    for name, arm in result["arms"].items():
        ratio = arm.get("time_vs_stock_paired_median")
        vs_stock = "" if ratio is None else f"{ratio:9.2f}"
        speed = f"{arm['seconds_per_step']:8.2f} {arm['real_tokens_per_second']:9.0f} {arm['gflops']:8.1f}"
        print(f"{name:14} {speed} {arm[f'fraction_of_{precision}_peak']:8.1%} {vs_stock}")
    ev = result["eval"]
    print(f"generation of {ev['questions']} dev questions: stock {ev['stock_seconds']:.1f} s, "
          f"tau8 {ev['regtune_tau8_seconds']:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
