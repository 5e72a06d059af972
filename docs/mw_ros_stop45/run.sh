#!/bin/bash
# Two-task Meta-World over real DDS (stop 45), from the repository root: the shipped execution offset (0) against one
# action period (12.5 ms), in alternating 48-episode blocks on seeds 100048-100143; one log per block in runs/.
set -euo pipefail
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
mkdir -p runs/mw_ros_stop45
M="--model-path models/mw_door_button.pt --pruner-path models/mw_door_button_sag_rho0.9_step_held.pt --episodes 48 --print-period 30"
for start in 100048 100096; do
  ROS_DOMAIN_ID=71 sag-bringup $M --param sag_sim.seed=$start > runs/mw_ros_stop45/shipped_$start.log 2>&1
  ROS_DOMAIN_ID=72 sag-bringup $M --param sag_sim.seed=$start --param sag_inference.execution_offset_s=0.0125 \
    > runs/mw_ros_stop45/offset_$start.log 2>&1
done
