"""The one reverse-diffusion loop. Dense sampling and every sparse variant share it.

Per chunk, everything that does not depend on the noisy actions is prepared up front: every layer's
cross-attention keys/values for every step (the observation tokens' once, the step tokens' from a cache,
see :meth:`TransformerDenoiser.chunk_memory_kv`) and all the Gaussian noise the sampler will need. The loop itself is then

    for k in steps: h = embed(x); h = run_blocks(k, h, kv[k]); x = schedule.step(k, x, head(h), z[k])

where ``run_blocks`` is the strategy: dense adds every block's delta; the SAG sampler gates them. A backend
may also offer ``fused_blocks``, all 3L blocks of a step in one compiled call, which runners use for steps
that compute every block (all dense steps; SAG's first step): at batch 1 the per-call cost dominates.
For the same reason a backend may offer ``advance``: head, scheduler update and the next step's embedding in
one call, so that between two steps' blocks there is one call instead of about ten small tensor operations
(with 90 % of blocks pruned, those operations cost as much as the blocks that remain). And a backend whose
kernels run on host memory anyway (ONNX Runtime on the CPU) may ask for the loop on numpy arrays: at batch 1 a
numpy addition costs ~1.5 µs where torch's costs ~4, and no tensor has to be wrapped around each call's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from sag_ros.policy.denoiser import BlockFn, TransformerDenoiser
from sag_ros.policy.scheduler import Array, NoiseSchedule


class StepKV:
    """One step's cross-attention keys/values: ``stacked`` [L, 2, B, nh, S, hs] for fused units, and a layer's
    [2, B, nh, S, hs] by index for single blocks, as a view made on the layer's first use (a sparse chunk reads
    few layers of most steps, so unbinding all L up front costs more)."""

    __slots__ = ("stacked", "_layers")

    def __init__(self, stacked: Array) -> None:
        self.stacked = stacked
        self._layers: list[Array | None] = [None] * stacked.shape[0]

    def __getitem__(self, layer: int) -> Array:
        view = self._layers[layer]
        if view is None:
            view = self._layers[layer] = self.stacked[layer]
        return view


class BlockRunner(Protocol):
    """Runs the 3L sub-blocks of one denoising step k on the residual stream h.

    A runner may also skip whole steps. ``held_steps`` (a bool per step): those steps run no network at all, not
    even the embedding and head; each keeps the last computed step's clean-chunk prediction x0 and takes the update
    that x0 implies (:meth:`~sag_ros.policy.scheduler.NoiseSchedule.step_from_x0`). ``hold_gates`` ([B, K] in
    {0, 1}, straight-through; pruner training): every step computes, and its x0 is mixed with the held one,
    ``x0 + g (x0_held - x0)``, so the gates learn where holding is harmless. Step 0 never holds."""

    def __call__(self, k: int, h: torch.Tensor, layer_kv: StepKV) -> torch.Tensor: ...


def held_steps_of(run_blocks: BlockRunner) -> Sequence[bool] | None:
    """The steps a runner skips (``held_steps``), or None; refuses a first step that holds (there is no x0 yet)."""
    held = getattr(run_blocks, "held_steps", None)
    if held is not None and held[0]:
        raise ValueError("step 0 cannot hold a clean-chunk prediction: none has been computed yet")
    return held


FusedBlocks = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, Sequence[torch.Tensor]]]
"""(h, stacked kv) -> (h after all 3L blocks, the 3L block deltas in order)."""

Advance = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""(h after the blocks, x, noise z_k, step coefficients [8]) -> (x of the next step, its embedding)."""


