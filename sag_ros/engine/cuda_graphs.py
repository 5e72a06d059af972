"""CUDA graphs of a denoising step's blocks, one per distinct mask row, captured once and replayed.

At batch 1 on a GPU a sub-block is a dozen kernel launches of a few microseconds each: the launches, not the
arithmetic, set the step time. What a step's blocks do is fixed by its mask row (which blocks compute, which
add a cached delta), a dense chunk repeats one row and a pruner's masks reuse a few hundred distinct rows, so
:class:`StepGraphs` captures each row it meets as a CUDA graph over static buffers and replays it afterwards:

- before a replay, the residual stream ``h`` and the step's keys/values are copied into static inputs;
- the reuse cache lives in static slot tensors (3 for one-for-all reuse, 3L for per-block reuse): a computed
  block overwrites its slot inside the graph, a pruned block adds it, exactly as
  :class:`~sag_ros.sparse.sampler.SparseRunner` does with its :class:`~sag_ros.sparse.cache.ReuseCache`;
- the returned stream is the graph's static output, valid until the next replay (the sampler's ``advance``
  consumes it first).

The first mask row must compute every block (as every planner's masks do), so every slot holds a delta before a
graph reads one. Without CUDA (``use_graphs=False``, the tests) the same row programs run eagerly on the same
static buffers: the semantics are checked on the CPU; capture and replay only where a GPU is.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from sag_ros.policy.denoiser import BlockFn
from sag_ros.policy.sampling import BlockRunner, StepKV
from sag_ros.sparse.cache import ReuseKind, slot_of
from sag_ros.sparse.mask import held_steps, validate_mask

Row = tuple[bool, ...]


class StepGraphs:
    """Per-row programs of one backend's blocks on static buffers; CUDA graphs of them on a CUDA device."""

    def __init__(self, block_fns: Sequence[BlockFn], reuse: ReuseKind | str, h_example: torch.Tensor,
                 kv_example: torch.Tensor, use_graphs: bool | None = None, warmup: int = 2) -> None:
        """``h_example`` [B, Tp, d] and ``kv_example`` [L, 2, B, nh, S, hs] fix the static shapes and device.
        ``use_graphs``: capture CUDA graphs (None: when the buffers are on a CUDA device)."""
        self._fns = list(block_fns)
        self._slot_of = [slot_of(reuse, j) for j in range(len(self._fns))]
        self._slots = torch.zeros((max(self._slot_of) + 1, *h_example.shape), dtype=h_example.dtype,
                                  device=h_example.device)
        self._h = torch.zeros_like(h_example)
        self._kv = torch.zeros_like(kv_example)
        self._layer_kv = self._kv.unbind(0)  # views into the static buffer, fixed for capture
        self.use_graphs = h_example.device.type == "cuda" if use_graphs is None else use_graphs
        if self.use_graphs and h_example.device.type != "cuda":
            raise ValueError(f"CUDA graphs need CUDA buffers, got {h_example.device}")
        self._warmup = warmup
        self._pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self._steps: dict[Row, Callable[[], torch.Tensor]] = {}

    @property
    def captured(self) -> int:
        """Distinct rows seen so far (= CUDA graphs captured, when graphs are used)."""
        return len(self._steps)

    def runner(self, mask: torch.Tensor, hold_x0: bool = False) -> BlockRunner:
        """A block runner for one chunk's mask [K, 3L] (True = pruned). ``hold_x0``: steps whose every block is
        pruned run nothing (``held_steps``, as :class:`~sag_ros.sparse.sampler.SparseRunner`), so no graph is
        captured for them."""
        rows: list[Row] = [tuple(row) for row in validate_mask(mask, len(mask), len(self._fns)).tolist()]
        if any(rows[0]):
            raise ValueError("the first mask row must compute every block: the cache slots start empty")
        held = held_steps(rows) if hold_x0 else None
        steps = [None if held and held[k] else self._step(row) for k, row in enumerate(rows)]

        def run(k: int, h: torch.Tensor, layer_kv: StepKV) -> torch.Tensor:
            self._h.copy_(h)
            self._kv.copy_(layer_kv.stacked)
            return steps[k]()

        run.held_steps = held  # read by the sampling loop (sampling.held_steps_of)
        return run

    def _step(self, row: Row) -> Callable[[], torch.Tensor]:
        step = self._steps.get(row)
        if step is None:
            program = self._program(row)
            step = self._steps[row] = self._capture(program) if self.use_graphs else program
        return step

    def _program(self, row: Row) -> Callable[[], torch.Tensor]:
        """The row's blocks on the static buffers: computed blocks store into their slot, pruned ones add it."""
        work = [(j, self._fns[j], self._slots[self._slot_of[j]], self._layer_kv[j // 3], pruned)
                for j, pruned in enumerate(row)]

        def program() -> torch.Tensor:
            h = self._h
            for _, fn, slot, kv, pruned in work:
                if pruned:
                    h = h + slot
                else:
                    delta = fn(h, kv)
                    slot.copy_(delta)
                    h = h + delta
            return h

        return program

    @torch.no_grad()
    def _capture(self, program: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        """Warm up on a side stream (as torch requires before capture), capture, and restore the slots the
        warm-up overwrote: the first replay then continues the chunk from the cache state it found."""
        saved = self._slots.clone()
        stream = torch.cuda.Stream(self._h.device)
        stream.wait_stream(torch.cuda.current_stream(self._h.device))
        with torch.cuda.stream(stream):
            for _ in range(self._warmup):
                program()
        torch.cuda.current_stream(self._h.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = program()
        self._slots.copy_(saved)

        def replay() -> torch.Tensor:
            graph.replay()
            return out

        return replay
