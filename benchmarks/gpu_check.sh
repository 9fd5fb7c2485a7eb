#!/usr/bin/env bash
# The GPU check: ABC's read-out vs sparse scoring (GPT-2-small RM, 16 x 1024 tokens, peak
# memory), rollouts vs model.generate and update tokens/s at float32 and bfloat16, and a
# 20-update TokenPPO run of the default preset; writes docs/gpu.md. Under 8 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh                # on a machine with a CUDA GPU
#   bash benchmarks/gpu_check.sh --device cpu   # dry run with small sizes (no GPU figures)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
exec timeout 900 python benchmarks/gpu_check.py "$@"
