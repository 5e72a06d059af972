"""Which open-loop measure ranks sparse schedules the way closed-loop success does?

`sag train-pruner` scores a mask by the L1 between its chunk and dense's from the same noise (or against the
demonstrated actions). Closed loop has not agreed: on the two-task Meta-World policy most sparse schedules with held
steps succeed more often than dense itself, which any measure of closeness to dense ranks first, and a mask whose L1
looked fine collapsed (docs/results.md, stops 34 and 40-41). A diffusion policy's chunk is a sample: what the task
needs is samples from the right distribution, and the L1 of one draw to one demonstration is lowest for samples
pulled onto the median, between modes, which is what breaks an episode.

This samples N chunks per observation (N noise draws, the same for every schedule) on observations re-rendered from
each component's demonstrations, and measures each schedule's executed actions (normalized) by:

- ``l1 dense``: L1 to dense's chunk from the same noise (the pruner's training loss);
- ``energy dist``: energy distance between its N chunks and dense's N (Euclidean; 0 for dense);
- ``l1 demo``: L1 to the demonstrated actions (``--reference demo``);
- ``energy score``: E||X - y|| - E||X - X'|| / 2 against the demonstration y, a proper scoring rule: in expectation
  lowest when the samples follow the demonstrator's own distribution of actions, so it charges collapse onto the
  median as well as spread;
- ``spread``: E||X - X'||, how much the N chunks differ.

With each schedule's closed-loop success pooled from `sag eval` / `sag bench` reports (as `sag paired --pool` reads
them), it prints, per component and overall, the Spearman rank correlation of success with each measure (sign
flipped for the measures where lower is better, so +1 means the measure orders schedules exactly as closed loop).

    python tools/fidelity_ranking_study.py --policy models/mw_door_button.pt --data data/mw_door_button_400.npz \\
        --method dense dense "docs/bench_mw_door_button_hier_3seeds.json::dense" \\
        --method k44 interval:100@44 docs/eval_mw_door_button_steps0and44_noise0.json --json runs/study/ranking.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import NamedTuple

import matplotlib
import numpy as np
import torch

from sag_ros.benchmark import pooled_method
from sag_ros.policy.checkpoint import load_policy
from sag_ros.policy.data import window_time_indices
from sag_ros.policy.policy import DiffusionPolicy
from sag_ros.policy.sampling import dense_runner, eager_kernels, prepare_chunk, reverse_diffusion
from sag_ros.sim.dataset import Demos, load_demos
from sag_ros.sim.demo_windows import component_windows, window_observations
from sag_ros.sim.multi_task import component_names
from sag_ros.sparse.artifact import load_pruner
from sag_ros.sparse.mask import interval_mask
from sag_ros.sparse.sampler import sample_with_masks
from sag_ros.tables import format_table

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the headless backend is chosen)

MEASURES = {"l1 dense": -1, "energy dist": -1, "l1 demo": -1, "energy score": -1, "spread": +1}
"""Each measure and the sign that turns it into "higher is better" for the rank correlation."""


class Schedule(NamedTuple):
    """How a method samples: one mask per observation [O, K, 3L] (None: dense), its reuse and held steps."""

    masks: torch.Tensor | None
    reuse: str = "per_block"
    hold_x0: bool = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--data", required=True, help="the policy's demonstrations (sag datagen)")
    parser.add_argument("--method", nargs=3, action="append", required=True, metavar=("NAME", "SCHEDULE", "RUNS"),
                        help="SCHEDULE: dense, interval:N[@START] (held steps, as `sag eval --interval N --hold-x0` "
                             "runs it) or a pruner file (run with its training settings; FILE:hold with held steps, "
                             "as `--hold-x0 on` runs it); RUNS: its closed-loop episodes, `sag eval` JSONs or "
                             "BENCH.json::METHOD, comma-separated")
    parser.add_argument("--outcome", choices=["success", "score"], default="success",
                        help="the closed-loop figure to rank by (Push-T: score; its successes are rare)")
    parser.add_argument("--episodes", type=int, default=8, help="demonstrations per component")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75])
    parser.add_argument("--noises", type=int, default=8, help="noise draws per observation")
    parser.add_argument("--noise-scale", type=float, default=1.0,
                        help="every method samples at this DDPM noise scale (`sag eval --noise-scale`)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    parser.add_argument("--plot", help="PNG: closed-loop outcome against each measure, a row per component")
    args = parser.parse_args()

    torch.set_num_threads(2)
    policy, _ = load_policy(Path(args.policy))
    policy.eval()
    policy.use_noise_scale(args.noise_scale)
    demos = load_demos(Path(args.data))
    task_name = demos.metadata["task"]
    components = component_names(task_name)
    d = policy.config.denoiser
    windows = component_windows(demos, len(components), args.episodes, args.fractions, d.n_obs_steps, args.seed)
    labels = np.concatenate([[c] * len(w) for c, w in enumerate(windows)])
    flat_windows = [frames for component in windows for frames in component]
    obs = {k: torch.from_numpy(v) for k, v in window_observations(demos, task_name, flat_windows).items()}
    demo = policy.normalizer["action"].normalize(torch.from_numpy(demonstrated_chunks(demos, flat_windows, d.horizon)))

    with torch.no_grad():
        features = policy.encode_observation(obs)
        measures = measure_methods(policy, features, demo, args.method, args.noises, args.seed)
    scopes = components + ["all"] if len(components) > 1 else components
    outcomes = {name: closed_loop_outcome(name, runs, scopes, args.outcome) for name, _, runs in args.method}
    rows, report = [], {"task": task_name, "outcome": args.outcome, "noise_scale": args.noise_scale,
                        "observations_per_component": [len(w) for w in windows],
                        "noises": args.noises, "methods": {}}
    for name, _, _ in args.method:
        per_scope = {scope: summarize(measures[name], labels, components.index(scope) if scope != "all" else None)
                     for scope in scopes}
        report["methods"][name] = {scope: {**per_scope[scope], args.outcome: outcomes[name][scope]} for scope in scopes}
        rows.append({"method": name, **{f"{args.outcome} {short(s)}": f"{outcomes[name][s]:.3f}" for s in scopes},
                     **{f"{m} ({short(scopes[-1])})": f"{per_scope[scopes[-1]][m]:.4f}" for m in MEASURES}})
    print(format_table(rows))
    report["rank_correlation"] = {scope: rank_correlations(report["methods"], scope, args.outcome) for scope in scopes}
    correlation_rows = [{"episodes of": scope, **{m: f"{c:+.2f}" for m, c in corr.items()}}
                        for scope, corr in report["rank_correlation"].items()]
    print(f"\nSpearman rank correlation with closed-loop {args.outcome} (+1: the measure orders methods as closed loop "
          "does)")
    print(format_table(correlation_rows))
    if args.plot:
        plot_outcome_against_measures(report, scopes, args.outcome, Path(args.plot))
        print(f"wrote {args.plot}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")


def measure_methods(policy: DiffusionPolicy, features: torch.Tensor, demo: torch.Tensor, methods: list[list[str]],
                    noises: int, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """Per method, each measure per observation [O]; every method samples from the same ``noises`` draws."""
    kernels, executed = eager_kernels(policy.denoiser), policy.executed_slice()
    num_obs = features.shape[0]
    repeated = features.repeat_interleave(noises, 0)
    inputs = prepare_chunk(policy.denoiser, policy.schedule, repeated, torch.Generator().manual_seed(seed + 1))

    def executed_samples(chunks: torch.Tensor) -> torch.Tensor:  # [O*N, Tp, A] -> [O, N, Ta*A]
        return chunks[:, executed].reshape(num_obs, noises, -1)

    dense = executed_samples(reverse_diffusion(policy.schedule, inputs, kernels, dense_runner(kernels)))
    target = demo[:, executed].reshape(num_obs, 1, -1)
    out = {}
    for name, spec, _ in methods:
        schedule = parse_schedule(spec, policy, features)
        if schedule.masks is None:
            samples = dense
        else:
            masks = schedule.masks.repeat_interleave(noises, 0)
            samples = executed_samples(sample_with_masks(policy.schedule, kernels, inputs, masks, schedule.reuse,
                                                         schedule.hold_x0))
        out[name] = sample_measures(samples, dense, target)
        print(f"{name}: sampled", flush=True)
    return out


def demonstrated_chunks(demos: Demos, windows: list[range], horizon: int) -> np.ndarray:
    """The demonstrated action chunk [N, horizon, A] of each window, as training pairs it with the window's frames
    (:func:`~sag_ros.policy.data.window_time_indices`: from the first frame on, the episode's last action repeated
    past its end)."""
    ends = np.asarray(demos.episode_ends)
    first_frames = np.array([frames.start for frames in windows])
    episode = np.searchsorted(ends, first_frames, side="right")
    starts = np.concatenate([[0], ends[:-1]])
    rows = np.stack([starts[episode], ends[episode], first_frames], axis=1)
    return demos.action[window_time_indices(rows, horizon)]


def parse_schedule(spec: str, policy: DiffusionPolicy, features: torch.Tensor) -> Schedule:
    """A --method SCHEDULE: 'dense', 'interval:N[@START]' or a pruner file ('FILE:hold': with held steps)."""
    num_steps, num_blocks = policy.schedule.num_steps, policy.config.denoiser.num_blocks
    if spec == "dense":
        return Schedule(None)
    if spec.startswith("interval:"):
        every, _, start = spec.removeprefix("interval:").partition("@")
        mask = interval_mask(num_steps, num_blocks, int(every), int(start or 0))
        return Schedule(mask.expand(features.shape[0], *mask.shape))
    pruner, extra = load_pruner(Path(spec.removesuffix(":hold")), policy)
    return Schedule(pruner.predict_mask(features), extra.get("reuse", "one_for_all"),
                    bool(extra.get("hold_x0")) or spec.endswith(":hold"))


def sample_measures(samples: torch.Tensor, dense: torch.Tensor, demo: torch.Tensor) -> dict[str, torch.Tensor]:
    """The measures of one method per observation [O] from its samples and dense's [O, N, D] and the demonstrated
    actions [O, 1, D]. Within-set distances average over distinct pairs (the U-statistic), so a set of identical
    samples has spread 0 and the energy distance of dense to itself is 0."""
    spread, dense_spread = mean_pairwise(samples, samples), mean_pairwise(dense, dense)
    return {"l1 dense": (samples - dense).abs().mean((1, 2)),
            "energy dist": 2 * mean_pairwise(samples, dense) - spread - dense_spread,
            "l1 demo": (samples - demo).abs().mean((1, 2)),
            "energy score": torch.cdist(samples, demo).mean((1, 2)) - spread / 2,
            "spread": spread}


def mean_pairwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance [O] between the samples of ``a`` and ``b`` [O, N, D] over pairs i != j (pairs i == j
    share their noise draw)."""
    distances = torch.cdist(a, b)
    n = distances.shape[-1]
    off_diagonal = ~torch.eye(n, dtype=torch.bool)
    return distances[:, off_diagonal].mean(-1)


