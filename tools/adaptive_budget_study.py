"""Would an observation-conditioned *budget* pay: few computed steps for easy chunks, more for hard ones?

Every pruner this project trained spends the same number of computed steps on every chunk, and per chunk the best
ten-step schedule bought nothing in closed loop (README, the stop-20 oracle, on the previous default policy). This
asks the other question: at the same mean budget, does moving compute between chunks help? The schedules
(``--schedule``, learned static-mask pruner files, run with held steps) default to the default Push-T policy's at
rho 0.95, 0.9 and 0.8 (5, 10 and 21 computed steps); the budget is the median schedule's steps (the shipped ten).

``open-loop``: demonstration windows x a few noise draws; each window's executed-action L1 to dense under each
schedule. Per window, the schedule minimizing ``L1 + lam * steps`` is chosen, with the ``lam`` that keeps the mean
within the shipped budget, either seeing the draw's noise (noise-aware: what an oracle can do) or from the window's
mean error over the other draws (observation-only: what a pruner, which sees only the observation, can at best do).
Also prints how well one draw's error ranks the windows on another (rank correlation).

``closed-loop``: the noise-aware choice run as a policy: each chunk runs dense and every schedule from the chunk's
own noise and executes the schedule that minimizes ``L1 to dense + lam * steps``. An upper bound on any
budget-allocating pruner trained on the fidelity loss. One process (its chunk counts are its own): run two side by
side on two seed ranges. Writes ``sag eval``'s JSON, for ``sag paired``.

    python tools/adaptive_budget_study.py open-loop --policy models/pusht_image_long3.pt --data data/pusht_expert_200.npz
    python tools/adaptive_budget_study.py closed-loop --policy models/pusht_image_long3.pt --lam 0.00196 \\
        --episodes 150 --seed-start 100250 --json docs/eval_pusht_long3_budget_oracle_100250.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from sag_ros.cli import policy_and_windows
from sag_ros.policy.policy import DiffusionPolicy
from sag_ros.policy.sampling import dense_runner, eager_kernels, prepare_chunk, reverse_diffusion
from sag_ros.predictor import BlockPlanner, PolicyPredictor, PredictorSpec
from sag_ros.sim.evaluate import rollout, summarize
from sag_ros.sparse.artifact import load_pruner
from sag_ros.sparse.mask import computed_steps
from sag_ros.sparse.planner import StaticMaskPlanner
from sag_ros.tables import format_table

DEFAULT_SCHEDULES = ("models/pusht_image_long3_static_rho0.95_step_held.pt",
                     "models/pusht_image_long3_static_rho0.9_step.pt",
                     "models/pusht_image_long3_static_rho0.8_step_held.pt")


def static_masks(paths: list[str], policy: DiffusionPolicy) -> dict[str, torch.Tensor]:
    """Each learned static-mask pruner file's one mask [K, 3L], by file name."""
    masks = {}
    for path in paths:
        pruner, _ = load_pruner(Path(path), policy)
        if pruner.config.use_observation:
            raise ValueError(f"{path} is observation-conditioned; this study mixes static masks")
        masks[Path(path).stem] = pruner.predict_mask(torch.zeros(1, pruner.config.obs_feature_dim))[0]
    return masks


def open_loop(args: argparse.Namespace) -> None:
    torch.set_num_threads(2)
    policy, obs = policy_and_windows(Path(args.policy), Path(args.data), args.windows, args.seed)
    kernels, executed = eager_kernels(policy.denoiser), policy.executed_slice()
    masks = static_masks(args.schedule, policy)
    planners = [StaticMaskPlanner(kernels, mask, "per_block", hold_x0=True) for mask in masks.values()]
    errors = np.zeros((len(masks), args.draws, args.windows))  # [schedule, draw, window]
    with torch.no_grad():
        features = policy.encode_observation(obs)
        for draw in range(args.draws):
            inputs = prepare_chunk(policy.denoiser, policy.schedule, features,
                                   torch.Generator().manual_seed(args.seed + 1 + draw))
            dense = reverse_diffusion(policy.schedule, inputs, kernels, dense_runner(kernels))[:, executed]
            for i, planner in enumerate(planners):
                chunks = reverse_diffusion(policy.schedule, inputs, kernels, planner.plan(features)[0])
                errors[i, draw] = (chunks[:, executed] - dense).abs().mean((1, 2)).numpy()
    steps = np.array([len(computed_steps(mask.tolist())) for mask in masks.values()], dtype=float)
    rows = [{"schedule": f"{name} ({steps[i]:.0f} steps)", "L1 mean": f"{errors[i].mean():.4f}", "lambda": "-"}
            for i, name in enumerate(masks)]
    budget = float(np.median(steps))
    for label, chosen_on in (("noise-aware", lambda e, d: e[:, d]), ("observation-only", others_mean)):
        err, used, lam = lagrangian_choice(errors, steps, budget, chosen_on)
        rows.append({"schedule": f"{label} choice per window (mean {used:.2f} steps)", "L1 mean": f"{err:.4f}",
                     "lambda": f"{lam:.3g}"})
    print(format_table(rows))
    for i, name in enumerate(masks):
        print(f"{name}: rank correlation of the windows' L1 between two noise draws {spearman(*errors[i, :2]):.3f}")


def others_mean(errors: np.ndarray, draw: int) -> np.ndarray:
    """Mean over every noise draw but ``draw`` (axis 1 of [schedule, draw, window]): what a choice that sees only
    the observation can know of a window's error on ``draw``."""
    return np.delete(errors, draw, axis=1).mean(1)


