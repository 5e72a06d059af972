"""Block runners that execute a SAG mask inside the one denoising loop (``policy.sampling``).

- :class:`SparseRunner` (inference): a pruned block adds its cache's delta and is not computed; a
  computed block adds its delta and stores it. An empty cache falls back to computing. With an
  all-False mask it performs exactly the dense additions, so it reproduces dense sampling bit for bit.
  Rows that compute every block go through the backend's fused call when it has one. Consecutive pruned
  blocks add their stand-ins as one sum (same value up to float rounding of the summation order).
- :class:`GatedRunner` (pruner training): every block is computed and mixed with its cache stand-in by
  a per-sample gate g in {0, 1} that carries straight-through gradients: out = delta + g (cached - delta).
  Its forward values equal :class:`SparseRunner`'s for the same hard mask, per sample.

Both can also hold whole steps (``hold_x0``): a step whose every block is pruned then runs no network at all and
keeps the last computed step's clean-chunk prediction x0 (:class:`~sag_ros.policy.sampling.BlockRunner`). Adding
the blocks' stand-ins to a fresh embedding, as the paper's reuse does for such a step, comes close to reusing an
earlier step's noise prediction, which ignores the noise DDPM has drawn since; holding x0 folds that noise into
the update. On Push-T it brought the same ten-step schedules several times closer to dense, open loop, and
raised their closed-loop scores (README, "Held steps").
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch

from sag_ros.policy.denoiser import BlockFn
from sag_ros.policy.sampling import ChunkInputs, DenoiserKernels, FusedBlocks, StepKV, reverse_diffusion
from sag_ros.policy.scheduler import NoiseSchedule
from sag_ros.sparse.cache import ReuseCache, make_cache
from sag_ros.sparse.mask import held_steps


Row = tuple[int | tuple[int, ...], ...]
"""One mask row as a program: a computed block's index, or a run of consecutive pruned blocks (a tuple)."""


@functools.lru_cache(maxsize=4096)
def row_program(row: tuple[bool, ...]) -> Row:
    """(False, True, True, False) -> (0, (1, 2), 3). Memoized: a pruner's masks repeat rows from chunk to chunk,
    and building a program costs more than a block call."""
    program: list[int | tuple[int, ...]] = []
    run: list[int] = []
    for j, pruned in enumerate(row):
        if pruned:
            run.append(j)
            continue
        if run:
            program.append(tuple(run))
            run = []
        program.append(j)
    if run:
        program.append(tuple(run))
    return tuple(program)


