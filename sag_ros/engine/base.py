"""The backend contract and the compiled unit: one residual sub-block, plus ``embed`` and ``output``
(and optionally ``blocks``, every sub-block of a step fused into one call).

SAG decides per (denoising step, sub-block) at run time whether a block runs, so a backend compiles
each sub-block on its own and leaves gating, caches and the loop in Python (:mod:`sag_ros.policy.sampling`).
A backend turns a :class:`TransformerDenoiser` in eval mode, at a fixed batch size B, horizon Tp and
memory length S = 1 + To, into :class:`DenoiserKernels` with the eager semantics:

- ``block_fns[j](h, kv) -> delta``: h [B, Tp, d]; kv [2, B, nh, S, hs] (used by CA, ignored by SA/FFN);
- ``embed(noisy_action [B, Tp, A]) -> h``; ``output(h) -> eps [B, Tp, A]``;
- ``blocks(h, kv [L, 2, B, nh, S, hs]) -> [1 + 3L, B, Tp, d]`` (fused backends only): the residual stream after
  all 3L blocks, then each block's delta (SAG caches need them). At batch 1 a unit call costs tens of µs
  whatever its size, so a dense step as one call instead of 3L is most of what a compiler can win.

Every unit is a small :class:`nn.Module` with tensor-only inputs (its attention mask is a constant
buffer), so ``torch.compile``, ``torch.onnx.export`` and ``torch.export`` all see the same graph.
"""

from __future__ import annotations

import importlib
import logging
import statistics
import time
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any, Callable, Sequence

import torch
from torch import nn

from sag_ros.policy.blocks import BlockKind
from sag_ros.policy.denoiser import BlockFn, TransformerDenoiser
from sag_ros.policy.sampling import DenoiserKernels, FusedBlocks

log = logging.getLogger(__name__)

EMBED = "embed"
OUTPUT = "output"
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


def build_units(denoiser: TransformerDenoiser, batch_size: int = 1, fuse: bool = False) -> list[Unit]:
    """``embed``, the 3L sub-blocks in execution order, [``blocks`` if ``fuse``], ``output``; static example inputs."""
    check_denoiser(denoiser, batch_size)
    cfg = denoiser.config
    param = denoiser.pos_emb
    like = {"dtype": param.dtype, "device": param.device}
    b, tp, d, nh = batch_size, cfg.horizon, cfg.d_model, cfg.n_heads
    h = torch.zeros(b, tp, d, **like)
    kv = torch.zeros(2, b, nh, 1 + cfg.n_obs_steps, d // nh, **like)
    units = [Unit(EMBED, _EmbedUnit(denoiser), (torch.zeros(b, tp, cfg.action_dim, **like),), ("noisy_action",))]
    for index, layer in enumerate(denoiser.layers):
        units += [
            Unit(block_unit_name(3 * index), _SelfAttentionUnit(layer.self_attn, denoiser.self_mask), (h,), ("h",),
                 BlockKind.SA),
            Unit(block_unit_name(3 * index + 1), _CrossAttentionUnit(layer.cross_attn, denoiser.memory_mask),
                 (h, kv), ("h", "kv"), BlockKind.CA),
            Unit(block_unit_name(3 * index + 2), _FeedForwardUnit(layer.ffn), (h,), ("h",), BlockKind.FFN),
        ]
    if fuse:
        blocks = units[1:]
        units.append(Unit(BLOCKS, _BlockStackUnit([u.module for u in blocks], [u.kind for u in blocks]),
                          (h, torch.zeros(cfg.n_layers, *kv.shape, **like)), ("h", "kv")))
    units.append(Unit(OUTPUT, _OutputUnit(denoiser), (h,), ("h",)))
    with torch.no_grad():
        return [replace(unit, output_shape=tuple(unit.module(*unit.example_inputs).shape)) for unit in units]


def as_block_fn(kind: BlockKind, fn: UnitFn) -> BlockFn:
    """Adapt a unit callable to the uniform block signature ``(h, kv) -> delta``."""
    if kind is BlockKind.CA:
        return fn
    return lambda h, kv: fn(h)


def split_fused(fn: UnitFn) -> FusedBlocks:
    """Adapt a ``blocks`` unit callable to the sampler's ``(h, kv) -> (h, deltas)``."""
    def run(h: torch.Tensor, kv: torch.Tensor) -> tuple[torch.Tensor, Sequence[torch.Tensor]]:
        final, *deltas = fn(h, kv).unbind(0)
        return final, deltas

    return run


def kernels_from_units(units: Sequence[Unit], fns: Sequence[UnitFn]) -> DenoiserKernels:
    """Assemble :class:`DenoiserKernels` from one callable per unit (same order as :func:`build_units`)."""
    by_name = {unit.name: fn for unit, fn in zip(units, fns, strict=True)}
    blocks = [as_block_fn(unit.kind, fn) for unit, fn in zip(units, fns) if unit.kind is not None]
    fused = by_name.get(BLOCKS)
    return DenoiserKernels(blocks, by_name[EMBED], by_name[OUTPUT], None if fused is None else split_fused(fused))


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

    def __init__(self, denoiser: TransformerDenoiser, batch_size: int = 1, fuse: bool = False) -> None:
        """``fuse``: also build the ``blocks`` unit, used for steps that compute every block."""
        check_denoiser(denoiser, batch_size)
        self.batch_size = batch_size
        self.fuse = fuse
        self.device = denoiser.pos_emb.device
        self.units = build_units(denoiser, batch_size, fuse)
        self.eager_groups: dict[str, dict[str, float]] = {}

    def _bind(self, fns: dict[str, UnitFn], kernels: DenoiserKernels | None = None) -> None:
        """Install one callable per unit, and the sampler's kernels (built from them unless given)."""
        self._fns = fns
        self._kernels = kernels or kernels_from_units(self.units, [fns[unit.name] for unit in self.units])

    @property
    def kernels(self) -> DenoiserKernels:
        return self._kernels

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
            inputs = unit.example_inputs
            compiled: list[float] = []
            eager: list[float] = []
            for _ in range(4):
                compiled += time_calls(lambda: fns[unit.name](*inputs), calls // 4)
                eager += time_calls(lambda: unit.module(*inputs), calls // 4)
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
