"""Pruner: straight-through gradients, sparsity pull towards rho, masks, and checkpoint binding."""

import dataclasses

import pytest
import torch

from sag_ros.policy.checkpoint import CheckpointError
from sag_ros.policy.policy import DiffusionPolicy
from sag_ros.policy.train import Deadline
from sag_ros.policy.sampling import dense_runner, eager_kernels, prepare_chunk, reverse_diffusion
from sag_ros.sparse.artifact import load_pruner, save_pruner
from sag_ros.sparse.pruner import Mish, Pruner, pinned_to_observation, straight_through_gate
from sag_ros.sparse.mask import interval_mask
from sag_ros.sparse.train_pruner import (PrunerTrainConfig, fidelity_slice, initial_pruner, pruner_config_for,
                                         pruner_loss, train_pruner)

from conftest import between_middle_margins, random_observation, tiny_config


def _features(policy, batch=2, seed=0):
    with torch.no_grad():
        return policy.encode_observation(random_observation(policy.config, batch=batch, seed=seed))


def test_mish_is_torchs_mish_with_and_without_gradients():
    x = torch.cat((torch.linspace(-60, 60, 2001), torch.randn(4000) * 4))
    with torch.no_grad():
        torch.testing.assert_close(Mish()(x), torch.nn.Mish()(x), rtol=1e-6, atol=1e-6)
    x.requires_grad_(True)
    out = Mish()(x)
    torch.testing.assert_close(out, torch.nn.Mish()(x), rtol=1e-6, atol=1e-6)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_straight_through_gate_is_hard_forward_soft_backward():
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0]], requires_grad=True)
    gate = straight_through_gate(logits)
    assert gate.tolist() == [0.0, 1.0]
    gate.sum().backward()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("window, steps", [("chunk", "final"), ("executed", "trajectory")])
def test_fidelity_gradients_reach_the_pruner(tiny_policy, window, steps):
    tiny_policy.requires_grad_(False)
    cfg = PrunerTrainConfig(target_rate=0.5, sparsity_weight=0.0, fidelity_window=window, fidelity_steps=steps)
    pruner = Pruner(pruner_config_for(tiny_policy, cfg)).train()
    loss, stats = pruner_loss(tiny_policy, pruner, _features(tiny_policy), None, cfg, torch.Generator().manual_seed(0))
    loss.backward()
    assert stats["fidelity"] > 0
    grads = [p.grad for p in pruner.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in tiny_policy.parameters())


def test_executed_fidelity_window_covers_exactly_the_executed_actions(tiny_policy):
    d = tiny_policy.config.denoiser
    executed = fidelity_slice(tiny_policy, PrunerTrainConfig(fidelity_window="executed"))
    horizon = list(range(d.horizon))
    assert horizon[executed] == list(range(d.n_obs_steps - 1, d.n_obs_steps - 1 + d.n_action_steps))
    assert horizon[fidelity_slice(tiny_policy, PrunerTrainConfig())] == horizon
    with pytest.raises(ValueError, match="fidelity_window"):
        PrunerTrainConfig(fidelity_window="tail")
    with pytest.raises(ValueError, match="reference='dense'"):
        PrunerTrainConfig(fidelity_steps="trajectory", reference="demo")


def test_demo_reference_compares_the_sparse_chunk_with_the_given_actions(tiny_policy):
    """``reference='demo'``: the fidelity term is L1 to the demonstrated (normalized) chunk over the same window;
    handed dense's own chunk from the same noise it is exactly the dense-reference loss."""
    tiny_policy.requires_grad_(False)
    features = _features(tiny_policy)
    with torch.no_grad():
        kernels = eager_kernels(tiny_policy.denoiser)
        inputs = prepare_chunk(tiny_policy.denoiser, tiny_policy.schedule, features, torch.Generator().manual_seed(3))
        dense = reverse_diffusion(tiny_policy.schedule, inputs, kernels, dense_runner(kernels))
    for window in ("chunk", "executed"):
        dense_cfg = PrunerTrainConfig(target_rate=0.5, fidelity_window=window, hold_x0=True, granularity="step")
        demo_cfg = dataclasses.replace(dense_cfg, reference="demo")
        pruner = Pruner(pruner_config_for(tiny_policy, dense_cfg)).train()

        def fidelity(target, cfg):
            return pruner_loss(tiny_policy, pruner, features, target, cfg, torch.Generator().manual_seed(3))[1]["fidelity"]

        against_dense = fidelity(None, dense_cfg)
        assert against_dense > 0
        assert fidelity(dense, demo_cfg) == pytest.approx(against_dense, rel=1e-6)
        # a shift far beyond any sparse-dense gap: the L1 grows by about the shift
        assert fidelity(dense + 10.0, demo_cfg) > against_dense + 9.0


