"""The fidelity-ranking study (tools/fidelity_ranking_study.py): its measures behave as their definitions say on
hand-made samples (dense is 0 away from itself; collapsing samples onto their mean lowers the L1 to a demonstration
but raises the energy score), its rank correlation handles ties and order, and the demonstrated chunks are those
training pairs with the windows' frames."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from sag_ros.policy.data import window_time_indices
from sag_ros.sim.demo_windows import component_windows

from conftest import demos_of

_spec = importlib.util.spec_from_file_location("fidelity_ranking_study",
                                               Path(__file__).parents[1] / "tools" / "fidelity_ranking_study.py")
study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study)


def test_dense_is_zero_away_from_itself_and_keeps_its_spread():
    dense = torch.randn(5, 6, 4, generator=torch.Generator().manual_seed(0))
    demo = torch.randn(5, 1, 4, generator=torch.Generator().manual_seed(1))
    measures = study.sample_measures(dense, dense, demo)
    assert torch.equal(measures["l1 dense"], torch.zeros(5))
    torch.testing.assert_close(measures["energy dist"], torch.zeros(5), atol=1e-6, rtol=0)
    assert (measures["spread"] > 0).all()


def test_collapse_onto_the_mean_pleases_l1_to_the_demo_but_not_the_energy_score():
    generator = torch.Generator().manual_seed(2)
    demo = torch.randn(64, 1, 3, generator=generator)  # one draw of the demonstrator per observation ...
    spread_out = torch.randn(64, 16, 3, generator=generator)  # ... and samples from the same distribution
    collapsed = spread_out.mean(1, keepdim=True).expand_as(spread_out)
    wide, narrow = study.sample_measures(spread_out, spread_out, demo), study.sample_measures(collapsed, spread_out, demo)
    assert narrow["l1 demo"].mean() < wide["l1 demo"].mean()
    assert narrow["energy score"].mean() > wide["energy score"].mean()
    assert torch.equal(narrow["spread"], torch.zeros(64))
    assert narrow["energy dist"].mean() > 0.5


def test_spearman_orders_and_ties():
    assert study.spearman(np.array([0.1, 0.5, 0.3]), np.array([1.0, 3.0, 2.0])) == 1.0
    assert study.spearman(np.array([0.1, 0.5, 0.3]), np.array([3.0, 1.0, 2.0])) == -1.0
    np.testing.assert_allclose(study.average_ranks(np.array([2.0, 1.0, 2.0, 0.0])), [2.5, 1.0, 2.5, 0.0])


def test_rank_correlations_read_lower_distance_and_more_spread_as_better():
    # success falls as the distance measures rise and as the spread rises
    methods = {name: {"all": {"success": success, **{m: distance for m in study.MEASURES}}}
               for name, success, distance in [("a", 0.7, 0.1), ("b", 0.5, 0.2), ("c", 0.2, 0.9)]}
    corr = study.rank_correlations(methods, "all", "success")
    assert corr["l1 dense"] == corr["energy score"] == 1.0  # lower is better: ordered as closed loop
    assert corr["spread"] == -1.0  # more spread, less success: the door-open finding's sign


def test_demonstrated_chunks_are_the_training_windows_chunks():
    lengths = [5, 9, 7]
    demos = demos_of(lengths, [0, 1, 2])
    demos.action = np.arange(2 * sum(lengths), dtype=np.float32).reshape(-1, 2)
    n_obs_steps, horizon = 2, 6
    windows = component_windows(demos, count=1, episodes=3, fractions=[0.0, 0.5, 1.0], n_obs_steps=n_obs_steps,
                                seed=0)[0]
    chunks = study.demonstrated_chunks(demos, windows, horizon)

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
