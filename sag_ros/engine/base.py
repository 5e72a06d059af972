"""The backend contract and the compiled unit: one residual sub-block, plus ``embed`` and ``output``.

SAG decides per (denoising step, sub-block) at run time whether a block runs, so a backend compiles
each sub-block on its own and leaves gating, caches and the loop in Python (:mod:`sag_ros.policy.sampling`).
A backend turns a :class:`TransformerDenoiser` in eval mode, at a fixed batch size B, horizon Tp and
memory length S = 1 + To, into :class:`DenoiserKernels` with the eager semantics:

- ``block_fns[j](h, kv) -> delta``: h [B, Tp, d]; kv [2, B, nh, S, hs] (used by CA, ignored by SA/FFN);
- ``embed(noisy_action [B, Tp, A]) -> h``; ``output(h) -> eps [B, Tp, A]``.

Every unit is a small :class:`nn.Module` with tensor-only inputs (its attention mask is a constant
buffer), so ``torch.compile``, ``torch.onnx.export`` and ``torch.export`` all see the same graph.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any, Callable, Sequence

import torch
from torch import nn

from sag_ros.policy.blocks import BlockKind
from sag_ros.policy.denoiser import BlockFn, TransformerDenoiser
from sag_ros.policy.sampling import DenoiserKernels

EMBED = "embed"
OUTPUT = "output"
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


def build_units(denoiser: TransformerDenoiser, batch_size: int = 1) -> list[Unit]:
    """``embed``, the 3L sub-blocks in execution order, ``output``; example inputs at static shapes."""
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
    units.append(Unit(OUTPUT, _OutputUnit(denoiser), (h,), ("h",)))
    with torch.no_grad():
        return [replace(unit, output_shape=tuple(unit.module(*unit.example_inputs).shape)) for unit in units]


def as_block_fn(kind: BlockKind, fn: UnitFn) -> BlockFn:
    """Adapt a unit callable to the uniform block signature ``(h, kv) -> delta``."""
    if kind is BlockKind.CA:
        return fn
    return lambda h, kv: fn(h)


def kernels_from_units(units: Sequence[Unit], fns: Sequence[UnitFn]) -> DenoiserKernels:
    """Assemble :class:`DenoiserKernels` from one callable per unit (same order as :func:`build_units`)."""
    by_name = {unit.name: fn for unit, fn in zip(units, fns, strict=True)}
    blocks = [as_block_fn(unit.kind, fn) for unit, fn in zip(units, fns) if unit.kind is not None]
    return DenoiserKernels(blocks, by_name[EMBED], by_name[OUTPUT])


# -- the contract ---------------------------------------------------------------------------------

class Backend:
    """A denoiser compiled for one batch size: ``kernels`` for the sampler, plus lifetime and metadata.

    Use as a context manager or call :meth:`close`. :meth:`warmup` runs every unit once on its example
    inputs (where JIT backends compile), so the first control cycle does not pay for it.
    """

    name: str = "base"

    def __init__(self, denoiser: TransformerDenoiser, batch_size: int = 1) -> None:
        check_denoiser(denoiser, batch_size)
        self.batch_size = batch_size
        self.units = build_units(denoiser, batch_size)

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
                "torch": torch.__version__}

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