@pytest.mark.parametrize("step_cost, granularity", [(0.0, "block"), (4.0, "block"), (4.0, "hierarchical")])
def test_brief_training_moves_prune_rate_towards_rho(tiny_policy, step_cost, granularity):
    """Towards rho of the blocks, or (``step_cost``, held steps) of the blocks' and the steps' fixed cost."""
    tiny_policy.requires_grad_(False)
    cfg = PrunerTrainConfig(target_rate=0.9, sparsity_weight=1.0, hold_x0=bool(step_cost), step_cost=step_cost,
                            granularity=granularity)
    pruner_cfg = pruner_config_for(tiny_policy, cfg)
    pruner_cfg.init_prune_rate = 0.3
    pruner = Pruner(pruner_cfg).train()
    optimizer = torch.optim.Adam(pruner.parameters(), lr=3e-2)
    g = torch.Generator().manual_seed(0)
    features = _features(tiny_policy, batch=2)
    rates = []
    for _ in range(15):
        loss, stats = pruner_loss(tiny_policy, pruner, features, None, cfg, g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        rates.append(stats["prune_rate"])
    assert rates[0] < 0.5
    assert rates[-1] > rates[0] + 0.2, rates


def test_masks_depend_on_observation_and_first_step_computes(tiny_policy):
    cfg = pruner_config_for(tiny_policy, PrunerTrainConfig())
    torch.manual_seed(0)
    pruner = Pruner(cfg).eval()
    features = _features(tiny_policy, batch=2, seed=1) * torch.tensor([1.0, -1.0])[:, None, None]
    with torch.no_grad():  # centre the prune logit so that the decision sits where observations move it
        logits = pruner.logits(features)
        pruner.mlp[-1].bias[1] -= (logits[..., 1] - logits[..., 0]).median()
    masks = pruner.predict_mask(features)
    assert masks.shape == (2, cfg.num_steps, cfg.num_blocks) and masks.dtype == torch.bool
    assert not masks[:, 0].any()
    assert not torch.equal(masks[0], masks[1])
    with torch.no_grad():  # the mask head (what backends compile) is the comparison of the two logits, up to
        logits = pruner.logits(features)  # float rounding where they tie (the centring puts a cell there)
        decided = (logits[..., 1] - logits[..., 0]).abs() > 1e-4
    assert decided[:, 1:].float().mean() > 0.9
    assert torch.equal(masks[:, 1:][decided[:, 1:]], (logits[..., 1] > logits[..., 0])[:, 1:][decided[:, 1:]])



@pytest.mark.parametrize("granularity", ["block", "hierarchical"])
def test_a_pinned_pruner_predicts_its_pinned_observations_mask_for_every_observation(tiny_policy, granularity):
    train = PrunerTrainConfig(granularity=granularity, hold_x0=granularity == "hierarchical")
    torch.manual_seed(0)
    pruner = Pruner(pruner_config_for(tiny_policy, train)).eval()
    features = _features(tiny_policy, batch=6, seed=2) * torch.linspace(-2, 2, 6)[:, None, None]
    with torch.no_grad():  # centre the prune logit, as above, so that these observations get different masks
        logits = pruner.logits(features)
        pruner.mlp[-1].bias[1] -= between_middle_margins(logits)
    masks = pruner.predict_mask(features)
    assert len(torch.unique(masks, dim=0)) > 1

    pinned = pinned_to_observation(pruner, features[4:5])
    assert torch.equal(pinned.predict_mask(features), masks[4:5].expand_as(masks))
    assert torch.equal(pinned.predict_mask(torch.randn_like(features) * 10), masks[4:5].expand_as(masks))
    assert torch.equal(pruner.predict_mask(features), masks)  # the pruner itself is left as it was
    with pytest.raises(ValueError, match="batch 1"):
        pinned_to_observation(pruner, features[:2])
    static = Pruner(pruner_config_for(tiny_policy, PrunerTrainConfig(use_observation=False)))
    with pytest.raises(ValueError, match="static pruner"):
        pinned_to_observation(static, features[:1])

def test_step_granularity_computes_or_skips_whole_steps(tiny_policy):
    cfg = pruner_config_for(tiny_policy, PrunerTrainConfig(granularity="step"))
    torch.manual_seed(0)
    pruner = Pruner(cfg).eval()
    features = _features(tiny_policy, batch=3, seed=2)
    with torch.no_grad():  # offsets that disagree within every row, so that only the pooling makes rows whole,
        pruner.cell_bias.normal_(std=2.0)  # and the prune logit centred so that about half the rows are pruned
        logits = pruner.logits(features)
        pruner.mlp[-1].bias[1] -= (logits[..., 1] - logits[..., 0]).median()
    masks = pruner.predict_mask(features)
    assert (masks == masks[..., :1]).all() and not masks[:, 0].any()
    assert 0.0 < masks[:, 1:].float().mean() < 1.0
    with torch.no_grad():  # training's gates are the head's mask (up to float rounding at the threshold)
        logits = pruner.logits(features)
        decided = (logits[..., 1] - logits[..., 0]).abs() > 1e-4
        gates = pruner.train().gates(features).bool()
    assert decided[:, 1:].float().mean() > 0.9 and torch.equal(gates[decided], masks[decided])
    block = Pruner(dataclasses.replace(cfg, granularity="block")).eval()
    block.load_state_dict(pruner.state_dict())
    cells = block.predict_mask(features)
    assert not (cells == cells[..., :1]).all()
    with pytest.raises(ValueError, match="granularity"):
        dataclasses.replace(cfg, granularity="layer")


def test_hierarchical_granularity_holds_whole_steps_over_block_decisions(tiny_policy):
    """A held step prunes every block whatever its cells say; a computing step follows its cells; training's gates
    and holds are the head's decisions, and the hold decision has a gradient of its own (its per-step offset)."""
    cfg = PrunerTrainConfig(granularity="hierarchical", hold_x0=True)
    torch.manual_seed(0)
    pruner = Pruner(pruner_config_for(tiny_policy, cfg)).eval()
    num_steps = pruner.config.num_steps
    features = _features(tiny_policy, batch=3, seed=2)
    with torch.no_grad():  # cells spread around the threshold, steps alternately pushed to hold and to compute
        pruner.cell_bias.normal_(std=2.0)
        logits = pruner.logits(features)
        pruner.mlp[-1].bias[1] -= (logits[..., 1] - logits[..., 0]).median()
        pruner.step_bias.copy_(torch.tensor([50.0, -50.0]).repeat(num_steps)[:num_steps])
    masks = pruner.predict_mask(features)
    assert not masks[:, 0].any() and masks[:, 2::2].all()  # even steps (after the first) hold
    computing = masks[:, 1::2]
    assert 0.0 < computing.float().mean() < 1.0 and not (computing == computing[..., :1]).all()
    with torch.no_grad():
        logits = pruner.logits(features)
        decided = (logits[..., 1] - logits[..., 0]).abs() > 1e-4
        decided[:, 2::2] = True
        blocks, holds = pruner.train().gates_and_holds(features)
        gates = pruner.gates(features)
    assert torch.equal(gates.bool()[decided], masks[decided])
    assert torch.equal(blocks.bool()[decided & ~masks], masks[decided & ~masks])  # held: the blocks it would run
    assert not blocks[:, 2::2].bool().all()
    held = (torch.arange(num_steps) % 2 == 0) & (torch.arange(num_steps) > 0)
    assert torch.equal(holds.bool(), held.expand_as(holds))
    loss, _ = pruner_loss(tiny_policy.requires_grad_(False), pruner, features, None, cfg, torch.Generator().manual_seed(0))
    loss.backward()
    assert pruner.step_bias.grad is not None and pruner.step_bias.grad[1:].abs().sum() > 0
    with pytest.raises(ValueError, match="needs hold_x0"):
        PrunerTrainConfig(granularity="hierarchical")


def test_a_step_budget_computes_the_same_number_of_steps_for_every_observation(tiny_policy):
    """The steps compete for the budget's places: every observation computes step 0 and budget - 1 others, the
    observation decides which, training's holds are the head's, and the hold gradient only moves margins against
    each other (shifting every margin alike changes no choice)."""
    budget = 3
    cfg = PrunerTrainConfig(granularity="hierarchical", hold_x0=True, step_budget=budget)
    torch.manual_seed(0)
    pruner = Pruner(pruner_config_for(tiny_policy, cfg)).eval()
    features = _features(tiny_policy, batch=8, seed=2) * torch.linspace(-3, 3, 8)[:, None, None]
    with torch.no_grad():  # blocks all compute where their step does; steps close, so observations reorder them
        pruner.cell_bias.fill_(-5.0)
        pruner.step_bias.normal_(std=0.05)
    masks = pruner.predict_mask(features)
    steps_computed = (~masks.all(-1)).sum(-1)
    assert steps_computed.tolist() == [budget] * len(features) and not masks[:, 0].any()
    assert len(torch.unique(masks, dim=0)) > 1, "every observation chose the same steps: a weak test"
    pruner.train()
    _, holds = pruner.gates_and_holds(features)
    assert torch.equal(holds.bool(), masks.all(-1))
    loss, stats = pruner_loss(tiny_policy.requires_grad_(False), pruner, features, None, cfg,
                              torch.Generator().manual_seed(0))
    loss.backward()
    grad = pruner.step_bias.grad
    assert grad[1:].abs().sum() > 0 and abs(float(grad[1:].sum())) < 1e-6 * float(grad[1:].abs().sum()) + 1e-9
    for bad in (dict(granularity="block"), dict(granularity="step")):
        with pytest.raises(ValueError, match="step_budget"):
            PrunerTrainConfig(step_budget=2, **bad)
    config = pruner_config_for(tiny_policy, cfg)
    for steps in (0, config.num_steps + 1):
        with pytest.raises(ValueError, match="step_budget"):
            dataclasses.replace(config, step_budget=steps)


def test_hierarchical_interval_warm_start_predicts_the_interval_mask(tiny_policy):
    """...by holding the skipped steps, whose blocks would all run if un-held: un-holding a step means computing it."""
    cfg = PrunerTrainConfig(init_interval=3, granularity="hierarchical", hold_x0=True)
    pruner = initial_pruner(tiny_policy, cfg).eval()
    features = torch.cat([_features(tiny_policy, batch=2, seed=s) for s in range(3)])
    masks = pruner.predict_mask(features)
    expected = interval_mask(tiny_policy.schedule.num_steps, tiny_policy.config.denoiser.num_blocks, 3)
    assert torch.equal(masks, expected.expand_as(masks))
    blocks, holds = pruner.gates_and_holds(features)
    assert not blocks.bool().any() and torch.equal(holds.bool(), expected.all(-1).expand_as(holds))


def test_a_pruner_without_the_observation_plans_its_one_mask_once(tiny_policy):
    from sag_ros.engine import make_backend
    from sag_ros.sparse.planner import SagPlanner, StaticMaskPlanner, pruner_planner

    cfg = pruner_config_for(tiny_policy, PrunerTrainConfig(use_observation=False))
    torch.manual_seed(0)
    static = Pruner(cfg).eval()
    kernels = make_backend("eager", tiny_policy.denoiser).kernels
    planner = pruner_planner(kernels, static, "one_for_all")
    assert isinstance(planner, StaticMaskPlanner)
    f = _features(tiny_policy, batch=1)
    assert torch.equal(planner.mask, static.predict_mask(f)[0]) and torch.equal(planner.last_mask, planner.mask)
    observed = Pruner(pruner_config_for(tiny_policy, PrunerTrainConfig())).eval()
    assert isinstance(pruner_planner(kernels, observed, "one_for_all"), SagPlanner)


def test_pruner_checkpoint_is_bound_to_its_policy(tmp_path, tiny_policy):
    pruner = Pruner(pruner_config_for(tiny_policy, PrunerTrainConfig())).eval()
    path = tmp_path / "pruner.pt"
    save_pruner(pruner, tiny_policy, path, extra={})
    loaded, _ = load_pruner(path, tiny_policy)
    f = _features(tiny_policy, batch=1)
    assert torch.equal(loaded.predict_mask(f), pruner.predict_mask(f))
    torch.manual_seed(1)
    other = DiffusionPolicy(tiny_config()).eval()
    with pytest.raises(CheckpointError, match="trained for policy"):
        load_pruner(path, other)
    tiny_policy.use_sampler("ddim", 5)
    with pytest.raises(CheckpointError, match="masks are for sampler"):
        load_pruner(path, tiny_policy)


def test_a_predictor_samples_with_its_pruners_sampler_unless_told_otherwise(tmp_path, tiny_policy):
    """A DDIM-trained pruner runs with DDIM when no sampler is asked for (`sag eval --pruner`, the inference node's
    empty `sampler`); asking for another sampler is refused by the pruner's binding, naming both."""
    from sag_ros.policy.checkpoint import save_policy
    from sag_ros.predictor import PredictorSpec

    policy_path, pruner_path = tmp_path / "policy.pt", tmp_path / "pruner.pt"
    save_policy(tiny_policy, policy_path, data_hash="test")
    tiny_policy.use_sampler("ddim", 5)
    save_pruner(Pruner(pruner_config_for(tiny_policy, PrunerTrainConfig())).eval(), tiny_policy, pruner_path, extra={})
    predictor = PredictorSpec(str(policy_path), pruner_path=str(pruner_path))()
    assert (predictor.policy.schedule.kind.value, predictor.policy.schedule.num_steps) == ("ddim", 5)
    actions = predictor({k: v[0].numpy() for k, v in random_observation(tiny_policy.config).items()}, seed=0)
    assert torch.isfinite(torch.as_tensor(actions)).all()
    with pytest.raises(CheckpointError, match="masks are for sampler"):
        PredictorSpec(str(policy_path), pruner_path=str(pruner_path), sampler="ddpm")()


def test_a_damaged_or_foreign_version_pruner_file_is_refused_by_name(tmp_path, tiny_policy):
    """A file with the right tag but not this version's contents: a CheckpointError naming it, not a KeyError."""
    path = tmp_path / "pruner.pt"
    save_pruner(Pruner(pruner_config_for(tiny_policy, PrunerTrainConfig())), tiny_policy, path, extra={})
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "config": {**payload["config"], "field_of_a_later_version": 1}}, path)
    with pytest.raises(CheckpointError, match="invalid stored pruner config"):
        load_pruner(path, tiny_policy)
    torch.save({k: v for k, v in payload.items() if k != "policy_fingerprint"}, path)
    with pytest.raises(CheckpointError, match=r"lacks \['policy_fingerprint'\]"):
        load_pruner(path, tiny_policy)