def lagrangian_choice(errors: np.ndarray, steps: np.ndarray, budget: float,
                      chosen_on: Callable[[np.ndarray, int], np.ndarray]) -> tuple[float, float, float]:
    """Per window, the schedule minimizing ``L1 + lam * steps`` on ``chosen_on(errors, d)``, scored on draw d; of
    the ``lam`` whose mean cost stays within ``budget``, the one with the lowest mean L1 (``errors`` [schedule,
    draw, window]). Returns (mean L1, mean steps, lam)."""
    best = (np.inf, 0.0, 0.0)
    windows = np.arange(errors.shape[2])
    for lam in np.geomspace(1e-6, 1e-1, 200):
        err, used = [], []
        for d in range(errors.shape[1]):
            choice = np.argmin(chosen_on(errors, d) + lam * steps[:, None], axis=0)
            err.append(errors[choice, d, windows].mean())
            used.append(steps[choice].mean())
        if np.mean(used) <= budget + 1e-9 and np.mean(err) < best[0]:
            best = (float(np.mean(err)), float(np.mean(used)), float(lam))
    return best


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


class BudgetOracle:
    """Per chunk: dense and every schedule (``masks``, run with held steps) from the chunk's own noise; executes the
    schedule that minimizes ``L1 to dense + lam * computed steps`` (executed actions, normalized units)."""

    def __init__(self, predictor: PolicyPredictor, masks: dict[str, torch.Tensor], lam: float) -> None:
        self.predictor, self.lam = predictor, lam
        self.n_obs_steps = predictor.n_obs_steps
        self.planners = {name: StaticMaskPlanner(predictor.kernels, mask, "per_block", hold_x0=True)
                         for name, mask in masks.items()}
        self.steps = {name: len(computed_steps(mask.tolist())) for name, mask in masks.items()}
        self.chosen = {name: 0 for name in masks}

    @torch.no_grad()
    def __call__(self, obs: dict[str, np.ndarray], seed: int) -> np.ndarray:
        predictor, policy = self.predictor, self.predictor.policy
        features = policy.encode_observation(predictor.observation_batch(obs), predictor.image_encoder)
        kernels, executed = predictor.kernels, policy.executed_slice()
        # one draw of the noise and one set of cross-attention keys/values for dense and every schedule
        inputs = prepare_chunk(policy.denoiser, policy.schedule, features, torch.Generator().manual_seed(seed),
                               kernels.observation_kv)

        def sample(planner: BlockPlanner) -> torch.Tensor:
            return reverse_diffusion(policy.schedule, inputs, kernels, planner.plan(features)[0])

        dense = sample(predictor.planner)[:, executed]
        chunks = {name: sample(planner) for name, planner in self.planners.items()}
        cost = {name: float((chunk[:, executed] - dense).abs().mean()) + self.lam * self.steps[name]
                for name, chunk in chunks.items()}
        name = min(cost, key=cost.get)
        self.chosen[name] += 1
        return policy.to_actions(chunks[name])["action"][0].numpy()

    def mean_steps(self) -> float:
        return sum(self.steps[n] * c for n, c in self.chosen.items()) / max(sum(self.chosen.values()), 1)


def closed_loop(args: argparse.Namespace) -> None:
    predictor = PredictorSpec(args.policy, backend=args.backend)()
    oracle = BudgetOracle(predictor, static_masks(args.schedule, predictor.policy), args.lam)
    task = predictor.policy.config.task
    seeds = range(args.seed_start, args.seed_start + args.episodes)
    results = [rollout(oracle, task, seed, args.noise_seed) for seed in tqdm(seeds, desc="budget oracle")]
    summary = {**summarize(results), "mean_computed_steps": oracle.mean_steps(), "chunks": dict(oracle.chosen)}
    print(format_table([summary]))
    report = {"policy": args.policy, "oracle": {"lambda": args.lam, "schedules": args.schedule}, "task": task,
              "backend": args.backend, "seeds": [seeds.start, seeds.stop], "noise_seed": args.noise_seed,
              "summary": summary, "episodes": [vars(r) for r in results]}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    loop = sub.add_parser("open-loop")
    loop.add_argument("--policy", required=True)
    loop.add_argument("--data", required=True)
    loop.add_argument("--windows", type=int, default=256)
    loop.add_argument("--draws", type=int, default=4, help="noise draws per window")
    loop.add_argument("--seed", type=int, default=123)
    loop.set_defaults(run=open_loop)
    closed = sub.add_parser("closed-loop")
    closed.add_argument("--policy", required=True)
    closed.add_argument("--lam", type=float, required=True, help="the noise-aware lambda that open-loop prints")
    closed.add_argument("--episodes", type=int, default=150)
    closed.add_argument("--seed-start", type=int, default=100250)
    closed.add_argument("--noise-seed", type=int, default=0)
    closed.add_argument("--backend", default="onnxruntime")
    closed.add_argument("--json", required=True)
    closed.set_defaults(run=closed_loop)
    for command in (loop, closed):
        command.add_argument("--schedule", action="append", help="a learned static-mask pruner file (repeat; default: "
                             "the default Push-T policy's at rho 0.95, 0.9 and 0.8)")
    args = parser.parse_args()
    args.schedule = args.schedule or list(DEFAULT_SCHEDULES)
    args.run(args)


if __name__ == "__main__":
    main()
