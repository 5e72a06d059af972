"""`sag train-pruner`: learn G(o) with the policy frozen.

Per batch of observations: the dense chunk (no gradient) and the gated sparse chunk are sampled from the
same initial noise and the same per-step noise; every block is computed in the gated pass and mixed with
its cache stand-in by straight-through gates, so the fidelity loss reaches the pruner through the whole
sampling chain. Loss = L1(sparse, reference) + lambda * |mean(M) - rho|, the reference being the dense
chunk (default) or the demonstrated actions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from sag_ros.policy.data import WindowSampler
from sag_ros.policy.policy import DiffusionPolicy
from sag_ros.policy.sampling import dense_runner, eager_kernels, prepare_chunk, reverse_diffusion
from sag_ros.sparse.artifact import save_pruner
from sag_ros.sparse.cache import ReuseKind, make_cache
from sag_ros.sparse.pruner import Pruner, PrunerConfig
from sag_ros.sparse.sampler import GatedRunner


@dataclass
class PrunerTrainConfig:
    target_rate: float = 0.9  # rho
    sparsity_weight: float = 1.0  # lambda
    num_steps: int = 300
    batch_size: int = 6
    lr: float = 3e-4  # pruner network
    cell_lr: float = 5e-2  # per-cell logit offsets: fast, so cells separate before the whole mask drifts
    reuse: ReuseKind = ReuseKind.ONE_FOR_ALL
    reference: str = "dense"  # or "demo"
    use_observation: bool = True  # False: one learned static mask for all observations
    seed: int = 0
    threads: int = 2
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        self.reuse = ReuseKind(self.reuse)
        if not 0.0 < self.target_rate < 1.0:
            raise ValueError(f"target_rate={self.target_rate} must be in (0, 1)")
        if self.reference not in ("dense", "demo"):
            raise ValueError(f"reference={self.reference!r} must be 'dense' or 'demo'")


def pruner_config_for(policy: DiffusionPolicy, train: PrunerTrainConfig) -> PrunerConfig:
    d = policy.config.denoiser
    return PrunerConfig(num_steps=policy.schedule.num_steps, num_blocks=d.num_blocks,
                        obs_feature_dim=d.n_obs_steps * policy.config.encoder.feature_dim,
                        use_observation=train.use_observation)


def pruner_loss(policy: DiffusionPolicy, pruner: Pruner, features: torch.Tensor, target: torch.Tensor | None,
                cfg: PrunerTrainConfig, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """Fidelity + sparsity loss for one batch of observation features [B, To, F]."""
    kernels = eager_kernels(policy.denoiser)
    with torch.no_grad():
        inputs = prepare_chunk(policy.denoiser, policy.schedule, features, generator)
        if target is None:
            target = reverse_diffusion(policy.schedule, inputs, kernels, dense_runner(kernels.block_fns))
    gates = pruner.gates(features)
    runner = GatedRunner(kernels.block_fns, gates, make_cache(cfg.reuse, len(kernels.block_fns)))
    sparse = reverse_diffusion(policy.schedule, inputs, kernels, runner)
    fidelity = F.l1_loss(sparse, target)
    rate = gates.mean()
    loss = fidelity + cfg.sparsity_weight * (rate - cfg.target_rate).abs()
    return loss, {"fidelity": fidelity.item(), "prune_rate": rate.item()}


def train_pruner(policy: DiffusionPolicy, cfg: PrunerTrainConfig, sampler: WindowSampler, out_path: Path) -> Pruner:
    """Train a pruner for ``policy`` (frozen) and save it to ``out_path`` (atomically, every few steps)."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    policy.eval().requires_grad_(False)
    pruner = Pruner(pruner_config_for(policy, cfg)).train()
    network = [p for name, p in pruner.named_parameters() if name != "cell_bias"]
    optimizer = torch.optim.AdamW([{"params": network, "lr": cfg.lr}, {"params": [pruner.cell_bias], "lr": cfg.cell_lr}],
                                  weight_decay=0.0)
    generator = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    bar = tqdm(range(cfg.num_steps), desc=f"train-pruner rho={cfg.target_rate}", dynamic_ncols=True)
    for step in bar:
        obs, action = sampler.sample(cfg.batch_size, generator)
        with torch.no_grad():
            features = policy.encode_observation(obs)
            target = policy.normalizer["action"].normalize(action) if cfg.reference == "demo" else None
        loss, stats = pruner_loss(policy, pruner, features, target, cfg, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(stats)
        bar.set_postfix(l1=f"{stats['fidelity']:.4f}", rate=f"{stats['prune_rate']:.3f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.num_steps:
            save_pruner(pruner.eval(), policy, out_path, extra={
                "train_step": step + 1, "target_rate": cfg.target_rate, "reuse": cfg.reuse.value,
                "use_observation": cfg.use_observation, "reference": cfg.reference,
                "last_fidelity": stats["fidelity"], "last_prune_rate": stats["prune_rate"]})
            pruner.train()
    bar.close()
    print(f"pruner trained in {time.perf_counter() - start:.0f} s: {out_path}")
    return pruner.eval()
