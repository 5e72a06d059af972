#!/usr/bin/env bash
# GPU check of the policy and its inference backends (equivalence + timing); see sag_ros/engine/gpu_check.py.
#   tools/gpu_check.sh [--device cuda] [--quick] [--out FILE] [--backends eager compile ...]
# Uses only torch/numpy/pyyaml from the python it finds (PYTHON, the repo's .venv, else python3); reads nothing
# from the network; a hard wall-clock limit (GPU_CHECK_TIMEOUT_S, default 470 s) keeps it under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]] && .venv/bin/python -c "import torch" 2>/dev/null; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c "import torch, numpy, yaml" 2>/dev/null; then
  echo "[gpu-check] skipped: $PYTHON lacks torch/numpy/pyyaml" >&2
  "$PYTHON" -c "import torch" 2>&1 | tail -1 >&2
  exit 3
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_NO_INDEX=1
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-${TMPDIR:-/tmp}/sag_gpu_check_inductor}"
"$PYTHON" -c "import torch; print('[gpu-check] torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
exec timeout --kill-after=10 "${GPU_CHECK_TIMEOUT_S:-470}" "$PYTHON" -m sag_ros.engine.gpu_check "$@"
