"""Meta-World v3 tasks (MuJoCo) behind the :class:`~sag_ros.sim.task.TaskAdapter` interface.

Seeds: ``reset(seed)`` re-seeds the env's own generator and lets Meta-World draw a fresh object layout from
it, so each seed is its own layout and test seeds never replay a demo's (the MT1 benchmark instead cycles
through 50 layouts drawn once).

Score: the env's ``info["success"]`` (0 or 1) is the task progress fed to :meth:`TaskSpec.reward`, with a
threshold of 0.5: reward 1 and the episode ends on success, else reward 0 until ``max_steps``.

State: ``sim_state`` = MuJoCo's physics state (qpos, qvel) and the pose of the mocap body that drags the
hand + the layout vector drawn at reset + the previous 18-d frame (Meta-World's 39-d observation stacks two
frames and the goal). The layout is needed because Meta-World places objects and the goal by editing the
*model* (body and site positions), not qpos; :meth:`MetaWorldAdapter.render_state` rebuilds another episode's
layout in a private second env, so stored demonstrations re-render bit for bit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any, Mapping

import numpy as np

from sag_ros.sim.mujoco_camera import MujocoCamera, select_gl_backend
from sag_ros.sim.task import StepResult, TaskSpec

TASKS: dict[str, tuple[str, str]] = {
    "mw-button-press-topdown": ("button-press-topdown-v3", "corner"),
    "mw-drawer-open": ("drawer-open-v3", "corner"),
    "mw-door-open": ("door-open-v3", "corner4"),
}
"""Task name -> (Meta-World env name, camera). Each camera shows the gripper and the object's motion: the
button going down and the drawer sliding out from ``corner``; the door's swing only from ``corner4``."""
FRAME_DIM = 18
"""One observation frame: hand xyz, gripper opening, 14 object pose values (padded)."""
STATE_DIM = 4
"""Proprioception: hand xyz + gripper opening, the first entries of a frame."""
VIDEO_SIZE = 256


def make_env(env_id: str) -> Any:
    """A goal-observable Meta-World env that draws a new object layout from its seeded generator at each reset.

    Selects the GL backend first, since importing metaworld imports mujoco.
    """
    select_gl_backend()
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

    env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{env_id}-goal-observable"](seed=0)
    env._freeze_rand_vec = False  # the goal-observable class freezes its first layout; draw one per reset
    env.seeded_rand_vec = True
    return env


@dataclass(frozen=True)
class _Layout:
    """Where reset put the task's objects and goal: model body/site positions and the env's goal position."""

    rand_vec: np.ndarray
    body_pos: np.ndarray
    site_pos: np.ndarray
    target_pos: np.ndarray

    @classmethod
    def capture(cls, env: Any) -> _Layout:
        return cls(env._last_rand_vec.copy(), env.model.body_pos.copy(), env.model.site_pos.copy(),
                   np.array(env._target_pos, dtype=np.float64))

    def apply(self, env: Any) -> None:
        env.model.body_pos[:] = self.body_pos
        env.model.site_pos[:] = self.site_pos
        env._target_pos = self.target_pos.copy()


