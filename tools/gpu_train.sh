#!/usr/bin/env bash
# Train a policy further on a lent GPU: the `device` tool's machines have torch, numpy, pyyaml and tqdm but no
# simulator, so the demo images come from their cache beside the demo file (`sag render --data DATA` here; carry
# DATA and DATA's .images.npz). Stops at a checkpoint after MINUTES; run it again (carrying OUT/run back) to resume.
#   tools/gpu_train.sh OUT [more `sag train` arguments]
# Environment, with defaults that train the shipped Push-T policy further:
#   CONFIG=config/pusht_image.yaml DATA=data/pusht_expert_200.npz INIT=models/pusht_image_long3.pt
#   STEPS=20000 (the new run's length: its cosine schedule ends there) MINUTES=7 DEVICE=cuda PYTHON=python3
# Writes OUT/run (train_state.pt, policy.pt) and OUT/policy_fp16.pt (`sag pack`, what models/ ships).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: tools/gpu_train.sh OUT [more sag train arguments]}
shift
CONFIG=${CONFIG:-config/pusht_image.yaml}
DATA=${DATA:-data/pusht_expert_200.npz}
INIT=${INIT:-models/pusht_image_long3.pt}
STEPS=${STEPS:-20000}
MINUTES=${MINUTES:-7}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
images="${DATA%.npz}.images.npz"
if [[ ! -f "$DATA" || ! -f "$images" ]]; then
  echo "[gpu-train] needs $DATA and $images: run 'sag render --data $DATA' where the simulators are, carry both" >&2
  exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PYTHON" -c "import torch; print('[gpu-train] torch', torch.__version__, 'cuda available', torch.cuda.is_available())"
"$PYTHON" -m sag_ros.cli train --config "$CONFIG" --data "$DATA" --init "$INIT" --steps "$STEPS" --out "$OUT/run" \
  --device "$DEVICE" --max-minutes "$MINUTES" "$@"
"$PYTHON" -m sag_ros.cli pack --policy "$OUT/run/policy.pt" --out "$OUT/policy_fp16.pt"
