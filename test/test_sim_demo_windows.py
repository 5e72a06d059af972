"""Demonstration windows for the open-loop studies: each component's windows come from its own episodes (seed
parity) as consecutive frames inside one episode, and pair with the action chunk training pairs them with."""

from __future__ import annotations

import numpy as np
import torch

from sag_ros.policy.data import window_time_indices
from sag_ros.sim.dataset import Demos
from sag_ros.sim.demo_windows import component_windows, demonstrated_chunks
from sag_ros.sim.multi_task import component_index


def demos_of(lengths: list[int], seeds: list[int]) -> Demos:
    n = sum(lengths)
    return Demos(sim_state=np.zeros((n, 3)), action=np.zeros((n, 2), np.float32), state=np.zeros((n, 2), np.float32),
                 keypoints=np.zeros((n, 4), np.float32), episode_ends=np.cumsum(lengths),
                 metadata={"episode_seeds": seeds})


def test_windows_come_from_episodes_of_their_component():
    lengths, seeds = [5, 9, 7, 12, 6, 8, 10], [0, 1, 2, 3, 4, 5, 7]
    demos = demos_of(lengths, seeds)
    slices = demos.episode_slices()
    fractions = [0.0, 0.5, 1.0]
    windows = component_windows(demos, count=2, episodes=2, fractions=fractions, n_obs_steps=2, seed=3)

    assert [len(w) for w in windows] == [2 * len(fractions)] * 2
    for component, frames_of_component in enumerate(windows):
        episodes_used = set()
        for i, frames in enumerate(frames_of_component):
            assert len(frames) == 2 and frames.step == 1
            episode = next(e for e, sl in enumerate(slices) if sl.start <= frames.start < sl.stop)
            assert frames.stop <= slices[episode].stop  # never crosses into the next episode
            assert component_index(seeds[episode], 2) == component
            if fractions[i % len(fractions)] == 0.0:  # the episode's first full window
                assert frames.start == slices[episode].start
            episodes_used.add(episode)
        assert len(episodes_used) == 2
    # all three even-seed episodes but only two odd ones are available: asking for more takes what there is
    more = component_windows(demos, count=2, episodes=5, fractions=[0.0], n_obs_steps=2, seed=3)
    assert [len(w) for w in more] == [3, 4]


def test_demonstrated_chunks_are_the_training_windows_chunks():
    lengths = [5, 9, 7]
    demos = demos_of(lengths, [0, 1, 2])
    demos.action = np.arange(2 * sum(lengths), dtype=np.float32).reshape(-1, 2)
    n_obs_steps, horizon = 2, 6
    windows = component_windows(demos, count=1, episodes=3, fractions=[0.0, 0.5, 1.0], n_obs_steps=n_obs_steps,
                                seed=0)[0]
    chunks = demonstrated_chunks(demos, windows, horizon)

    slices = demos.episode_slices()
    for frames, chunk in zip(windows, chunks):
        episode = next(sl for sl in slices if sl.start <= frames.start < sl.stop)
        steps = window_time_indices(np.array([[episode.start, episode.stop, frames.start]]), horizon)[0]
        np.testing.assert_array_equal(chunk, demos.action[steps])
    # a window at an episode's last frame runs past its end: that episode's last action repeats, not the next's
    at_end = [(frames, chunk) for frames, chunk in zip(windows, chunks) if frames.stop in demos.episode_ends]
    assert len(at_end) == 3
    for frames, chunk in at_end:
        assert (chunk[n_obs_steps - 1:] == demos.action[frames.stop - 1]).all()