class MetaWorldAdapter:
    """One Meta-World env with exact state re-rendering and the success-rate score protocol."""

    def __init__(self, spec: TaskSpec) -> None:
        self._spec = spec
        self._env = make_env(spec.env_id)
        import mujoco

        self._mujoco = mujoco
        self._state_spec = (mujoco.mjtState.mjSTATE_PHYSICS | mujoco.mjtState.mjSTATE_MOCAP_POS
                            | mujoco.mjtState.mjSTATE_MOCAP_QUAT)
        self._physics_size = mujoco.mj_stateSize(self._env.model, self._state_spec)
        self._layout_size = self._env._random_reset_space.low.size
        self._camera = MujocoCamera(self._env.model, spec.env_kwargs["camera_name"], spec.image_size,
                                    spec.image_size)
        self._video_camera: MujocoCamera | None = None
        self._scratch: Any = None
        """Second env that builds other episodes' layouts for render_state, leaving this episode alone."""
        self._live: _Layout | None = None
        self._foreign: _Layout | None = None
        self._prev_frame = np.zeros(FRAME_DIM)
        self._steps = 0

    def reset(self, seed: int) -> None:
        self._env.seed(int(seed))
        self._env.reset()
        # drawer-open's reset ends without mj_forward: its first observation would show the hand one physics
        # step behind and the drawer where reset's first layout draw put it, which no stored state re-creates.
        self._forward()
        self._live = _Layout.capture(self._env)
        self._prev_frame = self._env._get_curr_obs_combined_no_goal()  # at reset the frame is stacked twice
        self._steps = 0

    def step(self, action: np.ndarray) -> StepResult:
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(4), self._spec.action_low,
                         self._spec.action_high)
        frame = self._env._get_curr_obs_combined_no_goal()  # stacked into the next observation
        _, _, _, _, info = self._env.step(action)
        self._prev_frame = frame
        self._steps += 1
        progress = float(info["success"])
        success = progress > self._spec.success_threshold
        return StepResult(
            reward=self._spec.reward(progress),
            success=success,
            done=success or self._steps >= self._spec.max_steps,
            info={"step": self._steps},
        )

    def low_dim_observation(self) -> np.ndarray:
        """Meta-World's float64 39-d observation (current frame, previous frame, goal), computed from the current
        state without the frame-stacking side effect of the env's ``_get_obs``. Equals what ``env.step`` returns,
        except drawer-open's first two observations, where the env's are stale (see :meth:`reset`)."""
        env = self._env
        obs = np.hstack((env._get_curr_obs_combined_no_goal(), self._prev_frame, env._get_pos_goal()))
        space = env.sawyer_observation_space
        return np.clip(obs, space.low, space.high)

    def observation(self) -> dict[str, np.ndarray]:
        low_dim = self.low_dim_observation()
        return {
            "image": self._camera.render(self._env.data),
            "state": low_dim[:STATE_DIM].astype(np.float32),
            "keypoints": low_dim.astype(np.float32),
        }

    def sim_state(self) -> np.ndarray:
        assert self._live is not None, "reset() must be called first"
        physics = np.empty(self._physics_size)
        self._mujoco.mj_getState(self._env.model, self._env.data, physics, self._state_spec)
        return np.concatenate([physics, self._live.rand_vec, self._prev_frame])

    def render_state(self, sim_state: np.ndarray) -> dict[str, np.ndarray]:
        saved = self.sim_state()
        self._set_state(sim_state)
        try:
            return self.observation()
        finally:
            self._set_state(saved)

    def render_frame(self) -> np.ndarray:
        if self._video_camera is None:
            self._video_camera = MujocoCamera(self._env.model, self._spec.env_kwargs["camera_name"], VIDEO_SIZE,
                                              VIDEO_SIZE)
        return self._video_camera.render(self._env.data)

    def close(self) -> None:
        for camera in (self._camera, self._video_camera):
            if camera is not None:
                camera.close()
        for env in (self._env, self._scratch):
            if env is not None:
                env.close()

    def _set_state(self, sim_state: np.ndarray) -> None:
        """Teleport to a stored state (layout included) and recompute positions, without a physics step."""
        physics, rest = np.split(np.asarray(sim_state, dtype=np.float64), [self._physics_size])
        rand_vec, self._prev_frame = rest[:self._layout_size], rest[self._layout_size:].copy()
        self._layout_for(rand_vec).apply(self._env)
        self._mujoco.mj_setState(self._env.model, self._env.data, physics, self._state_spec)
        self._forward()

    def _forward(self) -> None:
        """Recompute everything derived from the state, keeping the solver's warm start: mj_forward nudges it
        (~1e-14) and the next physics step starts from it, so observing would change the episode's future."""
        data = self._env.data
        warm_start = data.qacc_warmstart.copy()
        self._mujoco.mj_forward(self._env.model, data)
        data.qacc_warmstart[:] = warm_start

    def _layout_for(self, rand_vec: np.ndarray) -> _Layout:
        """This episode's layout, or another one built by resetting the scratch env on it (the last one is kept)."""
        assert self._live is not None, "reset() must be called first"
        for layout in (self._live, self._foreign):
            if layout is not None and np.array_equal(layout.rand_vec, rand_vec):
                return layout
        if self._scratch is None:
            self._scratch = make_env(self._spec.env_id)
        self._scratch._freeze_rand_vec = True
        self._scratch._last_rand_vec = rand_vec.copy()
        self._scratch.reset()
        self._foreign = _Layout.capture(self._scratch)
        return self._foreign


class MetaWorldExpert:
    """Meta-World's scripted policy for the task, on the adapter's low-dim observation; actions clipped to
    the action space [-1, 1] so the demonstrations hold what the env applies."""

    def __init__(self, env_id: str) -> None:
        select_gl_backend()  # metaworld.policies imports metaworld, which imports mujoco
        from metaworld.policies import ENV_POLICY_MAP

        self._policy = ENV_POLICY_MAP[env_id]()

    def reset(self, adapter: MetaWorldAdapter) -> None:
        """Nothing to do: the scripted policies are stateless."""

    def act(self, adapter: MetaWorldAdapter) -> np.ndarray:
        with warnings.catch_warnings():
            # The policies' gains overshoot on purpose and warn about it every step; we clip as the env does.
            warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")
            action = self._policy.get_action(adapter.low_dim_observation())
        return np.clip(action, -1.0, 1.0)


def hold_hand(observation: Mapping[str, np.ndarray]) -> np.ndarray:
    """Meta-World's action moves the hand by a delta (xyz) and sets the gripper effort, so zero motion holds the
    hand where it is, wherever the observation shows it; a zero effort leaves the fingers unactuated."""
    return np.zeros(4)


def metaworld_task(name: str) -> TaskSpec:
    """A Meta-World task of :data:`TASKS`: 96x96 images, 200 steps at 80 Hz (5 x 2.5 ms physics steps)."""
    env_id, camera = TASKS[name]
    spec = TaskSpec(
        name=name,
        env_id=env_id,
        env_kwargs={"camera_name": camera},
        max_steps=200,
        control_hz=80.0,
        image_size=96,
        state_dim=STATE_DIM,
        keypoint_dim=39,
        action_dim=4,
        make_adapter=lambda: MetaWorldAdapter(spec),
        make_expert=partial(MetaWorldExpert, env_id),
        success_threshold=0.5,
        test_seed_start=100_000,
        action_low=(-1.0,) * 4,
        action_high=(1.0,) * 4,
        joint_names=("hand_x", "hand_y", "hand_z", "gripper"),  # actions move them (deltas), the state reads them
        absolute_actions=False,
        hold_action=hold_hand,
    )
    return spec
