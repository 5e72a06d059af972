"""Where a pruned block's residual delta comes from: reuse policies behind one small interface.

The sampler runs steps in order and, within a step, blocks in order (step-major, block-minor). A
computed block offers its delta with :meth:`store`; a pruned block asks :meth:`fetch` for a stand-in
(``None`` when nothing is cached yet, and the block is then computed after all).

- :class:`OneForAllCache` (SAG): one slot per block type (SA, CA, FFN) holding the most recent computed
  delta of that type, from an earlier layer of this step or a later layer of an earlier step: the
  zig-zag through the (step x block) grid.
- :class:`PerBlockCache` (block-wise caching baseline): the same block's delta at its last computed step.
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol

import torch


class ReuseCache(Protocol):
    def reset(self) -> None:
        """Forget everything; called at the start of each chunk."""

    def store(self, block: int, delta: torch.Tensor) -> None: ...

    def fetch(self, block: int) -> torch.Tensor | None: ...


class OneForAllCache:
    """One buffer per block type; block j has type j % 3."""

    def __init__(self, num_blocks: int) -> None:
        self._slots: list[torch.Tensor | None] = [None, None, None]

    def reset(self) -> None:
        self._slots = [None, None, None]

    def store(self, block: int, delta: torch.Tensor) -> None:
        self._slots[block % 3] = delta

    def fetch(self, block: int) -> torch.Tensor | None:
        return self._slots[block % 3]


class PerBlockCache:
    """One buffer per block: its own output at the last step it was computed."""

    def __init__(self, num_blocks: int) -> None:
        self._num_blocks = num_blocks
        self._slots: list[torch.Tensor | None] = [None] * num_blocks

    def reset(self) -> None:
        self._slots = [None] * self._num_blocks

    def store(self, block: int, delta: torch.Tensor) -> None:
        self._slots[block] = delta

    def fetch(self, block: int) -> torch.Tensor | None:
        return self._slots[block]


class ReuseKind(str, Enum):
    ONE_FOR_ALL = "one_for_all"
    PER_BLOCK = "per_block"


def make_cache(kind: ReuseKind | str, num_blocks: int) -> ReuseCache:
    caches = {ReuseKind.ONE_FOR_ALL: OneForAllCache, ReuseKind.PER_BLOCK: PerBlockCache}
    return caches[ReuseKind(kind)](num_blocks)