@dataclass(frozen=True)
class DenoiserKernels:
    """The callables the loop runs per step; backends (``sag_ros.engine``) supply compiled versions.

    ``block_fns[j]`` is sub-block ``j % 3`` (SA, CA, FFN) of layer ``j // 3`` with the uniform signature
    ``(h, memory_kv_of_its_layer) -> residual delta``; ``embed``: noisy actions -> tokens;
    ``output``: residual stream -> predicted noise; ``observation_kv``: observation features -> the
    observation tokens' cross-attention keys/values of every layer (once per chunk). ``fused_blocks``
    (optional): every block of a step in one call, same values as running ``block_fns`` in order. ``advance`` (optional): ``output``, the scheduler
    update (:func:`~sag_ros.policy.scheduler.reverse_update`) and ``embed`` of the result in one call.
    """

    block_fns: Sequence[BlockFn]
    embed: Callable[[torch.Tensor], torch.Tensor]
    output: Callable[[torch.Tensor], torch.Tensor]
    observation_kv: Callable[[torch.Tensor], torch.Tensor]
    fused_blocks: FusedBlocks | None = None
    advance: Advance | None = None
    numpy_loop: bool = False
    """The per-step callables (``block_fns``, ``embed``, ``output``, ``fused_blocks``, ``advance``) take and return
    numpy arrays; ``observation_kv`` stays on tensors. Needs ``advance`` (the scheduler update is then inside it)."""

    def __post_init__(self) -> None:
        if self.numpy_loop and self.advance is None:
            raise ValueError("numpy_loop kernels need an advance callable: the scheduler update runs on tensors")


def eager_kernels(denoiser: TransformerDenoiser) -> DenoiserKernels:
    return DenoiserKernels(denoiser.block_fns(), denoiser.embed, denoiser.output, denoiser.observation_kv)


@dataclass
class ChunkInputs:
    """What one chunk's reverse process needs, prepared before the loop; the loop indexes it per step."""

    x_init: Array  # [B, Tp, A] initial Gaussian sample
    noise: Array | None  # [K, B, Tp, A] DDPM's z_k per step; None for DDIM
    kv: Array  # [K, L, 2, B, nh, S, hs] cross-attention keys/values of every step and layer

    def as_numpy(self) -> "ChunkInputs":
        """The same inputs as numpy views (CPU tensors only): for kernels with ``numpy_loop``."""
        return ChunkInputs(self.x_init.numpy(), None if self.noise is None else self.noise.numpy(), self.kv.numpy())

    def select(self, index: torch.Tensor) -> "ChunkInputs":
        """The inputs of the batch entries at ``index`` (the batch axis of each field: 0, 1 and 3), e.g. to sample
        the observations that share a mask together, since the sparse sampler runs one mask per call."""
        return ChunkInputs(self.x_init[index], None if self.noise is None else self.noise[:, index],
                           self.kv[:, :, :, index])


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Gaussian noise drawn on the generator's device, then moved: a seed gives the same noise on CPU and GPU."""
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source).to(device)


def prepare_chunk(denoiser: TransformerDenoiser, schedule: NoiseSchedule, obs_features: torch.Tensor,
                  generator: torch.Generator | None,
                  observation_kv: Callable[[torch.Tensor], torch.Tensor] | None = None) -> ChunkInputs:
    """Draw the noise and compute every step's cross-attention keys/values (the observation tokens' part
    through ``observation_kv``, a backend's compiled form, or the denoiser's own)."""
    cfg = denoiser.config
    b, k = obs_features.shape[0], schedule.num_steps
    device = obs_features.device
    shape = (b, cfg.horizon, cfg.action_dim)
    x_init = randn(shape, generator, device)
    noise = randn((k, *shape), generator, device) if schedule.needs_noise else None
    obs_kv = (observation_kv if observation_kv is not None else denoiser.observation_kv)(obs_features)
    kv = denoiser.chunk_memory_kv(schedule.timesteps.to(device), obs_kv)  # [K, L, 2, B, nh, S, hs]
    return ChunkInputs(x_init=x_init, noise=noise, kv=kv)


