"""SAG masks: a boolean grid M of shape [K denoising steps, 3L sub-blocks], M[k, j] = True means pruned.

Column j is sub-block ``j % 3`` (0 SA, 1 CA, 2 FFN) of decoder layer ``j // 3``; row 0 is the noisiest
step. Row 0 is always computed: nothing is cached yet when the chunk starts.
"""

from __future__ import annotations

from typing import Sequence

import torch


def validate_mask(mask: torch.Tensor, num_steps: int, num_blocks: int) -> torch.Tensor:
    """Check a mask's shape and dtype; returns it as a CPU bool tensor. Errors name what is wrong."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be bool (True = pruned), got {mask.dtype}")
    if tuple(mask.shape) != (num_steps, num_blocks):
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected [steps={num_steps}, blocks={num_blocks}]")
    return mask.cpu()


def with_first_step_computed(mask: torch.Tensor) -> torch.Tensor:
    """Copy of ``mask`` ([..., K, 3L]) whose first step computes every block."""
    out = mask.clone()
    out[..., 0, :] = False
    return out


def held_steps(rows: Sequence[Sequence[bool]]) -> tuple[bool, ...]:
    """Per step of a mask's rows (``mask.tolist()``), whether a sampler that holds skipped steps (``hold_x0``)
    holds it: every block pruned, and not the first step (there is no clean-chunk prediction to hold yet)."""
    return tuple(k > 0 and all(row) for k, row in enumerate(rows))


def computed_steps(rows: Sequence[Sequence[bool]]) -> list[int]:
    """The steps of a mask's rows (``mask.tolist()``) that run the network under ``hold_x0``: every step but the held
    ones (the first always runs). What a schedule costs, in steps, and which steps a learned mask chose."""
    return [k for k, held in enumerate(held_steps(rows)) if not held]


def executed_fraction(mask: torch.Tensor) -> float:
    """Fraction of (step, block) pairs that run."""
    return 1.0 - float(mask.float().mean())


def interval_mask(num_steps: int, num_blocks: int, interval: int, start: int = 0) -> torch.Tensor:
    """Interval caching: step 0 and every ``interval``-th step from ``start`` on compute all blocks, the others
    reuse all. ``start=0`` is uniform interval caching. A later start spends the budget on the low-noise steps,
    whose errors the sampler no longer corrects: ``interval=5, start=50`` (11 % of blocks) stays 3x closer to dense
    than uniform ``interval=10`` on Push-T, open loop (``tools/cross_chunk_study.py``), though closeness to dense
    is not success (README, Meta-World)."""
    if interval < 1:
        raise ValueError(f"interval={interval} must be >= 1")
    if not 0 <= start < num_steps:
        raise ValueError(f"interval start={start} must be a denoising step of the policy's, in [0, {num_steps})")
    steps = torch.arange(num_steps)
    computed_steps = (steps >= start) & ((steps - start) % interval == 0)
    computed_steps[0] = True
    return (~computed_steps)[:, None].expand(num_steps, num_blocks).clone()


def interval_label(interval: int, start: int = 0) -> str:
    """How benchmarks name an interval schedule: "n=10", "n=5 from 50"."""
    return f"n={interval}" + (f" from {start}" if start else "")
