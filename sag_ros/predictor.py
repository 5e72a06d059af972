"""From a checkpoint to a chunk predictor: the one object that evaluation, benchmarks and nodes call.

:class:`PolicyPredictor` turns numpy observations ([To, ...] per entry) into the Ta actions to execute
and records where the time went (observation encoding, block planning, denoising). The block planner
decides, per chunk, how the denoiser's blocks run: the dense planner computes all of them; sparse
planners (``sag_ros.sparse``) return a gated runner. :class:`PredictorSpec` is a picklable recipe, so
worker processes and nodes build identical predictors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from sag_ros.policy.checkpoint import load_policy
from sag_ros.policy.config import SchedulerKind
from sag_ros.policy.policy import DiffusionPolicy, ImageEncoder, Observation
from sag_ros.policy.sampling import BlockRunner, DenoiserKernels, dense_runner, eager_kernels


class BlockPlanner(Protocol):
    """Chooses how the blocks of one chunk run, from that chunk's observation features."""

    hold_x0: bool  # steps whose every block is skipped hold the last computed clean-chunk prediction

    def plan(self, features: torch.Tensor) -> tuple[BlockRunner, float]:
        """Returns the runner and the fraction of (step, block) pairs it will compute."""


class DensePlanner:
    """Every block at every step: the reference policy."""

    hold_x0 = False  # no step is skipped

    def __init__(self, kernels: DenoiserKernels) -> None:
        self._runner = dense_runner(kernels)

    def plan(self, features: torch.Tensor) -> tuple[BlockRunner, float]:
        return self._runner, 1.0


@dataclass
class ChunkTiming:
    """Seconds spent per stage of the last chunk, and the fraction of blocks computed."""

    encode_s: float = 0.0
    plan_s: float = 0.0
    denoise_s: float = 0.0
    executed_fraction: float = 1.0

    @property
    def total_s(self) -> float:
        return self.encode_s + self.plan_s + self.denoise_s


class PolicyPredictor:
    """numpy observation history -> actions to execute, through one policy and one block planner."""

    def __init__(self, policy: DiffusionPolicy, planner: BlockPlanner | None = None,
                 kernels: DenoiserKernels | None = None, image_encoder: ImageEncoder | None = None) -> None:
        """``kernels`` and ``image_encoder``: a backend's compiled denoiser units and encoder (default: eager)."""
        self.policy = policy.eval()
        self.kernels = kernels or eager_kernels(policy.denoiser)
        self.image_encoder = image_encoder
        self.planner = planner or DensePlanner(self.kernels)
        self.n_obs_steps = policy.config.denoiser.n_obs_steps
        self.actions_from_now = policy.actions_from_now()
        self.last_timing = ChunkTiming()

    def chunk_length(self, actions_per_chunk: int) -> int:
        """How many actions a published chunk carries: ``actions_per_chunk``, or with 0 every one predicted from the
        observation's step on; more than that is refused (the policy does not predict them)."""
        if actions_per_chunk > self.actions_from_now:
            raise ValueError(f"actions_per_chunk={actions_per_chunk}, but the policy predicts {self.actions_from_now} "
                             "actions from the observation's step on")
        return actions_per_chunk or self.actions_from_now

    def observation_batch(self, obs: dict[str, np.ndarray]) -> Observation:
        """The policy's input batch (batch 1, on the policy's device) from a numpy observation history, validated."""
        device = self.policy.denoiser.pos_emb.device
        batch = {k: torch.from_numpy(np.ascontiguousarray(obs[k]))[None].to(device)
                 for k in self.policy.obs_keys if k in obs}
        self.policy.validate_observation(batch)
        return batch

    @torch.no_grad()
    def __call__(self, obs: dict[str, np.ndarray], seed: int, num_actions: int | None = None) -> np.ndarray:
        """The actions from the observation's step on: the policy's Ta, or ``num_actions`` of the horizon's."""
        batch = self.observation_batch(obs)
        t0 = time.perf_counter()
        features = self.policy.encode_observation(batch, self.image_encoder)
        t1 = time.perf_counter()
        runner, fraction = self.planner.plan(features)
        t2 = time.perf_counter()
        chunk = self.policy.sample(features, torch.Generator().manual_seed(seed), runner, self.kernels)
        predicted = self.policy.to_actions(chunk)["action_pred"]
        actions = predicted[0, self.policy.executed_slice(num_actions)].cpu().numpy()
        t3 = time.perf_counter()
        self.last_timing = ChunkTiming(t1 - t0, t2 - t1, t3 - t2, fraction)
        if not np.isfinite(actions).all():
            raise FloatingPointError("the policy produced non-finite actions")
        return actions


