"""Meta-World tasks: lazy registry, observation contract, exact re-rendering, image orientation, score protocol,
scripted expert and ``sag datagen``.

mujoco is imported only inside tests, after an adapter exists: importing it first would bind its GL backend
before :func:`~sag_ros.sim.mujoco_camera.select_gl_backend` could choose a headless one.
"""

import subprocess
import sys
from importlib.util import find_spec

import numpy as np
import pytest

from sag_ros.cli import main
from sag_ros.sim.dataset import load_demos
from sag_ros.sim.meta_world import TASKS, make_env
from sag_ros.sim.mujoco_camera import MujocoCamera
from sag_ros.sim.task import get_task

from conftest import assert_observation_contract

pytestmark = pytest.mark.skipif(find_spec("metaworld") is None, reason="metaworld absent: pip install -e .[metaworld]")


@pytest.fixture(scope="module", params=sorted(TASKS))
def task(request):
    return get_task(request.param)


@pytest.fixture(scope="module")
def adapter(task):
    adapter = task.make_adapter()
    yield adapter
    adapter.close()


def _expert_rollout(task, adapter, seed: int, steps: int | None = None) -> list:
    """Step the task's expert from ``seed``; every StepResult (stops at done or after ``steps``)."""
    expert = task.make_expert()
    adapter.reset(seed)
    expert.reset(adapter)
    results = []
    for _ in range(steps or task.max_steps):
        results.append(adapter.step(expert.act(adapter)))
        if results[-1].done:
            break
    return results


