"""``torch.compile`` per unit (inductor, static shapes).

Units of one kind share their Python code, and inductor lifts parameters to graph inputs, so the 3L
blocks compile into about five graphs (embed, SA, CA, FFN, output), plus one for the fused step; the other
instances reuse them.
Compilation happens on first call: :meth:`warmup` (called by ``make_backend`` by default) pays it up front.
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm import tqdm

from sag_ros.engine.base import Backend
from sag_ros.policy.denoiser import TransformerDenoiser
from sag_ros.policy.encoder import ObservationEncoder


class CompiledBackend(Backend):
    name = "compile"

    def __init__(self, denoiser: TransformerDenoiser, batch_size: int = 1, mode: str | None = None,
                 fullgraph: bool = True, fuse: bool = True, encoder: ObservationEncoder | None = None) -> None:
        """``mode``: a ``torch.compile`` mode (``None`` = default; ``"reduce-overhead"`` adds CUDA graphs on GPU).
        ``fuse``: compile a whole step's blocks as one graph too (used for steps that compute every block)."""
        super().__init__(denoiser, batch_size, fuse, encoder)
        self.mode = mode
        self._fns = {unit.name: torch.compile(unit.module, backend="inductor", mode=mode, dynamic=False,
                                              fullgraph=fullgraph)
                     for unit in self.units}
        self._bind(self._fns)

    def warmup(self, iterations: int = 2) -> None:
        """The first call of each unit compiles it (tens of seconds in all): with a progress bar."""
        fns = self.unit_fns()
        with torch.no_grad():
            for unit in tqdm(self.units, desc="torch.compile", unit="unit"):
                fns[unit.name](*unit.example_inputs)
        super().warmup(iterations)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "compiler": "inductor", "mode": self.mode or "default", "dynamic": False}
