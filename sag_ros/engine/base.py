"""The backend contract and the compiled unit: one residual sub-block, plus ``embed``, ``output``,
``advance``, ``condition`` (and optionally ``blocks``, every sub-block of a step fused into one call, and
``encoder``, the policy's image encoder).

SAG decides per (denoising step, sub-block) at run time whether a block runs, so a backend compiles
each sub-block on its own and leaves gating, caches and the loop in Python (:mod:`sag_ros.policy.sampling`).
A backend turns a :class:`TransformerDenoiser` in eval mode, at a fixed batch size B, horizon Tp and
memory length S = 1 + To, into :class:`DenoiserKernels` with the eager semantics:

- ``block_fns[j](h, kv) -> delta``: h [B, Tp, d]; kv [2, B, nh, S, hs] (used by CA, ignored by SA/FFN);
- ``embed(noisy_action [B, Tp, A]) -> h``; ``output(h) -> eps [B, Tp, A]``;
- ``condition(features [B, To, F]) -> [L, 2, B, nh, To, hs]``: the observation tokens' keys/values, once a chunk;
- ``encoder(image [B, To, 3, H, W] in [0, 1], normalized state [B, To, S]) -> features [B, To, F]`` (image
  policies, when the backend is given the policy's encoder);
- ``advance(h, x, noise, coefficients [8]) -> [B*Tp*d + B*Tp*A]``: ``output``, the scheduler update and
  ``embed`` of its result, flattened and concatenated (the next step's h, then its x);
- ``blocks(h, kv [L, 2, B, nh, S, hs]) -> [1 + 3L, B, Tp, d]`` (fused backends only): the residual stream after
  all 3L blocks, then each block's delta (SAG caches need them). At batch 1 a unit call costs tens of µs
  whatever its size, so a dense step as one call instead of 3L is most of what a compiler can win.

Every unit is a small :class:`nn.Module` with tensor-only inputs (its attention mask is a constant
buffer), so ``torch.compile``, ``torch.onnx.export`` and ``torch.export`` all see the same graph.
"""

from __future__ import annotations

import importlib
import logging
import math
import statistics
import threading
import time
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any, Callable, Sequence

import torch
from torch import nn
from tqdm.std import TMonitor

from sag_ros.policy.blocks import BlockKind
from sag_ros.policy.denoiser import BlockFn, TransformerDenoiser
from sag_ros.policy.encoder import ObservationEncoder
from sag_ros.policy.sampling import Advance, Array, DenoiserKernels, FusedBlocks
from sag_ros.policy.scheduler import STEP_COEFFICIENTS, reverse_update

log = logging.getLogger(__name__)

EMBED = "embed"
OUTPUT = "output"
ADVANCE = "advance"
CONDITION = "condition"
ENCODER = "encoder"
BLOCKS = "blocks"
UnitFn = Callable[..., torch.Tensor]


class MissingDependencyError(ImportError):
    """An optional inference library is not installed."""


