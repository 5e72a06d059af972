"""Sparse sampler: dense equivalence, reuse-cache semantics on hand-made masks, gated == hard forward."""

import dataclasses

import pytest
import torch

from sag_ros.policy.sampling import StepKV, dense_runner, eager_kernels, prepare_chunk, reverse_diffusion
from sag_ros.sparse.cache import OneForAllCache, PerBlockCache, make_cache
from sag_ros.sparse.mask import executed_fraction, interval_mask, validate_mask, with_first_step_computed
from sag_ros.sparse.sampler import GatedRunner, SparseRunner, row_program, sample_with_masks, step_hold_gates

from conftest import random_observation


def _chunk(policy, runner_for, seed=0):
    features = policy.encode_observation(random_observation(policy.config))
    kernels = eager_kernels(policy.denoiser)
    inputs = prepare_chunk(policy.denoiser, policy.schedule, features, torch.Generator().manual_seed(seed))
    return reverse_diffusion(policy.schedule, inputs, kernels, runner_for(kernels))


@torch.no_grad()
def test_all_compute_mask_reproduces_dense_bit_for_bit(tiny_policy):
    k, n = tiny_policy.schedule.num_steps, tiny_policy.config.denoiser.num_blocks
    dense = _chunk(tiny_policy, dense_runner)
    for kind in ("one_for_all", "per_block"):
        sparse = _chunk(tiny_policy, lambda kernels: SparseRunner(kernels.block_fns, torch.zeros(k, n, dtype=torch.bool), make_cache(kind, n)))
        assert torch.equal(sparse, dense)


class _Recorder:
    """Fake blocks: each call returns a constant tensor with a fresh id; records (step, block) -> id."""

    def __init__(self, num_blocks):
        self.step, self.next_id, self.ids = 0, 1.0, {}
        self.fns = [self._make(j) for j in range(num_blocks)]

    def _make(self, j):
        def fn(h, kv):
            value = self.next_id
            self.ids[(self.step, j)] = value
            self.next_id *= 2  # powers of two: every sum of ids is unique
            return torch.full_like(h, value)
        return fn

    def run(self, runner, num_steps):
        increments = []
        for k in range(num_steps):
            self.step = k
            increments.append(float(runner(k, torch.zeros(1, 1, 1), [None, None])[0, 0, 0]))
        return increments


def test_one_for_all_reuses_latest_block_of_same_type_zig_zag():
    # 2 layers -> blocks [SA0, CA0, FFN0, SA1, CA1, FFN1]
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[1, 3] = True  # SA1 at step 1 -> SA0 of step 1 (earlier layer, same step)
    mask[2, 0] = True  # SA0 at step 2 -> latest SA computed: SA0 of step 1 (SA1 was pruned there)
    mask[2, 5] = True  # FFN1 at step 2 -> FFN0 of step 2
    rec = _Recorder(6)
    runner = SparseRunner(rec.fns, mask, OneForAllCache(6))
    increments = rec.run(runner, 3)
    ids = rec.ids
    assert (1, 3) not in ids and (2, 0) not in ids and (2, 5) not in ids
    assert increments[1] == sum(ids[(1, j)] for j in (0, 1, 2, 4, 5)) + ids[(1, 0)]
    assert increments[2] == ids[(1, 0)] + sum(ids[(2, j)] for j in (1, 2, 3, 4)) + ids[(2, 2)]
    assert runner.computed == 18 - 3


def test_one_for_all_crosses_steps_to_a_later_layer():
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[1, 0] = True  # SA0 at step 1 -> SA1 of step 0 (a later layer of an earlier step)
    rec = _Recorder(6)
    increments = rec.run(SparseRunner(rec.fns, mask, OneForAllCache(6)), 2)
    assert increments[1] == rec.ids[(0, 3)] + sum(rec.ids[(1, j)] for j in range(1, 6))


