"""Several tasks behind one :class:`~sag_ros.sim.task.TaskSpec`: one policy trained on all of them.

``get_task("mw-door-open+mw-button-press-topdown")`` is a task whose episode ``seed`` plays component
``seed % n`` on that component's layout ``seed``, so demonstration seeds and test seeds split evenly and
deterministically between the components. The policy sees only the component's image and state: it tells the tasks
apart from the camera image, as a robot facing a door or a button would.

Why it exists: an observation-conditioned pruner can only beat one static mask when different observations want
different schedules; with one task per policy the learned masks barely vary. A policy serving several tasks is
the setting where they have a reason to.

Components must agree on everything the policy and the nodes see (image size, state and action sizes, bounds,
rates, episode length, action semantics); :func:`multi_task` refuses a mix that does not.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from sag_ros.sim.task import Expert, StepResult, TaskAdapter, TaskSpec

SEPARATOR = "+"
_SHARED_FIELDS = ("max_steps", "control_hz", "image_size", "state_dim", "keypoint_dim", "action_dim",
                  "success_threshold", "test_seed_start", "action_low", "action_high", "joint_names",
                  "absolute_actions", "hold_action")
"""What the components of a multi-task task must share: a policy and the ROS nodes see them."""


def component_names(task_name: str) -> list[str]:
    """The components a task name joins (``a+b`` -> [a, b]; a single task's name -> [it])."""
    return task_name.split(SEPARATOR)


def component_index(seed: int, count: int) -> int:
    """Which of ``count`` components the episode of env seed ``seed`` plays: the one rule that the adapter and
    every per-component analysis of a report share."""
    return int(seed) % count


class MultiTaskAdapter:
    """One adapter per component; ``reset(seed)`` activates component ``seed % n``.

    ``sim_state`` = [component index, length of its state, its state, zero padding to the widest component], so
    every state has one width (demonstration files store them as one array) and re-renders in its own component.
    """

    def __init__(self, components: Sequence[TaskSpec]) -> None:
        self._adapters: list[TaskAdapter] = [spec.make_adapter() for spec in components]
        self._active = 0
        widths = []
        for adapter in self._adapters:
            adapter.reset(0)
            widths.append(adapter.sim_state().size)
        self._width = 2 + max(widths)

    @property
    def active_index(self) -> int:
        """Which component the current episode plays."""
        return self._active

    @property
    def active(self) -> TaskAdapter:
        """The component of the current episode."""
        return self._adapters[self._active]

    def reset(self, seed: int) -> None:
        self._active = component_index(seed, len(self._adapters))
        self.active.reset(seed)

    def step(self, action: np.ndarray) -> StepResult:
        return self.active.step(action)

    def observation(self) -> dict[str, np.ndarray]:
        return self.active.observation()

    def sim_state(self) -> np.ndarray:
        inner = self.active.sim_state()
        state = np.zeros(self._width)
        state[:2] = self._active, inner.size
        state[2:2 + inner.size] = inner
        return state

    def render_state(self, sim_state: np.ndarray) -> dict[str, np.ndarray]:
        index, size = int(sim_state[0]), int(sim_state[1])
        return self._adapters[index].render_state(np.asarray(sim_state[2:2 + size]))

    def render_frame(self) -> np.ndarray:
        return self.active.render_frame()

    def close(self) -> None:
        for adapter in self._adapters:
            adapter.close()


class MultiTaskExpert:
    """Each component's own expert, asked for the component the adapter is playing."""

    def __init__(self, components: Sequence[TaskSpec]) -> None:
        self._experts: list[Expert] = [spec.make_expert() for spec in components]

    def _expert_for(self, adapter: MultiTaskAdapter) -> Expert:
        return self._experts[adapter.active_index]

    def reset(self, adapter: MultiTaskAdapter) -> None:
        self._expert_for(adapter).reset(adapter.active)

    def act(self, adapter: MultiTaskAdapter) -> np.ndarray:
        return self._expert_for(adapter).act(adapter.active)


def multi_task(components: Sequence[TaskSpec]) -> TaskSpec:
    """The task that alternates ``components`` by seed; ``ValueError`` when they differ in what the policy sees."""
    if len(components) < 2:
        raise ValueError("a multi-task task needs at least two components")
    first = components[0]
    for spec in components[1:]:
        for name in _SHARED_FIELDS:
            if getattr(spec, name) != getattr(first, name):
                raise ValueError(f"{first.name} and {spec.name} cannot share one policy: their {name} differ "
                                 f"({getattr(first, name)!r} vs {getattr(spec, name)!r})")
    name = SEPARATOR.join(spec.name for spec in components)
    shared = {field: getattr(first, field) for field in _SHARED_FIELDS}
    return TaskSpec(name=name, env_id=name, env_kwargs={}, make_adapter=lambda: MultiTaskAdapter(components),
                    make_expert=lambda: MultiTaskExpert(components), **shared)
