"""Where a pruned block's residual delta comes from: reuse policies behind one small interface.

The sampler runs steps in order and, within a step, blocks in order (step-major, block-minor). A
computed block offers its delta with :meth:`store`; a pruned block asks :meth:`fetch` for a stand-in
(``None`` when nothing is cached yet, and the block is then computed after all). Deltas are torch tensors or
numpy arrays (kernels with ``numpy_loop``): the caches only store them and add them up.

- :class:`OneForAllCache` (SAG): one slot per block type (SA, CA, FFN) holding the most recent computed
  delta of that type, from an earlier layer of this step or a later layer of an earlier step: the
  zig-zag through the (step x block) grid.
- :class:`PerBlockCache` (block-wise caching baseline): the same block's delta at its last computed step.
"""

from __future__ import annotations

from collections import Counter
from enum import Enum
from typing import Protocol

from sag_ros.policy.sampling import Array


class ReuseCache(Protocol):
    def reset(self) -> None:
        """Forget everything; called at the start of each chunk."""

    def store(self, block: int, delta: Array) -> None: ...

    def fetch(self, block: int) -> Array | None: ...

    def stand_in_sum(self, blocks: tuple[int, ...]) -> Array | None:
        """Sum of the stand-ins of ``blocks`` (a run of pruned blocks in one row), None if one is missing.

        A run's stand-ins do not change while it is added (nothing is stored in between), so their sum can be
        formed in as few tensor operations as the policy allows instead of one addition per block."""


class OneForAllCache:
    """One buffer per block type; block j has type j % 3."""

    def __init__(self, num_blocks: int) -> None:
        self._slots: list[Array | None] = [None, None, None]
        self._terms: dict[tuple[int, ...], list[tuple[int, int]]] = {}  # run -> (type, count); masks repeat runs

    def reset(self) -> None:
        self._slots = [None, None, None]

    def store(self, block: int, delta: Array) -> None:
        self._slots[block % 3] = delta

    def fetch(self, block: int) -> Array | None:
        return self._slots[block % 3]

    def stand_in_sum(self, blocks: tuple[int, ...]) -> Array | None:
        """At most five array operations whatever the run's length: each type's buffer times its count, summed."""
        terms = self._terms.get(blocks)
        if terms is None:
            terms = self._terms[blocks] = sorted(Counter(j % 3 for j in blocks).items())
        total = None
        for kind, count in terms:
            slot = self._slots[kind]
            if slot is None:
                return None
            term = slot if count == 1 else slot * count
            total = term if total is None else total + term
        return total


class PerBlockCache:
    """One buffer per block: its own output at the last step it was computed."""

    def __init__(self, num_blocks: int) -> None:
        self._num_blocks = num_blocks
        self._slots: list[Array | None] = [None] * num_blocks

    def reset(self) -> None:
        self._slots = [None] * self._num_blocks

    def store(self, block: int, delta: Array) -> None:
        self._slots[block] = delta

    def fetch(self, block: int) -> Array | None:
        return self._slots[block]

    def stand_in_sum(self, blocks: tuple[int, ...]) -> Array | None:
        total = None
        for j in blocks:
            slot = self._slots[j]
            if slot is None:
                return None
            total = slot if total is None else total + slot
        return total


class ReuseKind(str, Enum):
    ONE_FOR_ALL = "one_for_all"
    PER_BLOCK = "per_block"


def slot_of(kind: ReuseKind | str, block: int) -> int:
    """The buffer block ``block`` stores into and reads from: its type (j % 3) for one-for-all reuse, itself for
    block-wise reuse. For runners that keep the cache in their own static buffers (CUDA graphs)."""
    return block % 3 if ReuseKind(kind) is ReuseKind.ONE_FOR_ALL else block


def make_cache(kind: ReuseKind | str, num_blocks: int) -> ReuseCache:
    caches = {ReuseKind.ONE_FOR_ALL: OneForAllCache, ReuseKind.PER_BLOCK: PerBlockCache}
    return caches[ReuseKind(kind)](num_blocks)
