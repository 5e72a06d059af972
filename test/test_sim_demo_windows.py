"""Demonstration windows for the open-loop studies: each component's windows come from its own episodes (seed
parity) as consecutive frames inside one episode."""

from __future__ import annotations


from sag_ros.sim.demo_windows import component_windows
from sag_ros.sim.multi_task import component_index

from conftest import demos_of


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