def test_transfer_warm_start_takes_another_policys_pruner_of_the_same_grid_only(tmp_path, tiny_policy):
    pruner = Pruner(pruner_config_for(tiny_policy, PrunerTrainConfig())).eval()
    with torch.no_grad():
        pruner.cell_bias.normal_()
    path = tmp_path / "pruner.pt"
    save_pruner(pruner, tiny_policy, path, extra={})
    torch.manual_seed(1)
    trained_further = DiffusionPolicy(tiny_config()).eval()  # same config, other weights
    with pytest.raises(CheckpointError, match="trained for policy"):
        initial_pruner(trained_further, PrunerTrainConfig(init_from=str(path)))
    start = initial_pruner(trained_further, PrunerTrainConfig(init_from=str(path), init_transfer=True)).eval()
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), pruner.state_dict().values(), strict=True))
    deeper = tiny_config()
    deeper.denoiser.n_layers += 1
    with pytest.raises(CheckpointError, match="the policy has"):
        initial_pruner(DiffusionPolicy(deeper), PrunerTrainConfig(init_from=str(path), init_transfer=True))
    with pytest.raises(ValueError, match="init_transfer needs init_from"):
        PrunerTrainConfig(init_transfer=True)


def test_target_rate_ramps_from_the_start_rate_to_rho():
    from sag_ros.sparse.train_pruner import target_rate_at

    cfg = PrunerTrainConfig(target_rate=0.9, rate_warmup=10)
    assert [target_rate_at(s, 0.5, cfg) for s in (0, 5, 10, 50)] == pytest.approx([0.5, 0.7, 0.9, 0.9])
    assert target_rate_at(0, 0.5, PrunerTrainConfig(target_rate=0.9)) == 0.9