def require(module: str, package: str | None = None) -> ModuleType:
    """Import an optional library or fail with a message naming it and the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"this backend needs the Python package {package or module!r} (module {module!r}), which is not "
            f"installed: pip install -e .[engine] (torch_tensorrt needs a CUDA machine with TensorRT)") from exc


def stop_progress_monitor() -> None:
    """Stop tqdm's monitor thread after a build (``make_backend`` calls it). torch's exporters open tqdm bars
    (torch.fx's interpreter), which start it, and it would outlive the build, waking every 10 s; a node builds its
    units at start and must leave no thread behind when it shuts down (sag-bringup checks). The next bar starts a
    new monitor if it needs one."""
    for thread in threading.enumerate():
        if isinstance(thread, TMonitor):
            thread.exit()


# -- units ----------------------------------------------------------------------------------------

class _EmbedUnit(nn.Module):
    """``TransformerDenoiser.embed`` on its own parameters only (same attribute names, same code)."""

    def __init__(self, denoiser: TransformerDenoiser) -> None:
        super().__init__()
        self.input_emb, self.pos_emb, self.drop = denoiser.input_emb, denoiser.pos_emb, denoiser.drop

    def forward(self, noisy_action: torch.Tensor) -> torch.Tensor:
        return TransformerDenoiser.embed(self, noisy_action)  # type: ignore[arg-type]


class _OutputUnit(nn.Module):
    def __init__(self, denoiser: TransformerDenoiser) -> None:
        super().__init__()
        self.ln_f, self.head = denoiser.ln_f, denoiser.head

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return TransformerDenoiser.output(self, h)  # type: ignore[arg-type]


class _AdvanceUnit(nn.Module):
    """Between two steps' blocks: eps = output(h); x' = reverse_update(x, eps, z, c); h' = embed(x').

    One output tensor (h' then x', flattened) keeps every backend's single-output plumbing; the caller
    views it apart (:func:`split_advance`) without copying."""

    def __init__(self, embed: _EmbedUnit, output: _OutputUnit) -> None:
        super().__init__()
        self.embed, self.output = embed, output

    def forward(self, h: torch.Tensor, x: torch.Tensor, noise: torch.Tensor,
                coefficients: torch.Tensor) -> torch.Tensor:
        x_next = reverse_update(x, self.output(h), noise, coefficients)
        return torch.cat((self.embed(x_next).flatten(), x_next.flatten()))


class _ConditionUnit(nn.Module):
    """``TransformerDenoiser.observation_kv`` on the condition path's own modules (same names, same code)."""

    memory_kv = TransformerDenoiser.memory_kv

    def __init__(self, denoiser: TransformerDenoiser) -> None:
        super().__init__()
        self.cond_obs_emb, self.cond_pos_emb = denoiser.cond_obs_emb, denoiser.cond_pos_emb
        self.cond_encoder, self.drop, self.layers = denoiser.cond_encoder, denoiser.drop, denoiser.layers

    def forward(self, obs_features: torch.Tensor) -> torch.Tensor:
        return TransformerDenoiser.observation_kv(self, obs_features)  # type: ignore[arg-type]


