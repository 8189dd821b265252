"""regtune.core.allocator: on glibc, freed CPU tensors are reused instead of being mapped in again.

Each case runs in a fresh interpreter, since malloc's settings are process-wide and cannot be undone.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import TrainingArguments

from regtune.core.allocator import ENV_VAR
from regtune.training import trainer as trainer_module
from tiny_models import tiny_model

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's parameters are glibc's")

# Allocates and frees a 48 MiB tensor 20 times (as a training step frees its activations) and prints
# the minor page faults that took, and whether keep_freed_memory() said it applied.
_PROBE = """
import json, resource, sys, torch
from regtune.core.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "tuned" else None
torch.ones(12 * 2**20).sum()  # warm up: the first block is mapped in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(12 * 2**20).sum()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _probe(mode: str, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != ENV_VAR}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    plain = _probe("plain")
    tuned = _probe("tuned")
    assert tuned["applied"] is True
    # 20 × 48 MiB of fresh pages is ~245,000 faults of 4 KiB; reused blocks need almost none.
    assert plain["faults"] > 100_000
    assert tuned["faults"] < plain["faults"] / 20


@glibc
def test_regtune_malloc_default_leaves_the_allocator_alone() -> None:
    opted_out = _probe("tuned", **{ENV_VAR: "default"})
    assert opted_out["applied"] is False
    assert opted_out["faults"] > 100_000


def test_the_trainer_applies_it_on_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[int] = []
    monkeypatch.setattr(trainer_module, "keep_freed_memory", lambda: calls.append(1) or True)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    trainer_module.RegisterTrainer(model=tiny_model("bert"), args=args)
    assert calls == [1]
