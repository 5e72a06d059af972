"""Push-T behind the :class:`~sag_ros.sim.task.TaskAdapter` interface.

The env is created with ``obs_type="state"`` (cheap) and images are drawn on demand from the
pymunk bodies, so :meth:`PushTAdapter.render_state` can redraw any stored
``[agent_x, agent_y, block_x, block_y, block_angle]`` bit-for-bit: demonstrations store states,
not pixels.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from sag_ros.sim.task import StepResult, TaskSpec

GOAL_POSE = np.array([256.0, 256.0, np.pi / 4])
"""Fixed goal (x, y, angle) of the T in gym-pusht."""
AGENT_RADIUS = 15.0
T_RECTS = ((0.0, 15.0, 60.0, 15.0), (0.0, 75.0, 15.0, 45.0))
"""The T in block-local coordinates as (center_x, center_y, half_w, half_h) rectangles (bar, stem)."""
T_LOCAL_KEYPOINTS = np.array(
    [[-60, 30], [60, 30], [60, 0], [-60, 0], [-15, 30], [-15, 120], [15, 120], [15, 30]], dtype=np.float64
)
"""Vertices in gym-pusht's ``get_keypoints`` order (bar shape, then stem shape)."""


def block_keypoints(pose: np.ndarray) -> np.ndarray:
    """World keypoints [8, 2] of a block at (x, y, angle); same values as gym-pusht's ``get_keypoints``."""
    c, s = np.cos(pose[2]), np.sin(pose[2])
    rot = np.array([[c, -s], [s, c]])
    return T_LOCAL_KEYPOINTS @ rot.T + pose[:2]


GOAL_KEYPOINTS = block_keypoints(GOAL_POSE)


def place_body(body: Any, x: float, y: float, angle: float | None = None) -> None:
    """Put a pymunk body's origin exactly at (x, y) (and at ``angle``).

    pymunk keeps the centre of gravity fixed when the angle is set, so the angle goes first;
    and the origin is derived from the centre of gravity, so the requested position is nudged
    until reading it back gives the exact same floats (stored states then re-render bit for bit).
    """
    if angle is not None:
        body.angle = float(angle)
    target = (float(x), float(y))
    request = target
    for _ in range(4):
        body.position = request
        got = tuple(body.position)
        if got == target:
            return
        request = (request[0] + (target[0] - got[0]), request[1] + (target[1] - got[1]))


class PushTAdapter:
    """One gym-pusht env with exact state re-rendering and the DP score protocol."""

    def __init__(self, spec: TaskSpec) -> None:
        import gymnasium
        import gym_pusht  # noqa: F401  (registers the env id)

        self._spec = spec
        self._env = gymnasium.make(spec.env_id, **spec.env_kwargs)
        self._raw = self._env.unwrapped
        self._steps = 0

    def reset(self, seed: int) -> None:
        self._env.reset(seed=int(seed))
        self._steps = 0

    def step(self, action: np.ndarray) -> StepResult:
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(2), self._spec.action_low, self._spec.action_high)
        _, _, _, _, info = self._env.step(action)
        self._steps += 1
        coverage = float(info["coverage"])
        success = coverage > self._spec.success_threshold
        done = success or self._steps >= self._spec.max_steps
        return StepResult(
            reward=self._spec.reward(coverage),
            success=success,
            done=done,
            info={"coverage": coverage, "step": self._steps},
        )

    def observation(self) -> dict[str, np.ndarray]:
        agent = np.array(self._raw.agent.position, dtype=np.float32)
        keypoints = self._raw.get_keypoints(self._raw._block_shapes).reshape(-1)
        return {
            "image": self._draw(self._raw.observation_width, self._raw.observation_height),
            "state": agent,
            "keypoints": np.concatenate([keypoints, agent]).astype(np.float32),
        }

    def sim_state(self) -> np.ndarray:
        # The raw (unwrapped) angle is kept: wrapping it would change cos/sin in the last bit.
        agent, block = self._raw.agent, self._raw.block
        return np.array([*agent.position, *block.position, block.angle], dtype=np.float64)

    def render_state(self, sim_state: np.ndarray) -> dict[str, np.ndarray]:
        saved = self.sim_state()
        self._place(sim_state)
        try:
            return self.observation()
        finally:
            self._place(saved)

    def render_frame(self) -> np.ndarray:
        return self._raw.render()

    def close(self) -> None:
        self._env.close()

    def _draw(self, width: int, height: int) -> np.ndarray:
        """gym-pusht's drawing minus the solver's contact dots.

        Those red dots come from the last step's contact cache, not from the state, so with
        them an image could not be re-created from a stored state; they cover a few pixels.
        """
        import pygame
        import pymunk
        from gym_pusht.envs.pymunk_override import DrawOptions

        raw = self._raw
        screen = pygame.Surface((512, 512))
        screen.fill((255, 255, 255))
        options = DrawOptions(screen)
        options.flags = pymunk.SpaceDebugDrawOptions.DRAW_SHAPES
        goal_body = raw.get_goal_pose_body(raw.goal_pose)
        for shape in raw.block.shapes:
            points = [goal_body.local_to_world(v) for v in shape.get_vertices()]
            points = [pymunk.pygame_util.to_pygame(p, options.surface) for p in points]
            pygame.draw.polygon(screen, pygame.Color("LightGreen"), points + [points[0]])
        raw.space.debug_draw(options)
        return raw._get_img(screen, width=width, height=height, render_action=False)

    def _place(self, sim_state: np.ndarray) -> None:
        """Teleport bodies and refresh pymunk's cached shape transforms, without a physics step."""
        raw = self._raw
        place_body(raw.agent, sim_state[0], sim_state[1])
        place_body(raw.block, sim_state[2], sim_state[3], sim_state[4])
        raw.space.reindex_shapes_for_body(raw.agent)
        raw.space.reindex_shapes_for_body(raw.block)


def hold_agent(observation: Mapping[str, np.ndarray]) -> np.ndarray:
    """Push-T's action is the agent's target position, so targeting where the agent is keeps it there."""
    return observation["state"].astype(np.float64)


def pusht_task() -> TaskSpec:
    """Push-T with the Diffusion Policy protocol: 300 steps at 10 Hz, success at coverage > 0.95."""
    from sag_ros.sim.expert import PushTExpert

    image_size = 96
    env_kwargs: dict[str, Any] = {
        "obs_type": "state",
        "render_mode": "rgb_array",
        "observation_width": image_size,
        "observation_height": image_size,
        "visualization_width": 384,
        "visualization_height": 384,
    }
    spec = TaskSpec(
        name="pusht",
        env_id="gym_pusht/PushT-v0",
        env_kwargs=env_kwargs,
        max_steps=300,
        control_hz=10.0,
        image_size=image_size,
        state_dim=2,
        keypoint_dim=18,
        action_dim=2,
        make_adapter=lambda: PushTAdapter(spec),
        make_expert=PushTExpert,
        success_threshold=0.95,
        test_seed_start=100_000,
        action_low=(0.0, 0.0),
        action_high=(512.0, 512.0),
        joint_names=("x", "y"),  # the agent's target position in the 512 x 512 workspace
        absolute_actions=True,
        hold_action=hold_agent,
    )
    return spec
