"""The observation-conditioned pruner G(o): one forward pass per chunk predicts the whole SAG mask.

Index branch (observation-independent): sinusoidal embeddings of the step index k and the block index j,
summed per (k, j) cell, through a small transformer encoder over all K x 3L cells. Observation branch:
the policy's own observation features (no second encoder), flattened and projected. A 3-layer MLP over
[index embedding ; observation embedding] gives two logits per cell (compute, prune), plus a learned per-cell
offset on the prune logit; the gate is the hard argmax with a straight-through softmax gradient.
With ``granularity="step"`` the two logits are averaged over each step's blocks, so a step computes all of its
blocks or none: an observation-conditioned choice of denoising steps (see :class:`PrunerConfig`). With
``granularity="hierarchical"`` a step-level decision (the step's mean logits plus a learned per-step offset) says
whether the step is held, and the per-block decisions apply inside the steps that are not; with a ``step_budget``
the steps compete instead: the first step and the budget - 1 others with the lowest hold margins compute, so every
observation gets the same number of steps and the observation decides only where they go.

The MLP's first layer is linear in the concatenation, so it splits into W_idx e_idx + W_obs e_obs. In
eval mode the index half, the whole transformer included, is computed once and cached (a [K*3L, hidden]
table); per chunk the pruner then costs one small projection, one [K*3L, hidden] x [hidden, hidden] GEMM, two
activations over the grid and a matrix-vector product (:class:`PrunerMaskHead`), and at run time only for the
cells whose decision the observation may have changed (:mod:`sag_ros.sparse.certified_head`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sag_ros.policy.denoiser import sinusoidal_embedding
from sag_ros.sparse.mask import with_first_step_computed


GRANULARITIES = ("block", "step", "hierarchical")


@dataclass
class PrunerConfig:
    """Sizes of G(o). ``use_observation=False`` gives the learned static mask baseline (L2C-style)."""

    num_steps: int = 100
    num_blocks: int = 24
    obs_feature_dim: int = 132  # To x feature_dim of the policy
    index_dim: int = 32
    index_layers: int = 1
    index_heads: int = 2
    obs_dim: int = 32
    hidden_dim: int = 64
    use_observation: bool = True
    init_prune_rate: float = 0.5  # the hard gate thresholds at 0.5, so this biases which way cells start
    granularity: str = "block"
    """``block``: one decision per (step, block) cell, as in the paper. ``step``: one per step, shared by its blocks,
    so a step runs whole or not at all: one fused call where the backend fuses a step, instead of one call per
    block. On the default Push-T policy the step-level pruner is the best of the pruners tried at 10 % of blocks, level
    with interval caching n=10 over 750 episodes (README). ``hierarchical``: a step decision (hold the whole step)
    over block decisions (inside the steps that compute), for samplers that hold skipped steps (``hold_x0``). With
    block gates alone, a held step is the minimum of its block gates, whose straight-through gradient (the gates'
    mean) cannot see that computing one block un-holds the whole step: block-wise pruners trained for held steps
    drifted away from their own objective (README, stop 32). The step gate has a gradient of its own, taken against
    what the step gives when it runs the blocks its block gates choose (:class:`~sag_ros.sparse.sampler.GatedRunner`)."""
    step_budget: int | None = None
    """``hierarchical`` only: computed steps per chunk, the first included (None: each step decides alone). Trained
    against a target rate alone, conditioned pruners meant for two steps a chunk swung between pruning 9 % and 99 %
    from batch to batch: the observation branch shifts every step's margin at once (docs/results.md, stop 40). A
    budget makes the steps compete for a fixed number of places, so only the ranking, and hence the placement,
    depends on the observation."""

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"pruner.granularity={self.granularity!r} must be one of {', '.join(GRANULARITIES)}")
        if not 0.0 < self.init_prune_rate < 1.0:
            raise ValueError(f"pruner.init_prune_rate={self.init_prune_rate} must be in (0, 1)")
        if self.step_budget is not None:
            if self.granularity != "hierarchical":
                raise ValueError(f"pruner.step_budget ranks steps by their hold margins: it needs granularity="
                                 f"'hierarchical', not {self.granularity!r}")
            if not 1 <= self.step_budget <= self.num_steps:
                raise ValueError(f"pruner.step_budget={self.step_budget} must be in [1, {self.num_steps}] steps")
        if self.index_dim % self.index_heads:
            raise ValueError(f"pruner.index_dim={self.index_dim} must be divisible by index_heads={self.index_heads}")


class Mish(nn.Module):
    """x * tanh(softplus(x)), the function of :class:`torch.nn.Mish`. torch's fused CPU mish kernel is several times
    slower at one thread (1.1 ms on the pruner's [K*3L, hidden] = [2400, 64] activations, measured here), and the
    pruner applies it twice a chunk. With gradients it is the composition (0.45-0.6 ms); without (every chunk at
    inference) it uses tanh(softplus(x)) = n / (n + 2) with n = e^x (e^x + 2): one exp, and arithmetic in place
    on fresh buffers (0.3 ms). No parameters, so checkpoints written with ``nn.Mish`` load unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:  # in-place arithmetic would overwrite what autograd saves
            return x * torch.tanh(F.softplus(x))
        e = x.clamp(max=20.0).exp_()  # beyond 20, n / (n + 2) is 1 in float32 and e^(2x) would overflow
        n = (e + 2.0).mul_(e)
        return n.div_(n + 2.0).mul_(x)


def mlp_input(table: torch.Tensor, obs_proj: nn.Module | None, obs_features: torch.Tensor) -> torch.Tensor:
    """The MLP's first layer before its activation: the index table [K*3L, hidden] plus, for an observation-
    conditioned pruner, the projected observation features [B, To, F] -> [B, K*3L, hidden]."""
    table = table[None]
    if obs_proj is not None:
        table = table + obs_proj(obs_features.flatten(1))[:, None, :]
    return table.expand(obs_features.shape[0], -1, -1)


def per_step_mean(x: torch.Tensor) -> torch.Tensor:
    """[B, K, 3L, ...] -> each step's mean over its blocks, repeated for every block (same shape)."""
    return x.mean(dim=2, keepdim=True).expand_as(x)


def straight_through_gate(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """logits [..., 2] (compute, prune) -> gate in {0, 1} forward, softmax(prune) gradient backward."""
    soft = (logits / temperature).softmax(dim=-1)[..., 1]
    hard = (logits[..., 1] > logits[..., 0]).to(soft.dtype)
    return hard + soft - soft.detach()


def held_steps_from_margins(hold_margins: torch.Tensor, budget: int | None) -> torch.Tensor:
    """Hold margins [..., K] -> held steps [..., K] (bool): a positive margin holds; or, under a budget of computed
    steps, every step holds but the first and the ``budget - 1`` later ones with the lowest margins."""
    if budget is None:
        return hold_margins > 0
    held = torch.ones_like(hold_margins, dtype=torch.bool)
    held[..., 0] = False
    if budget > 1:
        chosen = hold_margins[..., 1:].topk(budget - 1, dim=-1, largest=False).indices + 1
        held.scatter_(-1, chosen, False)
    return held


def budgeted_hold_gate(step_logits: torch.Tensor, budget: int) -> torch.Tensor:
    """Step logits [..., K, 2] (compute, hold) -> hold gates [..., K] in {0, 1} forward under a budget of computed
    steps; backward, the gradient of 1 - (budget - 1) * softmax(-margin) over the later steps: it moves the steps'
    margins against each other (a common shift changes no ranking and gets no gradient)."""
    margins = step_logits[..., 1] - step_logits[..., 0]
    hard = held_steps_from_margins(margins.detach(), budget).to(margins.dtype)
    computes = (budget - 1) * (-margins[..., 1:]).softmax(dim=-1)
    soft = torch.cat((torch.zeros_like(margins[..., :1]), 1 - computes), dim=-1)
    return hard + soft - soft.detach()


def held_mask(block_gates: torch.Tensor, step_holds: torch.Tensor | None) -> torch.Tensor:
    """The gates [B, K, 3L] of the blocks that do not run: a held step's every block, elsewhere the block gates."""
    if step_holds is None:
        return block_gates
    return step_holds[..., None] + (1 - step_holds[..., None]) * block_gates


class Pruner(nn.Module):
    def __init__(self, config: PrunerConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        layer = nn.TransformerEncoderLayer(c.index_dim, c.index_heads, dim_feedforward=2 * c.index_dim, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.index_encoder = nn.TransformerEncoder(layer, c.index_layers, enable_nested_tensor=False)
        self.index_proj = nn.Linear(c.index_dim, c.hidden_dim)
        self.obs_proj = nn.Sequential(nn.Linear(c.obs_feature_dim, c.obs_dim), Mish(),
                                      nn.Linear(c.obs_dim, c.hidden_dim, bias=False))
        self.mlp = nn.Sequential(Mish(), nn.Linear(c.hidden_dim, c.hidden_dim), Mish(), nn.Linear(c.hidden_dim, 2))
        # A learned offset per (step, block) cell on the prune logit: lets each cell's own fidelity gradient
        # move it directly, which the shared MLP alone does slowly (the mask then moves as one piece).
        self.cell_bias = nn.Parameter(torch.zeros(c.num_steps, c.num_blocks))
        # hierarchical: a learned offset per step on the hold logit (the mean of the step's prune-minus-keep margins)
        self.step_bias = nn.Parameter(torch.zeros(c.num_steps)) if c.granularity == "hierarchical" else None
        with torch.no_grad():  # cells start spread around the gate's threshold, centred on init_prune_rate
            self.mlp[-1].bias.copy_(torch.tensor([0.0, float(torch.logit(torch.tensor(c.init_prune_rate)))]))
        steps = torch.arange(c.num_steps).repeat_interleave(c.num_blocks)
        blocks = torch.arange(c.num_blocks).repeat(c.num_steps)
        self.register_buffer("index_input", sinusoidal_embedding(steps, c.index_dim)
                             + sinusoidal_embedding(blocks * 7.0, c.index_dim), persistent=False)
        self._index_table: torch.Tensor | None = None

    def train(self, mode: bool = True) -> "Pruner":
        self._index_table = None  # weights may change: rebuild the cached table when needed
        return super().train(mode)

    def _apply(self, fn, recurse=True):  # .to()/.cuda()/.half(): the cached table must follow the weights
        self._index_table = None
        return super()._apply(fn, recurse)

    def index_table(self) -> torch.Tensor:
        """[K*3L, hidden] observation-independent half of the MLP's first layer; cached in eval mode."""
        if self._index_table is not None:
            return self._index_table
        table = self.index_proj(self.index_encoder(self.index_input[None]))[0]
        if not self.training:
            self._index_table = table.detach()
        return table

    def logits(self, obs_features: torch.Tensor) -> torch.Tensor:
        """Observation features [B, To, F] -> logits [B, K, 3L, 2]."""
        b = obs_features.shape[0]
        obs_proj = self.obs_proj if self.config.use_observation else None
        out = self.mlp(mlp_input(self.index_table(), obs_proj, obs_features))
        out = out.view(b, self.config.num_steps, self.config.num_blocks, 2)
        out = out + torch.stack((torch.zeros_like(self.cell_bias), self.cell_bias), dim=-1)
        return per_step_mean(out) if self.config.granularity == "step" else out

    def gates(self, obs_features: torch.Tensor) -> torch.Tensor:
        """Straight-through gates [B, K, 3L] (1 = prune) of the mask this pruner runs, first step forced to compute."""
        return held_mask(*self.gates_and_holds(obs_features))

    def gates_and_holds(self, obs_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Block gates [B, K, 3L] and, for a hierarchical pruner, its step hold gates [B, K] (else None); both 1 =
        pruned / held, in {0, 1} forward with straight-through gradients, first step computed. A hierarchical
        pruner's block gates are the blocks a step runs when it does not hold (what un-holding it would cost and
        give); the mask it runs is :func:`held_mask` of the two."""
        logits = self.logits(obs_features)
        gates = straight_through_gate(logits)
        holds = None
        if self.step_bias is not None:
            step_logits = logits.mean(dim=2) + torch.stack((torch.zeros_like(self.step_bias), self.step_bias), dim=-1)
            budget = self.config.step_budget
            hold_gates = (straight_through_gate(step_logits) if budget is None
                          else budgeted_hold_gate(step_logits, budget))
            holds = with_first_step_computed(hold_gates[..., None])[..., 0]
        return with_first_step_computed(gates), holds

    def mask_head(self) -> "PrunerMaskHead":
        """This pruner's per-chunk computation as a :class:`PrunerMaskHead` on its current weights."""
        with torch.no_grad():
            return PrunerMaskHead(self)

    @torch.no_grad()
    def predict_mask(self, obs_features: torch.Tensor) -> torch.Tensor:
        """Hard boolean mask [B, K, 3L] (True = pruned), first step computed."""
        return self.mask_head()(obs_features)


def pinned_to_observation(pruner: Pruner, obs_features: torch.Tensor) -> Pruner:
    """A copy of ``pruner`` that predicts, for every observation, the mask it predicts for ``obs_features`` [1, To, F].

    The ablation that asks whether an observation-conditioned pruner's gain comes from the conditioning or from the
    schedule its training found: the copy keeps the same weights, head and per-chunk cost, but its observation
    branch is a constant (the first projection's weights zeroed, its bias set to that observation's pre-activation),
    so it runs one static mask: the pruner's own choice for that observation."""
    if not pruner.config.use_observation:
        raise ValueError("a static pruner (use_observation=False) already predicts one mask for every observation")
    if obs_features.shape[0] != 1:
        raise ValueError(f"pin to one observation: features of batch 1 expected, got shape {tuple(obs_features.shape)}")
    pinned = copy.deepcopy(pruner).eval()
    first = pinned.obs_proj[0]
    with torch.no_grad():
        pre_activation = first(obs_features.flatten(1))[0]
        first.weight.zero_()
        first.bias.copy_(pre_activation)
    return pinned


class PrunerMaskHead(nn.Module):
    """Observation features [B, To, F] -> the hard mask [B, K, 3L] (True = pruned, first step computed): what a
    trained pruner computes per chunk, as a module of one tensor input whose observation-independent parts (the
    index table, the cell offsets) are constant buffers. It shares the pruner's layers and snapshots its table:
    build it once training is over. Planners run it through
    :class:`~sag_ros.sparse.certified_head.CertifiedMaskHead`, which skips the cells it can prove unchanged.

    Only the sign of (prune - keep) matters, so the last layer is folded into one column, its bias into the cell
    offsets, and a step-level head averages that one margin over the step's blocks (the mean of a difference is
    the difference of the means). The grid goes through the MLP as one [B*K*3L, hidden] matrix, so each linear
    layer is a single GEMM with its bias. The same decisions as comparing :meth:`Pruner.logits`' two columns,
    except where they are within float rounding of each other."""

    def __init__(self, pruner: Pruner) -> None:
        super().__init__()
        c = pruner.config
        self.obs_proj = pruner.obs_proj if c.use_observation else None
        self.hidden = pruner.mlp[:-1]  # Mish, Linear, Mish
        last = pruner.mlp[-1]
        self.register_buffer("table", pruner.index_table().detach().clone(), persistent=False)
        self.register_buffer("margin_weight", (last.weight[1] - last.weight[0]).detach()[:, None].clone(),
                             persistent=False)
        offset = pruner.cell_bias.detach() + (last.bias[1] - last.bias[0]).detach()
        self.register_buffer("margin_offset", offset.clone(), persistent=False)
        self.grid = (c.num_steps, c.num_blocks)
        self.granularity = c.granularity
        step_offset = pruner.step_bias.detach().clone() if pruner.step_bias is not None else None
        self.register_buffer("step_offset", step_offset, persistent=False)
        self.step_budget = c.step_budget

    def forward(self, obs_features: torch.Tensor) -> torch.Tensor:
        b = obs_features.shape[0]
        rows = mlp_input(self.table, self.obs_proj, obs_features).reshape(-1, self.table.shape[1])
        margin = (self.hidden(rows) @ self.margin_weight).view(b, *self.grid) + self.margin_offset
        if self.granularity == "step":
            margin = per_step_mean(margin)
        pruned = margin > 0
        if self.step_offset is not None:  # hierarchical: a held step prunes all its blocks
            held = held_steps_from_margins(margin.mean(dim=2) + self.step_offset, self.step_budget)
            pruned = pruned | held[..., None]
        return with_first_step_computed(pruned)