def test_sag_warm_started_from_a_static_mask_starts_at_that_mask(tmp_path, tiny_policy):
    torch.manual_seed(0)
    static = Pruner(pruner_config_for(tiny_policy, PrunerTrainConfig(use_observation=False))).eval()
    with torch.no_grad():
        static.cell_bias.normal_()  # a mask with structure, not the initial one
    path = tmp_path / "static.pt"
    save_pruner(static, tiny_policy, path, extra={})
    sag = initial_pruner(tiny_policy, PrunerTrainConfig(init_from=str(path))).eval()
    assert sag.config.use_observation
    features = torch.cat([_features(tiny_policy, batch=2, seed=s) for s in range(2)])
    assert torch.equal(sag.predict_mask(features), static.predict_mask(features))
    sag.train()
    sag.gates(features).sum().backward()
    assert sag.obs_proj[-1].weight.grad.abs().sum() > 0, "the observation branch must be able to learn"
    save_pruner(sag, tiny_policy, path, extra={})
    with pytest.raises(CheckpointError, match="a static one cannot start from it"):
        initial_pruner(tiny_policy, PrunerTrainConfig(init_from=str(path), use_observation=False))


def test_interval_warm_start_predicts_the_interval_mask_for_every_observation(tiny_policy):
    cfg = PrunerTrainConfig(init_interval=3)
    pruner = initial_pruner(tiny_policy, cfg).eval()
    features = torch.cat([_features(tiny_policy, batch=2, seed=s) for s in range(3)])
    masks = pruner.predict_mask(features)
    expected = interval_mask(tiny_policy.schedule.num_steps, tiny_policy.config.denoiser.num_blocks, 3)
    assert torch.equal(masks, expected.expand_as(masks))
    with pytest.raises(ValueError, match="choose one warm start"):
        PrunerTrainConfig(init_interval=3, init_from="pruner.pt")


