"""Numeric precision of training and inference: fp32, or bf16 autocast where the hardware has it.

``auto`` picks bf16 autocast (fp32 master weights and optimizer state, bf16 matmuls and attention) on
GPUs with bf16 and on CPUs with AMX tiles, and fp32 elsewhere. On the project's Xeon, AMX runs a bf16
matmul of a MiniLM layer's shape about 8x faster than fp32 (benchmarks/train_throughput.py measures
both peaks); on a CPU without AMX, bf16 is emulated or at best 2x and the casts eat the gain, so fp32
stays.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Literal

import torch

from regtune.core.errors import ConfigError

#: What a user may ask for.
PRECISIONS = ("auto", "bf16", "fp32")
#: Attention implementations a user may ask for; 'auto' is resolved by :func:`resolve_attn_implementation`.
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager")


def check_precision(precision: str) -> None:
    """Raise ConfigError unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")


def check_attn_implementation(name: str) -> None:
    """Raise ConfigError unless ``name`` is one of :data:`ATTN_IMPLEMENTATIONS`."""
    if name not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(
            f"attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)}; got {name!r}"
        )


def cpu_has_fast_bf16() -> bool:
    """True when this CPU has AMX tiles (Sapphire Rapids and later), where bf16 matmuls are fast.

    torch exposes the probe only as a private helper; without it, assume no AMX (fp32 is always correct).
    """
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:  # the probe exists but cannot query this CPU
        return False


def cpu_model_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's marketing name from ``cpuinfo`` (Linux), else whatever ``platform`` knows, else 'unknown'."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:  # not Linux, or no procfs: fall through
        pass
    return platform.processor() or "unknown"


def describe_hardware() -> str:
    """One line naming the arithmetic this process can use, recorded beside results and benchmarks.

    Why: a number measured on a CPU depends on its vector unit (AVX2, AVX-512) and on AMX, which decides
    the ``auto`` precision. The vector unit is the one torch's kernels actually dispatch to (its CPU
    capability), which is what matters, not a guess from the model name.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    line = f"cpu {cpu_model_name()}; torch kernels {capability}; AMX {'yes' if cpu_has_fast_bf16() else 'no'}"
    if torch.cuda.is_available():
        line += f"; gpu {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return line


def resolve_precision(precision: str, device_type: str) -> Literal["bf16", "fp32"]:
    """The precision a run on ``device_type`` ('cuda', 'cpu', 'mps', ...) actually uses.

    Raises:
        ConfigError: unknown ``precision``, or ``bf16`` asked for on a GPU without bf16.
    """
    check_precision(precision)
    if precision == "fp32":
        return "fp32"
    if device_type == "cuda":
        supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if precision == "bf16" and not supported:
            raise ConfigError("precision 'bf16' asked for, but this GPU has no bf16; use --precision fp32")
        return "bf16" if supported else "fp32"
    if device_type == "cpu":
        # An explicit bf16 is honoured on any CPU (torch emulates it); auto only takes it where it pays.
        return "bf16" if precision == "bf16" or cpu_has_fast_bf16() else "fp32"
    if precision == "bf16":
        raise ConfigError(f"precision 'bf16' is not supported on device '{device_type}'; use fp32")
    return "fp32"


def resolve_attn_implementation(requested: str, device_type: str, precision: str) -> str:
    """The attention implementation a training run uses: 'auto' -> eager for bf16 on CPU, else sdpa.

    Why: on CPU, SDPA's fused (flash) kernel has a slow bf16 backward (about 7x its forward in a MiniLM
    profile, 42 % of a training step), while eager attention's batched matmuls run on AMX. Measured on
    TyDi en batches, τ=8: eager takes 0.82x sdpa's step time in bf16, but 1.11x in fp32, where the fused
    kernel wins. GPUs always get sdpa (flash / memory-efficient kernels).
    """
    check_attn_implementation(requested)
    if requested != "auto":
        return requested
    bf16_on_cpu = device_type == "cpu" and resolve_precision(precision, device_type) == "bf16"
    return "eager" if bf16_on_cpu else "sdpa"


def autocast_context(device: torch.device, precision: str = "auto") -> torch.autocast:
    """bf16 autocast when ``precision`` resolves to bf16 on ``device``; a disabled context otherwise."""
    enabled = resolve_precision(precision, device.type) == "bf16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)
