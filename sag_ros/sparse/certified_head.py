"""The pruner's mask, decided exactly at a fraction of its cost: a Lipschitz certificate around an anchor.

Per chunk, :class:`~sag_ros.sparse.pruner.PrunerMaskHead` runs its MLP over every (step, block) cell: a
[K*3L, hidden] pass that costs about 1 % of a dense chunk on ONNX Runtime. But only the *sign* of each cell's
margin (prune minus keep logit) matters, and the observation enters the head in one place: a vector v added to
every row of the index table before ``Mish -> Linear(W) -> Mish -> . w``. A cell's margin therefore moves by at
most ``L * |v - v_a|`` when v moves away from an anchor v_a, with ``L = |w| * s * |W|_2 * s`` (s: the largest slope
of Mish). A cell whose anchor margin is larger than that cannot have flipped; only the others are evaluated.
Consecutive chunks of one episode see nearby observations, so most cells are settled without touching the MLP
(on the default Push-T policy: 97 % of the step-level pruner's steps, ~80 % of a per-block pruner's cells).

The decisions are the full head's (up to float rounding, which ``tolerance`` covers); only the cost changes. When
too many cells are uncertain, the head evaluates every cell and makes this observation the new anchor.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sag_ros.sparse.pruner import Mish, PrunerMaskHead

MISH_MAX_SLOPE = 1.089
"""An upper bound of |d Mish(x) / dx| over all x (the maximum is 1.08850 at x = 1.4906)."""


def margin_lipschitz(head: PrunerMaskHead) -> float:
    """L such that every cell's margin moves by at most L * |dv| (2-norm) when the observation vector moves by dv."""
    first, linear, second = head.hidden
    if not (isinstance(first, Mish) and isinstance(linear, nn.Linear) and isinstance(second, Mish)):
        raise TypeError(f"the certificate is derived for Mish -> Linear -> Mish, not {head.hidden}")
    weight_norm = torch.linalg.matrix_norm(linear.weight.detach().double(), ord=2)
    return float(head.margin_weight.double().norm() * MISH_MAX_SLOPE * weight_norm * MISH_MAX_SLOPE)


def _mish(x: np.ndarray) -> np.ndarray:
    """Mish as :class:`~sag_ros.sparse.pruner.Mish` computes it without gradients: x * n / (n + 2), n = e^x (e^x + 2)."""
    e = np.minimum(x, 20.0)
    np.exp(e, out=e)
    n = e + 2.0
    n *= e
    e[...] = n  # e is free again: the denominator n + 2 goes there, in place (fewer fresh arrays to fault in)
    e += 2.0
    n /= e
    n *= x
    return n


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32, copy=True)


