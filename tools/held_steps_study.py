"""Open loop: how close to dense do step schedules come, with block reuse and with held steps?

Samples training windows from the demonstrations, draws one noise per window, and runs dense and every schedule
from the same noise; prints the executed actions' mean and median L1 to dense (normalized units). The schedules:
uniform interval caching and the masks the given pruners predict (an observation-conditioned pruner may predict a
different mask per window: each window runs its own, and the table counts the distinct masks). What fixed the shipped
pruner before any closed-loop run (README, "Held steps").

    python tools/held_steps_study.py --policy models/pusht_image_long3.pt --data data/pusht_expert_200.npz \\
        --pruner models/pusht_image_long3_sag_rho0.9_step.pt --pruner models/pusht_image_long3_sag_rho0.9_step_held.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sag_ros.cli import policy_and_windows
from sag_ros.policy.sampling import dense_runner, eager_kernels, prepare_chunk, reverse_diffusion
from sag_ros.sparse.artifact import load_pruner
from sag_ros.sparse.mask import interval_mask
from sag_ros.sparse.sampler import sample_with_masks
from sag_ros.tables import format_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--pruner", action="append", default=[])
    parser.add_argument("--interval", type=int, default=10)
    parser.add_argument("--windows", type=int, default=64)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--reuse", default="per_block", choices=["per_block", "one_for_all"])
    args = parser.parse_args()

    torch.set_num_threads(2)
    policy, obs = policy_and_windows(Path(args.policy), Path(args.data), args.windows, args.seed)
    kernels, executed = eager_kernels(policy.denoiser), policy.executed_slice()
    num_steps, num_blocks = policy.schedule.num_steps, len(kernels.block_fns)
    with torch.no_grad():
        features = policy.encode_observation(obs)
        interval = interval_mask(num_steps, num_blocks, args.interval)
        masks = {f"interval n={args.interval}": interval.expand(args.windows, *interval.shape)}
        for path in args.pruner:
            pruner, _ = load_pruner(Path(path), policy)
            masks[Path(path).stem] = pruner.predict_mask(features)
        inputs = prepare_chunk(policy.denoiser, policy.schedule, features, torch.Generator().manual_seed(args.seed + 1))
        dense = reverse_diffusion(policy.schedule, inputs, kernels, dense_runner(kernels))[:, executed]
        rows = []
        for name, window_masks in masks.items():
            for hold in (False, True):
                chunks = sample_with_masks(policy.schedule, kernels, inputs, window_masks, args.reuse, hold)
                l1 = (chunks[:, executed] - dense).abs().mean((1, 2))
                rows.append({"schedule": name, "skipped steps": "held" if hold else "block reuse",
                             "distinct masks": len(torch.unique(window_masks, dim=0)),
                             "computed steps": f"{(~window_masks.all(2)).sum(1).float().mean():.2f}",
                             "L1 mean": f"{l1.mean():.4f}", "L1 median": f"{l1.median():.4f}"})
    print(format_table(rows))


if __name__ == "__main__":
    main()
