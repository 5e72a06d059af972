#!/usr/bin/env bash
# The main job on a fresh machine: install into .venv, then run the closed loop over ROS 2 on Push-T with the
# shipped policy and its SAG pruner (sag-bringup: sim + camera + inference nodes, live latency, final score).
# Extra arguments go to sag-bringup (e.g. --episodes 3, --pruner-path none for dense, --backend onnxruntime).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/sag-bringup ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q 'torch==2.13.0'   # the CPU build; a bare 'torch' would pull CUDA
  .venv/bin/python -m pip install -q -e '.[ros,engine]'
fi
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
exec .venv/bin/sag-bringup "$@"
