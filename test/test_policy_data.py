"""Training windows: edge padding inside episodes, never crossing them, batches of the right shapes."""

import numpy as np
import torch

from sag_ros.policy.data import WindowSampler, window_starts, window_time_indices


def test_windows_pad_with_episode_edges_and_never_cross_episodes():
    episode_ends = np.array([3, 5])  # episodes [0, 1, 2] and [3, 4]
    x = np.arange(5) * 10
    rows = window_starts(episode_ends, horizon=4, pad_before=1, pad_after=2)
    windows = x[window_time_indices(rows, 4)].tolist()
    assert windows == [
        [0, 0, 10, 20],  # starts one step before episode 1: first step repeated
        [0, 10, 20, 20],
        [10, 20, 20, 20],  # runs two steps past the end: last step repeated
        [30, 30, 40, 40],  # episode 2 is shorter than the horizon: padded on both sides
        [30, 40, 40, 40],
    ]


def test_sampler_batches_have_policy_shapes():
    n = 40
    arrays = {"action": np.random.rand(n, 2).astype(np.float32), "state": np.random.rand(n, 2).astype(np.float32),
              "image": np.zeros((n, 8, 8, 3), dtype=np.uint8)}
    sampler = WindowSampler(arrays, np.array([20, 40]), n_obs_steps=2, horizon=16, n_action_steps=8, data_hash="h")
    obs, action = sampler.sample(5, torch.Generator().manual_seed(0))
    assert action.shape == (5, 16, 2) and obs["state"].shape == (5, 2, 2) and obs["image"].shape == (5, 2, 8, 8, 3)
    assert obs["image"].dtype == torch.uint8 and "image" not in sampler.normalizer_data()


def test_sampled_observations_are_the_first_steps_of_their_action_window():
    """DP's alignment: observation t pairs with action t, the To observations are the window's first steps (so the
    executed actions start at To-1), and no window mixes two episodes."""
    n, ends = 40, np.array([20, 40])
    step = np.arange(n, dtype=np.float32)
    arrays = {"action": np.stack([step, step], 1), "state": np.stack([step, -step], 1),
              "image": np.zeros((n, 8, 8, 3), dtype=np.uint8)}
    sampler = WindowSampler(arrays, ends, n_obs_steps=2, horizon=16, n_action_steps=8, data_hash="h")
    obs, action = sampler.sample(64, torch.Generator().manual_seed(0))
    torch.testing.assert_close(obs["state"][..., 0], action[:, :2, 0], rtol=0, atol=0)
    episode = (action[..., 0] >= 20).long()
    assert (episode == episode[:, :1]).all(), "a window crossed an episode boundary"
    assert (action[:, 1:, 0] - action[:, :-1, 0] <= 1).all() and (action[:, 1:, 0] >= action[:, :-1, 0]).all()
