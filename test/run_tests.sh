#!/usr/bin/env bash
# The project's test command (README "Run the tests"): real rclpy on loopback DDS with a domain id of this run.
set -euo pipefail
cd "$(dirname "$0")/.."
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( ($$ % 100) + 100 ))}
export QT_QPA_PLATFORM=offscreen SDL_VIDEODRIVER=dummy
exec python -m pytest -q -ra "$@"
