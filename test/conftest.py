"""Shared fixtures: a tiny policy config (2 layers, width 32) that every layer's tests can afford."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sag_ros.policy.config import DenoiserConfig, EncoderConfig, PolicyConfig, SchedulerConfig
from sag_ros.sim.dataset import Demos


def tiny_config(encoder_kind: str = "small_cnn", scheduler_steps: int = 10) -> PolicyConfig:
    return PolicyConfig(
        encoder=EncoderConfig(kind=encoder_kind, image_size=32, crop_size=28, num_keypoints=8,
                              image_feature_dim=16, cnn_channels=(8, 16)),
        denoiser=DenoiserConfig(n_layers=2, d_model=32, n_heads=2, horizon=8, n_obs_steps=2, n_action_steps=4,
                                p_drop_attn=0.0),
        scheduler=SchedulerConfig(num_train_steps=scheduler_steps, num_inference_steps=scheduler_steps),
    )


@pytest.fixture
def tiny_policy_config() -> PolicyConfig:
    return tiny_config()


@pytest.fixture
def tiny_policy(tiny_policy_config):
    from sag_ros.policy.policy import DiffusionPolicy

    torch.manual_seed(0)
    return DiffusionPolicy(tiny_policy_config).eval()


def random_observation(config: PolicyConfig, batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """A well-formed raw observation for ``config``."""
    g = torch.Generator().manual_seed(seed)
    enc, to = config.encoder, config.denoiser.n_obs_steps
    return {
        "image": torch.randint(0, 256, (batch, to, enc.image_size, enc.image_size, 3), generator=g, dtype=torch.uint8),
        "state": torch.rand((batch, to, enc.state_dim), generator=g) * 512,
        "keypoints": torch.rand((batch, to, enc.lowdim_dim), generator=g) * 512,
    }


@pytest.fixture(scope="module")
def policy():
    """A tiny policy in eval mode shared by a module's tests (backend comparisons)."""
    from sag_ros.policy.policy import DiffusionPolicy

    torch.manual_seed(0)
    return DiffusionPolicy(tiny_config()).eval()


@pytest.fixture(scope="module")
def features(policy) -> torch.Tensor:
    """Observation features of one random observation for ``policy``."""
    with torch.no_grad():
        return policy.encode_observation(random_observation(policy.config))


def assert_observation_contract(task, adapter) -> dict:
    """What every task adapter promises (``sag_ros.sim.task.TaskAdapter``): shapes and dtypes of one observation."""
    import numpy as np

    obs = adapter.observation()
    assert obs["image"].shape == (task.image_size, task.image_size, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].shape == (task.state_dim,) and obs["state"].dtype == np.float32
    assert obs["keypoints"].shape == (task.keypoint_dim,) and obs["keypoints"].dtype == np.float32
    assert adapter.sim_state().ndim == 1 and adapter.sim_state().dtype == np.float64
    return obs


def between_middle_margins(logits: torch.Tensor) -> torch.Tensor:
    """Halfway between the two middle prune-minus-keep margins of pruner logits [..., 2]: subtracted from the prune
    bias, it puts half the cells on each side of the gate, none of them within float rounding of it (a cell at
    exactly the median would flip between two equal computations summed in another order)."""
    margins = (logits[..., 1] - logits[..., 0]).flatten().sort().values
    middle = margins.numel() // 2
    return (margins[middle - 1] + margins[middle]) / 2


def demos_of(lengths: list[int], seeds: list[int]) -> Demos:
    """Demonstrations of the given episode lengths and env seeds, all arrays zero: for window bookkeeping."""
    n = sum(lengths)
    return Demos(sim_state=np.zeros((n, 3)), action=np.zeros((n, 2), np.float32), state=np.zeros((n, 2), np.float32),
                 keypoints=np.zeros((n, 4), np.float32), episode_ends=np.cumsum(lengths),
                 metadata={"episode_seeds": seeds})
