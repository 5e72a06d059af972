"""Per-row step programs on static buffers (what CUDA graphs capture) against the sparse runner and dense sampling.

The programs run eagerly here; capture and replay are checked where a GPU is (last test, and
``tools/gpu_check.sh``)."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config
from sag_ros.engine.cuda_graphs import StepGraphs
from sag_ros.policy.policy import DiffusionPolicy
from sag_ros.policy.sampling import dense_runner, eager_kernels, prepare_chunk, reverse_diffusion
from sag_ros.sparse.cache import make_cache
from sag_ros.sparse.mask import with_first_step_computed
from sag_ros.sparse.sampler import sparse_runner


def setup(device: str = "cpu"):
    torch.manual_seed(0)
    policy = DiffusionPolicy(tiny_config()).eval().to(device)
    features = torch.randn(1, policy.config.denoiser.n_obs_steps, policy.config.encoder.feature_dim, device=device)
    with torch.no_grad():
        inputs = prepare_chunk(policy.denoiser, policy.schedule, features, torch.Generator(device).manual_seed(0))
    kernels = eager_kernels(policy.denoiser)
    h = torch.zeros(*inputs.x_init.shape[:2], policy.config.denoiser.d_model, device=device)
    return policy, inputs, kernels, h


def random_mask(policy, seed: int) -> torch.Tensor:
    k, n = policy.schedule.num_steps, policy.config.denoiser.num_blocks
    return with_first_step_computed(torch.rand(k, n, generator=torch.Generator().manual_seed(seed)) < 0.7)


@pytest.mark.parametrize("reuse", ["one_for_all", "per_block"])
def test_row_programs_reproduce_the_sparse_runner(reuse):
    policy, inputs, kernels, h = setup()
    graphs = StepGraphs(kernels.block_fns, reuse, h, inputs.kv[0])
    assert not graphs.use_graphs
    with torch.no_grad():
        for seed in (1, 2):  # a second chunk reuses the programs of rows it shares with the first
            mask = random_mask(policy, seed)
            expected = reverse_diffusion(policy.schedule, inputs, kernels,
                                         sparse_runner(kernels, mask, make_cache(reuse, mask.shape[1])))
            actual = reverse_diffusion(policy.schedule, inputs, kernels, graphs.runner(mask))
            torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    rows = {tuple(r) for seed in (1, 2) for r in random_mask(policy, seed).tolist()}
    assert graphs.captured == len(rows)


def test_held_steps_run_nothing_and_match_the_sparse_runner():
    policy, inputs, kernels, h = setup()
    graphs = StepGraphs(kernels.block_fns, "per_block", h, inputs.kv[0])
    mask = random_mask(policy, 3)
    mask[1::2] = True  # every other step holds its clean-chunk prediction
    mask[0::2, 0] = False  # and no other step does
    with torch.no_grad():
        expected = reverse_diffusion(policy.schedule, inputs, kernels,
                                     sparse_runner(kernels, mask, make_cache("per_block", mask.shape[1]), hold_x0=True))
        run = graphs.runner(mask, hold_x0=True)
        actual = reverse_diffusion(policy.schedule, inputs, kernels, run)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    assert run.held_steps == tuple(k % 2 == 1 for k in range(len(mask)))
    assert graphs.captured == len({tuple(r) for r in mask[0::2].tolist()})  # none for the held rows


def test_dense_row_program_reproduces_dense_sampling():
    policy, inputs, kernels, h = setup()
    graphs = StepGraphs(kernels.block_fns, "one_for_all", h, inputs.kv[0])
    dense = torch.zeros(policy.schedule.num_steps, policy.config.denoiser.num_blocks, dtype=torch.bool)
    with torch.no_grad():
        actual = reverse_diffusion(policy.schedule, inputs, kernels, graphs.runner(dense))
        expected = reverse_diffusion(policy.schedule, inputs, kernels, dense_runner(kernels))
    assert torch.equal(actual, expected)
    assert graphs.captured == 1


def test_masks_that_read_empty_slots_or_do_not_fit_are_refused():
    policy, inputs, kernels, h = setup()
    graphs = StepGraphs(kernels.block_fns, "one_for_all", h, inputs.kv[0])
    mask = random_mask(policy, 1)
    mask[0, 1] = True
    with pytest.raises(ValueError, match="first mask row"):
        graphs.runner(mask)
    with pytest.raises(ValueError, match=r"expected \[steps=\d+, blocks=\d+\]"):
        graphs.runner(mask[:, :-1])
    with pytest.raises(TypeError, match="must be bool"):
        graphs.runner(mask.float())
    with pytest.raises(ValueError, match="CUDA"):
        StepGraphs(kernels.block_fns, "one_for_all", h, inputs.kv[0], use_graphs=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_captured_graphs_replay_the_sparse_runner_on_cuda():
    policy, inputs, kernels, h = setup("cuda")
    graphs = StepGraphs(kernels.block_fns, "one_for_all", h, inputs.kv[0])
    assert graphs.use_graphs
    mask = random_mask(policy, 1).cuda()
    with torch.no_grad():
        expected = reverse_diffusion(policy.schedule, inputs, kernels,
                                     sparse_runner(kernels, mask, make_cache("one_for_all", mask.shape[1])))
        for _ in range(2):  # first call captures, second replays
            actual = reverse_diffusion(policy.schedule, inputs, kernels, graphs.runner(mask))
            torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)
