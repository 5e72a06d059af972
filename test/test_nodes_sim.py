"""The Push-T sim node: action scheduling (pure) and a closed-loop episode over ROS with the tiny policy."""

import json

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy absent: pip install -e .[ros]")
pytest.importorskip("gym_pusht", reason="gym-pusht absent")
pytestmark = pytest.mark.ros

from rclpy.node import Node  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from ros_fixtures import *  # noqa: E402,F401,F403
from ros_fixtures import spin_until  # noqa: E402
from sag_ros.nodes.bringup import build_nodes  # noqa: E402
from sag_ros.nodes.graph import describe_graph  # noqa: E402
from sag_ros.nodes.sim_node import ActionSchedule  # noqa: E402

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
        for node in [*nodes.values(), probe]:
            node.destroy_node()
