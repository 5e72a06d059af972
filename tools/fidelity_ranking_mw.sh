#!/bin/bash
# The fidelity-ranking study (tools/fidelity_ranking_study.py) on the two-task Meta-World policy: every schedule and
# pruner with closed-loop results in docs/, each with the runs that hold its episodes. Extra arguments pass through
# (--json, --plot, --seed, --noise-scale). Needs data/mw_door_button_400.npz (sag datagen, docs/results.md).
set -euo pipefail
M=models/mw_door_button; E=docs/eval_mw_door_button; A=docs/bench_mw_door_button_hier_3seeds.json
B=docs/bench_mw_door_button_hier_new_3seeds.json; C=docs/bench_mw_door_button_hier_third_3seeds.json
Q=docs/bench_mw_door_button_hier_eq_200x3.json; P=docs/bench_mw_door_button_per_block
S=docs/bench_mw_door_button_step_held_3seeds.json
p() { echo "${E}_$1_noise0.json,${E}_$1_noise1.json,${E}_$1_noise2.json"; }
abc() { echo "$A::$1,$B::$1,$C::$1"; }
python tools/fidelity_ranking_study.py --policy $M.pt --data data/mw_door_button_400.npz "$@" \
  --method dense dense "$(abc dense)" \
  --method interval-5 interval:5 ${E}_int5_first_noise0.json \
  --method interval-10 interval:10 "$(abc 'interval n=10 hold-x0')" \
  --method interval-20 interval:20 "$(p int20_first),$(p int20_rest)" \
  --method steps-0-10 interval:100@10 "$(p steps0and10_first),$(p steps0and10_held)" \
  --method steps-0-30 interval:100@30 ${E}_steps0and30_first_noise0.json \
  --method steps-0-44 interval:100@44 "$(p steps0and44)" \
  --method steps-0-50 interval:50 "${E}_int50_first_noise0.json,${E}_steps0and50_first_noise1.json,${E}_steps0and50_first_noise2.json,$(p steps0and50_held)" \
  --method steps-0-70 interval:100@70 ${E}_steps0and70_first_noise0.json \
  --method steps-0-90 interval:100@90 ${E}_steps0and90_first_noise0.json \
  --method step-0 interval:100 ${E}_int100_first_noise0.json \
  --method sag-hier-0.9 ${M}_sag_rho0.9_hierarchical.pt "$(abc 'sag hierarchical hold-x0')" \
  --method static-hier-0.9 ${M}_static_rho0.9_hierarchical.pt "$(abc 'static hierarchical hold-x0')" \
  --method sag-hier-0.92 ${M}_sag_rho0.92_hierarchical.pt "$Q::sag hierarchical rho0.92 hold-x0,$C::sag hierarchical rho0.92 hold-x0" \
  --method static-hier-0.88 ${M}_static_rho0.88_hierarchical.pt "$Q::static hierarchical rho0.88 hold-x0,$C::static hierarchical rho0.88 hold-x0" \
  --method sag-hier-0.95 ${M}_sag_rho0.95_hierarchical.pt "$(p sag_rho0.95)" \
  --method static-hier-0.95 ${M}_static_rho0.95_hierarchical.pt "$(p static_rho0.95)" \
  --method sag-0.9-pinned-door ${M}_sag_rho0.9_hierarchical_pinned_mw-door-open.pt "$(p pinned_door)" \
  --method sag-per-block ${M}_sag_rho0.9_per_block.pt "${P}_3seeds.json::sag per-block traj" \
  --method static-per-block ${M}_static_rho0.9_per_block.pt "${P}_3seeds.json::static per-block traj" \
  --method sag-per-block-held ${M}_sag_rho0.9_per_block_held.pt "${P}_held_3seeds.json::sag per-block held hold-x0" \
  --method static-per-block-held ${M}_static_rho0.9_per_block_held.pt "${P}_held_3seeds.json::static per-block held hold-x0" \
  --method sag-step-held ${M}_sag_rho0.9_step_held.pt "$S::sag step held hold-x0" \
  --method static-step-held ${M}_static_rho0.9_step_held.pt "$S::static step held hold-x0"
