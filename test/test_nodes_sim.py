"""The sim node: action scheduling and holding (pure), the task's hold reaching the env, and a closed-loop Push-T
episode over ROS with the tiny policy."""

import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy absent: pip install -e .[ros]")
pytestmark = pytest.mark.ros

from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from ros_fixtures import *  # noqa: E402,F401,F403
from ros_fixtures import spin_until, stop_nodes  # noqa: E402
from sag_ros.nodes.bringup import build_nodes  # noqa: E402
from sag_ros.nodes.graph import describe_graph  # noqa: E402
from sag_ros.nodes.loop_timing import ActionSchedule, fallback_action  # noqa: E402
from sag_ros.nodes.sim_node import SimNode  # noqa: E402
from sag_ros.sim.task import StepResult, get_task  # noqa: E402

MS = 1_000_000


def test_schedule_drops_past_actions_and_newest_chunk_replaces_the_rest():
    schedule = ActionSchedule()
    schedule.reset(now_ns=1000 * MS)
    assert not schedule.replace(np.array([900 * MS]), np.zeros((1, 2)))  # from before the episode
    times = np.array([1000, 1100, 1200, 1300]) * MS
    assert schedule.replace(times, np.arange(8.0).reshape(4, 2))
    assert schedule.pop_due(1090 * MS, 50 * MS).tolist() == [2.0, 3.0]  # action 0 has passed: dropped
    assert schedule.pop_due(1140 * MS, 50 * MS) is None  # action 2 is not due yet: hold
    schedule.replace(np.array([1150, 1250]) * MS, np.full((2, 2), 9.0))
    assert schedule.pop_due(1160 * MS, 50 * MS).tolist() == [9.0, 9.0]
    assert schedule.pop_due(2000 * MS, 50 * MS) is None  # everything passed


def test_fallback_repeats_absolute_targets_but_never_a_delta():
    pusht, metaworld = get_task("pusht"), get_task("mw-drawer-open")
    agent = {"state": np.array([10.0, 20.0], np.float32)}
    assert fallback_action(pusht, None, agent).tolist() == [10.0, 20.0]  # before any chunk: where the agent is
    last = np.array([30.0, 40.0])
    assert fallback_action(pusht, last, agent) is last  # the last target still holds
    hand = {"state": np.full(4, 0.5, np.float32)}
    assert fallback_action(metaworld, None, hand).tolist() == [0.0] * 4
    assert fallback_action(metaworld, np.full(4, 0.5), hand).tolist() == [0.0] * 4  # a stale delta would drift


class _RecordingAdapter:
    """A 4-d env stand-in that records the actions the node applies: no simulator, so no timing to flake."""

    def __init__(self) -> None:
        self.actions: list[list[float]] = []

    def reset(self, seed: int) -> None:
        pass

    def step(self, action: np.ndarray) -> StepResult:
        self.actions.append(np.asarray(action).tolist())
        return StepResult(reward=0.0, success=False, done=False)

    def observation(self) -> dict[str, np.ndarray]:
        return {"image": np.zeros((8, 8, 3), np.uint8), "state": np.full(4, 0.5, np.float32)}

    def close(self) -> None:
        pass


def test_sim_node_holds_a_delta_task_with_the_tasks_hold_action(ros_context, monkeypatch):
    adapter = _RecordingAdapter()
    spec = dataclasses.replace(get_task("mw-drawer-open"), make_adapter=lambda: adapter)
    monkeypatch.setattr("sag_ros.sim.task.get_task", lambda name: spec)
    # 1 Hz: the chunk's action stays due for 0.5 s, however slowly these ticks run
    node = SimNode(context=ros_context, parameter_overrides=[
        Parameter("task", value=spec.name), Parameter("control_rate_hz", value=1.0),
        Parameter("joint_names", value=["x", "y", "z", "grip"])])
    try:
        node._on_tick()  # starts the episode; the timer is never spun, the test ticks by hand
        node.schedule.replace(np.array([node.get_clock().now().nanoseconds]), np.full((1, 4), 0.5))
        node._on_tick()  # applies the chunk's one action
        node._on_tick()  # none due: the task's hold, not that delta again
        assert adapter.actions == [[0.5] * 4, [0.0] * 4] and node.held_steps == 1
    finally:
        node.destroy_node()


def test_closed_loop_pusht_episode_over_ros(ros_context, executor, tiny_checkpoint):
    # 5 Hz: a chunk's actions span 0.8 s, so even a slow chunk on a loaded machine arrives in time to drive
    descriptions = describe_graph(model_path=str(tiny_checkpoint), rate=5.0,
                                  overrides={"sag_sim": {"max_steps": 12, "num_episodes": 2, "seed": 100_000}})
    nodes = build_nodes(descriptions, ros_context)
    probe = Node("probe", context=ros_context)
    episodes = []
    probe.create_subscription(String, "/sag/episode", lambda m: episodes.append(json.loads(m.data)), 10)
    for node in [*nodes.values(), probe]:
        executor.add_node(node)
    sim = nodes["sag_sim"]
    try:
        assert spin_until(executor, sim.finished.done, 15.0), f"episodes did not finish: {sim.results}"
        assert spin_until(executor, lambda: any(e["final"] for e in episodes), 2.0)
        per_episode = [e for e in episodes if not e["final"]]
        assert [e["steps"] for e in per_episode] == [12, 12]
        assert [e["seed"] for e in per_episode] == [100_000, 100_001]
        assert all(0.0 <= e["score"] <= 1.0 for e in per_episode)
        summary = next(e for e in episodes if e["final"])
        assert summary["episodes"] == 2 and summary["mean_score"] == pytest.approx(np.mean([e["score"] for e in per_episode]))
        # the policy drove the episode: most steps executed a chunk's action rather than holding
        assert sim.held_steps < 12
        assert nodes["sag_inference"].chunks >= 5 and nodes["sag_camera"].frames_out >= 20
    finally:
        stop_nodes(executor, *nodes.values(), probe)