class SparseRunner:
    """Runs one chunk's blocks under a boolean mask [K, 3L] (True = pruned); counts computed blocks.

    Each row is compiled once into a program of computed blocks and runs of pruned ones. A run adds the sum of
    its stand-ins in one addition (the cache forms the sum in as few operations as its policy allows), and that
    sum is remembered until the next block computes: at rho = 0.9 about half the rows compute nothing and add
    the same sum as the row before. At batch 1 these small tensor operations, not the blocks, were a third of a
    sparse chunk's time.
    """

    def __init__(self, block_fns: Sequence[BlockFn], mask: torch.Tensor, cache: ReuseCache,
                 fused_blocks: FusedBlocks | None = None, hold_x0: bool = False) -> None:
        self._fns = list(block_fns)
        rows: list[list[bool]] = mask.tolist()  # Python bools: no tensor indexing in the loop
        self.held_steps = held_steps(rows) if hold_x0 else None
        self._programs = [row_program(tuple(row)) for row in rows]
        self._full_rows = [not any(row) for row in rows]
        self._fused = fused_blocks
        self._cache = cache
        self._cache.reset()
        self._sums: dict[tuple[int, ...], torch.Tensor] = {}  # stand-in sums, valid until the next store
        self.computed = 0

    def __call__(self, k: int, h: torch.Tensor, layer_kv: StepKV) -> torch.Tensor:
        if self._fused is not None and self._full_rows[k]:
            h, deltas = self._fused(h, layer_kv.stacked)
            for j, delta in enumerate(deltas):
                self._cache.store(j, delta)
            self._sums.clear()
            self.computed += len(deltas)
            return h
        for item in self._programs[k]:
            if isinstance(item, int):
                h = h + self._compute(item, h, layer_kv)
                continue
            total = self._sums.get(item)
            if total is None:
                total = self._cache.stand_in_sum(item)
                if total is None:  # nothing cached for some block yet: fetch or compute block by block
                    for j in item:
                        cached = self._cache.fetch(j)
                        h = h + (cached if cached is not None else self._compute(j, h, layer_kv))
                    continue
                self._sums[item] = total
            h = h + total
        return h

    def _compute(self, j: int, h: torch.Tensor, layer_kv: StepKV) -> torch.Tensor:
        delta = self._fns[j](h, layer_kv[j // 3])
        self._cache.store(j, delta)
        self._sums.clear()
        self.computed += 1
        return delta


def sparse_runner(kernels: DenoiserKernels, mask: torch.Tensor, cache: ReuseCache,
                  hold_x0: bool = False) -> SparseRunner:
    """A :class:`SparseRunner` on a backend's kernels, its fused call included."""
    return SparseRunner(kernels.block_fns, mask, cache, kernels.fused_blocks, hold_x0)


def sample_with_masks(schedule: NoiseSchedule, kernels: DenoiserKernels, inputs: ChunkInputs, masks: torch.Tensor,
                      reuse: str, hold_x0: bool) -> torch.Tensor:
    """Each batch entry's chunk [B, Tp, A] sampled under its own mask of ``masks`` [B, K, 3L] (an observation-
    conditioned pruner's, one per observation); a :class:`SparseRunner` runs one mask per call, so the entries that
    share a mask run together. For the open-loop studies, which compare schedules on many observations at once."""
    distinct, entry_group = torch.unique(masks, dim=0, return_inverse=True)
    chunks = torch.empty_like(inputs.x_init)
    for group, mask in enumerate(distinct):
        index = (entry_group == group).nonzero().squeeze(1)
        runner = sparse_runner(kernels, mask, make_cache(reuse, len(kernels.block_fns)), hold_x0)
        chunks[index] = reverse_diffusion(schedule, inputs.select(index), kernels, runner)
    return chunks


def step_hold_gates(gates: torch.Tensor) -> torch.Tensor:
    """Per-step hold gates [B, K] from block gates [B, K, 3L]: 1 exactly where every block of the step is pruned;
    the gradient is the mean's (a product's would vanish at every computed step: no signal to start holding)."""
    mean = gates.mean(-1)
    return gates.detach().amin(-1) + mean - mean.detach()


def held_step_gates(gates: torch.Tensor, step_holds: torch.Tensor | None) -> torch.Tensor:
    """Which steps hold [B, K]: those whose every block is pruned, as the sparse sampler decides at run time. With
    a hierarchical pruner's own step gates, a step holds where its gate says so (the gradient is that gate's) or,
    with no gradient of its own, where the block gates happen to prune every block anyway."""
    if step_holds is None:
        return step_hold_gates(gates)
    return step_holds + (1 - step_holds) * gates.detach().amin(-1)


class GatedRunner:
    """Differentiable runner: gates [B, K, 3L] with values in {0, 1} (1 = use the cache).

    With a hierarchical pruner's ``step_holds`` [B, K], ``gates`` are its block gates: a step runs its blocks by
    them, so holding is weighed against what the step would give if it ran, and a held step leaves the cache as it
    was (at run time a held step runs nothing, so stores nothing)."""

    def __init__(self, block_fns: Sequence[BlockFn], gates: torch.Tensor, cache: ReuseCache,
                 hold_x0: bool = False, step_holds: torch.Tensor | None = None) -> None:
        self._fns = [(j, fn, j // 3) for j, fn in enumerate(block_fns)]
        self._gates = gates
        self._step_holds = step_holds
        self.hold_gates = held_step_gates(gates, step_holds) if hold_x0 else None
        self._cache = cache
        self._cache.reset()

    def __call__(self, k: int, h: torch.Tensor, layer_kv: StepKV) -> torch.Tensor:
        gates = self._gates[:, k, :, None, None]  # (B, 3L, 1, 1)
        hold = None if self._step_holds is None else self._step_holds[:, k, None, None]
        for j, fn, layer in self._fns:
            delta = fn(h, layer_kv[layer])
            cached = self._cache.fetch(j)
            out = delta if cached is None else delta + gates[:, j] * (cached - delta)
            self._cache.store(j, out if hold is None or cached is None else out + hold * (cached - out))
            h = h + out
        return h