@dataclass(frozen=True)
class PredictorSpec:
    """Picklable recipe for a predictor: checkpoint, sampler, how blocks are planned, threads.

    Planning: dense (default); ``pruner_path`` = SAG (or a learned static mask, whichever the pruner file
    holds); ``interval`` = interval caching (every n-th step computes all blocks, from step ``interval_start`` on;
    step 0 always does). ``reuse`` defaults to the pruner's training reuse for SAG and to ``per_block`` for
    interval caching; ``hold_x0`` (steps whose every block is pruned hold the last computed clean-chunk prediction
    instead of adding their blocks' stand-ins) to the pruner's training setting, and to False for intervals.
    ``backend`` runs the blocks (``eager``, ``compile``, ``onnxruntime``, ``tensorrt``); exported artifacts
    are cached in ``engine_cache`` (default: ``<model>.engines/`` beside the checkpoint, or the user's cache when
    that folder is read-only: :func:`sag_ros.engine.artifacts.default_cache_dir`).
    """

    policy_path: str
    sampler: str | None = None  # None: the pruner's sampler when there is a pruner, else the checkpoint's
    num_steps: int | None = None  # None: likewise, the pruner's or the checkpoint's number of steps
    noise_scale: float = 1.0  # DDPM's per-step noise multiplier (SchedulerConfig.noise_scale)
    pruner_path: str | None = None
    interval: int | None = None
    interval_start: int = 0
    reuse: str | None = None
    hold_x0: bool | None = None
    backend: str = "eager"
    engine_cache: str | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        if self.pruner_path is not None and self.interval is not None:
            raise ValueError("choose either a pruner or an interval schedule, not both")

    def __call__(self) -> PolicyPredictor:
        from sag_ros.engine import make_backend
        from sag_ros.engine.artifacts import default_cache_dir
        from sag_ros.sparse.artifact import load_pruner, pruner_sampler
        from sag_ros.sparse.mask import interval_mask
        from sag_ros.sparse.planner import StaticMaskPlanner, pruner_planner

        torch.set_num_threads(self.threads)
        policy, _ = load_policy(Path(self.policy_path))
        sampler, num_steps = self.sampler, self.num_steps
        if self.pruner_path is not None and sampler is None and num_steps is None:
            sampler, num_steps = pruner_sampler(Path(self.pruner_path))  # its mask rows are that sampler's steps
        if sampler is not None or num_steps is not None or self.noise_scale != 1.0:
            policy.use_sampler(SchedulerKind(sampler or policy.config.scheduler.kind),
                               num_steps or policy.config.scheduler.num_inference_steps, self.noise_scale)
        cache = Path(self.engine_cache) if self.engine_cache else default_cache_dir(Path(self.policy_path))
        backend = make_backend(self.backend, policy.denoiser, batch_size=1, cache_dir=cache, encoder=policy.encoder)
        kernels = backend.kernels
        planner: BlockPlanner | None = None
        if self.pruner_path is not None:
            pruner, extra = load_pruner(Path(self.pruner_path), policy)
            pruner.to(policy.denoiser.pos_emb.device)
            hold_x0 = extra.get("hold_x0", False) if self.hold_x0 is None else self.hold_x0
            planner = pruner_planner(kernels, pruner, self.reuse or extra.get("reuse", "one_for_all"), hold_x0)
        elif self.interval is not None:
            mask = interval_mask(policy.schedule.num_steps, len(kernels.block_fns), self.interval, self.interval_start)
            planner = StaticMaskPlanner(kernels, mask, self.reuse or "per_block", bool(self.hold_x0))
        return PolicyPredictor(policy, planner, kernels, backend.encode)
