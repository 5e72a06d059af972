#!/bin/bash
# The fidelity-ranking study (tools/fidelity_ranking_study.py) on the default Push-T policy, ranked by closed-loop
# score. Extra arguments pass through (--json, --plot, --seed). Needs data/pusht_expert_200.npz (sag datagen).
set -euo pipefail
M=models/pusht_image_long3; E=docs/eval_pusht_long3; H=docs/bench_pusht_long3_300_new_layouts_hold.json
R8=docs/bench_pusht_long3_rho0.8_hold.json; R95=docs/bench_pusht_long3_rho0.95_hold.json
p() { echo "${E}_$1_noise0.json,${E}_$1_noise1.json,${E}_$1_noise2.json"; }
python tools/fidelity_ranking_study.py --policy $M.pt --data data/pusht_expert_200.npz --outcome score "$@" \
  --method dense dense "$H::dense" \
  --method interval-5 interval:5 "$R8::interval n=5 hold-x0" \
  --method interval-10 interval:10 "$H::interval n=10 hold-x0" \
  --method interval-20 interval:20 "$R95::interval n=20 hold-x0" \
  --method interval-50 interval:50 "$(p int50_hold)" \
  --method step-0 interval:100 "$(p int100_hold)" \
  --method sag-step ${M}_sag_rho0.9_step.pt:hold "$H::sag step-level hold-x0" \
  --method static-step ${M}_static_rho0.9_step.pt:hold "$H::static step-level hold-x0" \
  --method sag-step-held ${M}_sag_rho0.9_step_held.pt "$H::sag step-level (trained held) hold-x0" \
  --method sag-0.8 ${M}_sag_rho0.8_step_held.pt "$R8::sag rho0.8 step held hold-x0" \
  --method static-0.8 ${M}_static_rho0.8_step_held.pt "$R8::static rho0.8 step held hold-x0" \
  --method sag-0.95 ${M}_sag_rho0.95_step_held.pt "$R95::sag rho0.95 step held hold-x0" \
  --method static-0.95 ${M}_static_rho0.95_step_held.pt "$R95::static rho0.95 step held hold-x0" \
  --method sag-hier ${M}_sag_rho0.9_hierarchical.pt ${E}_hier_sag_500.json \
  --method static-hier ${M}_static_rho0.9_hierarchical.pt ${E}_hier_static_500.json \
  --method sag-per-block-held ${M}_sag_rho0.9_per_block_held.pt "${E}_perblock_held_150.json,${E}_perblock_held_new100.json"