def test_per_block_reuses_same_block_at_its_last_computed_step():
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[1, 3] = True
    mask[2, 3] = True
    rec = _Recorder(6)
    increments = rec.run(SparseRunner(rec.fns, mask, PerBlockCache(6)), 3)
    others = lambda k: sum(rec.ids[(k, j)] for j in (0, 1, 2, 4, 5))  # noqa: E731
    assert increments[1] == others(1) + rec.ids[(0, 3)]
    assert increments[2] == others(2) + rec.ids[(0, 3)]


def test_fully_pruned_rows_add_the_current_cache():
    # rows 1-2 prune everything, row 3 recomputes SA1, row 4 prunes everything again
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[0] = False
    mask[3, 3] = False
    rec = _Recorder(6)
    increments = rec.run(SparseRunner(rec.fns, mask, OneForAllCache(6)), 5)
    first = rec.ids[(0, 3)] + rec.ids[(0, 4)] + rec.ids[(0, 5)]  # the latest SA, CA, FFN: layer 1 of step 0
    assert increments[1] == increments[2] == 2 * first
    assert increments[3] == first + rec.ids[(3, 3)] + rec.ids[(0, 4)] + rec.ids[(0, 5)]
    assert increments[4] == 2 * (rec.ids[(3, 3)] + rec.ids[(0, 4)] + rec.ids[(0, 5)])  # the sum was refreshed


def test_rows_compile_to_computed_blocks_and_pruned_runs():
    assert row_program((False, True, True, False, True)) == (0, (1, 2), 3, (4,))
    assert row_program((True,) * 3) == ((0, 1, 2),)
    assert row_program((False,) * 2) == (0, 1)


@pytest.mark.parametrize("cache_cls", [OneForAllCache, PerBlockCache])
def test_stand_in_sum_equals_fetching_block_by_block(cache_cls):
    cache = cache_cls(6)
    for j in range(6):
        cache.store(j, torch.full((1, 2), 2.0 ** j))
    for run in [(0,), (1, 2), (0, 1, 2, 3, 4, 5), (2, 5)]:
        assert torch.equal(cache.stand_in_sum(run), sum(cache.fetch(j) for j in run))
    cache.reset()
    cache.store(0, torch.ones(1, 2))
    assert cache.stand_in_sum((0, 1)) is None


def test_empty_cache_falls_back_to_compute():
    mask = torch.ones(2, 3, dtype=torch.bool)  # even the first step says "prune"
    rec = _Recorder(3)
    runner = SparseRunner(rec.fns, mask, OneForAllCache(3))
    rec.run(runner, 2)
    assert runner.computed == 3 and all((0, j) in rec.ids for j in range(3))


