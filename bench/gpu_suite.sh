#!/usr/bin/env bash
# The trainer's GPU figures in one run (< 8 minutes on one H100 / H200 / MI300X): ours vs transformers'
# ZayaForCausalLM forward+backward on the `small` preset at 4K (bf16, compiled), tokens/s, MFU, peak memory, the
# attention backends side by side, 32K memory, the expert compute's share of the step and decoding throughput
# (cached vs uncached generate; bench/gpu_suite.py).
#   bash bench/gpu_suite.sh            # on the GPU machine, from the repository root
#   bash bench/gpu_suite.sh --smoke    # CPU, tiny shapes, seconds (what the test suite runs)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec timeout 470 "$PY" bench/gpu_suite.py "$@"
