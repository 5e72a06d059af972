"""Block runners that execute a SAG mask inside the one denoising loop (``policy.sampling``).

- :class:`SparseRunner` (inference): a pruned block adds its cache's delta and is not computed; a
  computed block adds its delta and stores it. An empty cache falls back to computing. With an
  all-False mask it performs exactly the dense additions, so it reproduces dense sampling bit for bit.
- :class:`GatedRunner` (pruner training): every block is computed and mixed with its cache stand-in by
  a per-sample gate g in {0, 1} that carries straight-through gradients: out = delta + g (cached - delta).
  Its forward values equal :class:`SparseRunner`'s for the same hard mask, per sample.
"""

from __future__ import annotations

from typing import Sequence

import torch

from sag_ros.policy.denoiser import BlockFn
from sag_ros.sparse.cache import ReuseCache


class SparseRunner:
    """Runs one chunk's blocks under a boolean mask [K, 3L] (True = pruned); counts computed blocks."""

    def __init__(self, block_fns: Sequence[BlockFn], mask: torch.Tensor, cache: ReuseCache) -> None:
        self._fns = [(j, fn, j // 3) for j, fn in enumerate(block_fns)]
        self._rows: list[list[bool]] = mask.tolist()  # Python bools: no tensor indexing in the loop
        self._cache = cache
        self._cache.reset()
        self.computed = 0

    def __call__(self, k: int, h: torch.Tensor, layer_kv: Sequence[torch.Tensor]) -> torch.Tensor:
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


class GatedRunner:
    """Differentiable runner: gates [B, K, 3L] with values in {0, 1} (1 = use the cache)."""

    def __init__(self, block_fns: Sequence[BlockFn], gates: torch.Tensor, cache: ReuseCache) -> None:
        self._fns = [(j, fn, j // 3) for j, fn in enumerate(block_fns)]
        self._gates = gates
        self._cache = cache
        self._cache.reset()

    def __call__(self, k: int, h: torch.Tensor, layer_kv: Sequence[torch.Tensor]) -> torch.Tensor:
        gates = self._gates[:, k, :, None, None]  # (B, 3L, 1, 1)
        for j, fn, layer in self._fns:
            delta = fn(h, layer_kv[layer])
            cached = self._cache.fetch(j)
            out = delta if cached is None else delta + gates[:, j] * (cached - delta)
            self._cache.store(j, out)
            h = h + out
        return h
