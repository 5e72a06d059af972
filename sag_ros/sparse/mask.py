"""SAG masks: a boolean grid M of shape [K denoising steps, 3L sub-blocks], M[k, j] = True means pruned.

Column j is sub-block ``j % 3`` (0 SA, 1 CA, 2 FFN) of decoder layer ``j // 3``; row 0 is the noisiest
step. Row 0 is always computed: nothing is cached yet when the chunk starts.
"""

from __future__ import annotations

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


def executed_fraction(mask: torch.Tensor) -> float:
    """Fraction of (step, block) pairs that run."""
    return 1.0 - float(mask.float().mean())


def interval_mask(num_steps: int, num_blocks: int, interval: int) -> torch.Tensor:
    """Uniform interval caching: every ``interval``-th step computes all blocks, the others reuse all."""
    if interval < 1:
        raise ValueError(f"interval={interval} must be >= 1")
    computed_steps = torch.arange(num_steps) % interval == 0
    return (~computed_steps)[:, None].expand(num_steps, num_blocks).clone()