class _EncoderUnit(nn.Module):
    """The policy's observation encoder on tensors (image and normalized state) instead of a dict."""

    def __init__(self, encoder: ObservationEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, image: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.encoder({"image": image, "state": state})


class _SelfAttentionUnit(nn.Module):
    def __init__(self, block: nn.Module, mask: torch.Tensor | None) -> None:
        super().__init__()
        self.block = block
        self.register_buffer("mask", None if mask is None else mask.clone(), persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block(h, self.mask)


class _CrossAttentionUnit(nn.Module):
    def __init__(self, block: nn.Module, mask: torch.Tensor | None) -> None:
        super().__init__()
        self.block = block
        self.register_buffer("mask", None if mask is None else mask.clone(), persistent=False)

    def forward(self, h: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return self.block(h, kv, self.mask)


class _FeedForwardUnit(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block(h)


class _BlockStackUnit(nn.Module):
    """Every sub-block of a step in order, on the same modules as the single-block units.

    Returns one stacked tensor rather than a tuple so that every backend's single-output plumbing applies;
    :func:`split_fused` unpacks it.
    """

    def __init__(self, blocks: Sequence[nn.Module], kinds: Sequence[BlockKind]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.kinds = tuple(kinds)

    def forward(self, h: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        deltas = []
        for j, (block, kind) in enumerate(zip(self.blocks, self.kinds)):
            delta = block(h, kv[j // 3]) if kind is BlockKind.CA else block(h)
            deltas.append(delta)
            h = h + delta
        return torch.stack([h, *deltas])


@dataclass(frozen=True)
class Unit:
    """One compiled unit: its name (``embed``, ``layer3.ca``, ``output``), module and static example inputs."""

    name: str
    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    kind: BlockKind | None = None  # None for embed/output
    output_shape: tuple[int, ...] = ()


def block_unit_name(index: int) -> str:
    return f"layer{index // 3}.{BlockKind(index % 3).name.lower()}"


def check_denoiser(denoiser: TransformerDenoiser, batch_size: int) -> None:
    if denoiser.training:
        raise ValueError("backends compile the denoiser for inference: call denoiser.eval() first")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")


def build_units(denoiser: TransformerDenoiser, batch_size: int = 1, fuse: bool = False,
                encoder: ObservationEncoder | None = None) -> list[Unit]:
    """``embed``, the 3L sub-blocks in execution order, [``blocks`` if ``fuse``], ``output``, ``advance``,
    ``condition``, [``encoder`` if an image encoder is given]; static example inputs."""
    check_denoiser(denoiser, batch_size)
    if encoder is not None and encoder.training:
        raise ValueError("backends compile the encoder for inference: call encoder.eval() first")
    cfg = denoiser.config
    param = denoiser.pos_emb
    like = {"dtype": param.dtype, "device": param.device}
    b, tp, d, nh = batch_size, cfg.horizon, cfg.d_model, cfg.n_heads
    h = torch.zeros(b, tp, d, **like)
    x = torch.zeros(b, tp, cfg.action_dim, **like)
    kv = torch.zeros(2, b, nh, 1 + cfg.n_obs_steps, d // nh, **like)
    embed, output = _EmbedUnit(denoiser), _OutputUnit(denoiser)
    units = [Unit(EMBED, embed, (x,), ("noisy_action",))]
    for index, layer in enumerate(denoiser.layers):
        units += [
            Unit(block_unit_name(3 * index), _SelfAttentionUnit(layer.self_attn, denoiser.self_mask), (h,), ("h",),
                 BlockKind.SA),
            Unit(block_unit_name(3 * index + 1), _CrossAttentionUnit(layer.cross_attn, denoiser.memory_mask),
                 (h, kv), ("h", "kv"), BlockKind.CA),
            Unit(block_unit_name(3 * index + 2), _FeedForwardUnit(layer.ffn), (h,), ("h",), BlockKind.FFN),
        ]
    if fuse:
        blocks = [unit for unit in units if unit.kind is not None]
        units.append(Unit(BLOCKS, _BlockStackUnit([u.module for u in blocks], [u.kind for u in blocks]),
                          (h, torch.zeros(cfg.n_layers, *kv.shape, **like)), ("h", "kv")))
    units.append(Unit(OUTPUT, output, (h,), ("h",)))
    coefficients = torch.zeros(len(STEP_COEFFICIENTS) + 2, **like)
    noise = torch.zeros_like(x)  # a distinct tensor: exporters merge inputs given as the same object
    units.append(Unit(ADVANCE, _AdvanceUnit(embed, output), (h, x, noise, coefficients),
                      ("h", "x", "noise", "coefficients")))
    features = torch.zeros(b, cfg.n_obs_steps, denoiser.cond_obs_emb.in_features, **like)
    units.append(Unit(CONDITION, _ConditionUnit(denoiser), (features,), ("obs_features",)))
    if encoder is not None and encoder.backbone is not None:
        enc = encoder.config
        image = torch.zeros(b, cfg.n_obs_steps, 3, enc.image_size, enc.image_size, **like)
        state = torch.zeros(b, cfg.n_obs_steps, enc.state_dim, **like)
        units.append(Unit(ENCODER, _EncoderUnit(encoder), (image, state), ("image", "state")))
    with torch.no_grad():
        return [replace(unit, output_shape=tuple(unit.module(*unit.example_inputs).shape)) for unit in units]


def as_block_fn(kind: BlockKind, fn: UnitFn) -> BlockFn:
    """Adapt a unit callable to the uniform block signature ``(h, kv) -> delta``."""
    if kind is BlockKind.CA:
        return fn
    return lambda h, kv: fn(h)


def split_fused(fn: UnitFn) -> FusedBlocks:
    """Adapt a ``blocks`` unit callable to the sampler's ``(h, kv) -> (h, deltas)`` (tensors or numpy arrays)."""
    def run(h: Array, kv: Array) -> tuple[Array, Sequence[Array]]:
        out = fn(h, kv)
        return out[0], out[1:]

    return run


def split_advance(fn: UnitFn, h_shape: Sequence[int], x_shape: Sequence[int]) -> Advance:
    """Adapt an ``advance`` unit callable to the sampler's ``(h, x, z, c) -> (x', h')`` (views, no copy; tensors
    or numpy arrays)."""
    split = math.prod(h_shape)

    def run(h: Array, x: Array, noise: Array, coefficients: Array) -> tuple[Array, Array]:
        out = fn(h, x, noise, coefficients)
        return out[split:].reshape(x_shape), out[:split].reshape(h_shape)

    return run


def kernels_from_units(units: Sequence[Unit], fns: Sequence[UnitFn], numpy_loop: bool = False,
                       observation_kv: UnitFn | None = None) -> DenoiserKernels:
    """Assemble :class:`DenoiserKernels` from one callable per unit (same order as :func:`build_units`).

    ``numpy_loop``: ``fns`` take and return numpy arrays; ``observation_kv`` (then required) is the tensor
    form of the ``condition`` unit, which runs once a chunk outside the loop."""
    by_name = {unit.name: fn for unit, fn in zip(units, fns, strict=True)}
    blocks = [as_block_fn(unit.kind, fn) for unit, fn in zip(units, fns) if unit.kind is not None]
    fused = by_name.get(BLOCKS)
    h, x = next(unit for unit in units if unit.name == ADVANCE).example_inputs[:2]
    if numpy_loop and observation_kv is None:
        raise ValueError("numpy_loop kernels need the tensor form of the condition unit (observation_kv)")
    condition = by_name[CONDITION] if observation_kv is None else observation_kv
    return DenoiserKernels(blocks, by_name[EMBED], by_name[OUTPUT], condition,
                           None if fused is None else split_fused(fused),
                           split_advance(by_name[ADVANCE], h.shape, x.shape), numpy_loop)


def on_arrays(fn: UnitFn) -> UnitFn:
    """A tensor callable (e.g. an eager unit) on numpy arrays, zero-copy both ways (CPU only)."""
    return lambda *inputs: fn(*map(torch.from_numpy, inputs)).numpy()


def time_calls(fn: Callable[[], Any], calls: int, warmup: int = 20) -> list[float]:
    """Microseconds of each of ``calls`` calls (CPU clock; no device synchronization), after a warm-up."""
    for _ in range(warmup):
        fn()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        start = clock()
        fn()
        samples.append((clock() - start) / 1e3)
    return samples


def unit_group(unit: Unit) -> str:
    """Units that share a graph shape and cost: ``embed``, ``SA``, ``CA``, ``FFN``, ``blocks``, ``output``."""
    return unit.kind.name if unit.kind is not None else unit.name


# -- the contract ---------------------------------------------------------------------------------

class Backend:
    """A denoiser compiled for one batch size: ``kernels`` for the sampler, plus lifetime and metadata.

    Use as a context manager or call :meth:`close`. :meth:`warmup` runs every unit once on its example
    inputs (where JIT backends compile), so the first control cycle does not pay for it.
    """

    name: str = "base"
    numpy_loop: bool = False
    """Whether the sampling loop runs on numpy arrays (:attr:`DenoiserKernels.numpy_loop`); set before binding."""

    def __init__(self, denoiser: TransformerDenoiser, batch_size: int = 1, fuse: bool = False,
                 encoder: ObservationEncoder | None = None) -> None:
        """``fuse``: also build the ``blocks`` unit, used for steps that compute every block.
        ``encoder``: the policy's observation encoder (eval mode), compiled as the ``encoder`` unit when it has
        an image backbone (:attr:`encode`)."""
        check_denoiser(denoiser, batch_size)
        self.batch_size = batch_size
        self.fuse = fuse
        self.device = denoiser.pos_emb.device
        self.units = build_units(denoiser, batch_size, fuse, encoder)
        self.eager_groups: dict[str, dict[str, float]] = {}

    def _bind(self, fns: dict[str, UnitFn], kernels: DenoiserKernels | None = None) -> None:
        """Install one callable per unit, and the sampler's kernels (built from them unless given)."""
        self._fns = fns
        self._kernels = kernels or self._make_kernels(fns)

    def _make_kernels(self, fns: dict[str, UnitFn]) -> DenoiserKernels:
        """The sampler's kernels: each unit's callable in its loop form (:meth:`_loop_form`)."""
        return kernels_from_units(self.units, [self._loop_form(fns[unit.name]) for unit in self.units],
                                  self.numpy_loop, observation_kv=fns[CONDITION])

    def _loop_form(self, fn: UnitFn) -> UnitFn:
        """A unit callable as the sampling loop calls it: itself, or with :attr:`numpy_loop` its form on numpy
        arrays (its ``arrays`` method if it has one, else :func:`on_arrays`)."""
        if not self.numpy_loop:
            return fn
        arrays = getattr(fn, "arrays", None)
        return on_arrays(fn) if arrays is None else arrays

    def loop_inputs(self, *tensors: torch.Tensor) -> tuple[Any, ...]:
        """Tensors as the loop passes them to its callables (numpy views with :attr:`numpy_loop`)."""
        return tuple(x.numpy() for x in tensors) if self.numpy_loop else tensors

    def loop_fns(self) -> dict[str, UnitFn]:
        """Unit name -> the callable the sampling loop runs, on :meth:`loop_inputs`; what per-call costs time."""
        return {name: self._loop_form(fn) for name, fn in self._fns.items()}

    @property
    def kernels(self) -> DenoiserKernels:
        return self._kernels

    @property
    def encode(self) -> UnitFn | None:
        """``(image, normalized state) -> features`` through the ``encoder`` unit, if this backend built one."""
        return self._fns.get(ENCODER)

    def unit_fns(self) -> dict[str, UnitFn]:
        """Unit name -> callable on the unit's own inputs (SA/FFN take h only); used by warmup and benches."""
        return dict(self._fns)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "batch_size": self.batch_size, "num_units": len(self.units),
                "fused_blocks": self.fuse, "eager_groups": dict(self.eager_groups), "torch": torch.__version__}

    @torch.no_grad()
    def keep_faster_units(self, calls: int = 200) -> None:
        """Per unit group, run the eager module instead of the compiled one where eager is faster (CPU only).

        A compiled call has a fixed cost (tens of µs for an ONNX Runtime ``run``) that the smallest units
        (``embed`` is one A -> d linear) do not earn back at batch 1. One unit per group is timed both ways,
        interleaved in rounds so that machine noise hits both alike; the decision applies to the whole group
        and is logged and reported by :meth:`describe` (``eager_groups``: group -> median µs of each).
        """
        if self.device.type != "cpu":
            raise ValueError("keep_faster_units times calls on the CPU clock; it is for CPU denoisers only")
        fns = dict(self._fns)
        for unit in {unit_group(u): u for u in reversed(self.units)}.values():
            inputs = self.loop_inputs(*unit.example_inputs)
            compiled_fn, eager_fn = self._loop_form(fns[unit.name]), self._loop_form(unit.module)
            compiled: list[float] = []
            eager: list[float] = []
            for _ in range(4):
                compiled += time_calls(lambda: compiled_fn(*inputs), calls // 4)
                eager += time_calls(lambda: eager_fn(*inputs), calls // 4)
            fast, slow = statistics.median(eager), statistics.median(compiled)
            if fast < slow:
                group = unit_group(unit)
                self.eager_groups[group] = {"eager_us": round(fast, 1), f"{self.name}_us": round(slow, 1)}
                fns.update({u.name: u.module for u in self.units if unit_group(u) == group})
        if self.eager_groups:
            log.info("%s: eager is faster for unit groups %s", self.name, self.eager_groups)
            self._bind(fns)

    @torch.no_grad()
    def warmup(self, iterations: int = 2) -> None:
        fns = self.unit_fns()
        for _ in range(iterations):
            for unit in self.units:
                fns[unit.name](*unit.example_inputs)

    def close(self) -> None:
        """Release sessions, engines and temporary files; the kernels must not be used afterwards."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
