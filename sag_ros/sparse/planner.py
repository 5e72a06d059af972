"""Block planners for :class:`sag_ros.predictor.PolicyPredictor`: how one chunk's blocks run.

- :class:`SagPlanner`: the pruner predicts this chunk's mask from the observation features (through a
  :class:`~sag_ros.sparse.certified_head.CertifiedMaskHead`: the pruner's decisions, most of them certified
  from the last fully evaluated observation instead of recomputed).
- :class:`StaticMaskPlanner`: one mask for every chunk (uniform interval caching, a learned static mask).
Both execute the mask with :class:`~sag_ros.sparse.sampler.SparseRunner` and a reuse cache (and, with
``hold_x0``, skip the steps whose every block is pruned: they hold the last computed clean-chunk prediction);
:func:`pruner_planner` picks the one a trained pruner needs.
"""

from __future__ import annotations

import torch

from sag_ros.policy.sampling import BlockRunner, DenoiserKernels
from sag_ros.sparse.cache import ReuseKind, make_cache
from sag_ros.sparse.certified_head import CertifiedMaskHead
from sag_ros.sparse.mask import executed_fraction, validate_mask, with_first_step_computed
from sag_ros.sparse.pruner import Pruner
from sag_ros.sparse.sampler import sparse_runner


class StaticMaskPlanner:
    """The same mask for every chunk."""

    def __init__(self, kernels: DenoiserKernels, mask: torch.Tensor, reuse: ReuseKind | str,
                 hold_x0: bool = False) -> None:
        self._kernels = kernels
        self.hold_x0 = hold_x0
        num_blocks = len(kernels.block_fns)
        self.mask = with_first_step_computed(validate_mask(mask, mask.shape[0], num_blocks))
        self.last_mask = self.mask  # what SagPlanner reports per chunk (the node publishes it)
        self._cache = make_cache(reuse, num_blocks)
        self._fraction = executed_fraction(self.mask)

    def plan(self, features: torch.Tensor) -> tuple[BlockRunner, float]:
        return sparse_runner(self._kernels, self.mask, self._cache, self.hold_x0), self._fraction


class SagPlanner:
    """Observation-conditioned masks from a trained pruner (batch 1: one mask per chunk)."""

    def __init__(self, kernels: DenoiserKernels, pruner: Pruner, reuse: ReuseKind | str,
                 hold_x0: bool = False) -> None:
        self._kernels = kernels
        self.hold_x0 = hold_x0
        self.pruner = pruner.eval()
        # the observation-independent half (the index table) is built here, not in the first chunk
        self.mask_head = CertifiedMaskHead(pruner.mask_head())
        self._cache = make_cache(reuse, len(kernels.block_fns))
        self.last_mask: torch.Tensor | None = None

    @torch.no_grad()
    def plan(self, features: torch.Tensor) -> tuple[BlockRunner, float]:
        if features.shape[0] != 1:
            raise ValueError(f"SagPlanner plans one observation at a time, got a batch of {features.shape[0]}")
        mask = self.mask_head(features)[0]
        self.last_mask = mask
        return sparse_runner(self._kernels, mask, self._cache, self.hold_x0), executed_fraction(mask)


def pruner_planner(kernels: DenoiserKernels, pruner: Pruner, reuse: ReuseKind | str,
                   hold_x0: bool = False) -> SagPlanner | StaticMaskPlanner:
    """The planner a trained pruner needs: SAG; or, for a pruner trained without the observation (the learned
    static mask), a :class:`StaticMaskPlanner` of its one mask, predicted once here rather than every chunk."""
    pruner.eval()
    if not pruner.config.use_observation:
        features = torch.zeros(1, pruner.config.obs_feature_dim, device=pruner.cell_bias.device)
        return StaticMaskPlanner(kernels, pruner.predict_mask(features)[0], reuse, hold_x0)
    return SagPlanner(kernels, pruner, reuse, hold_x0)