def test_interval_warm_start_from_a_later_step(tiny_policy):
    num_steps = tiny_policy.schedule.num_steps
    cfg = PrunerTrainConfig(init_interval=2, init_interval_start=num_steps // 2)
    mask = initial_pruner(tiny_policy, cfg).eval().predict_mask(_features(tiny_policy, batch=1, seed=0))[0]
    assert torch.equal(mask, interval_mask(num_steps, tiny_policy.config.denoiser.num_blocks, 2, num_steps // 2))
    with pytest.raises(ValueError, match="needs init_interval"):
        PrunerTrainConfig(init_interval_start=5)


def test_pruned_cost_charges_each_computed_step_its_fixed_cost():
    from sag_ros.sparse.train_pruner import pruned_cost

    # 4 steps x 3 blocks (1 = pruned): computed, held, one block pruned, held
    gates = torch.tensor([[[0.0, 0, 0], [1, 1, 1], [0, 1, 0], [1, 1, 1]]], requires_grad=True)
    assert pruned_cost(gates, 0.0).item() == pytest.approx(7 / 12)  # the block fraction
    cost = pruned_cost(gates, 2.0)  # blocks 7 of 12, plus the fixed cost of 2 held steps: (7 + 2 * 2) / (4 * (3 + 2))
    assert cost.item() == pytest.approx(11 / 20)
    cost.backward()  # the held part's gradient (the row mean's) reaches every gate, more than a block's own share
    assert torch.allclose(gates.grad, torch.full_like(gates, (1 + 2 / 3) / 20))
    with pytest.raises(ValueError, match="needs hold_x0"):
        PrunerTrainConfig(step_cost=2.0)
    with pytest.raises(ValueError, match="step_cost=-1"):
        PrunerTrainConfig(step_cost=-1.0, hold_x0=True)


class _RandomWindows:
    """Stands in for a WindowSampler: random well-formed observations and zero action chunks."""

    def __init__(self, policy: DiffusionPolicy) -> None:
        self.config = policy.config

    def sample(self, batch_size: int, generator: torch.Generator):
        d = self.config.denoiser
        return random_observation(self.config, batch_size), torch.zeros(batch_size, d.horizon, d.action_dim)


def test_training_at_a_noise_scale_samples_at_it(tiny_policy, tmp_path):
    """train-pruner --noise-scale: the chunks the fidelity term compares are drawn at the temperature the pruner will
    run at (the policy's sampler is set to it, and the file records it); a negative scale is refused."""
    plain = tiny_policy.schedule.coef_noise.clone()
    out = tmp_path / "pruner.pt"
    train_pruner(tiny_policy, PrunerTrainConfig(num_steps=1, batch_size=2, threads=1, noise_scale=0.5),
                 _RandomWindows(tiny_policy), out)
    torch.testing.assert_close(tiny_policy.schedule.coef_noise, plain * 0.5)
    assert load_pruner(out, tiny_policy)[1]["noise_scale"] == 0.5
    with pytest.raises(ValueError, match="noise_scale=-1"):
        PrunerTrainConfig(noise_scale=-1.0)


def test_a_time_limit_stops_pruner_training_at_a_checkpoint_and_the_run_resumes(tiny_policy, tmp_path, capsys):
    cfg = PrunerTrainConfig(num_steps=3, batch_size=2, threads=1, checkpoint_every=100, target_rate=0.5)
    whole, cut = tmp_path / "whole.pt", tmp_path / "cut.pt"
    train_pruner(tiny_policy, cfg, _RandomWindows(tiny_policy), whole)
    train_pruner(tiny_policy, cfg, _RandomWindows(tiny_policy), cut, deadline=Deadline(1e-9))
    assert "stopped by the 1e-09 min limit at step 1 of 3" in capsys.readouterr().out
    assert load_pruner(cut, tiny_policy)[1]["train_step"] == 1
    train_pruner(tiny_policy, cfg, _RandomWindows(tiny_policy), cut)
    assert load_pruner(cut, tiny_policy)[1]["train_step"] == 3
    expected = load_pruner(whole, tiny_policy)[0].state_dict()
    for name, value in load_pruner(cut, tiny_policy)[0].state_dict().items():
        torch.testing.assert_close(value, expected[name])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="training on a GPU needs a CUDA device")
def test_pruner_training_on_cuda_writes_a_pruner_that_loads_on_the_cpu(tiny_policy, tmp_path):
    out = tmp_path / "pruner.pt"
    train_pruner(tiny_policy, PrunerTrainConfig(num_steps=2, batch_size=2, threads=1, hold_x0=True, step_cost=2.5,
                                                granularity="hierarchical"),
                 _RandomWindows(tiny_policy), out, device=torch.device("cuda"))
    pruner, extra = load_pruner(out, tiny_policy.cpu())
    assert extra["train_step"] == 2 and pruner.cell_bias.device.type == "cpu"
