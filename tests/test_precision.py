"""Precision: 'auto' / 'bf16' / 'fp32' resolution, autocast, and their use in training and evaluation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForQuestionAnswering, TrainerCallback, TrainingArguments

from conftest import FinishedRun
from regtune.core import precision
from regtune.core.errors import ConfigError
from regtune.core.hub import load_tokenizer
from regtune.core.precision import autocast_context, resolve_precision
from regtune.core.registers import add_registers
from regtune.tasks.qa.data import QAExample
from regtune.tasks.qa.evaluation import QASettings, predict_logits
from regtune.tasks.qa.features import QACollator, prepare_eval_features
from regtune.training.config import TrainConfig
from regtune.training.trainer import train_model


def test_fp32_is_fp32_everywhere() -> None:
    for device in ("cpu", "cuda", "mps"):
        assert resolve_precision("fp32", device) == "fp32"


@pytest.mark.parametrize("amx", [True, False])
def test_auto_on_cpu_takes_bf16_only_with_amx(monkeypatch: pytest.MonkeyPatch, amx: bool) -> None:
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: amx)
    assert resolve_precision("auto", "cpu") == ("bf16" if amx else "fp32")
    # An explicit request is honoured on any CPU: torch emulates bf16 where the CPU lacks it.
    assert resolve_precision("bf16", "cpu") == "bf16"


@pytest.mark.parametrize("supported", [True, False])
def test_cuda_follows_the_gpu(monkeypatch: pytest.MonkeyPatch, supported: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: supported)
    assert resolve_precision("auto", "cuda") == ("bf16" if supported else "fp32")
    if supported:
        assert resolve_precision("bf16", "cuda") == "bf16"
    else:
        with pytest.raises(ConfigError, match="no bf16"):
            resolve_precision("bf16", "cuda")


def test_other_devices_stay_fp32_and_refuse_bf16() -> None:
    assert resolve_precision("auto", "mps") == "fp32"
    with pytest.raises(ConfigError, match="mps"):
        resolve_precision("bf16", "mps")


@pytest.mark.parametrize("bad", ["fp16", "BF16", ""])
def test_unknown_precision_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="precision"):
        resolve_precision(bad, "cpu")
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision=bad)
    with pytest.raises(ConfigError, match="precision"):
        QASettings(precision=bad)


def test_cpu_probe_answers_a_bool() -> None:
    assert isinstance(precision.cpu_has_fast_bf16(), bool)


def test_cpu_model_name_reads_cpuinfo_and_falls_back(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9454\nflags\t: avx2\n"
    )
    assert precision.cpu_model_name(cpuinfo) == "AMD EPYC 9454"
    cpuinfo.write_text("processor\t: 0\nmodel name\t:\n")  # an empty name is no name
    assert precision.cpu_model_name(cpuinfo) != ""
    assert precision.cpu_model_name(tmp_path / "missing") != ""


@pytest.mark.parametrize("amx", [True, False])
def test_hardware_line_names_torch_kernels_and_amx(monkeypatch: pytest.MonkeyPatch, amx: bool) -> None:
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: amx)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    line = precision.describe_hardware()
    assert "torch kernels AVX2" in line
    assert f"AMX {'yes' if amx else 'no'}" in line
    assert line.startswith(f"cpu {precision.cpu_model_name()};")


@pytest.mark.parametrize(("name", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_autocast_context_runs_matmuls_in_the_resolved_dtype(name: str, dtype: torch.dtype) -> None:
    layer = torch.nn.Linear(8, 4)
    with autocast_context(torch.device("cpu"), name):
        out = layer(torch.randn(2, 8))
    assert out.dtype == dtype
    assert layer.weight.dtype == torch.float32  # autocast never touches the stored weights


def test_evaluation_logits_follow_the_precision(tiny_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    torch.manual_seed(0)
    model = add_registers(AutoModelForQuestionAnswering.from_pretrained(tiny_model_dir), 2)
    examples = [
        QAExample(
            id=f"q{i}",
            question="who wrote it?",
            context=f"It was written by writer {i} long ago.",
            answers=(),
        )
        for i in range(3)
    ]
    features = prepare_eval_features(examples, tokenizer, max_length=64, doc_stride=16)
    collator = QACollator(tokenizer)
    runs = {
        name: predict_logits(model, features, collator, progress=False, precision=name)
        for name in ("fp32", "bf16")
    }
    fp32_start, bf16_start = runs["fp32"][0][0], runs["bf16"][0][0]
    assert fp32_start.dtype == bf16_start.dtype  # both come back as float32 arrays
    # bf16 keeps ~3 significant digits: close to fp32, but not the same numbers.
    assert abs(fp32_start - bf16_start).max() > 0
    assert abs(fp32_start - bf16_start).max() < 0.1 * (abs(fp32_start).max() + 1)


def test_training_records_and_uses_its_precision(
    finished_run: FinishedRun, make_config: Callable[..., TrainConfig], tmp_path: Path, one_thread: None
) -> None:
    # The shared run uses 'auto'; metrics.json says what it resolved to here.
    assert finished_run.config.precision == "auto"
    assert finished_run.metrics["precision"] == resolve_precision("auto", "cpu")
    other = "fp32" if finished_run.metrics["precision"] == "bf16" else "bf16"
    seen: list[TrainingArguments] = []

    class SeeArgs(TrainerCallback):
        def on_train_begin(self, args: TrainingArguments, *rest: object, **kwargs: object) -> None:
            seen.append(args)

    metrics = train_model(
        make_config(tmp_path / other, precision=other), progress=False, callbacks=[SeeArgs()]
    )
    assert metrics["precision"] == other
    assert seen[0].bf16 is (other == "bf16")
    # No per-step isnan/isinf test of the loss: on a GPU it would be a host sync every step.
    assert seen[0].logging_nan_inf_filter is False
    # Same seed, same data: only the arithmetic differs, and it shows in the loss.
    assert metrics["train_loss"] != finished_run.metrics["train_loss"]
    assert metrics["train_loss"] == pytest.approx(finished_run.metrics["train_loss"], rel=0.1)


# --- attention implementation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "amx", "precision_", "expected"),
    [
        ("cpu", True, "auto", "eager"),  # bf16 on an AMX CPU: eager's batched matmuls beat SDPA's backward
        ("cpu", False, "auto", "sdpa"),  # fp32: SDPA's fused CPU kernel is the faster one
        ("cpu", True, "fp32", "sdpa"),
        ("cpu", False, "bf16", "eager"),
        ("mps", True, "auto", "sdpa"),
    ],
)
def test_auto_attention_is_eager_only_for_bf16_on_cpu(
    monkeypatch: pytest.MonkeyPatch, device: str, amx: bool, precision_: str, expected: str
) -> None:
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: amx)
    assert precision.resolve_attn_implementation("auto", device, precision_) == expected
    # An explicit choice is always kept.
    for chosen in ("sdpa", "eager"):
        assert precision.resolve_attn_implementation(chosen, device, precision_) == chosen


def test_auto_attention_on_gpus_is_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert precision.resolve_attn_implementation("auto", "cuda", "auto") == "sdpa"


def test_unknown_attention_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="attn_implementation"):
        precision.resolve_attn_implementation("flash", "cpu", "auto")
    with pytest.raises(ConfigError, match="attn_implementation"):
        TrainConfig(attn_implementation="flash")


def test_training_builds_the_resolved_attention(finished_run: FinishedRun) -> None:
    expected = precision.resolve_attn_implementation("auto", "cpu", finished_run.config.precision)
    assert finished_run.config.attn_implementation == "auto"
    assert finished_run.metrics["attn_implementation"] == expected