def summarize(measures: dict[str, torch.Tensor], labels: np.ndarray, component: int | None) -> dict[str, float]:
    """Each measure's mean over the observations of one component (all with None)."""
    keep = torch.from_numpy(labels == component) if component is not None else slice(None)
    return {m: float(values[keep].mean()) for m, values in measures.items()}


def closed_loop_outcome(name: str, runs: str, scopes: list[str], outcome: str) -> dict[str, float]:
    """Mean success (or score) of the pooled closed-loop episodes of one method per scope: a component of a
    multi-task task, or 'all' (a single task's one scope is its name: all episodes)."""
    means = {}
    for scope in scopes:
        component = scope if len(scopes) > 1 and scope != "all" else None
        _, episodes = pooled_method(f"{name}={runs}", component)
        means[scope] = float(np.mean([solved if outcome == "success" else score
                                      for score, solved in episodes.values()]))
    return means


def plot_outcome_against_measures(report: dict, scopes: list[str], outcome: str, path: Path) -> None:
    """One scatter per (component, measure): each method's closed-loop outcome against the measure, dense in red,
    the rank correlation in the title."""
    fig, axes = plt.subplots(len(scopes), len(MEASURES), figsize=(3.2 * len(MEASURES), 2.8 * len(scopes)),
                             squeeze=False)
    for row, scope in zip(axes, scopes):
        methods = report["methods"]
        y = np.array([m[scope][outcome] for m in methods.values()])
        for ax, measure in zip(row, MEASURES):
            x = np.array([m[scope][measure] for m in methods.values()])
            ax.scatter(x, y, s=14)
            if "dense" in methods:
                ax.scatter([methods["dense"][scope][measure]], [methods["dense"][scope][outcome]], color="tab:red",
                           s=30)
            ax.set_title(f"{short(scope)}: Spearman {report['rank_correlation'][scope][measure]:+.2f}", fontsize=9)
            ax.set_xscale("symlog", linthresh=0.01)  # the collapsed schedules lie far out; dense at 0
            ax.set_xlabel(measure, fontsize=8)
            ax.set_ylabel(outcome, fontsize=8)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rank_correlations(methods: dict[str, dict], scope: str, outcome: str) -> dict[str, float]:
    """Per measure, the Spearman correlation over ``methods`` of the closed-loop ``outcome`` with the measure, signed
    so that +1 means the measure orders the methods as closed loop does."""
    closed_loop = np.array([m[scope][outcome] for m in methods.values()])
    return {measure: spearman(closed_loop, sign * np.array([m[scope][measure] for m in methods.values()]))
            for measure, sign in MEASURES.items()}


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (ties take their average rank)."""
    return float(np.corrcoef(average_ranks(a), average_ranks(b))[0, 1])


def average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):  # ties share the mean of their ranks
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def short(component: str) -> str:
    return component.removeprefix("mw-")


if __name__ == "__main__":
    main()
