"""The ``advance`` unit (output head, scheduler update, next embedding) as one numba kernel, for numpy loops.

``advance`` runs once per denoising step, dense or sparse: 100 calls a DDPM chunk. Its math is tiny (LayerNorm
over [Tp, d], a d -> A head, the update on [Tp, A], an A -> d embedding: ~20 K FLOPs at the shipped size), so
as a graph its cost is ONNX Runtime's per-node dispatch: 17 nodes, ~33 µs a call, about 3 ms of a 20 ms SAG
chunk at rho = 0.9. Written as one loop nest and compiled by numba it takes ~4 µs, of which ~1 µs is the call.

The kernel computes what :class:`~sag_ros.engine.base._AdvanceUnit` computes (tested against it), in the
unit's dtype, with the LayerNorm's affine parameters and the embedding's bias and positional embedding read
from the same modules, and returns the unit's one flat output (h' then x'), so it is a drop-in unit callable.
numba is optional: without it, the backend keeps the ONNX Runtime graph.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


def available() -> bool:
    """Whether numba imports (the kernel compiles on first use, ~1 s, then comes from numba's disk cache). A numba
    that is installed but cannot import (built for another NumPy) counts as absent, with a warning."""
    if importlib.util.find_spec("numba") is None:
        return False
    try:
        import numba  # noqa: F401
    except ImportError as exc:
        log.warning("numba is installed but does not import (%s); advance stays an ONNX Runtime graph", exc)
        return False
    return True


def _kernel_source(h: np.ndarray, x: np.ndarray, noise: np.ndarray, c: np.ndarray, gamma: np.ndarray,
                   beta: np.ndarray, ln_eps: float, w_head: np.ndarray, b_head: np.ndarray, w_in: np.ndarray,
                   token_bias: np.ndarray) -> np.ndarray:
    """Plain-Python body that numba compiles (see :func:`_compiled`): per token, LayerNorm then the head's A dot
    products, the clipped update (:func:`~sag_ros.policy.scheduler.reverse_update`, ``c`` is its [8] row), and
    the embedding of the new sample. ``w_head`` is the head's [A, d] weight, ``w_in`` the embedding's transposed
    [A, d], ``token_bias`` the embedding's bias plus the positional embedding [Tp, d]. Inner loops run along d
    (contiguous), so they vectorize."""
    batch, tokens, width = h.shape
    actions = x.shape[2]
    out = np.empty(batch * tokens * (width + actions), h.dtype)
    h_next = out[:batch * tokens * width].reshape(batch, tokens, width)
    x_next = out[batch * tokens * width:].reshape(batch, tokens, actions)
    normed = np.empty(width, h.dtype)
    for b in range(batch):
        for t in range(tokens):
            row = h[b, t]
            mean = row.sum() / width  # statistics in float64, as the division promotes them
            var = 0.0
            for d in range(width):
                centred = row[d] - mean
                normed[d] = centred
                var += centred * centred
            inv_std = 1.0 / np.sqrt(var / width + ln_eps)
            for d in range(width):
                normed[d] = normed[d] * inv_std * gamma[d] + beta[d]
            embedded = h_next[b, t]
            embedded[:] = token_bias[t]
            for a in range(actions):
                eps = b_head[a]
                head = w_head[a]
                for d in range(width):
                    eps += normed[d] * head[d]
                xa = x[b, t, a]
                x0 = min(max(xa * c[0] - eps * c[1], c[6]), c[7])
                xa_next = x0 * c[2] + xa * c[3] + eps * c[4] + noise[b, t, a] * c[5]
                x_next[b, t, a] = xa_next
                column = w_in[a]
                for d in range(width):
                    embedded[d] += xa_next * column[d]
    return out


@functools.cache
def _compiled() -> Any:
    """The numba-compiled kernel (built once per process; ``cache=True`` keeps the machine code on disk).
    ``fastmath`` lets the reductions over d vectorize: sums in another order, same values to float rounding."""
    import numba

    return numba.njit(cache=True, fastmath=True, boundscheck=False)(_kernel_source)


class NumbaAdvance:
    """The ``advance`` unit of a denoiser as a numba kernel: ``arrays(h, x, noise, coefficients)`` on numpy
    arrays (what a numpy loop calls) and ``__call__`` on CPU tensors (what warm-up and unit benches call)."""

    def __init__(self, ln_f: nn.LayerNorm, head: nn.Linear, input_emb: nn.Linear, pos_emb: torch.Tensor) -> None:
        if ln_f.weight is None or ln_f.bias is None:
            raise ValueError("NumbaAdvance needs the output LayerNorm's affine weight and bias")

        def array(t: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(t.detach().cpu().numpy())

        self.gamma, self.beta, self.ln_eps = array(ln_f.weight), array(ln_f.bias), float(ln_f.eps)
        self.w_head, self.b_head = array(head.weight), array(head.bias)  # [A, d], [A]
        self.w_in = array(input_emb.weight.T)  # [A, d]
        self.token_bias = array(input_emb.bias + pos_emb[0])  # [Tp, d]
        self._kernel = _compiled()

    @classmethod
    def from_unit(cls, module: nn.Module) -> "NumbaAdvance":
        """From an ``_AdvanceUnit`` (its ``output`` and ``embed`` submodules hold the parameters)."""
        return cls(module.output.ln_f, module.output.head, module.embed.input_emb, module.embed.pos_emb)

    def arrays(self, h: np.ndarray, x: np.ndarray, noise: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
        return self._kernel(h, x, noise, coefficients, self.gamma, self.beta, self.ln_eps, self.w_head,
                            self.b_head, self.w_in, self.token_bias)

    def __call__(self, h: torch.Tensor, x: torch.Tensor, noise: torch.Tensor,
                 coefficients: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.arrays(h.numpy(), x.numpy(), noise.numpy(), coefficients.numpy()))
