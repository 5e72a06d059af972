#!/usr/bin/env bash
# What a session lent a GPU runs, as one call of the device tool (a call may take 10 minutes, a session's machine
# 15 in all, its start included). Carry data/pusht_expert_200.npz and data/pusht_expert_200.images.npz
# (`sag render --data data/pusht_expert_200.npz` here). Everything it writes goes under OUT (the tool's $OUT):
#   1. cuda_tests.log: the tests that skip without CUDA (training and pruner training on CUDA, CUDA graphs,
#      TensorRT where torch_tensorrt is installed);
#   2. gpu_check.json / .log: backend equivalence and timings with the shipped pruner (tools/gpu_check.sh);
#   3. gpu_train/policy_fp16.pt and gpu_train.log: the shipped Push-T policy trained further for TRAIN_MINUTES
#      (default 4), its steps fitted to that time (tools/gpu_train.sh, STEPS=auto).
#   tools/gpu_session.sh [OUT]     (DEVICE=cpu runs the same steps here, for a dry run of the script)
set -uo pipefail
OUT=${1:-${OUT:?usage: tools/gpu_session.sh OUT}}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$OUT/gpu.txt"
timeout 120 python3 -m pytest -q -ra -p no:cacheprovider -k "cuda or tensorrt" test/test_policy_train.py \
  test/test_sparse_pruner.py test/test_engine_cuda_graphs.py test/test_engine_tensorrt.py 2>&1 | tee "$OUT/cuda_tests.log"
pruner=$(python3 -c 'from sag_ros.resources import default_pruner_path; print(default_pruner_path())')
GPU_CHECK_TIMEOUT_S=200 bash tools/gpu_check.sh --device "${DEVICE:-cuda}" --budget-s 150 \
  --pruner "$pruner" --out "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.log"
STEPS=auto MINUTES=${TRAIN_MINUTES:-4} bash tools/gpu_train.sh "$OUT/gpu_train" 2>&1 | tr '\r' '\n' \
  | grep -v '^train: .*it/s' | tee "$OUT/gpu_train.log"
rm -rf "$OUT/gpu_train/run"  # train_state.pt (37 MB) cannot come back; policy_fp16.pt is the result
