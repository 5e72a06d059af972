"""Observation windows from each component's demonstrations, for the open-loop studies in ``tools/``.

A study that compares masks per task needs the observations of each component apart, a few per episode, with only
their frames re-rendered (re-rendering a whole data set takes minutes). A window is the policy's ``n_obs_steps``
consecutive frames of one episode.
"""

from __future__ import annotations

import numpy as np

from sag_ros.sim.dataset import Demos
from sag_ros.sim.multi_task import component_index
from sag_ros.sim.task import get_task


def component_windows(demos: Demos, count: int, episodes: int, fractions: list[float], n_obs_steps: int,
                      seed: int) -> list[list[range]]:
    """Per component, the frame windows (``n_obs_steps`` consecutive frames of one episode, the last at each
    fraction of it) of ``episodes`` demonstrations drawn at random among those that component played."""
    seeds = demos.metadata["episode_seeds"]
    slices = demos.episode_slices()
    order = np.random.default_rng(seed).permutation(len(slices))
    windows = []
    for component in range(count):
        chosen = [slices[ep] for ep in order if component_index(seeds[ep], count) == component][:episodes]
        ends = [min(max(sl.start + int(f * (sl.stop - sl.start)), sl.start + n_obs_steps - 1), sl.stop - 1)
                for sl in chosen for f in fractions]
        windows.append([range(end - n_obs_steps + 1, end + 1) for end in ends])
    return windows


def window_observations(demos: Demos, task_name: str, windows: list[range]) -> dict[str, np.ndarray]:
    """The raw observations of ``windows``: ``image`` uint8 [N, To, H, W, 3] re-rendered from the demonstrations'
    simulator states and ``state`` [N, To, S]."""
    adapter = get_task(task_name).make_adapter()
    try:
        adapter.reset(0)  # render_state only needs a built scene; each state carries its component
        images = [np.stack([adapter.render_state(demos.sim_state[i])["image"] for i in frames]) for frames in windows]
    finally:
        adapter.close()
    return {"image": np.stack(images), "state": np.stack([demos.state[list(frames)] for frames in windows])}