@torch.no_grad()
def test_gated_runner_forward_equals_sparse_runner(tiny_policy):
    k, n = tiny_policy.schedule.num_steps, tiny_policy.config.denoiser.num_blocks
    mask = with_first_step_computed(torch.rand(k, n, generator=torch.Generator().manual_seed(3)) < 0.7)
    for kind in ("one_for_all", "per_block"):
        hard = _chunk(tiny_policy, lambda kernels: SparseRunner(kernels.block_fns, mask, make_cache(kind, n)))
        gated = _chunk(tiny_policy, lambda kernels: GatedRunner(kernels.block_fns, mask.float()[None], make_cache(kind, n)))
        torch.testing.assert_close(gated, hard, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(hard, _chunk(tiny_policy, dense_runner))


def _held_mask(k: int, n: int) -> torch.Tensor:
    """Random partial rows, steps 2-4 and the last step wholly pruned (held under hold_x0)."""
    mask = with_first_step_computed(torch.rand(k, n, generator=torch.Generator().manual_seed(5)) < 0.5)
    mask[2:5] = True
    mask[k - 1] = True
    return mask


@torch.no_grad()
def test_hold_x0_changes_nothing_without_wholly_pruned_steps(tiny_policy):
    k, n = tiny_policy.schedule.num_steps, tiny_policy.config.denoiser.num_blocks
    mask = with_first_step_computed(torch.rand(k, n, generator=torch.Generator().manual_seed(3)) < 0.5)
    mask[:, 0] = False  # no row is wholly pruned
    plain = _chunk(tiny_policy, lambda kernels: SparseRunner(kernels.block_fns, mask, make_cache("per_block", n)))
    held = _chunk(tiny_policy, lambda kernels: SparseRunner(kernels.block_fns, mask, make_cache("per_block", n),
                                                           hold_x0=True))
    assert torch.equal(held, plain)


@torch.no_grad()
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_held_steps_run_no_network_and_take_the_update_of_the_last_computed_x0(tiny_policy, sampler):
    tiny_policy.use_sampler(sampler, tiny_policy.schedule.num_steps)
    schedule = tiny_policy.schedule
    k, n = schedule.num_steps, tiny_policy.config.denoiser.num_blocks
    mask = torch.zeros(k, n, dtype=torch.bool)
    mask[3:6] = True
    mask[k - 1] = True
    features = tiny_policy.encode_observation(random_observation(tiny_policy.config))
    kernels = eager_kernels(tiny_policy.denoiser)
    inputs = prepare_chunk(tiny_policy.denoiser, schedule, features, torch.Generator().manual_seed(0))
    embeds = []
    counted = dataclasses.replace(kernels, embed=lambda x: embeds.append(1) or kernels.embed(x))
    runner = SparseRunner(kernels.block_fns, mask, make_cache("per_block", n), hold_x0=True)
    out = reverse_diffusion(schedule, inputs, counted, runner)
    assert runner.computed == 6 * n and len(embeds) == 6

    # the reference: dense steps where computed; a held step is the sampler's update with x0 fixed at the last
    # computed prediction (DDPM: the posterior mean of q(x_{t-1} | x_t, x0) plus sigma_t z; DDIM: its deterministic
    # step with the noise that x0 implies)
    x, x0 = inputs.x_init, None
    for step in range(k):
        z = torch.zeros_like(x) if inputs.noise is None else inputs.noise[step]
        if not mask[step].all():
            h = dense_runner(kernels)(step, kernels.embed(x), StepKV(inputs.kv[step]))
            eps = kernels.output(h)
            x0 = schedule.predict_x0(step, x, eps)
        else:
            eps = (x * schedule.x0_from_x[step] - x0) / schedule.x0_from_eps[step]
        x = (schedule.coef_x0[step] * x0 + schedule.coef_x[step] * x + schedule.coef_eps[step] * eps
             + schedule.coef_noise[step] * z)
    torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_gated_hold_forward_equals_sparse_hold(tiny_policy):
    k, n = tiny_policy.schedule.num_steps, tiny_policy.config.denoiser.num_blocks
    mask = _held_mask(k, n)
    for kind in ("one_for_all", "per_block"):
        hard = _chunk(tiny_policy, lambda kernels: SparseRunner(kernels.block_fns, mask, make_cache(kind, n),
                                                               hold_x0=True))
        gated = _chunk(tiny_policy, lambda kernels: GatedRunner(kernels.block_fns, mask.float()[None],
                                                               make_cache(kind, n), hold_x0=True))
        torch.testing.assert_close(gated, hard, rtol=1e-5, atol=1e-5)
        plain = _chunk(tiny_policy, lambda kernels: SparseRunner(kernels.block_fns, mask, make_cache(kind, n)))
        assert not torch.allclose(hard, plain)


@torch.no_grad()
def test_gated_step_holds_forward_equals_sparse_hold(tiny_policy):
    """A hierarchical pruner's training pass: the held steps come from the hold gates, whatever the block gates say
    there (here: compute every block), and leave the cache as it was, as the run-time sampler does."""
    k, n = tiny_policy.schedule.num_steps, tiny_policy.config.denoiser.num_blocks
    mask = _held_mask(k, n)
    holds = mask.all(-1).float()[None]
    blocks = torch.where(mask.all(-1, keepdim=True), False, mask).float()[None]  # held rows: every block would run
    for kind in ("one_for_all", "per_block"):
        hard = _chunk(tiny_policy, lambda kernels: SparseRunner(kernels.block_fns, mask, make_cache(kind, n),
                                                               hold_x0=True))
        gated = _chunk(tiny_policy, lambda kernels: GatedRunner(kernels.block_fns, blocks, make_cache(kind, n),
                                                               hold_x0=True, step_holds=holds))
        torch.testing.assert_close(gated, hard, rtol=1e-5, atol=1e-5)


def test_step_hold_gates_are_exact_forward_and_pass_the_mean_gradient():
    gates = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]], requires_grad=True)
    hold = step_hold_gates(gates)
    assert hold.tolist() == [[0.0, 0.0, 1.0]]
    hold.sum().backward()
    torch.testing.assert_close(gates.grad, torch.full_like(gates, 1 / 3))  # computed steps get a signal too


