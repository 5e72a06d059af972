"""Block runners that execute a SAG mask inside the one denoising loop (``policy.sampling``).

- :class:`SparseRunner` (inference): a pruned block adds its cache's delta and is not computed; a
  computed block adds its delta and stores it. An empty cache falls back to computing. With an
  all-False mask it performs exactly the dense additions, so it reproduces dense sampling bit for bit.
  Rows that compute every block go through the backend's fused call when it has one.
- :class:`GatedRunner` (pruner training): every block is computed and mixed with its cache stand-in by
  a per-sample gate g in {0, 1} that carries straight-through gradients: out = delta + g (cached - delta).
  Its forward values equal :class:`SparseRunner`'s for the same hard mask, per sample.
"""

from __future__ import annotations

from typing import Sequence

import torch

from sag_ros.policy.denoiser import BlockFn
from sag_ros.policy.sampling import DenoiserKernels, FusedBlocks, StepKV
from sag_ros.sparse.cache import ReuseCache


class SparseRunner:
    """Runs one chunk's blocks under a boolean mask [K, 3L] (True = pruned); counts computed blocks.

    A row that computes nothing adds the same cached deltas as the previous such row unless a block was
    computed in between, so their sum is kept and added in one operation (at rho = 0.9 about half the rows).
    """

    def __init__(self, block_fns: Sequence[BlockFn], mask: torch.Tensor, cache: ReuseCache,
                 fused_blocks: FusedBlocks | None = None) -> None:
        self._fns = [(j, fn, j // 3) for j, fn in enumerate(block_fns)]
        self._rows: list[list[bool]] = mask.tolist()  # Python bools: no tensor indexing in the loop
        self._idle_rows = [all(row) for row in self._rows]
        self._full_rows = [not any(row) for row in self._rows]
        self._fused = fused_blocks
        self._cache = cache
        self._cache.reset()
        self._idle_sum: torch.Tensor | None = None  # sum of the cached deltas, valid until the next store
        self.computed = 0

    def __call__(self, k: int, h: torch.Tensor, layer_kv: StepKV) -> torch.Tensor:
        if self._idle_rows[k]:
            if self._idle_sum is None:
                self._idle_sum = self._cached_sum()
            if self._idle_sum is not None:
                return h + self._idle_sum
        self._idle_sum = None
        if self._fused is not None and self._full_rows[k]:
            h, deltas = self._fused(h, layer_kv.stacked)
            for j, delta in enumerate(deltas):
                self._cache.store(j, delta)
            self.computed += len(deltas)
            return h
        row, cache = self._rows[k], self._cache
        for j, fn, layer in self._fns:
            if row[j]:
                cached = cache.fetch(j)
                if cached is not None:
                    h = h + cached
                    continue
            delta = fn(h, layer_kv[layer])
            cache.store(j, delta)
            self.computed += 1
            h = h + delta
        return h

    def _cached_sum(self) -> torch.Tensor | None:
        """Sum of every block's cached stand-in, or None if some block has none yet (it must compute)."""
        total = None
        for j, _, _ in self._fns:
            cached = self._cache.fetch(j)
            if cached is None:
                return None
            total = cached if total is None else total + cached
        return total


def sparse_runner(kernels: DenoiserKernels, mask: torch.Tensor, cache: ReuseCache) -> SparseRunner:
    """A :class:`SparseRunner` on a backend's kernels, its fused call included."""
    return SparseRunner(kernels.block_fns, mask, cache, kernels.fused_blocks)


class GatedRunner:
    """Differentiable runner: gates [B, K, 3L] with values in {0, 1} (1 = use the cache)."""

    def __init__(self, block_fns: Sequence[BlockFn], gates: torch.Tensor, cache: ReuseCache) -> None:
        self._fns = [(j, fn, j // 3) for j, fn in enumerate(block_fns)]
        self._gates = gates
        self._cache = cache
        self._cache.reset()

    def __call__(self, k: int, h: torch.Tensor, layer_kv: StepKV) -> torch.Tensor:
        gates = self._gates[:, k, :, None, None]  # (B, 3L, 1, 1)
        for j, fn, layer in self._fns:
            delta = fn(h, layer_kv[layer])
            cached = self._cache.fetch(j)
            out = delta if cached is None else delta + gates[:, j] * (cached - delta)
            self._cache.store(j, out)
            h = h + out
        return h
