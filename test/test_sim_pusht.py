"""Push-T adapter: observation contract, exact re-rendering from stored states, score protocol."""

import dataclasses

import numpy as np
import pytest

from sag_ros.sim.pusht import GOAL_POSE
from sag_ros.sim.task import get_task

from conftest import assert_observation_contract


@pytest.fixture()
def task():
    return get_task("pusht")


@pytest.fixture()
def adapter(task):
    adapter = task.make_adapter()
    yield adapter
    adapter.close()


def test_unknown_task_lists_known_names():
    with pytest.raises(ValueError, match="pusht"):
        get_task("no-such-task")


def test_observation_shapes_and_dtypes(task, adapter):
    adapter.reset(0)
    obs = assert_observation_contract(task, adapter)
    assert adapter.sim_state().shape == (5,)
    assert adapter.render_frame().ndim == 3


def test_reset_is_a_function_of_the_seed(adapter):
    adapter.reset(3)
    first = adapter.sim_state()
    adapter.reset(4)
    assert not np.array_equal(adapter.sim_state(), first)  # the seed sets the layout
    adapter.reset(3)
    np.testing.assert_array_equal(adapter.sim_state(), first)


def test_render_state_reproduces_observation_exactly(adapter):
    rng = np.random.default_rng(0)
    adapter.reset(1)
    stored = []
    block = adapter.sim_state()[2:4]
    for _ in range(12):  # aim at the block so some steps push it
        adapter.step(block + rng.uniform(-60, 60, size=2))
        stored.append((adapter.sim_state(), adapter.observation()))
    live = adapter.sim_state()
    for sim_state, obs in stored:
        again = adapter.render_state(sim_state)
        for key in obs:
            np.testing.assert_array_equal(again[key], obs[key], err_msg=key)
    np.testing.assert_array_equal(adapter.sim_state(), live)  # rendering did not move anything


def test_actions_are_absolute_targets_and_holding_targets_the_agent(task, adapter):
    assert task.absolute_actions and (task.action_low, task.action_high) == ((0.0, 0.0), (512.0, 512.0))
    adapter.reset(0)
    obs = adapter.observation()
    hold = task.hold_action(obs)
    assert hold.dtype == np.float64 and hold.tolist() == obs["state"].tolist()
    for _ in range(3):
        adapter.step(hold)
    np.testing.assert_array_equal(adapter.observation()["state"], obs["state"])


def test_action_range_must_fit_the_action_size(task):
    with pytest.raises(ValueError, match="action_dim=2"):
        dataclasses.replace(task, action_low=(0.0,))
    with pytest.raises(ValueError, match="below"):
        dataclasses.replace(task, action_low=(0.0, 512.0))


def test_block_at_goal_scores_one_and_succeeds(task, adapter):
    adapter.reset(0)
    adapter._place(np.array([60.0, 60.0, *GOAL_POSE]))  # agent far away, block on the goal
    result = adapter.step(np.array([60.0, 60.0]))
    assert result.info["coverage"] > 0.99
    assert result.success and result.done and result.reward == 1.0
    assert task.episode_score([0.2, result.reward, 0.5]) == 1.0
    assert task.reward(0.5 * task.success_threshold) == pytest.approx(0.5)


def test_time_limit_ends_the_episode(task, adapter):
    adapter.reset(0)
    hold = adapter.sim_state()[:2]
    results = [adapter.step(hold) for _ in range(task.max_steps)]
    assert not any(r.done for r in results[:-1]) and results[-1].done and not results[-1].success
