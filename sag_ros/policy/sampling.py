"""The one reverse-diffusion loop. Dense sampling and every sparse variant share it.

Per chunk, everything that does not depend on the noisy actions is prepared up front in batched calls:
the condition memory of all K steps (only the step token changes), every layer's cross-attention
keys/values for every step, and all the Gaussian noise the sampler will need. The loop itself is then

    for k in steps: h = embed(x); h = run_blocks(k, h, kv[k]); x = schedule.step(k, x, head(h), z[k])

where ``run_blocks`` is the strategy: dense adds every block's delta; the SAG sampler gates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch

from sag_ros.policy.denoiser import BlockFn, TransformerDenoiser
from sag_ros.policy.scheduler import NoiseSchedule


class BlockRunner(Protocol):
    """Runs the 3L sub-blocks of one denoising step k on the residual stream h."""

    def __call__(self, k: int, h: torch.Tensor, layer_kv: Sequence[torch.Tensor]) -> torch.Tensor: ...


@dataclass(frozen=True)
class DenoiserKernels:
    """The callables the loop runs per step; backends (``sag_ros.engine``) supply compiled versions.

    ``block_fns[j]`` is sub-block ``j % 3`` (SA, CA, FFN) of layer ``j // 3`` with the uniform signature
    ``(h, memory_kv_of_its_layer) -> residual delta``; ``embed``: noisy actions -> tokens;
    ``output``: residual stream -> predicted noise.
    """

    block_fns: Sequence[BlockFn]
    embed: Callable[[torch.Tensor], torch.Tensor]
    output: Callable[[torch.Tensor], torch.Tensor]


def eager_kernels(denoiser: TransformerDenoiser) -> DenoiserKernels:
    return DenoiserKernels(denoiser.block_fns(), denoiser.embed, denoiser.output)


@dataclass
class ChunkInputs:
    """What one chunk's reverse process needs, prepared before the loop."""

    x_init: torch.Tensor  # [B, Tp, A] initial Gaussian sample
    noise: list[torch.Tensor | None]  # per step, DDPM's z_k (None for DDIM)
    layer_kv: list[list[torch.Tensor]]  # [K][L] cross-attention keys/values, each (2, B, nh, S, hs)


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Gaussian noise drawn on the generator's device, then moved: a seed gives the same noise on CPU and GPU."""
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source).to(device)


def prepare_chunk(denoiser: TransformerDenoiser, schedule: NoiseSchedule, obs_features: torch.Tensor,
                  generator: torch.Generator | None) -> ChunkInputs:
    """Draw the noise and compute every step's condition memory in one batched call."""
    cfg = denoiser.config
    b, k = obs_features.shape[0], schedule.num_steps
    device = obs_features.device
    shape = (b, cfg.horizon, cfg.action_dim)
    x_init = randn(shape, generator, device)
    if schedule.needs_noise:
        noise: list[torch.Tensor | None] = list(randn((k, *shape), generator, device).unbind(0))
    else:
        noise = [None] * k
    timesteps = schedule.timesteps.to(device).repeat_interleave(b)  # [K*B], step-major
    memory = denoiser.condition(timesteps, obs_features.repeat(k, 1, 1))  # [K*B, S, d]
    kv = denoiser.memory_kv(memory)  # [L, 2, K*B, nh, S, hs]
    kv = kv.unflatten(2, (k, b)).permute(2, 0, 1, 3, 4, 5, 6).contiguous()  # [K, L, 2, B, nh, S, hs]
    return ChunkInputs(x_init=x_init, noise=noise, layer_kv=[list(step.unbind(0)) for step in kv.unbind(0)])


def dense_runner(block_fns: Sequence[BlockFn]) -> BlockRunner:
    """Every block computed: h += block(h) in order. Layer of block j is j // 3."""
    fns = [(fn, j // 3) for j, fn in enumerate(block_fns)]

    def run(k: int, h: torch.Tensor, layer_kv: Sequence[torch.Tensor]) -> torch.Tensor:
        for fn, layer in fns:
            h = h + fn(h, layer_kv[layer])
        return h

    return run


def reverse_diffusion(schedule: NoiseSchedule, inputs: ChunkInputs, kernels: DenoiserKernels,
                      run_blocks: BlockRunner) -> torch.Tensor:
    """The K-step loop; returns the normalized action chunk [B, Tp, A]."""
    embed, output = kernels.embed, kernels.output
    x = inputs.x_init
    for k in range(schedule.num_steps):
        h = run_blocks(k, embed(x), inputs.layer_kv[k])
        x = schedule.step(k, x, output(h), inputs.noise[k])
    return x
