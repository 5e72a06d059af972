"""``sag_sim``: a task adapter (``task`` parameter) stepped in real time, driven by the newest action chunk.

Every control period: pick the action due now from the newest ``/sag/actions`` chunk (actions whose time has passed
are dropped; a new chunk replaces the rest; with none due the robot is held, see
:func:`~sag_ros.nodes.loop_timing.fallback_action`), step the adapter, then publish the rendered image
(``/sag/sim/image``, rgb8) and the agent state (``/sag/sim/joint_states``) stamped with the node clock. Each
finished episode is reported on ``/sag/episode`` (``std_msgs/String``, JSON) and, after ``num_episodes``, a final
summary (``"final": true``); :attr:`SimNode.finished` then completes.
"""

from __future__ import annotations

import json

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.task import Future
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from sag_ros.nodes.camera_node import sensor_qos_depth1
from sag_ros.nodes.convert import array_to_image, array_to_joint_state, ns_to_stamp, trajectory_to_chunk
from sag_ros.nodes.graph import ACTIONS_TOPIC, EPISODE_TOPIC, SIM_IMAGE_TOPIC, SIM_STATE_TOPIC
from sag_ros.nodes.lifecycle import run_node
from sag_ros.nodes.loop_timing import ActionSchedule, fallback_action
from sag_ros.nodes.params import ConfigParameters, SimNodeConfig


class SimNode(Node):
    def __init__(self, *, name: str = "sag_sim", **node_kwargs) -> None:
        super().__init__(name, **node_kwargs)
        from sag_ros.sim.task import get_task

        self.params = ConfigParameters(self, SimNodeConfig)
        cfg = self.params.config
        self.spec = get_task(cfg.task)
        self.adapter = self.spec.make_adapter()
        self.rate_hz = cfg.control_rate_hz or self.spec.control_hz
        self.max_steps = cfg.max_steps or self.spec.max_steps
        self.schedule = ActionSchedule()
        self.finished = Future()
        self.results: list[dict] = []
        self.summary: dict | None = None
        self._episode = 0
        self._steps = 0
        self._rewards: list[float] = []
        self._last_action: np.ndarray | None = None
        self._observation: dict[str, np.ndarray] = {}
        """The last published observation: the state the next step starts from."""
        self._needs_reset = True
        self.held_steps = 0

        self._image_pub = self.create_publisher(Image, SIM_IMAGE_TOPIC, sensor_qos_depth1())
        self._state_pub = self.create_publisher(JointState, SIM_STATE_TOPIC, 10)
        self._episode_pub = self.create_publisher(String, EPISODE_TOPIC, 10)
        self.create_subscription(JointTrajectory, ACTIONS_TOPIC, self._on_actions, 1)
        self.create_timer(1.0 / self.rate_hz, self._on_tick)

    def _on_actions(self, msg: JointTrajectory) -> None:
        try:
            times, actions = trajectory_to_chunk(msg, self.params.config.joint_names)
        except ValueError as exc:
            self.get_logger().warning(f"action chunk dropped: {exc}", throttle_duration_sec=2.0)
            return
        self.schedule.replace(times, actions)

    def _on_tick(self) -> None:
        cfg = self.params.config
        now_ns = self.get_clock().now().nanoseconds
        if self.finished.done():
            return
        if self._needs_reset:
            self._start_episode(now_ns)
        elif not (cfg.wait_for_actions and self.schedule.chunks_received == 0):
            action = self.schedule.pop_due(now_ns, int(0.5e9 / self.rate_hz))
            if action is None:
                self.held_steps += 1
                action = fallback_action(self.spec, self._last_action, self._observation)
            self._last_action = action
            result = self.adapter.step(action)
            self._steps += 1
            self._rewards.append(result.reward)
            if result.done or self._steps >= self.max_steps:
                self._end_episode(result.success)
                return
        self._publish_observation(now_ns)

    def _start_episode(self, now_ns: int) -> None:
        seed = self.params.config.seed + self._episode
        self.adapter.reset(seed)
        self.schedule.reset(now_ns)
        self._steps, self._rewards, self._needs_reset = 0, [], False
        self._last_action = None
        self.get_logger().info(f"episode {self._episode} (seed {seed}) started")

    def _end_episode(self, success: bool) -> None:
        cfg = self.params.config
        result = {"final": False, "episode": self._episode, "seed": cfg.seed + self._episode,
                  "score": self.spec.episode_score(self._rewards), "success": bool(success), "steps": self._steps}
        self.results.append(result)
        self._episode_pub.publish(String(data=json.dumps(result)))
        self.get_logger().info(f"episode {self._episode}: score {result['score']:.3f}, success {success}, "
                               f"{self._steps} steps")
        self._episode += 1
        self._needs_reset = True
        if self._episode >= cfg.num_episodes:
            scores = [r["score"] for r in self.results]
            self.summary = {"final": True, "episodes": len(scores), "mean_score": float(np.mean(scores)),
                            "success_rate": float(np.mean([r["success"] for r in self.results])), "scores": scores}
            self._episode_pub.publish(String(data=json.dumps(self.summary)))
            if not self.finished.done():
                self.finished.set_result(self.summary)

    def _publish_observation(self, now_ns: int) -> None:
        cfg = self.params.config
        obs = self._observation = self.adapter.observation()
        stamp = ns_to_stamp(now_ns)
        # State first: a camera pairs each frame with the newest state it has.
        self._state_pub.publish(array_to_joint_state(obs["state"], stamp, cfg.joint_names[:len(obs["state"])]))
        self._image_pub.publish(array_to_image(obs["image"], stamp, cfg.frame_id))

    def destroy_node(self) -> None:
        self.adapter.close()
        super().destroy_node()


def _spin_episodes(node: "SimNode") -> None:
    rclpy.spin_until_future_complete(node, node.finished)
    if node.summary is not None:
        print(json.dumps(node.summary), flush=True)


def main(args=None) -> None:
    run_node(SimNode, _spin_episodes, args=args)


if __name__ == "__main__":
    main()
