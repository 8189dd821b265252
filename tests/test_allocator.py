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
from typing import Any

import pytest
from transformers import TrainingArguments

from regtune.core.allocator import ENV_VAR
from regtune.training import trainer as trainer_module
from tiny_models import tiny_model

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's parameters are glibc's")

# Allocates and frees a 48 MiB tensor 20 times (as a training step frees its activations) and prints
# the minor page faults that took, and whether keep_freed_memory() said it applied. Then frees a 256 MiB
# tensor and prints the resident set before and after release_freed_memory().
_PROBE = """
import json, resource, sys, torch
from regtune.core.allocator import keep_freed_memory, release_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "tuned" else None
for _ in range(3):
    torch.ones(12 * 2**20).sum()  # warm up: the first blocks are mapped in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(12 * 2**20).sum()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

torch.ones(64 * 2**20).sum()
kept = rss_mib()
release_freed_memory()
print(json.dumps({"applied": applied, "faults": faults, "kept_mib": kept, "released_mib": rss_mib()}))
"""


def _probe(mode: str, **env: str) -> dict[str, Any]:
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


def _cpu_trainer(tmp_path: Path) -> trainer_module.RegisterTrainer:
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    return trainer_module.RegisterTrainer(model=tiny_model("bert"), args=args)


@glibc
def test_freed_blocks_are_reused_instead_of_faulted_in_again() -> None:
    plain = _probe("plain")
    tuned = _probe("tuned")
    assert tuned["applied"] is True
    # By default every one of the 20 fresh blocks faults in (12,288 faults of 4 KiB each, or 24 with
    # transparent huge pages always on); reused blocks need almost none.
    assert plain["faults"] >= 20
    assert tuned["faults"] * 10 < plain["faults"]


@glibc
def test_release_hands_the_kept_heap_back() -> None:
    tuned = _probe("tuned")
    # The freed 256 MiB stayed in the process until release_freed_memory().
    assert tuned["kept_mib"] - tuned["released_mib"] > 200


@glibc
def test_regtune_malloc_default_leaves_the_allocator_alone() -> None:
    opted_out = _probe("tuned", **{ENV_VAR: "default"})
    assert opted_out["applied"] is False
    assert opted_out["faults"] >= 20
    assert opted_out["kept_mib"] - opted_out["released_mib"] < 50  # glibc had given it back already


def test_the_trainer_applies_it_on_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[int] = []
    monkeypatch.setattr(trainer_module, "keep_freed_memory", lambda: calls.append(1) or True)
    _cpu_trainer(tmp_path)
    assert calls == [1]


def test_the_trainer_releases_the_heap_even_when_training_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    released: list[int] = []
    monkeypatch.setattr(trainer_module, "keep_freed_memory", lambda: True)
    monkeypatch.setattr(trainer_module, "release_freed_memory", lambda: released.append(1))

    def fail(self: Any, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("out of data")

    monkeypatch.setattr(trainer_module.Trainer, "train", fail)
    trainer = _cpu_trainer(tmp_path)
    with pytest.raises(RuntimeError, match="out of data"):
        trainer.train()
    assert released == [1]
