"""Sparse sampler: dense equivalence, reuse-cache semantics on hand-made masks, gated == hard forward."""

import pytest
import torch

from sag_ros.policy.sampling import dense_runner, eager_kernels, prepare_chunk, reverse_diffusion
from sag_ros.sparse.cache import OneForAllCache, PerBlockCache, make_cache
from sag_ros.sparse.mask import executed_fraction, interval_mask, validate_mask, with_first_step_computed
from sag_ros.sparse.sampler import GatedRunner, SparseRunner, row_program

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