class CertifiedMaskHead:
    """Observation features [1, To, F] -> the same hard mask [1, K, 3L] (a CPU tensor) as ``head``, evaluating only
    the decision units (cells; whole steps for a step-level head) whose decision the anchor cannot certify.

    It runs on numpy copies of the head's weights: per chunk it is a few dozen operations on vectors and a few
    small matrices, where torch's per-operation dispatch (~4 us) cost more than the arithmetic (0.23 ms a chunk
    in torch against 0.07 in numpy, measured on the step-level pruner). Stateful (the anchor): one per planner,
    batch 1. ``reanchor_fraction``: share of uncertain units above which every unit is evaluated and the anchor
    moves here, since a partial pass over that many would cost nearly as much and certify nothing new."""

    def __init__(self, head: PrunerMaskHead, reanchor_fraction: float = 0.25, tolerance: float = 1e-4) -> None:
        if head.obs_proj is None:
            raise ValueError("a static pruner's mask does not depend on the observation: nothing to certify")
        self.lipschitz = margin_lipschitz(head)
        self.reanchor_fraction = reanchor_fraction
        self.tolerance = tolerance
        into, _, out = head.obs_proj  # Linear(features -> obs_dim), Mish, Linear(obs_dim -> hidden, no bias)
        self._obs = (_numpy(into.weight).T.copy(), _numpy(into.bias), _numpy(out.weight).T.copy())
        linear = head.hidden[1]
        self._hidden = (_numpy(linear.weight).T.copy(), _numpy(linear.bias), _numpy(head.margin_weight)[:, 0])
        self.grid = head.grid
        per_unit = head.grid[1] if head.granularity == "step" else 1  # rows whose mean margin decides a unit
        self._rows = _numpy(head.table).reshape(-1, per_unit, head.table.shape[1])  # [units, rows per unit, hidden]
        self._offsets = _numpy(head.margin_offset).reshape(-1, per_unit)
        # hierarchical: a step's hold margin is the mean of its cells' margins plus an offset, as Lipschitz as they
        self._step_offsets = _numpy(head.step_offset) if head.step_offset is not None else None
        self._step_budget = head.step_budget
        self._anchor: tuple[np.ndarray, np.ndarray] | None = None  # (v_a [hidden], unit margins [units])
        self._anchor_holds: np.ndarray | None = None  # hierarchical: hold margins [K] at the anchor
        self.calls = self.full_evaluations = self.units_evaluated = 0

    def _observation_vector(self, obs_features: torch.Tensor) -> np.ndarray:
        w1, b1, w2 = self._obs
        x = obs_features.detach().cpu().numpy().reshape(-1)
        v = _mish(x @ w1 + b1) @ w2
        if not np.isfinite(v).all():  # a NaN radius would certify every cell: stale decisions, silently
            raise ValueError("the pruner's observation vector is not finite (NaN or inf in the observation features)")
        return v

    def _unit_margins(self, v: np.ndarray, units: np.ndarray | None = None) -> np.ndarray:
        """Margins of the given units (default: all) at observation vector v."""
        rows, offsets = (self._rows, self._offsets) if units is None else (self._rows[units], self._offsets[units])
        weight, bias, margin_weight = self._hidden
        flat = (rows + v).reshape(-1, rows.shape[2])  # one GEMM: numpy's matmul over a stack of matrices loops
        margins = _mish(_mish(flat) @ weight + bias) @ margin_weight
        return (margins.reshape(offsets.shape) + offsets).mean(axis=1)

    def __call__(self, obs_features: torch.Tensor) -> torch.Tensor:
        if obs_features.shape[0] != 1:
            raise ValueError(f"CertifiedMaskHead decides one observation at a time, got {obs_features.shape[0]}")
        self.calls += 1
        v = self._observation_vector(obs_features)
        decided = self._certified(v) if self._anchor is not None else None
        if decided is None:
            margins = self._unit_margins(v)
            holds = self._hold_margins(margins)
            self._anchor, self._anchor_holds = (v, margins), holds
            self.full_evaluations += 1
            self.units_evaluated += len(margins)
        else:
            margins, holds = decided
        pruned = np.broadcast_to((margins > 0).reshape(self.grid[0], -1), self.grid).copy()
        if holds is not None:
            pruned |= self._held_steps(holds)[:, None]
        pruned[0] = False  # the first step always computes (nothing is cached yet)
        return torch.from_numpy(pruned)[None]

    def _hold_margins(self, cell_margins: np.ndarray) -> np.ndarray | None:
        """A hierarchical head's hold margin per step from its exact cell margins; None for other heads."""
        if self._step_offsets is None:
            return None
        return cell_margins.reshape(self.grid).mean(axis=1) + self._step_offsets

    def _certified(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Margins whose signs are right at v (exact for the uncertain units, the anchor's elsewhere), or None when
        too many units are uncertain. A hierarchical head's uncertain steps get every cell evaluated, so their hold
        margins are exact too. Under a step budget only the ranking of the hold margins counts: it stands while the
        gap between the last computed step's margin and the next one's is wider than both can move (2 radii);
        otherwise every unit is evaluated."""
        anchor_v, anchor_margins = self._anchor
        radius = self.lipschitz * float(np.linalg.norm(v - anchor_v)) + self.tolerance
        uncertain_units = np.abs(anchor_margins) <= radius
        uncertain_steps = None
        if self._anchor_holds is not None and self._step_budget is None:
            uncertain_steps = np.abs(self._anchor_holds) <= radius
            uncertain_units = uncertain_units | np.repeat(uncertain_steps, self.grid[1])
        elif self._anchor_holds is not None and not self._ranking_certain(radius):
            return None
        uncertain = np.flatnonzero(uncertain_units)
        if len(uncertain) > self.reanchor_fraction * len(anchor_margins):
            return None
        margins, holds = anchor_margins, self._anchor_holds
        if len(uncertain):
            margins = margins.copy()
            margins[uncertain] = self._unit_margins(v, uncertain)
            self.units_evaluated += len(uncertain)
            if uncertain_steps is not None and uncertain_steps.any():
                holds = holds.copy()
                holds[uncertain_steps] = self._hold_margins(margins)[uncertain_steps]
        return margins, holds

    def _held_steps(self, hold_margins: np.ndarray) -> np.ndarray:
        """:func:`~sag_ros.sparse.pruner.held_steps_from_margins` in numpy, as the rest of the per-chunk path."""
        if self._step_budget is None:
            return hold_margins > 0
        held = np.ones(len(hold_margins), dtype=bool)
        held[0] = False
        if self._step_budget > 1:
            held[1 + np.argpartition(hold_margins[1:], self._step_budget - 2)[:self._step_budget - 1]] = False
        return held

    def _ranking_certain(self, radius: float) -> bool:
        """Whether the anchor's budgeted choice of steps stands for hold margins each within ``radius`` of it."""
        later, chosen = self._anchor_holds[1:], self._step_budget - 1
        if chosen <= 0 or chosen >= len(later):
            return True  # nothing to rank: no later step computes, or all do
        ordered = np.partition(later, (chosen - 1, chosen))
        return bool(ordered[chosen] - ordered[chosen - 1] > 2 * radius)

    def stats(self) -> dict[str, float]:
        """How much of the grid was evaluated over the calls so far: how the tests check that the certificate
        path ran, and where README's evaluated shares (3 % of steps, 17-23 % of cells) come from."""
        units = self.calls * len(self._rows)
        return {"calls": self.calls, "full_evaluations": self.full_evaluations,
                "evaluated_fraction": self.units_evaluated / units if units else 0.0}
