"""GPU readiness (issue #3): training tokens/s and fraction of bf16 peak of a bert-base QA model, τ=0 and τ=8.

What it times. A bert-base-sized ``BertForQuestionAnswering`` built from ``BertConfig()`` defaults (hidden
768, 12 layers, 12 heads, intermediate 3072, vocab 30522), randomly initialised (throughput needs no
pretrained weights), sdpa attention, with the ``default`` preset's attention dropout (0.0), on the device.
Every arm gets ``regtune.add_registers(model, τ)``, as ``regtune train`` builds its model (τ=0 installs the
hooks and adds nothing). One training step is what regtune runs: forward under
``torch.autocast(device, bfloat16)`` (fp32 master weights), backward, ``clip_grad_norm_(…, 1.0)``, fused
AdamW over ``regtune.training.trainer.optimizer_param_groups`` (lr 1e-4, weight decay 0.01), ``zero_grad``.

Batches. Real TyDi en training windows when the data is found (``--data-dir``, else ``$REGTUNE_DATA_DIR``
or its ``tydiqa-goldp`` folder, else ``../shared/data/tydiqa-goldp`` from the repository root): the
``default`` preset (384-token windows, dynamic padding, length-grouped batches of 16), featurized with the
bundled tokenizer (the bert-base-uncased vocabulary), and ``--steps`` batches taken at evenly spaced
quantiles of one epoch's batch sizes by ``benchmarks/train_throughput.py``'s ``build_workload``.
``--batch-size`` overrides the preset's batch size (a big GPU wants bigger batches): the same sampler then
groups that many windows per batch, exactly as ``regtune train --batch-size`` would. Without the data
(or with ``--synthetic``), every batch is B × 160 random token ids, all real, with random answer spans:
160 is about the padded width of a real length-grouped batch (mean window 147.9 tokens); the output says
which source ran.

Method. Each arm first runs ``--warmup`` untimed steps, largest batches first: the first steps allocate the
optimizer state, pick cuBLAS heuristics and grow the caching allocator to its peak. Then ``--rounds``
rounds, each running ``--steps`` timed steps of every arm in turn (rotating which arm goes first), cycling
through the same batches in the same order for every arm and round. A round of one arm is timed with
``torch.cuda.Event``\\s after a ``torch.cuda.synchronize()``; nothing inside it waits for the GPU (no
``.item()``, no per-step printing: the losses stay on the device and are checked finite once, after the
last round). An arm's time is its median round. On CUDA one warm-up step also runs under
``torch.cuda.set_sync_debug_mode("warn")`` to count the host syncs a step makes (in library code, e.g. a
mask check in transformers); a nonzero count means the CPU waits for the GPU every step.

Throughput: *real* tokens are the attention-mask tokens (text, [CLS]/[SEP] included; padding and registers
excluded); *processed* tokens are B × (T + R), with T the padded width and R the registers.

FLOPs per step, the formula of ``benchmarks/train_throughput.py`` (its ``batch_flops``)::

    6 × P × B × S  +  3 × n_layers × B × 4 × S² × H

with S = T + R, B the batch size, H the hidden size and P the non-embedding parameters (everything but the
embedding module and the registers: lookups, not matmuls). Achieved TFLOP/s is reported as a fraction of
(a) the bf16 matmul peak measured in the same run (best ``F.linear`` rate, the kernel of ``nn.Linear``, on
square bf16 n × n, n in 4096 and 8192, 2·n³ FLOP each; smaller n on CPU) and (b) a nominal dense bf16
peak from the device name (H200, H100: 989 TFLOP/s, the SXM parts; A100: 312; L4: 121; other devices:
omitted).

Ablation estimate: the register ablation this project wants, τ = 0, 5, …, 100 (21 counts) × 3 seeds,
bert-base on TyDi en train with the default preset (2 epochs over its windows), at the τ=8 arm's achieved
FLOP rate, with per-window FLOPs from the same formula at S = mean window length + τ. It is an
extrapolation: it excludes evaluation, model loading, featurization and other startup, and padding.

Run from the repository root (``benchmarks/gpu_check.sh`` wraps it under a 290 s timeout)::

    .venv/bin/python benchmarks/gpu_throughput.py                      # the GPU check, bert-base
    .venv/bin/python benchmarks/gpu_throughput.py --batch-size 64      # bigger batches
    .venv/bin/python benchmarks/gpu_throughput.py --device cpu --tiny --steps 2 --warmup 1   # smoke run

Exit status 2, with one line on stderr, when CUDA is asked for and absent. The table precedes the result;
the last stdout line is one JSON object with every number: ``device``, ``arms`` (``{"tau0": {...},
"tau8": {...}}``), ``bf16_matmul_peak_tflops``, ``nominal_bf16_peak_tflops``, ``overhead_tau8``,
``ablation_estimate_minutes`` and the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import BertConfig, BertForQuestionAnswering, PreTrainedModel
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package

from regtune import add_registers, register_parameters
from regtune.core.errors import RegtuneError
from regtune.core.hub import load_tokenizer
from regtune.core.precision import describe_hardware
from regtune.tasks.qa.data import load_examples
from regtune.training.config import TrainConfig, resolve_config
from regtune.training.trainer import optimizer_param_groups
from train_throughput import Batch, batch_flops, build_workload, non_embedding_parameters

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT / "../shared/data/tydiqa-goldp"  # as in the Makefile
LANGUAGE = "en"
#: The bundled tokenizer: MiniLM's vocabulary is bert-base-uncased's (30522 ids), so it fits BertConfig().
TOKENIZER = "minilm-l6"
NO_CUDA_MESSAGE = "no CUDA device: gpu_check needs a GPU (use --device cpu --tiny for a smoke run)"

#: HF Trainer's default ``max_grad_norm``, which ``regtune train`` keeps.
MAX_GRAD_NORM = 1.0
#: A config small enough that a CPU runs a step in milliseconds; for smoke tests, not for numbers.
TINY_BERT = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
#: Width of synthetic batches: about the padded width of a real length-grouped batch (mean window 147.9).
SYNTHETIC_WIDTH = 160
#: Distinct synthetic batches: they all have one shape, so a few suffice to vary the token ids.
SYNTHETIC_BATCHES = 4

#: Square bf16 matmul sizes for the measured peak: large enough to saturate the device, small enough to
#: take milliseconds (a CPU would take seconds per 8192² product, hence its smaller sizes).
MATMUL_SIZES = {"cuda": (4096, 8192), "cpu": (256, 512)}
MATMUL_ITERS = {"cuda": 20, "cpu": 3}  # products per timing, so one timing is not a single kernel launch
MATMUL_REPEATS = 3
#: Nominal dense bf16 tensor-core peaks (FLOP/s) by device-name token, from the vendors' datasheets
#: (H100/H200: the SXM parts; a PCIe H100 peaks lower, so its fraction would read low).
NOMINAL_BF16_PEAKS = (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L4", 121e12))

#: The register ablation the estimate is for: τ = 0, 5, ..., 100, three seeds each.
ABLATION_TAUS = tuple(range(0, 101, 5))
ABLATION_SEEDS = 3
#: The default preset's TyDi en training windows, for the estimate when the data is not here.
FALLBACK_WINDOWS = 3793
FALLBACK_MEAN_LENGTH = 147.9


@dataclass
class Workload:
    """The batches every arm runs (already on the device) and what the ablation estimate needs.

    Attributes:
        batches: Distinct batches; the timed steps cycle through them in this order.
        source: Where they came from, for the report.
        synthetic: True for random batches.
        num_windows: Windows in one epoch of TyDi en train (the fallback constant when synthetic).
        mean_window_length: Mean real length of those windows (the fallback constant when synthetic).
    """

    batches: list[Batch]
    source: str
    synthetic: bool
    num_windows: int
    mean_window_length: float


@dataclass
class ArmRun:
    """One register count: its model, optimizer and what the timed rounds recorded."""

    registers: int
    model: PreTrainedModel
    optimizer: torch.optim.Optimizer
    round_seconds: list[float] = field(default_factory=list)
    losses: list[torch.Tensor] = field(default_factory=list)
    host_syncs_per_step: int | None = None

    @property
    def name(self) -> str:
        return f"tau{self.registers}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "GPU readiness check: training tokens/s and fraction of bf16 peak of a bert-base QA model with "
            "0 and 8 registers, and the implied time of the full register ablation. The last stdout line "
            "is a JSON object. See the module docstring for the method."
        ),
    )
    parser.add_argument(
        "--device", default="cuda", help="torch device to train on (default: cuda; 'cpu' for a smoke run)."
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help=(
            "Tiny BERT (hidden 64, 2 layers, 2 heads, intermediate 128) instead of bert-base: a smoke run "
            "that takes seconds on a CPU; its numbers mean nothing."
        ),
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=30,
        help="Timed steps per arm per round, cycling through as many distinct batches (default: 30).",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=5,
        help="Untimed steps per arm before timing, largest batches first (default: 5).",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="Rounds over all arms, interleaved; an arm's time is its median round (default: 3).",
    )
    parser.add_argument(
        "--registers",
        type=int,
        nargs="+",
        default=[0, 8],
        metavar="TAU",
        help="Register counts to time, one arm each (default: 0 8). overhead_tau8 needs 0 and 8.",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=(
            "Windows per batch (default: the default preset's 16). With the real data, length-grouped "
            "batches of this many windows; synthetic batches are this many rows of 160 tokens."
        ),
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help=(
            "TyDi QA GoldP folder holding en/train.json (an error if it does not). Default: "
            "$REGTUNE_DATA_DIR (or its tydiqa-goldp folder), else ../shared/data/tydiqa-goldp from the "
            "repository root; synthetic batches if neither holds the data."
        ),
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="Use synthetic batches even when the data is there (skips featurizing TyDi en, ~5-10 s).",
    )
    parser.add_argument(
        "--seed", type=int, default=42, help="Seed for weights, registers, dropout and batches (default: 42)."
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked: counts in range, distinct register counts, a cuda or cpu device."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, least in (("steps", 1), ("warmup", 0), ("rounds", 1), ("batch_size", 1)):
        value = getattr(args, name)
        if value is not None and value < least:
            parser.error(f"--{name.replace('_', '-')} must be at least {least}, got {value}")
    if min(args.registers) < 0 or len(set(args.registers)) != len(args.registers):
        parser.error(f"--registers must be distinct counts >= 0, got {args.registers}")
    try:
        args.device = torch.device(args.device)
    except RuntimeError as err:
        parser.error(f"--device: {err}")
    if args.device.type not in ("cuda", "cpu"):
        parser.error(f"--device must be a cuda or cpu device, got {args.device}")
    return args


def find_train_file(data_dir: str | None) -> Path | None:
    """``en/train.json`` under the data folder (or its ``tydiqa-goldp``), None when it is not there.

    Raises:
        RegtuneError: an explicit ``--data-dir`` without the file (a typo should not silently go synthetic).
    """
    base = Path(data_dir or os.environ.get("REGTUNE_DATA_DIR") or DEFAULT_DATA_DIR).expanduser()
    # $REGTUNE_DATA_DIR may name the TyDi folder or the folder above it, as in tests/conftest.py.
    for folder in (base, base / "tydiqa-goldp"):
        if (folder / LANGUAGE / "train.json").is_file():
            return (folder / LANGUAGE / "train.json").resolve()
    if data_dir is not None:
        raise RegtuneError(f"--data-dir {data_dir}: no {LANGUAGE}/train.json there (or under tydiqa-goldp/)")
    return None


def synthetic_batches(batch_size: int, vocab_size: int, generator: torch.Generator) -> list[Batch]:
    """B × 160 random token ids, all under the mask, with random answer spans of up to 30 tokens."""
    batches = []
    for _ in range(SYNTHETIC_BATCHES):
        shape = (batch_size, SYNTHETIC_WIDTH)
        # Skip the low ids ([PAD], [unused*], [CLS], [SEP], ...): ordinary word pieces, as in real text.
        ids = torch.randint(1000, vocab_size, shape, generator=generator)
        starts = torch.randint(0, SYNTHETIC_WIDTH, (batch_size,), generator=generator)
        spans = torch.randint(0, 30, (batch_size,), generator=generator)
        ends = (starts + spans).clamp(max=SYNTHETIC_WIDTH - 1)
        tensors = {
            "input_ids": ids,
            "attention_mask": torch.ones(shape, dtype=torch.long),
            "token_type_ids": torch.zeros(shape, dtype=torch.long),
            "start_positions": starts,
            "end_positions": ends,
        }
        batches.append(Batch(tensors, batch_size * SYNTHETIC_WIDTH, batch_size, SYNTHETIC_WIDTH))
    return batches


def load_workload(args: argparse.Namespace, config: TrainConfig, vocab_size: int) -> Workload:
    """The real TyDi en batches when the data is found (and not ``--synthetic``), else synthetic ones."""
    path = None if args.synthetic else find_train_file(args.data_dir)
    if path is None:
        reason = "--synthetic" if args.synthetic else "TyDi en train.json not found"
        generator = torch.Generator().manual_seed(args.seed)
        return Workload(
            synthetic_batches(config.batch_size, vocab_size, generator),
            f"synthetic {config.batch_size} x {SYNTHETIC_WIDTH} random ids ({reason})",
            True,
            FALLBACK_WINDOWS,
            FALLBACK_MEAN_LENGTH,
        )
    print(f"reading {path}", file=sys.stderr)
    examples = load_examples(path).examples
    tokenizer = load_tokenizer(TOKENIZER)
    try:
        workload = build_workload(examples, tokenizer, config, args.steps, args.seed)
    except RegtuneError:
        # One epoch has fewer full batches than --steps (a large --batch-size): take every one. The probe
        # featurizes again, but only in this rare case.
        probe = build_workload(examples, tokenizer, config, 1, args.seed)
        workload = build_workload(examples, tokenizer, config, probe.num_epoch_batches, args.seed)
    source = (
        f"TyDi en train ({path}): default preset, {config.batch_size}-window length-grouped batches, "
        f"{len(workload.batches)} of {workload.num_epoch_batches} epoch batches at evenly spaced size "
        "quantiles"
    )
    return Workload(workload.batches, source, False, workload.num_windows, workload.mean_window_length)


def to_device(batch: Batch, device: torch.device) -> Batch:
    """The batch on the device, once, up front: no host-to-device copies inside the timed loop."""
    tensors = {name: tensor.to(device) for name, tensor in batch.tensors.items()}
    return Batch(tensors, batch.real_tokens, batch.size, batch.width)


def build_arm(registers: int, config: TrainConfig, args: argparse.Namespace) -> ArmRun:
    """bert-base (or tiny) QA model with ``registers`` registers, its optimizer, on the device."""
    bert = BertConfig(**(TINY_BERT if args.tiny else {}), attn_implementation="sdpa")
    if config.attention_dropout is not None:
        # The default preset trains without attention-probability dropout
        # (regtune.training.trainer.build_model).
        bert.attention_probs_dropout_prob = config.attention_dropout
    torch.manual_seed(args.seed)  # the same weights in every arm
    model = BertForQuestionAnswering(bert).to(args.device)
    torch.manual_seed(args.seed)  # the same register init whatever the arm order
    add_registers(model, registers)  # for τ=0 too: regtune trains the hooked model
    model.train()  # dropout on, as in training
    groups = optimizer_param_groups(model, lr=config.lr, weight_decay=config.weight_decay)
    # HF Trainer's default optimizer (adamw_torch_fused), which regtune train keeps.
    optimizer = torch.optim.AdamW(groups, lr=config.lr, fused=True)
    return ArmRun(registers, model, optimizer)


def matmul_parameters(model: PreTrainedModel) -> int:
    """P of the FLOP formula: non-embedding parameters less the registers (added to the sequence, not
    multiplied), so every arm counts the same P."""
    return non_embedding_parameters(model) - sum(p.numel() for p in register_parameters(model))


def train_step(arm: ArmRun, batch: Batch, device_type: str) -> torch.Tensor:
    """One regtune training step; returns the loss, detached and left on the device (no host sync)."""
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
        loss = arm.model(**batch.tensors).loss
    loss.backward()  # outside autocast, as torch recommends: backward ops run in their forward's dtype
    torch.nn.utils.clip_grad_norm_(arm.model.parameters(), MAX_GRAD_NORM)
    arm.optimizer.step()
    arm.optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def timed(device: torch.device, work: Callable[[], None]) -> float:
    """Seconds that ``work`` takes: on CUDA between two events, after draining earlier queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        work()
        end.record()
        end.synchronize()  # the one wait, after the whole timed stretch
        return start.elapsed_time(end) / 1e3
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