def dense_runner(kernels: DenoiserKernels) -> BlockRunner:
    """Every block computed: the fused call when the backend has one, else h += block(h) in order."""
    fused = kernels.fused_blocks
    if fused is not None:
        return lambda k, h, layer_kv: fused(h, layer_kv.stacked)[0]
    fns = [(fn, j // 3) for j, fn in enumerate(kernels.block_fns)]  # layer of block j is j // 3

    def run(k: int, h: torch.Tensor, layer_kv: StepKV) -> torch.Tensor:
        for fn, layer in fns:
            h = h + fn(h, layer_kv[layer])
        return h

    return run


def reverse_diffusion(schedule: NoiseSchedule, inputs: ChunkInputs, kernels: DenoiserKernels,
                      run_blocks: BlockRunner, x0_trace: list[torch.Tensor] | None = None) -> torch.Tensor:
    """The K-step loop; returns the normalized action chunk [B, Tp, A]. Steps the runner holds (``held_steps``,
    ``hold_gates``: :class:`BlockRunner`) take the last computed clean-chunk prediction instead of their own.

    ``x0_trace``: if given, each step's prediction of the clean chunk is appended to it (pruner training can
    compare whole denoising trajectories, not only their end; torch kernels only)."""
    if kernels.numpy_loop and x0_trace is not None:
        raise ValueError("x0_trace needs torch kernels; these kernels run the loop on numpy arrays")
    held = held_steps_of(run_blocks)
    if kernels.advance is not None and x0_trace is None:
        coefficients = schedule.step_coefficients(inputs.x_init.device, inputs.x_init.dtype)
        if kernels.numpy_loop:  # one [K, 8] array whose rows are views, not K conversions
            return torch.from_numpy(_advancing_loop(schedule, inputs.as_numpy(), torch.stack(coefficients).numpy(),
                                                    kernels, run_blocks, held))
        return _advancing_loop(schedule, inputs, coefficients, kernels, run_blocks, held)
    hold_gates: torch.Tensor | None = getattr(run_blocks, "hold_gates", None)
    embed, output = kernels.embed, kernels.output
    x, x0_held = inputs.x_init, None
    for k in range(schedule.num_steps):
        noise = None if inputs.noise is None else inputs.noise[k]
        if held is not None and held[k]:
            x, x0 = schedule.step_from_x0(k, x, x0_held, noise), x0_held
        else:
            eps = output(run_blocks(k, embed(x), StepKV(inputs.kv[k])))
            x0 = schedule.predict_x0(k, x, eps)
            x_next = schedule.update(k, x, x0, eps, noise)  # = schedule.step(k, x, eps, noise), x0 kept
            if hold_gates is not None and x0_held is not None:
                gate = hold_gates[:, k, None, None]
                x_next = x_next + gate * (schedule.step_from_x0(k, x, x0_held, noise) - x_next)
                x0 = x0 + gate * (x0_held - x0)
            x = x_next
        if x0_trace is not None:
            x0_trace.append(x0)
        x0_held = x0
    return x


def _advancing_loop(schedule: NoiseSchedule, inputs: ChunkInputs, coefficients: Sequence[Array],
                    kernels: DenoiserKernels, run_blocks: BlockRunner, held: Sequence[bool] | None) -> Array:
    """The same loop with a backend's ``advance`` call between the blocks of consecutive steps; the arrays are
    tensors or numpy arrays alike (``coefficients``: each step's [8] row, :meth:`NoiseSchedule.step_coefficients`).
    Before a held step the computed step runs ``output`` and the update on its own (the held steps need its x0),
    and the step after a held run embeds its input again."""
    embed, advance = kernels.embed, kernels.advance
    x, kv = inputs.x_init, inputs.kv
    if inputs.noise is None:  # DDIM: no noise, but the advance graph takes an input
        noise = [np.zeros_like(x) if isinstance(x, np.ndarray) else torch.zeros_like(x)] * len(coefficients)
    else:
        noise = inputs.noise
    num_steps = len(coefficients)
    h, x0 = embed(x), None
    for k in range(num_steps):
        if held is not None and held[k]:
            x = schedule.step_from_x0(k, x, x0, noise[k])
            continue
        if k and held is not None and held[k - 1]:
            h = embed(x)
        out = run_blocks(k, h, StepKV(kv[k]))
        if held is not None and k + 1 < num_steps and held[k + 1]:
            eps = kernels.output(out)
            x0 = schedule.predict_x0(k, x, eps)
            x = schedule.update(k, x, x0, eps, noise[k])
        else:
            x, h = advance(out, x, noise[k], coefficients[k])
    return x
