"""One task made of several (``a+b``): seed parity picks the component, states re-render in their own component
from any episode, each component's expert drives its episodes, and components that a policy could not share are
refused."""

from importlib.util import find_spec

import numpy as np
import pytest

from sag_ros.sim.task import get_task

pytestmark = pytest.mark.skipif(find_spec("metaworld") is None, reason="metaworld absent: pip install -e .[metaworld]")

NAME = "mw-door-open+mw-button-press-topdown"


@pytest.fixture(scope="module")
def task():
    return get_task(NAME)


@pytest.fixture(scope="module")
def adapter(task):
    adapter = task.make_adapter()
    yield adapter
    adapter.close()


@pytest.mark.parametrize("seed", [4, 7])
def test_seed_parity_plays_that_components_layout(task, adapter, seed):
    """Seed s is component s % 2 on that component's own layout s: the same images and states as the component
    task alone, step after step under its expert."""
    component = get_task(NAME.split("+")[seed % 2])
    alone, alone_expert = component.make_adapter(), component.make_expert()
    expert = task.make_expert()
    try:
        adapter.reset(seed)
        alone.reset(seed)
        assert adapter.active_index == seed % 2
        for _ in range(6):
            for key, value in alone.observation().items():
                np.testing.assert_array_equal(adapter.observation()[key], value, err_msg=key)
            action = expert.act(adapter)
            np.testing.assert_array_equal(action, alone_expert.act(alone))
            assert adapter.step(action) == alone.step(action)
    finally:
        alone.close()


def test_states_of_either_component_re_render_from_any_episode(task, adapter):
    """A demonstration file holds both tasks' states in one array: each has one width and re-renders in its own
    component while the adapter plays the other one, leaving the live episode alone."""
    expert = task.make_expert()
    stored = []
    for seed in (2, 3):
        adapter.reset(seed)
        for _ in range(10):
            adapter.step(expert.act(adapter))
        stored.append((adapter.sim_state(), adapter.observation()))
    assert stored[0][0].shape == stored[1][0].shape
    adapter.reset(6)
    live = adapter.sim_state()
    for sim_state, obs in stored:
        again = adapter.render_state(sim_state)
        for key in obs:
            np.testing.assert_array_equal(again[key], obs[key], err_msg=key)
    np.testing.assert_array_equal(adapter.sim_state(), live)
    assert not np.array_equal(stored[0][1]["image"], stored[1][1]["image"])


def test_components_a_policy_cannot_share_are_refused():
    with pytest.raises(ValueError, match="max_steps differ"):
        get_task("pusht+mw-door-open")
    with pytest.raises(ValueError, match="unknown task 'mw-door-shut'"):
        get_task("mw-door-open+mw-door-shut")