def test_registry_imports_no_simulator():
    code = ("import sys; from sag_ros.sim.task import get_task; "
            "assert [get_task(n).action_dim for n in ('mw-button-press-topdown', 'mw-drawer-open', 'mw-door-open')]"
            " == [4, 4, 4]; assert 'mujoco' not in sys.modules and 'metaworld' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_observation_shapes_and_dtypes(task, adapter):
    adapter.reset(0)
    obs = assert_observation_contract(task, adapter)
    np.testing.assert_array_equal(obs["state"], obs["keypoints"][:task.state_dim])
    assert adapter.render_frame().shape == (256, 256, 3)
    colours = np.unique(obs["image"].reshape(-1, 3), axis=0)
    assert len(colours) > 100 and obs["image"].std() > 20  # a scene, not a blank or single-colour frame
    assert task.control_hz == pytest.approx(1.0 / adapter._env.dt)
    assert task.max_steps <= adapter._env.max_path_length


def test_reset_is_a_function_of_the_seed(task, adapter):
    adapter.reset(3)
    first, image = adapter.sim_state(), adapter.observation()["image"]
    adapter.reset(4)
    assert not np.array_equal(adapter.sim_state(), first)  # another seed, another layout
    adapter.reset(3)
    np.testing.assert_array_equal(adapter.sim_state(), first)
    fresh = task.make_adapter()
    try:
        fresh.reset(3)
        np.testing.assert_array_equal(fresh.sim_state(), first)
        np.testing.assert_array_equal(fresh.observation()["image"], image)
    finally:
        fresh.close()


def test_keypoints_are_the_envs_own_observation(task, adapter):
    """Same physics and observations as a bare Meta-World env, bit for bit; only from the third observation
    on, since drawer-open's reset leaves stale positions in the first (and so in the second's stacked frame)."""
    env, expert = make_env(task.env_id), task.make_expert()
    try:
        env.seed(5)
        obs, _ = env.reset()
        adapter.reset(5)
        for step in range(15):
            if step >= 2:
                np.testing.assert_array_equal(adapter.low_dim_observation(), obs)
                np.testing.assert_array_equal(adapter.observation()["keypoints"], obs.astype(np.float32))
            action = expert.act(adapter).astype(np.float64)  # the adapter applies float64 actions
            adapter.step(action)
            obs = env.step(action)[0]
    finally:
        env.close()


def test_render_state_reproduces_observation_exactly(task, adapter):
    """States of another episode (another layout) re-render bit for bit, and rendering leaves the episode alone."""
    expert = task.make_expert()
    adapter.reset(2)
    stored = []
    for step in range(48):  # the expert reaches and moves the object within these steps
        if step % 8 == 0:
            stored.append((adapter.sim_state(), adapter.observation()))
        adapter.step(expert.act(adapter))

    def continue_episode(render: bool) -> list[np.ndarray]:
        adapter.reset(9)
        for _ in range(5):
            adapter.step(expert.act(adapter))
        live = adapter.sim_state()
        if render:
            for sim_state, obs in stored:
                again = adapter.render_state(sim_state)
                for key in obs:
                    np.testing.assert_array_equal(again[key], obs[key], err_msg=key)
            np.testing.assert_array_equal(adapter.sim_state(), live)
        states = []
        for _ in range(5):
            adapter.step(expert.act(adapter))
            states.append(adapter.sim_state())
        return states

    np.testing.assert_array_equal(continue_episode(render=True), continue_episode(render=False))


def test_image_is_right_side_up(task, adapter):
    """The observation equals what the same camera sees once rolled 180 deg about its optical axis, which puts
    its up axis (defined pointing down) towards +z; a row flip alone would be a mirror image."""
    import mujoco

    adapter.reset(0)
    image = adapter.observation()["image"].astype(int)
    model, data = adapter._env.model, adapter._env.data
    camera = model.camera(task.env_kwargs["camera_name"])
    original = camera.quat.copy()
    assert data.cam_xmat[camera.id][7] < 0  # as defined, the camera's up axis points down
    rolled = np.empty(4)
    mujoco.mju_mulQuat(rolled, original, np.array([0.0, 0.0, 0.0, 1.0]))
    camera.quat = rolled
    mujoco.mj_forward(model, data)
    try:
        assert data.cam_xmat[camera.id][7] > 0
        upright = MujocoCamera(model, task.env_kwargs["camera_name"], task.image_size, task.image_size)
        expected = upright.render(data).astype(int)
        upright.close()
    finally:
        camera.quat = original
        mujoco.mj_forward(model, data)
    assert (np.abs(image - expected).max(-1) > 16).mean() < 0.01  # a few edge pixels may rasterise differently
    assert (np.abs(image[::-1] - expected).max(-1) > 16).mean() > 0.5


@pytest.mark.parametrize("seed", [0, 1])
def test_expert_solves_seed_and_scores_one(task, adapter, seed):
    results = _expert_rollout(task, adapter, seed)
    assert results[-1].success and results[-1].done and results[-1].reward == 1.0
    assert len(results) < task.max_steps
    assert not any(r.done or r.success or r.reward for r in results[:-1])
    assert task.episode_score([r.reward for r in results]) == 1.0


def test_actions_are_deltas_held_by_zero(task, adapter):
    assert not task.absolute_actions
    assert (task.action_low, task.action_high) == ((-1.0,) * 4, (1.0,) * 4)
    adapter.reset(0)
    np.testing.assert_array_equal(task.hold_action(adapter.observation()), np.zeros(task.action_dim))


def test_time_limit_ends_the_episode(task, adapter):
    adapter.reset(0)
    results = [adapter.step(np.zeros(task.action_dim)) for _ in range(task.max_steps)]
    assert not any(r.done for r in results[:-1]) and results[-1].done and not results[-1].success
    assert task.episode_score([r.reward for r in results]) == 0.0


def test_datagen_cli_writes_loadable_demos(tmp_path, capsys):
    out = tmp_path / "demos.npz"
    main(["datagen", "--task", "mw-button-press-topdown", "--episodes", "2", "--seed", "0", "--out", str(out),
          "--workers", "1"])
    assert "kept 2/2" in capsys.readouterr().out
    task, demos = get_task("mw-button-press-topdown"), load_demos(out)
    n = demos.num_steps
    assert demos.metadata["task"] == task.name and demos.metadata["episode_seeds"] == [0, 1]
    assert demos.action.shape == (n, task.action_dim) and np.abs(demos.action).max() <= 1.0
    assert demos.state.shape == (n, task.state_dim) and demos.keypoints.shape == (n, task.keypoint_dim)
    images = demos.render_images(task)
    assert images.shape == (n, task.image_size, task.image_size, 3) and images.dtype == np.uint8
    adapter = task.make_adapter()
    try:
        adapter.reset(1)
        np.testing.assert_array_equal(images[demos.episode_slices()[1].start], adapter.observation()["image"])
    finally:
        adapter.close()


def test_frames_render_from_any_thread(task, adapter):
    """A ROS multi-threaded executor runs the sim node's timer on whichever thread is free; a GL context is
    current in one thread at a time, so rendering from a second thread must neither fail (EGL_BAD_ACCESS, found
    by `sag-bringup` with a Meta-World policy) nor change the frame."""
    from concurrent.futures import ThreadPoolExecutor

    adapter.reset(seed=task.test_seed_start)
    here = adapter.observation()["image"]
    with ThreadPoolExecutor(max_workers=1) as other:
        there = other.submit(lambda: adapter.observation()["image"]).result()
    np.testing.assert_array_equal(here, there)
    np.testing.assert_array_equal(here, adapter.observation()["image"])  # and back on the first thread
