#!/usr/bin/env bash
# Train a policy further on a lent GPU: the `device` tool's machines have torch, numpy, pyyaml and tqdm but no
# simulator, so the demo images come from their cache beside the demo file (`sag render --data DATA` here; carry
# DATA and DATA's .images.npz). Stops at a checkpoint after MINUTES; run it again (carrying OUT/run back) to resume.
#   tools/gpu_train.sh OUT [more `sag train` arguments]
# Environment, with defaults that train the shipped Push-T policy further:
#   CONFIG=config/pusht_image.yaml DATA=data/pusht_expert_200.npz INIT=the shipped policy (default_policy_path())
#   STEPS=20000 (the new run's length: its cosine schedule ends there; 'auto': as many as fit in MINUTES, from the
#   rate of a short probe run, so that the schedule ends inside one call) MINUTES=7 DEVICE=cuda PYTHON=python3
# Writes OUT/run (train_state.pt, policy.pt) and OUT/policy_fp16.pt (`sag pack`, what models/ ships).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: tools/gpu_train.sh OUT [more sag train arguments]}
shift
CONFIG=${CONFIG:-config/pusht_image.yaml}
DATA=${DATA:-data/pusht_expert_200.npz}
STEPS=${STEPS:-20000}
MINUTES=${MINUTES:-7}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
INIT=${INIT:-$("$PYTHON" -c "from sag_ros.resources import default_policy_path; print(default_policy_path())")}
images="${DATA%.npz}.images.npz"
if [[ ! -f "$DATA" || ! -f "$images" ]]; then
  echo "[gpu-train] needs $DATA and $images: run 'sag render --data $DATA' where the simulators are, carry both" >&2
  exit 2
fi
"$PYTHON" -c "import torch; print('[gpu-train] torch', torch.__version__, 'cuda available', torch.cuda.is_available())"
if [[ "$STEPS" == auto ]]; then  # probe the rate for a tenth of the time (at most 30 s), then fit the steps
  probe_minutes=$("$PYTHON" -c "print(min(0.5, $MINUTES / 10))")
  started=$(date +%s.%N)
  rate=$("$PYTHON" -m sag_ros.cli train --config "$CONFIG" --data "$DATA" --init "$INIT" --steps 1000000000 \
    --out "$OUT/probe" --device "$DEVICE" --max-minutes "$probe_minutes" 2>/dev/null \
    | sed -n 's/^trained to step \([0-9]*\) in \([0-9.]*\) s .*/\1 \2/p')
  ended=$(date +%s.%N)
  rm -rf "$OUT/probe"
  # the loop's rate, over what MINUTES leaves once a run's start (data, warm start: the probe's wall time minus its
  # loop's) is paid, since the time limit counts that start too
  STEPS=$("$PYTHON" -c "done, secs = map(float, '$rate'.split()); left = 60 * ($MINUTES - $probe_minutes) - max(0.0, $ended - $started - secs); print(max(1, int(0.9 * done / max(secs, 0.1) * left)))")
  echo "[gpu-train] probe: $rate (steps, s); training $STEPS steps"
  MINUTES=$("$PYTHON" -c "print($MINUTES - $probe_minutes)")
fi
"$PYTHON" -m sag_ros.cli train --config "$CONFIG" --data "$DATA" --init "$INIT" --steps "$STEPS" --out "$OUT/run" \
  --device "$DEVICE" --max-minutes "$MINUTES" "$@"
"$PYTHON" -m sag_ros.cli pack --policy "$OUT/run/policy.pt" --out "$OUT/policy_fp16.pt"
