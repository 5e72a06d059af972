"""Open loop: how close to dense do step schedules come, with block reuse and with held steps?

Samples training windows from the demonstrations, draws one noise per window, and runs dense and every schedule
from the same noise; prints the executed actions' mean and median L1 to dense (normalized units). The schedules:
uniform interval caching and the masks of the given pruners (each must predict one mask for every window, as the
step-level pruners here do). What fixed the shipped pruner before any closed-loop run (README, "Held steps").

    python tools/held_steps_study.py --policy models/pusht_image_long3.pt --data data/pusht_expert_200.npz \\
        --pruner models/pusht_image_long3_sag_rho0.9_step.pt --pruner models/pusht_image_long3_sag_rho0.9_step_held.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sag_ros.cli import training_sampler
from sag_ros.policy.checkpoint import load_policy
from sag_ros.policy.sampling import dense_runner, eager_kernels, prepare_chunk, reverse_diffusion
from sag_ros.sparse.artifact import load_pruner
from sag_ros.sparse.cache import make_cache
from sag_ros.sparse.mask import interval_mask
from sag_ros.sparse.sampler import SparseRunner
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
    policy, _ = load_policy(Path(args.policy))
    policy.eval()
    windows = training_sampler(policy.config, Path(args.data))
    obs, _ = windows.sample(args.windows, torch.Generator().manual_seed(args.seed))
    kernels, executed = eager_kernels(policy.denoiser), policy.executed_slice()
    num_steps, num_blocks = policy.schedule.num_steps, len(kernels.block_fns)
    with torch.no_grad():
        features = policy.encode_observation(obs)
        masks = {f"interval n={args.interval}": interval_mask(num_steps, num_blocks, args.interval)}
        for path in args.pruner:
            pruner, _ = load_pruner(Path(path), policy)
            predicted = pruner.predict_mask(features)
            if not all(torch.equal(predicted[0], m) for m in predicted):
                raise SystemExit(f"{path} predicts different masks for different windows; this study runs one mask")
            masks[Path(path).stem] = predicted[0]
        inputs = prepare_chunk(policy.denoiser, policy.schedule, features, torch.Generator().manual_seed(args.seed + 1))
        dense = reverse_diffusion(policy.schedule, inputs, kernels, dense_runner(kernels))[:, executed]
        rows = []
        for name, mask in masks.items():
            for hold in (False, True):
                runner = SparseRunner(kernels.block_fns, mask, make_cache(args.reuse, num_blocks), hold_x0=hold)
                out = reverse_diffusion(policy.schedule, inputs, kernels, runner)[:, executed]
                l1 = (out - dense).abs().mean((1, 2))
                rows.append({"schedule": name, "skipped steps": "held" if hold else "block reuse",
                             "computed steps": int((~mask.all(1)).sum()),
                             "L1 mean": f"{l1.mean():.4f}", "L1 median": f"{l1.median():.4f}"})
    print(format_table(rows))


if __name__ == "__main__":
    main()
