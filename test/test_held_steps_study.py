"""The held-steps study (tools/held_steps_study.py) runs an observation-conditioned pruner's masks window by window:
grouping the windows by mask must give each window the chunk it would get sampled alone under its own mask."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from conftest import random_observation
from sag_ros.policy.sampling import dense_runner, eager_kernels, prepare_chunk, reverse_diffusion
from sag_ros.sparse.cache import make_cache
from sag_ros.sparse.mask import interval_mask
from sag_ros.sparse.sampler import SparseRunner

_spec = importlib.util.spec_from_file_location("held_steps_study",
                                               Path(__file__).parents[1] / "tools" / "held_steps_study.py")
study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study)


@torch.no_grad()
def test_windows_grouped_by_mask_sample_as_if_alone(tiny_policy):
    schedule, kernels = tiny_policy.schedule, eager_kernels(tiny_policy.denoiser)
    num_steps, num_blocks = schedule.num_steps, len(kernels.block_fns)
    features = tiny_policy.encode_observation(random_observation(tiny_policy.config, batch=4))
    inputs = prepare_chunk(tiny_policy.denoiser, schedule, features, torch.Generator().manual_seed(1))
    dense, every_3rd = torch.zeros(num_steps, num_blocks, dtype=torch.bool), interval_mask(num_steps, num_blocks, 3)
    window_masks = torch.stack([dense, every_3rd, dense, every_3rd])  # windows 0, 2 and 1, 3 share a mask
    batch_dense = reverse_diffusion(schedule, inputs, kernels, dense_runner(kernels))

    for hold in (False, True):
        chunks = study.sample_per_window(schedule, kernels, inputs, window_masks, "per_block", hold)
        for window, mask in enumerate(window_masks):
            runner = SparseRunner(kernels.block_fns, mask, make_cache("per_block", num_blocks), hold_x0=hold)
            alone = reverse_diffusion(schedule, inputs.select(torch.tensor([window])), kernels, runner)
            torch.testing.assert_close(chunks[window], alone[0], rtol=1e-5, atol=1e-6)
        for window in (0, 2):  # an all-compute mask is dense sampling of the window's own inputs
            torch.testing.assert_close(chunks[window], batch_dense[window], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(chunks[0], chunks[1])  # the two masks do sample differently