def bf16_matmul_peak(device: torch.device) -> float:
    """Best bf16 ``F.linear`` rate in FLOP/s over square sizes and repeats (2·n³ FLOP per product).

    ``F.linear`` because it is the kernel the model's ``nn.Linear`` layers run (most of a step's FLOPs). On
    CUDA it is the same cuBLAS bf16 GEMM as ``torch.matmul``. On a CPU without native bf16 (AVX2) the two
    differ: ``torch.matmul`` in bf16 takes a reference path about 8× slower than linear's oneDNN one
    (measured 1.2 against 9.3 GFLOP/s at n = 512), and a step would then run "above its peak".
    """
    best = 0.0
    iters = MATMUL_ITERS[device.type]
    for n in MATMUL_SIZES[device.type]:
        a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
        torch.nn.functional.linear(a, b)  # first call: cuBLAS handle, workspace and heuristic

        def products(a: torch.Tensor = a, b: torch.Tensor = b) -> None:
            for _ in range(iters):
                torch.nn.functional.linear(a, b)

        for _ in range(MATMUL_REPEATS):
            best = max(best, iters * 2 * n**3 / timed(device, products))
    return best


def nominal_bf16_peak(device: torch.device) -> tuple[str, float] | tuple[None, None]:
    """(table key, FLOP/s) of the device's nominal dense bf16 peak; (None, None) for unknown devices."""
    if device.type != "cuda":
        return None, None
    return nominal_bf16_peak_for_name(torch.cuda.get_device_name(device))


