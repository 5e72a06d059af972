"""The cross-chunk reuse study (tools/cross_chunk_study.py): its sampler must be the dense sampler when nothing is
pruned, and must take the previous chunk's shifted deltas where it says it does."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from conftest import random_observation
from sag_ros.policy.sampling import ChunkInputs, dense_runner, eager_kernels, prepare_chunk, reverse_diffusion

_spec = importlib.util.spec_from_file_location("cross_chunk_study",
                                               Path(__file__).parents[1] / "tools" / "cross_chunk_study.py")
study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study)


def _inputs(policy, seed: int = 0):
    cfg = policy.denoiser.config
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, cfg.horizon, cfg.action_dim, generator=g)
    z = torch.randn(policy.schedule.num_steps, 1, cfg.horizon, cfg.action_dim, generator=g)
    return policy.encode_observation(random_observation(policy.config, seed=seed)), x, z


@torch.no_grad()
def test_unmasked_study_sampler_is_dense_sampling(tiny_policy):
    features, x, z = _inputs(tiny_policy)
    chunk, record, fraction = study.ChunkSampler(tiny_policy)(features, x, z)
    kernels = eager_kernels(tiny_policy.denoiser)
    kv = prepare_chunk(tiny_policy.denoiser, tiny_policy.schedule, features, None).kv
    expected = reverse_diffusion(tiny_policy.schedule, ChunkInputs(x, z, kv), kernels, dense_runner(kernels))
    assert torch.equal(chunk, expected) and fraction == 1.0
    assert record.abs().sum(dim=(2, 3)).gt(0).all()  # every cell recorded


@torch.no_grad()
def test_a_pruned_first_step_takes_the_previous_chunks_shifted_deltas(tiny_policy):
    sampler = study.ChunkSampler(tiny_policy)
    features, x, z = _inputs(tiny_policy)
    _, previous, _ = sampler(features, x, z)
    steps, blocks, shift = sampler.num_steps, sampler.num_blocks, sampler.shift
    mask = torch.zeros(steps, blocks, dtype=torch.bool)
    mask[0] = True
    _, record, fraction = sampler(features, study.shifted(x, x, shift), study.shifted(z, z, shift), mask, previous,
                                  cross_steps=1)
    assert fraction == (steps - 1) / steps
    assert torch.equal(record[0, :, :-shift], previous[0, :, shift:])
    assert torch.equal(record[0, :, -shift:], previous[0, :, -1:].expand(-1, shift, -1))  # nothing of this chunk yet


def test_shifted_noise_moves_tokens_by_the_executed_actions():
    previous, fresh = torch.arange(8.0).view(1, 8, 1), -torch.ones(1, 8, 1)
    assert study.shifted(previous, fresh, 3).flatten().tolist() == [3, 4, 5, 6, 7, -1, -1, -1]
