"""Cross-chunk reuse, measured before it is built: issue #3's third reuse idea.

The idea: a pruned block at (step k, block j) takes the delta that block had at the same step of the *previous*
chunk, shifted by the Ta executed actions (new token t <-> old token t + Ta), instead of a delta from an earlier
step or layer of this chunk. It can only work if the two chunks' noisy samples line up, so the rollout shifts the
noise too: tokens 0..Tp-Ta-1 of the new chunk's initial sample and of every step's z_k are the previous chunk's
tokens Ta..Tp-1, the last Ta tokens fresh (each chunk's noise is still i.i.d. Gaussian, so dense sampling keeps
its distribution). The last Ta tokens have no counterpart in the previous chunk and use the block-wise stand-in.

Along a dense closed-loop rollout (eager blocks, every delta recorded) this measures two things:
1. per step, how far each stand-in is from the block's true delta (relative L2 on the overlapping tokens):
   previous chunk shifted, previous chunk with fresh (unshifted) noise, same block one step earlier, same block at
   the last interval-10 step, the previous layer's block of the same type (one-for-all's best case);
2. open loop, the executed actions' L1 to dense (same noise) of interval schedules run with block-wise reuse, with
   and without cross-chunk stand-ins for the early steps (which lets step 0 be pruned too).

    python tools/cross_chunk_study.py --task mw-door-open --policy models/mw_door_open.pt --episodes 2 --chunks 10

Writes a JSON and a plot (median relative error per step for each stand-in). Research code: the runtime does not
implement cross-chunk reuse (README, "Cross-chunk reuse").
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import torch
from tqdm import tqdm

from sag_ros.policy.checkpoint import load_policy
from sag_ros.policy.policy import DiffusionPolicy
from sag_ros.policy.sampling import ChunkInputs, eager_kernels, reverse_diffusion
from sag_ros.sim.evaluate import ObservationHistory
from sag_ros.sim.task import get_task
from sag_ros.sparse.mask import interval_mask

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the headless backend is chosen)

STAND_INS = ("previous chunk, shifted noise", "previous chunk, fresh noise", "same block, step k-1",
             "same block, last interval-10 step", "previous layer, same type")
STEP_BANDS = ((0, 10), (10, 30), (30, 60), (60, 90), (90, 100))


class ChunkSampler:
    """One chunk of reverse diffusion on eager blocks from given noise; records the delta each cell added.

    ``mask`` (True = pruned) None: dense. A pruned cell adds the same block's last computed delta of this chunk
    (block-wise reuse) or, for steps below ``cross_steps``, the previous chunk's delta of that cell shifted by Ta
    tokens (``previous``: that chunk's record), its last Ta tokens from the block-wise stand-in."""

    def __init__(self, policy: DiffusionPolicy) -> None:
        self.policy = policy
        self.kernels = eager_kernels(policy.denoiser)
        cfg = policy.denoiser.config
        self.horizon, self.shift, self.width = cfg.horizon, cfg.n_action_steps, cfg.d_model
        self.num_steps, self.num_blocks = policy.schedule.num_steps, len(self.kernels.block_fns)

    def __call__(self, features: torch.Tensor, x_init: torch.Tensor, noise: torch.Tensor,
                 mask: torch.Tensor | None = None, previous: torch.Tensor | None = None,
                 cross_steps: int = 0) -> tuple[torch.Tensor, torch.Tensor, float]:
        """-> (normalized chunk [1, Tp, A], deltas [K, 3L, Tp, d], fraction of cells computed)."""
        denoiser = self.policy.denoiser  # keys/values only: the noise comes from the caller
        kv = denoiser.chunk_memory_kv(self.policy.schedule.timesteps, denoiser.observation_kv(features))
        record = torch.zeros(self.num_steps, self.num_blocks, self.horizon, self.width)
        last: list[torch.Tensor | None] = [None] * self.num_blocks
        computed = 0
        keep = self.horizon - self.shift

        def run(k: int, h: torch.Tensor, layer_kv) -> torch.Tensor:
            nonlocal computed
            for j, fn in enumerate(self.kernels.block_fns):
                cross = previous is not None and k < cross_steps
                if mask is None or not mask[k, j] or (last[j] is None and not cross):
                    delta = last[j] = fn(h, layer_kv[j // 3])[0]
                    computed += 1
                elif cross:
                    tail = last[j][keep:] if last[j] is not None else previous[k, j, -1:].expand(self.shift, -1)
                    delta = torch.cat((previous[k, j, self.shift:], tail))
                else:
                    delta = last[j]
                record[k, j] = delta
                h = h + delta
            return h

        chunk = reverse_diffusion(self.policy.schedule, ChunkInputs(x_init, noise, kv), self.kernels, run)
        return chunk, record, computed / (self.num_steps * self.num_blocks)


def shifted(previous: torch.Tensor, fresh: torch.Tensor, shift: int) -> torch.Tensor:
    """``fresh`` with its first Tp - Ta tokens replaced by ``previous``'s last Tp - Ta (token axis -2)."""
    out = fresh.clone()
    out[..., :-shift, :] = previous[..., shift:, :]
    return out


def relative_error(truth: torch.Tensor, stand_in: torch.Tensor) -> torch.Tensor:
    """Per leading (step, block) cell: ||truth - stand_in|| / ||truth||."""
    return (truth - stand_in).flatten(2).norm(dim=-1) / truth.flatten(2).norm(dim=-1).clamp_min(1e-12)


def schedules(num_steps: int, num_blocks: int) -> dict[str, tuple[torch.Tensor, int]]:
    """Name -> (mask, steps that take cross-chunk stand-ins)."""
    def interval(n: int, start: int = 0, pruned_steps: tuple[int, ...] = ()) -> torch.Tensor:
        mask = interval_mask(num_steps, num_blocks, n, start)
        mask[list(pruned_steps)] = True
        return mask

    return {
        "interval 10": (interval(10), 0),
        "interval 10, step 0 pruned, cross-chunk k<10": (interval(10, pruned_steps=(0,)), 10),
        "interval 10, steps 10 and 20 pruned": (interval(10, pruned_steps=(10, 20)), 0),
        "interval 10, steps 0, 10, 20 pruned, cross-chunk k<30": (interval(10, pruned_steps=(0, 10, 20)), 30),
        "interval 14": (interval(14), 0),
        "step 0, then interval 5 from step 50": (interval(5, start=50), 0),
        "interval 5 from step 50, cross-chunk k<50": (interval(5, start=50, pruned_steps=(0,)), 50),
    }


@torch.no_grad()
def study(task_name: str, policy_path: Path, episodes: int, chunks: int, seed: int) -> dict:
    policy, _ = load_policy(policy_path)
    policy.eval()
    sampler = ChunkSampler(policy)
    cfg = policy.denoiser.config
    shift, steps, blocks = cfg.n_action_steps, sampler.num_steps, sampler.num_blocks
    overlap = slice(0, cfg.horizon - shift)
    executed = policy.executed_slice()
    variants = schedules(steps, blocks)
    errors: list[np.ndarray] = []  # per chunk pair: [stand-in, K, 3L]
    action_l1: dict[str, list[float]] = {name: [] for name in variants}
    fractions: dict[str, list[float]] = {name: [] for name in variants}
    generator = torch.Generator().manual_seed(seed)
    task = get_task(task_name)
    adapter = task.make_adapter()
    bar = tqdm(total=episodes * chunks, desc="chunks", dynamic_ncols=True)
    try:
        for episode in range(episodes):
            adapter.reset(task.test_seed_start + episode)
            history = ObservationHistory(adapter.observation(), cfg.n_obs_steps)
            previous = None  # (dense record, x_init, noise) of the last chunk
            records: dict[str, torch.Tensor] = {}  # each variant's own last record (its stand-ins carry over)
            for _ in range(chunks):
                obs = {k: torch.from_numpy(v)[None] for k, v in history.stacked().items() if k in policy.obs_keys}
                features = policy.encode_observation(obs)
                x_fresh = torch.randn(1, cfg.horizon, cfg.action_dim, generator=generator)
                z_fresh = torch.randn(steps, 1, cfg.horizon, cfg.action_dim, generator=generator)
                x_init, noise = x_fresh, z_fresh
                if previous is not None:
                    x_init, noise = shifted(previous[1], x_fresh, shift), shifted(previous[2], z_fresh, shift)
                chunk, record, _ = sampler(features, x_init, noise)
                if previous is not None:
                    truth, before = record[:, :, overlap], previous[0][:, :, shift:]
                    _, fresh_record, _ = sampler(features, x_fresh, z_fresh)
                    per_step = torch.full_like(truth[..., 0, 0], float("nan"))
                    per_step[1:] = relative_error(truth[1:], truth[:-1])
                    per_layer = torch.full_like(per_step, float("nan"))
                    per_layer[:, 3:] = relative_error(truth[:, 3:], truth[:, :-3])
                    interval_rows = (torch.arange(steps) // 10) * 10
                    errors.append(torch.stack([
                        relative_error(truth, before), relative_error(fresh_record[:, :, overlap], before),
                        per_step, relative_error(truth, truth[interval_rows]), per_layer]).numpy())
                    for name, (mask, cross_steps) in variants.items():
                        sparse, records[name], fraction = sampler(features, x_init, noise, mask, records[name],
                                                                  cross_steps)
                        action_l1[name].append(float((sparse[0, executed] - chunk[0, executed]).abs().mean()))
                        fractions[name].append(fraction)
                else:
                    records = {name: record for name in variants}
                previous = (record, x_init, noise)
                bar.update()
                done = False
                for action in policy.to_actions(chunk)["action"][0].numpy():
                    done = adapter.step(action).done
                    history.append(adapter.observation())
                    if done:
                        break
                if done:
                    break
    finally:
        adapter.close()
        bar.close()
    err = np.stack(errors)  # [chunk pair, stand-in, K, 3L]
    with warnings.catch_warnings():  # step 0 has no step k-1, layer 0 no previous layer: all-NaN cells
        warnings.simplefilter("ignore", RuntimeWarning)
        per_step = np.nanmedian(err, axis=(0, 3))  # [stand-in, K]
        stand_ins = {name: {"per_step_median": [None if np.isnan(v) else float(v) for v in per_step[i]],
                            "by_band": {f"{a}-{b - 1}": float(np.nanmedian(err[:, i, a:b]))
                                        for a, b in STEP_BANDS if b <= steps},
                            "by_type": [float(np.nanmedian(err[:, i, 1:, t::3])) for t in range(3)]}
                     for i, name in enumerate(STAND_INS)}
    return {
        "task": task_name, "policy": str(policy_path), "episodes": episodes, "chunk_pairs": len(errors),
        "stand_in_error": stand_ins,
        "schedules": {name: {"blocks": float(np.mean(fractions[name])),
                             "executed_l1_mean": float(np.mean(action_l1[name])),
                             "executed_l1_median": float(np.median(action_l1[name]))} for name in variants},
    }


def format_report(report: dict) -> str:
    bands = list(next(iter(report["stand_in_error"].values()))["by_band"])
    lines = [f"{report['task']}: {report['chunk_pairs']} chunk pairs; median relative error of each stand-in on the "
             "overlapping tokens", "stand-in".ljust(36) + "".join(f"k {b}".rjust(10) for b in bands)
             + "      SA      CA     FFN"]
    for name, e in report["stand_in_error"].items():
        lines.append(name.ljust(36) + "".join(f"{e['by_band'][b]:10.3f}" for b in bands)
                     + "".join(f"{v:8.3f}" for v in e["by_type"]))
    lines += ["", "open loop, executed actions' L1 to dense (normalized), same noise",
              "schedule".ljust(56) + "blocks   L1 mean  L1 median"]
    for name, s in report["schedules"].items():
        lines.append(f"{name:56s}{s['blocks']:6.3f}  {s['executed_l1_mean']:8.4f}  {s['executed_l1_median']:9.4f}")
    return "\n".join(lines)


def plot_report(report: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, e in report["stand_in_error"].items():
        ax.plot([np.nan if v is None else v for v in e["per_step_median"]], label=name)
    ax.set_xlabel("denoising step k (0 = noisiest)")
    ax.set_ylabel("median relative error of the stand-in")
    ax.set_title(f"{report['task']}: stand-ins for a pruned block's delta")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="pusht")
    p.add_argument("--policy", type=Path, default=Path("models/pusht_image.pt"))
    p.add_argument("--episodes", type=int, default=2)
    p.add_argument("--chunks", type=int, default=10, help="chunks per episode at most")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--json", type=Path, default=Path("runs/cross_chunk.json"))
    p.add_argument("--plot", type=Path, default=Path("runs/cross_chunk.png"))
    args = p.parse_args()
    torch.set_num_threads(1)
    report = study(args.task, args.policy, args.episodes, args.chunks, args.seed)
    print(format_report(report))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    plot_report(report, args.plot)


if __name__ == "__main__":
    main()