def nominal_bf16_peak_for_name(name: str) -> tuple[str, float] | tuple[None, None]:
    """Look a CUDA device name ("NVIDIA H200", "NVIDIA A100-SXM4-80GB") up in ``NOMINAL_BF16_PEAKS``."""
    for key, peak in NOMINAL_BF16_PEAKS:
        # Whole tokens only: "L4" must not match "L40S", a different (faster) part.
        if re.search(rf"\b{key}\b", name):
            return key, peak
    return None, None


def count_host_syncs(arm: ArmRun, batch: Batch, device: torch.device) -> int | None:
    """One (warm-up) step under CUDA sync debug mode; the number of synchronizing calls it made."""
    if device.type != "cuda":
        return None  # CPU work is synchronous anyway
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_step(arm, batch, device.type)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize(device)
    return sum("synchronizing" in str(w.message) for w in caught)


def run_arms(arms: list[ArmRun], batches: list[Batch], args: argparse.Namespace) -> tuple[list[Batch], float]:
    """Warm up every arm, then time ``args.rounds`` interleaved rounds of ``args.steps`` steps per arm.

    Returns:
        The batches one round runs, in order; and the best bf16 matmul rate (FLOP/s), measured before
        every round so that clock drift hits it as it hits the arms.
    """
    device = args.device
    round_batches = [batches[k % len(batches)] for k in range(args.steps)]
    # Largest first: the caching allocator grows to its peak now, not inside a timed round.
    warm_order = sorted(batches, key=lambda b: b.size * b.width, reverse=True)
    total = len(arms) * (args.warmup + args.rounds * args.steps)
    peak = 0.0
    with tqdm(total=total, desc="train steps", unit="step", file=sys.stderr) as progress:
        for arm in arms:
            progress.set_postfix_str(f"warm-up {arm.name}")
            for k in range(args.warmup):
                batch = warm_order[k % len(warm_order)]
                if k == args.warmup - 1:
                    arm.host_syncs_per_step = count_host_syncs(arm, batch, device)
                else:
                    train_step(arm, batch, device.type)
                progress.update()
        for round_index in range(args.rounds):
            progress.set_postfix_str(f"round {round_index + 1}: matmul peak")
            peak = max(peak, bf16_matmul_peak(device))
            progress.set_postfix_str(f"round {round_index + 1}")
            shift = round_index % len(arms)  # rotate who goes first: no arm always follows the same one
            for arm in arms[shift:] + arms[:shift]:

                def steps(arm: ArmRun = arm) -> None:
                    for batch in round_batches:
                        arm.losses.append(train_step(arm, batch, device.type))

                arm.round_seconds.append(timed(device, steps))
                progress.update(args.steps)  # per round, not per step: nothing extra inside the timing
    for arm in arms:
        if not bool(torch.stack(arm.losses).isfinite().all()):  # the one loss check, after timing
            raise RegtuneError(f"{arm.name}: a training loss is not finite; the benchmark timed garbage")
    return round_batches, peak


