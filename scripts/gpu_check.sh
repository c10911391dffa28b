#!/usr/bin/env bash
# The served path on one GPU (not run in CI; about 5 minutes on one H100 once installed):
# vLLM's CUDA build serving SmolLM2-135M-Instruct with LoRA and its Hermes tool parser,
# a few ArCHer iterations sampled by vLLM with hot-swapped adapters, log-probability
# parity and OpenAI tool_calls for a stock ChatOpenAI. Prints a JSON summary; exits
# non-zero when a check fails. Needs the package registries once, for the installs.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCHER_VLLM_PACKAGE="${ARCHER_VLLM_PACKAGE:-vllm}" bash scripts/setup_vllm_env.sh
if [ ! -x .venv/bin/python ]; then
    make install
fi
.venv/bin/python scripts/gpu_check.py "$@"
