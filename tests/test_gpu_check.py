"""benchmarks/gpu_throughput.py (the GPU readiness check of issue #3), smoke-tested on CPU with a tiny BERT.

The numbers of a tiny CPU run mean nothing; these tests check that the script runs end to end, that its
JSON line carries every number with sane values, and that it refuses cleanly without CUDA.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # benchmarks/ is not a package

import gpu_throughput  # noqa: E402

BATCH_SIZE = 4


def run_main(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[dict[str, Any], str]:
    """Run the tiny CPU smoke configuration; return the parsed last stdout line and all of stdout."""
    argv = ["--device", "cpu", "--tiny", "--steps", "2", "--warmup", "1", "--rounds", "2", *extra]
    assert gpu_throughput.main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out.strip().splitlines()[-1]), out


def check_summary(summary: dict[str, Any], batch_size: int) -> None:
    """The properties every run must have, whatever the batches."""
    arms = summary["arms"]
    assert set(arms) == {"tau0", "tau8"}
    tau0, tau8 = arms["tau0"], arms["tau8"]
    for row in (tau0, tau8):
        assert row["real_tokens_per_s"] > 0
        assert row["processed_tokens_per_s"] >= row["real_tokens_per_s"]
        assert row["seconds_per_step"] > 0
        assert row["timed_steps"] == 4  # 2 rounds x 2 steps
        assert len(row["round_seconds"]) == 2
        assert row["loss_finite"] is True
        assert 0 < row["fraction_of_bf16_matmul_peak"] < 1
        if row["fraction_of_nominal_bf16_peak"] is not None:  # None on CPU: no nominal peak
            assert 0 < row["fraction_of_nominal_bf16_peak"] < 1
    # The same batches: the same real tokens; τ=8 processes 8 more positions per window.
    assert tau8["real_tokens_per_step"] == tau0["real_tokens_per_step"]
    assert tau8["processed_tokens_per_step"] - tau0["processed_tokens_per_step"] == 8 * batch_size
    assert tau8["mean_padded_width"] == tau0["mean_padded_width"]
    assert summary["bf16_matmul_peak_tflops"] > 0
    assert summary["nominal_bf16_peak_tflops"] is None  # a CPU is not in the table
    assert summary["overhead_tau8"] == summary["overhead_vs_tau0"]["tau8"]
    assert summary["ablation_estimate_minutes"] > 0
    assert summary["ablation"]["taus"] == list(range(0, 101, 5))
    assert summary["ablation"]["rate_arm"] == "tau8"
    assert summary["batch_size"] == batch_size


def test_tiny_cpu_run_reports_every_number(
    capsys: pytest.CaptureFixture[str], one_thread: None, restore_hf_logging: None
) -> None:
    summary, out = run_main(capsys, "--synthetic", "--batch-size", str(BATCH_SIZE))
    check_summary(summary, BATCH_SIZE)
    assert summary["synthetic"] is True
    assert summary["model"] == "tiny"
    assert summary["arms"]["tau0"]["mean_padded_width"] == gpu_throughput.SYNTHETIC_WIDTH
    # The fallback constants of TyDi en's default-preset windows drive the estimate.
    assert summary["ablation"]["num_windows"] == gpu_throughput.FALLBACK_WINDOWS
    # The readable table precedes the JSON line.
    table = out.splitlines()[:-1]
    assert any(line.startswith("tau0") for line in table)
    assert any(line.startswith("tau8") for line in table)
    assert any("ablation estimate" in line and "extrapolation" in line for line in table)


@pytest.mark.slow
def test_tiny_cpu_run_on_real_tydi_batches(
    capsys: pytest.CaptureFixture[str], one_thread: None, restore_hf_logging: None, data_dir: Path
) -> None:
    summary, _ = run_main(capsys, "--data-dir", str(data_dir))
    check_summary(summary, 16)  # the default preset's batch size
    assert summary["synthetic"] is False
    assert summary["distinct_batches"] == 2
    assert summary["ablation"]["num_windows"] > 1000
    assert 50 < summary["ablation"]["mean_window_length"] < 384


def test_ablation_flops_grow_with_registers() -> None:
    base = gpu_throughput.ablation_flops(1000, 2, 64, windows=10, mean_length=100.0, epochs=2.0)
    longer = gpu_throughput.ablation_flops(1000, 2, 64, windows=10, mean_length=110.0, epochs=2.0)
    assert 0 < base < longer
    # The sum over τ = 0..100 of 6·P·S per window, times windows, epochs and seeds (attention term aside).
    dense = sum(6 * 1000 * (100 + tau) for tau in range(0, 101, 5)) * 10 * 2 * 3
    assert base > dense


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("NVIDIA H200", "H200"),
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA L40S", None),  # not an L4
        ("Tesla T4", None),
    ],
)
def test_nominal_peak_lookup(name: str, key: str | None) -> None:
    assert gpu_throughput.nominal_bf16_peak_for_name(name)[0] == key


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_exits_2_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_throughput.py"), "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [gpu_throughput.NO_CUDA_MESSAGE]
    assert result.stdout == ""
