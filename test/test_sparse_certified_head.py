"""CertifiedMaskHead: the full head's masks, call for call, through both of its paths (certified and re-anchored)."""

import pytest
import torch

from sag_ros.sparse.certified_head import MISH_MAX_SLOPE, CertifiedMaskHead, margin_lipschitz
from sag_ros.sparse.pruner import Mish, Pruner
from sag_ros.sparse.train_pruner import PrunerTrainConfig, pruner_config_for

from conftest import random_observation


def _centred_pruner(policy, granularity: str, features: torch.Tensor, step_budget: int | None = None) -> Pruner:
    """A random pruner whose cells sit at spread-out margins around the threshold, so that an observation moving
    along an episode flips a few at a time."""
    torch.manual_seed(0)
    train = PrunerTrainConfig(granularity=granularity, hold_x0=granularity == "hierarchical", step_budget=step_budget)
    pruner = Pruner(pruner_config_for(policy, train)).eval()
    with torch.no_grad():
        pruner.obs_proj[-1].weight.mul_(0.3)
        pruner.cell_bias.normal_(std=2.0)
        logits = pruner.logits(features)
        pruner.mlp[-1].bias[1] -= (logits[..., 1] - logits[..., 0]).median()
        if step_budget is not None:  # under a budget, hold margins close together, so the observation reorders them
            pruner.step_bias.copy_(-pruner.cell_bias.mean(dim=1))
        elif pruner.step_bias is not None:  # otherwise spread around the threshold too
            pruner.step_bias.normal_(std=0.5)
    return pruner


def _episode(policy) -> torch.Tensor:
    """Features [N, To, F] of an 'episode': slow drift between two observations, then a jump to a third and back."""
    with torch.no_grad():
        ends = [policy.encode_observation(random_observation(policy.config, seed=s)) for s in (3, 4, 5)]
    drift = [ends[0] + (ends[1] - ends[0]) * t for t in torch.linspace(0, 1, 100)]
    return torch.cat(drift + [ends[2], ends[1]] + drift[::-1])


def test_mish_slope_bound_holds():
    x = torch.linspace(-30, 30, 600001, dtype=torch.float64, requires_grad=True)
    Mish()(x).sum().backward()
    assert x.grad.abs().max() <= MISH_MAX_SLOPE
    assert x.grad.abs().max() > MISH_MAX_SLOPE - 0.001  # the bound is tight, not a loose guess


def test_margins_move_no_more_than_the_lipschitz_bound(tiny_policy):
    features = _episode(tiny_policy)
    pruner = _centred_pruner(tiny_policy, "block", features)
    head = pruner.mask_head()
    lipschitz = margin_lipschitz(head)
    with torch.no_grad():
        v = head.obs_proj(features.flatten(1))
        margins = (head.hidden(head.table[None] + v[:, None]) @ head.margin_weight)[..., 0]
    moved = (margins[1:] - margins[0]).abs().max(dim=1).values
    allowed = lipschitz * (v[1:] - v[0]).norm(dim=1)
    assert (moved <= allowed + 1e-5).all()
    assert (moved > 0.02 * allowed).any(), "the margins hardly move: the bound would hold vacuously"


@pytest.mark.parametrize("granularity, step_budget", [("block", None), ("step", None), ("hierarchical", None),
                                                      ("hierarchical", 3)])
def test_certified_masks_are_the_full_heads(tiny_policy, granularity, step_budget):
    features = _episode(tiny_policy)
    pruner = _centred_pruner(tiny_policy, granularity, features, step_budget)
    head = pruner.mask_head()
    certified = CertifiedMaskHead(head)
    masks = []
    with torch.no_grad():
        for f in features.split(1):
            full, fast = head(f), certified(f)
            assert fast.shape == full.shape and fast.dtype == torch.bool and not fast[:, 0].any()
            logits = pruner.logits(f)
            decided = (logits[..., 1] - logits[..., 0]).abs() > 1e-4
            decided[:, 0] = True
            assert torch.equal(fast[decided], full[decided])
            masks.append(full)
    # under a budget only the computed steps' cells can differ, and the observation reorders close margins rarely
    distinct = 5 if step_budget is None else 3
    assert len({m.numpy().tobytes() for m in masks}) >= distinct, "the masks hardly change along the episode"
    stats = certified.stats()
    assert 1 < stats["full_evaluations"] < stats["calls"], "both paths (certified and re-anchored) must run"


def test_certified_head_refuses_batches_non_finite_features_and_static_pruners(tiny_policy):
    features = _episode(tiny_policy)[:2]
    pruner = _centred_pruner(tiny_policy, "block", features)
    head = CertifiedMaskHead(pruner.mask_head())
    with pytest.raises(ValueError, match="one observation at a time"):
        head(features)
    head(features[:1])
    with pytest.raises(ValueError, match="not finite"):
        head(torch.full_like(features[:1], float("nan")))
    static = Pruner(pruner_config_for(tiny_policy, PrunerTrainConfig(use_observation=False))).eval()
    with pytest.raises(ValueError, match="static pruner"):
        CertifiedMaskHead(static.mask_head())