def ablation_flops(
    params: int, layers: int, hidden: int, windows: int, mean_length: float, epochs: float
) -> float:
    """Training FLOPs of the whole register ablation (every τ, every seed), per window at S = L̄ + τ."""
    total = 0.0
    for tau in ABLATION_TAUS:
        seq = mean_length + tau
        per_window = 6 * params * seq + 3 * layers * 4 * seq**2 * hidden
        total += per_window * windows * epochs
    return total * ABLATION_SEEDS


def fraction(value: float, peak: float | None) -> float | None:
    return None if not peak else value / peak


def arm_rows(
    arms: list[ArmRun], round_batches: list[Batch], matmul_peak: float, args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Each arm's rates over its median round (one round = the same ``args.steps`` batches for every arm)."""
    model_config = arms[0].model.config
    layers, hidden = model_config.num_hidden_layers, model_config.hidden_size
    params = matmul_parameters(arms[0].model)
    nominal_peak = nominal_bf16_peak(args.device)[1]
    rows: dict[str, dict[str, Any]] = {}
    for arm in arms:
        seconds = statistics.median(arm.round_seconds)  # one round = args.steps steps
        real = sum(b.real_tokens for b in round_batches)
        processed = sum(b.size * (b.width + arm.registers) for b in round_batches)
        flops = sum(batch_flops(b, arm.registers, params, layers, hidden) for b in round_batches)
        rows[arm.name] = {
            "registers": arm.registers,
            "timed_steps": args.rounds * args.steps,
            "seconds_per_step": seconds / args.steps,
            "real_tokens_per_step": real / args.steps,
            "processed_tokens_per_step": processed / args.steps,
            "real_tokens_per_s": real / seconds,
            "processed_tokens_per_s": processed / seconds,
            "mean_padded_width": statistics.fmean(b.width for b in round_batches),
            "tflops": flops / seconds / 1e12,
            "fraction_of_bf16_matmul_peak": flops / seconds / matmul_peak,
            "fraction_of_nominal_bf16_peak": fraction(flops / seconds, nominal_peak),
            "round_seconds": arm.round_seconds,
            "host_syncs_per_step": arm.host_syncs_per_step,
            "loss_finite": True,  # run_arms raised otherwise
        }
    return rows


def print_table(
    rows: dict[str, dict[str, Any]], workload: Workload, args: argparse.Namespace, device_name: str
) -> None:
    """The setup lines and the per-arm table."""
    model_name = "tiny BERT (smoke run)" if args.tiny else "bert-base (random init)"
    print(f"device: {args.device} ({device_name}); model: {model_name}; torch {torch.__version__}")
    print(f"batches: {workload.source}")
    print(
        f"per arm: {args.warmup} warm-up steps, {args.rounds} interleaved rounds of {args.steps} timed steps "
        "(median round); bf16 autocast, fused AdamW, grad clip 1.0"
    )
    print()
    header = (
        f"{'arm':<6} {'regs':>4} {'s/step':>8} {'real tok/s':>11} {'proc tok/s':>11} {'pad len':>7} "
        f"{'TFLOP/s':>8} {'of mm peak':>10} {'of nominal':>10} {'syncs/step':>10}"
    )
    print(header)
    print("-" * len(header))
    for arm_name, row in rows.items():
        nominal = row["fraction_of_nominal_bf16_peak"]
        syncs = row["host_syncs_per_step"]
        print(
            f"{arm_name:<6} {row['registers']:>4} {row['seconds_per_step']:>8.4f} "
            f"{row['real_tokens_per_s']:>11,.0f} {row['processed_tokens_per_s']:>11,.0f} "
            f"{row['mean_padded_width']:>7.1f} {row['tflops']:>8.2f} "
            f"{row['fraction_of_bf16_matmul_peak']:>10.1%} "
            f"{'-' if nominal is None else f'{nominal:.1%}':>10} {'-' if syncs is None else syncs:>10}"
        )


def print_peaks(model: PreTrainedModel, matmul_peak: float, device: torch.device) -> None:
    """The peaks the fractions are taken against, and the FLOP model."""
    nominal_key, nominal_peak = nominal_bf16_peak(device)
    print()
    print(
        f"bf16 matmul peak measured here: {matmul_peak / 1e12:.1f} TFLOP/s "
        "(best square F.linear, n x n, 2·n³ FLOP)"
    )
    if nominal_peak is None:
        print("nominal bf16 peak: unknown for this device (omitted)")
    else:
        print(f"nominal dense bf16 peak ({nominal_key}): {nominal_peak / 1e12:.0f} TFLOP/s")
    print(
        f"FLOPs per step = 6·P·B·S + 3·layers·B·4·S²·H, S = padded width + registers; "
        f"P = {matmul_parameters(model):,}, layers = {model.config.num_hidden_layers}, "
        f"H = {model.config.hidden_size}"
    )


def register_overheads(
    arms: list[ArmRun], rows: dict[str, dict[str, Any]], workload: Workload
) -> dict[str, float]:
    """Each arm's time over τ=0's, median over rounds; printed beside its share of the sequence."""
    # Paired by round: both arms ran the same batches back to back, so drift cancels in the ratio.
    tau0 = next((arm for arm in arms if arm.registers == 0), None)
    overheads: dict[str, float] = {}
    for arm in arms:
        if tau0 is not None and arm is not tau0:
            ratios = (a / b for a, b in zip(arm.round_seconds, tau0.round_seconds, strict=True))
            overheads[arm.name] = statistics.median(ratios) - 1
    for arm_name, overhead in overheads.items():
        regs = rows[arm_name]["registers"]
        share = regs / workload.mean_window_length
        print(
            f"overhead {arm_name} vs tau0 (median per-round time ratio): "
            f"{overhead:+.1%} ({regs}/L̄ = {share:.1%})"
        )
    return overheads


def ablation_estimate(
    arms: list[ArmRun], rows: dict[str, dict[str, Any]], workload: Workload, config: TrainConfig
) -> dict[str, Any]:
    """Print and return the τ-ablation's training time at a measured rate (an extrapolation)."""
    model_config = arms[0].model.config
    # The ablation at the τ=8 arm's rate (mid-range of the sweep's cost per token); else the last arm's.
    rate_arm = next((a for a in arms if a.registers == 8), arms[-1])
    rate = rows[rate_arm.name]["tflops"] * 1e12
    total_flops = ablation_flops(
        matmul_parameters(arms[0].model),
        model_config.num_hidden_layers,
        model_config.hidden_size,
        workload.num_windows,
        workload.mean_window_length,
        config.epochs,
    )
    minutes = total_flops / rate / 60
    print(
        f"ablation estimate: {minutes:,.1f} min of training for τ = 0, 5, ..., 100 ({len(ABLATION_TAUS)} "
        f"counts) x {ABLATION_SEEDS} seeds x {config.epochs:g} epochs of {workload.num_windows:,} windows "
        f"(mean {workload.mean_window_length:.1f} tokens"
        f"{', fallback constants' if workload.synthetic else ''})"
        f" = {total_flops / 1e15:,.1f} PFLOP at {rate_arm.name}'s {rate / 1e12:.2f} TFLOP/s. An "
        "extrapolation: excludes evaluation, startup (model load, featurization) and padding."
    )
    return {
        "taus": list(ABLATION_TAUS),
        "seeds": ABLATION_SEEDS,
        "epochs": config.epochs,
        "num_windows": workload.num_windows,
        "mean_window_length": workload.mean_window_length,
        "total_pflop": total_flops / 1e15,
        "rate_arm": rate_arm.name,
        "rate_tflops": rate / 1e12,
        "note": "extrapolation at the measured training FLOP rate; excludes evaluation, startup and padding",
        "minutes": minutes,
    }


def report(
    arms: list[ArmRun],
    round_batches: list[Batch],
    matmul_peak: float,
    workload: Workload,
    config: TrainConfig,
    args: argparse.Namespace,
    began: float,
) -> dict[str, Any]:
    """Print the table and the estimate; return the JSON summary."""
    device = args.device
    model = arms[0].model
    nominal_key, nominal_peak = nominal_bf16_peak(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = arm_rows(arms, round_batches, matmul_peak, args)
    print_table(rows, workload, args, name)
    print_peaks(model, matmul_peak, device)
    overheads = register_overheads(arms, rows, workload)
    ablation = ablation_estimate(arms, rows, workload, config)
    minutes = ablation.pop("minutes")
    wall = time.perf_counter() - began
    print(f"wall time: {wall:.1f} s")
    return {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "model": "tiny" if args.tiny else "bert-base",
        "layers": model.config.num_hidden_layers,
        "hidden": model.config.hidden_size,
        "matmul_parameters": matmul_parameters(model),
        "batch_source": workload.source,
        "synthetic": workload.synthetic,
        "batch_size": config.batch_size,
        "distinct_batches": len(workload.batches),
        "steps": args.steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "arms": rows,
        "bf16_matmul_peak_tflops": matmul_peak / 1e12,
        "nominal_bf16_peak_tflops": None if nominal_peak is None else nominal_peak / 1e12,
        "nominal_bf16_peak_key": nominal_key,
        "overhead_vs_tau0": overheads,
        "overhead_tau8": overheads.get("tau8"),
        "ablation_estimate_minutes": minutes,
        "ablation": ablation,
        "wall_seconds": wall,
    }


def main(argv: list[str] | None = None) -> int:
    began = time.perf_counter()
    args = parse_args(argv)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE, file=sys.stderr)
        return 2
    hf_logging.set_verbosity_error()
    overrides = {} if args.batch_size is None else {"batch_size": args.batch_size}
    config = resolve_config("default", **overrides)
    try:
        workload = load_workload(args, config, BertConfig().vocab_size)
    except RegtuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"batches: {workload.source}", file=sys.stderr)
    batches = [to_device(batch, args.device) for batch in workload.batches]
    arms = [build_arm(registers, config, args) for registers in args.registers]
    torch.manual_seed(args.seed)  # dropout masks
    try:
        round_batches, matmul_peak = run_arms(arms, batches, args)
    except RegtuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    summary = report(arms, round_batches, matmul_peak, workload, config, args, began)
    summary["hardware"] = describe_hardware()  # what the numbers above were measured on
    print(f"hardware: {summary['hardware']}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