def test_a_held_first_step_is_refused(tiny_policy):
    k, n = tiny_policy.schedule.num_steps, tiny_policy.config.denoiser.num_blocks

    class HoldsStepZero:
        held_steps = (True,) * k

        def __call__(self, step, h, kv):
            return h

    with pytest.raises(ValueError, match="step 0 cannot hold"):
        _chunk(tiny_policy, lambda kernels: HoldsStepZero())
    runner = SparseRunner([lambda h, kv: h] * n, torch.ones(k, n, dtype=torch.bool), make_cache("per_block", n),
                          hold_x0=True)
    assert runner.held_steps[0] is False and all(runner.held_steps[1:])  # a runner never holds step 0


def test_mask_validation_names_the_problem():
    with pytest.raises(ValueError, match=r"expected \[steps=10, blocks=6\]"):
        validate_mask(torch.zeros(10, 5, dtype=torch.bool), 10, 6)
    with pytest.raises(TypeError, match="must be bool"):
        validate_mask(torch.zeros(10, 6), 10, 6)
    with pytest.raises(TypeError, match="torch.Tensor"):
        validate_mask([[False]], 1, 1)


def test_interval_mask_and_fraction():
    mask = interval_mask(10, 6, interval=5)
    assert mask[0].logical_not().all() and mask[5].logical_not().all() and mask[1].all()
    assert executed_fraction(mask) == pytest.approx(0.2)


def test_interval_mask_from_a_later_step_keeps_step_0():
    computed_steps = interval_mask(20, 6, interval=3, start=11).logical_not().all(dim=1)
    assert computed_steps.nonzero().flatten().tolist() == [0, 11, 14, 17]
    with pytest.raises(ValueError, match="start=20"):
        interval_mask(20, 6, interval=3, start=20)



@torch.no_grad()
def test_sample_with_masks_groups_entries_by_mask_as_if_alone(tiny_policy):
    schedule, kernels = tiny_policy.schedule, eager_kernels(tiny_policy.denoiser)
    num_steps, num_blocks = schedule.num_steps, len(kernels.block_fns)
    features = tiny_policy.encode_observation(random_observation(tiny_policy.config, batch=4))
    inputs = prepare_chunk(tiny_policy.denoiser, schedule, features, torch.Generator().manual_seed(1))
    dense, every_3rd = torch.zeros(num_steps, num_blocks, dtype=torch.bool), interval_mask(num_steps, num_blocks, 3)
    window_masks = torch.stack([dense, every_3rd, dense, every_3rd])  # windows 0, 2 and 1, 3 share a mask
    batch_dense = reverse_diffusion(schedule, inputs, kernels, dense_runner(kernels))

    for hold in (False, True):
        chunks = sample_with_masks(schedule, kernels, inputs, window_masks, "per_block", hold)
        for window, mask in enumerate(window_masks):
            runner = SparseRunner(kernels.block_fns, mask, make_cache("per_block", num_blocks), hold_x0=hold)
            alone = reverse_diffusion(schedule, inputs.select(torch.tensor([window])), kernels, runner)
            torch.testing.assert_close(chunks[window], alone[0], rtol=1e-5, atol=1e-6)
        for window in (0, 2):  # an all-compute mask is dense sampling of the window's own inputs
            torch.testing.assert_close(chunks[window], batch_dense[window], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(chunks[0], chunks[1])  # the two masks do sample differently
