"""Which masks does a pruner predict for each task of a multi-task policy?

A pruner conditioned on the observation can only beat one learned static mask where different observations want
different masks; with a policy serving several tasks, the task is the obvious candidate. This re-renders a few
observations from each component's demonstrations (episodes drawn at random, observations at fixed fractions of
each episode), predicts every given pruner's mask for them, and counts per component the distinct masks, with the
blocks and denoising steps the most common one computes (a step counts as computed when any of its blocks runs),
and the masks all components share.

With ``--pin-out DIR`` it also writes, per observation-conditioned pruner and component, a copy of the pruner pinned
to the observation that got that component's most common mask (:func:`~sag_ros.sparse.pruner.pinned_to_observation`):
one static mask, the pruner's own, for every chunk. Benchmarked beside the pruner, it tells whether the pruner's
gain comes from following the observation or from the schedule its training found.

    python tools/masks_by_task_study.py --data data/mw_door_button_400.npz --policy models/mw_door_button.pt \\
        --pruner models/mw_door_button_sag_rho0.9_hierarchical.pt --json runs/masks_by_task.json --pin-out runs/pinned
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from sag_ros.policy.checkpoint import load_policy
from sag_ros.policy.policy import DiffusionPolicy
from sag_ros.sim.dataset import Demos, load_demos
from sag_ros.sim.demo_windows import component_windows, window_observations
from sag_ros.sim.multi_task import component_names
from sag_ros.sparse.artifact import load_pruner, pruner_sampler, save_pruner
from sag_ros.sparse.mask import computed_steps
from sag_ros.sparse.pruner import Pruner, pinned_to_observation
from sag_ros.tables import format_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--data", required=True, help="demonstrations of a multi-task task (sag datagen --task a+b)")
    parser.add_argument("--pruner", action="append", required=True)
    parser.add_argument("--episodes", type=int, default=10, help="episodes per component")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75],
                        help="where in each episode the observations are taken")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    parser.add_argument("--pin-out", type=Path, help="folder for each pruner pinned to each component's most common mask")
    args = parser.parse_args()

    torch.set_num_threads(2)
    policy, _ = load_policy(Path(args.policy))
    policy.eval()
    demos = load_demos(Path(args.data))
    task_name = demos.metadata["task"]
    components = component_names(task_name)
    windows = component_windows(demos, len(components), args.episodes, args.fractions,
                                policy.config.denoiser.n_obs_steps, args.seed)
    features = component_features(policy, demos, task_name, windows)

    rows, report = [], {"task": task_name, "episodes_per_component": args.episodes, "fractions": args.fractions,
                        "pruners": {}}
    for path in args.pruner:
        policy.use_sampler(*pruner_sampler(Path(path)))  # the features do not depend on it; the pruner's binding does
        pruner, extra = load_pruner(Path(path), policy)
        pruner.eval()
        distinct = {name: distinct_masks(pruner, feats) for name, feats in zip(components, features)}
        if args.pin_out and pruner.config.use_observation:
            for name, feats in zip(components, features):
                out = args.pin_out / f"{Path(path).stem}_pinned_{name}.pt"
                write_pinned(pruner, extra, policy, feats, distinct[name][0][0], out, f"the most common mask of {name}")
                print(f"pinned to {name}'s most common mask -> {out}")
        for name, masks in distinct.items():
            top, top_count = masks[0]
            rows.append({"pruner": Path(path).stem, "component": name, "observations": sum(n for _, n in masks),
                         "distinct masks": len(masks), "most common": f"{top_count} x", "its blocks": int((~top).sum()),
                         "its computed steps": step_ranges(computed_steps(top.tolist()))})
        shared = set.intersection(*({mask.tobytes() for mask, _ in masks} for masks in distinct.values()))
        rows.append({"pruner": Path(path).stem, "component": "shared by all", "observations": "",
                     "distinct masks": len(shared), "most common": "", "its blocks": "", "its computed steps": ""})
        report["pruners"][path] = {
            "components": {name: [{"computed_steps": computed_steps(mask.tolist()), "computed_blocks": int((~mask).sum()),
                                   "observations": n} for mask, n in masks] for name, masks in distinct.items()},
            "shared_masks": len(shared)}
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


def distinct_masks(pruner: Pruner, features: torch.Tensor) -> list[tuple[np.ndarray, int]]:
    """The distinct masks [K, 3L] (True = pruned) ``pruner`` predicts for ``features`` [N, F], each with how many
    observations got it, most common first."""
    with torch.no_grad():
        masks = pruner.predict_mask(features).numpy()
    counts = Counter(mask.tobytes() for mask in masks)
    return [(np.frombuffer(key, dtype=bool).reshape(masks.shape[1:]), n) for key, n in counts.most_common()]


def write_pinned(pruner: Pruner, extra: dict, policy: DiffusionPolicy, features: torch.Tensor, mask: np.ndarray,
                 out: Path, description: str) -> None:
    """Save ``pruner`` pinned to the first of ``features`` [N, F] whose mask is ``mask``, after checking that the
    pinned copy predicts that mask for all of them; ``extra`` (the run settings the pruner was trained for: reuse,
    held steps) is kept."""
    index = int(np.flatnonzero((pruner.predict_mask(features).numpy() == mask).all(axis=(1, 2)))[0])
    pinned = pinned_to_observation(pruner, features[index:index + 1])
    if not (pinned.predict_mask(features).numpy() == mask).all():
        raise RuntimeError(f"the pinned copy of the pruner does not predict {description} for every observation")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_pruner(pinned, policy, out, {**extra, "pinned_to": description, "computed_steps": computed_steps(mask.tolist()),
                                      "computed_blocks": int((~mask).sum())})


def step_ranges(steps: list[int]) -> str:
    """[0, 1, 2, 15, 22, 23] -> '0-2, 15, 22-23'."""
    runs: list[list[int]] = []
    for k in steps:
        if runs and k == runs[-1][-1] + 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def component_features(policy: DiffusionPolicy, demos: Demos, task_name: str,
                       windows: list[list[range]]) -> list[torch.Tensor]:
    """Observation features [N, To*F] per component for its ``windows``; only the frames used are re-rendered."""
    features = []
    for windows_of_component in windows:
        obs = window_observations(demos, task_name, windows_of_component)
        with torch.no_grad():
            features.append(policy.encode_observation({k: torch.from_numpy(v) for k, v in obs.items()}).flatten(1))
    return features


if __name__ == "__main__":
    main()
