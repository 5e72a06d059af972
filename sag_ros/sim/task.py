"""Pluggable task environments.

Everything outside ``sag_ros.sim`` talks to a task only through :class:`TaskSpec`,
:class:`TaskAdapter` and :class:`Expert`, so a new task (e.g. a Meta-World one) is one more
registry entry and never a change to the trainer, the node or the evaluator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np


@dataclass(frozen=True)
class StepResult:
    """Outcome of one control step, already translated to the project's score protocol."""

    reward: float
    success: bool
    done: bool
    info: dict[str, Any] = field(default_factory=dict)


class TaskAdapter(Protocol):
    """One environment instance behind a task-independent interface.

    Observations are dicts with ``"image"`` (uint8 [H, W, 3] RGB), ``"state"`` (float32
    [state_dim], the proprioception fed next to the image) and ``"keypoints"`` (float32
    [keypoint_dim], the privileged low-dim observation).
    """

    def reset(self, seed: int) -> None:
        """Start a new episode whose initial state is a pure function of ``seed``."""

    def step(self, action: np.ndarray) -> StepResult:
        """Apply one action (one control period) and report reward/success/done."""

    def observation(self) -> dict[str, np.ndarray]:
        """Observation of the current state."""

    def sim_state(self) -> np.ndarray:
        """Minimal float64 physical state that re-creates :meth:`observation` exactly."""

    def render_state(self, sim_state: np.ndarray) -> dict[str, np.ndarray]:
        """Observation of a stored state, without advancing physics or changing the episode."""

    def render_frame(self) -> np.ndarray:
        """Larger RGB frame of the current state, for videos."""

    def close(self) -> None:
        """Release the environment."""


class Expert(Protocol):
    """Scripted demonstrator: produces the next action from the live adapter."""

    def reset(self, adapter: TaskAdapter) -> None:
        """Prepare for a new episode (the adapter has just been reset)."""

    def act(self, adapter: TaskAdapter) -> np.ndarray:
        """Next action for the adapter's current state."""


@dataclass(frozen=True)
class TaskSpec:
    """Static description of a task: sizes, rates and the score protocol in one place."""

    name: str
    env_id: str
    env_kwargs: Mapping[str, Any]
    max_steps: int
    control_hz: float
    image_size: int
    state_dim: int
    keypoint_dim: int
    action_dim: int
    make_adapter: Callable[[], TaskAdapter]
    make_expert: Callable[[], Expert]
    success_threshold: float
    """Task progress above which an episode counts as solved (and ends). Progress is the task's own measure:
    Push-T's goal coverage, Meta-World's 0/1 success flag."""
    test_seed_start: int
    """Evaluation seeds start here; training/demo seeds must stay below it."""
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    """Valid range of each action dimension: the env clips to it, and a policy output outside it is a fault."""
    joint_names: tuple[str, ...]
    """Name of each action dimension: the joint names of the published trajectories (and of the sim's state)."""
    absolute_actions: bool
    """True when an action is a target the robot goes to (Push-T's agent position): repeating the last action then
    keeps the robot there. False for deltas (Meta-World's hand motion): repeating the last one keeps it moving."""
    hold_action: Callable[[Mapping[str, np.ndarray]], np.ndarray]
    """Action that keeps the robot where an observation shows it: what a controller sends before its first command
    and, for delta actions, whenever it has no fresh one."""

    def __post_init__(self) -> None:
        if not len(self.action_low) == len(self.action_high) == len(self.joint_names) == self.action_dim:
            raise ValueError(f"{self.name}: action_low ({len(self.action_low)}), action_high ({len(self.action_high)}) "
                             f"and joint_names ({len(self.joint_names)}) must have action_dim={self.action_dim} entries")
        if not all(lo < hi for lo, hi in zip(self.action_low, self.action_high)):
            raise ValueError(f"{self.name}: action_low={self.action_low} must be below action_high={self.action_high}")

    def reward(self, progress: float) -> float:
        """Per-step reward of the Diffusion Policy protocol: clip(progress / threshold, 0, 1)."""
        return float(np.clip(progress / self.success_threshold, 0.0, 1.0))

    def episode_score(self, rewards: Sequence[float]) -> float:
        """Episode score = max reward over the episode (0 for an empty episode)."""
        return float(max(rewards, default=0.0))


def _registry() -> dict[str, Callable[[], TaskSpec]]:
    """Known tasks; built on demand so importing this module imports no simulator."""
    from sag_ros.sim import meta_world, pusht

    return {"pusht": pusht.pusht_task, **{name: partial(meta_world.metaworld_task, name) for name in meta_world.TASKS}}


def get_task(name: str) -> TaskSpec:
    """Look up a task by name; ``a+b`` is one task alternating ``a`` and ``b`` by seed
    (:mod:`sag_ros.sim.multi_task`). Unknown names raise ``ValueError`` listing the known ones."""
    from sag_ros.sim.multi_task import SEPARATOR, component_names, multi_task

    if SEPARATOR in name:
        return multi_task([get_task(part) for part in component_names(name)])
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(registry)}, or several joined by "
                         f"{SEPARATOR!r} (one policy for all)")
    return registry[name]()
